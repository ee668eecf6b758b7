//! The underlay UDP socket: batched receives (recvmmsg, GRO) and sends through quinn-udp.
//!
//! The socket is created with SO_REUSEPORT so that every worker has a socket of its own on the one
//! port, and with large kernel buffers so bursts are absorbed by the kernel rather than dropped.
//! With several workers, the port's group is steered by the lane byte of each datagram
//! ([`Udp::steer_by_lane`]), so the datagrams one sending worker sealed (and with them every flow
//! it carries) are opened by one receiving worker, in order.
//!
//! The socket is a plain non-blocking one, driven by its worker's own `epoll` loop
//! (src/io/worker.rs), not by an async runtime: a receive that finds nothing returns at once, and a
//! send that finds the socket buffer full waits for room with `poll`, for at most
//! [`SEND_WAIT`].

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// Kernel socket buffer size requested in each direction.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Where a datagram carries its lane (the sending worker), by which receivers steer.
pub const LANE_OFFSET: usize = crate::wire::LANE;
/// Largest UDP payload that can arrive in one datagram.
pub const MAX_DATAGRAM: usize = 65535;
/// How long a send waits for room in a full socket buffer before the datagram is dropped (and
/// counted): the kernel drains a UDP send buffer in microseconds unless the host is wedged.
pub const SEND_WAIT: Duration = Duration::from_millis(200);

/// Sizes the kernel buffers. With CAP_NET_ADMIN (which meshd needs for the TAP anyway) the
/// FORCE variants go past `net.core.rmem_max`, whose default (208 KiB) drops bursts at line rate;
/// without it the plain options apply, capped by the sysctl, which only costs burst room.
fn size_buffers(socket: &std::net::UdpSocket, state: &UdpSocketState) {
    let size = SOCKET_BUFFER_BYTES as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt on a valid socket with a pointer to a c_int of the stated length.
        let forced = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                force,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !forced {
            let _ = if plain == libc::SO_RCVBUF {
                state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER_BYTES)
            } else {
                state.set_send_buffer_size(socket.into(), SOCKET_BUFFER_BYTES)
            };
        }
    }
}

pub struct Udp {
    socket: UdpSocket,
    /// Bound to IPv6 (`[::]`, dual-stack): IPv4 destinations are given as v4-mapped addresses.
    ipv6: bool,
    state: UdpSocketState,
    /// Datagrams per GSO send the kernel offered when the socket was made.
    gso_segments_at_start: usize,
    /// GSO sends turned off by quinn-udp and turned back on here (see `send`).
    pub gso_restored: u64,
    /// A gathered GSO send (`send_parts`) failed with EIO: the device cannot segment, so runs go
    /// out one datagram at a time from then on, as quinn-udp does for its own sends.
    gso_unsupported: bool,
}

impl Udp {
    pub fn bind(addr: SocketAddr) -> io::Result<Udp> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            // Accept IPv4 too when bound to [::].
            let _ = socket.set_only_v6(false);
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket: UdpSocket = socket.into();
        let state = UdpSocketState::new((&socket).into())?;
        size_buffers(&socket, &state);
        Ok(Udp {
            ipv6: addr.is_ipv6(),
            gso_segments_at_start: state.max_gso_segments(),
            socket,
            state,
            gso_restored: 0,
            gso_unsupported: false,
        })
    }

    /// Makes the kernel deliver each datagram to socket `lane % sockets` of this port's
    /// SO_REUSEPORT group (in the order the sockets were bound), where `lane` is byte
    /// [`LANE_OFFSET`] of the UDP payload, instead of by a hash of the addresses, which would put
    /// everything from one peer on one worker. A classic BPF program attached to any member
    /// steers the whole group, so this is called once, after every worker's socket is bound.
    /// A datagram too short to have the byte makes the program fail, which the kernel takes as
    /// 0: worker 0. Does nothing for a single socket.
    pub fn steer_by_lane(&self, sockets: u32) -> io::Result<()> {
        if sockets <= 1 {
            return Ok(());
        }
        // BPF_LD|BPF_B|BPF_ABS, BPF_ALU|BPF_MOD|BPF_K, BPF_RET|BPF_A (linux/filter.h); the data
        // starts at the UDP payload for reuseport programs.
        const LOAD_BYTE: u16 = libc::BPF_LD as u16 | libc::BPF_B as u16 | libc::BPF_ABS as u16;
        const MOD_K: u16 = libc::BPF_ALU as u16 | libc::BPF_MOD as u16 | libc::BPF_K as u16;
        const RETURN_A: u16 = libc::BPF_RET as u16 | libc::BPF_A as u16;
        let mut program = [
            libc::sock_filter {
                code: LOAD_BYTE,
                jt: 0,
                jf: 0,
                k: LANE_OFFSET as u32,
            },
            libc::sock_filter {
                code: MOD_K,
                jt: 0,
                jf: 0,
                k: sockets,
            },
            libc::sock_filter {
                code: RETURN_A,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: setsockopt on a valid socket with a pointer to a sock_fprog of the stated
        // length, whose filter points at `program`, alive for the call (the kernel copies it).
        let r = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams the kernel may coalesce into one receive buffer.
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Receives a batch without blocking; `Ok(0)` means nothing was ready.
    pub fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        match self.state.recv((&self.socket).into(), bufs, meta) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Datagrams one segmentation-offload send may carry (1 without UDP GSO).
    pub fn max_gso_segments(&self) -> usize {
        if self.gso_unsupported {
            1
        } else {
            self.state.max_gso_segments()
        }
    }

    /// Sends `contents` as one datagram, or with `segment_size` as several datagrams of that size
    /// (the last may be shorter) in one system call, waiting for socket room if the buffer is full.
    pub fn send(
        &mut self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let result = self.send_once(destination, contents, segment_size);
        if let Err(e) = &result {
            self.restore_gso_after(e, segment_size);
        }
        result
    }

    /// quinn-udp turns GSO off for the socket's lifetime on any EINVAL, taking it for a device
    /// that cannot segment. But a route that refuses one destination (a blackhole route, say)
    /// fails plain sends with EINVAL too, and one unreachable peer must not cost every other
    /// peer its batched sends. A plain send involves no GSO, so after one fails this way the
    /// socket state is made again, which asks the kernel afresh. A failed GSO send leaves GSO off.
    fn restore_gso_after(&mut self, error: &io::Error, segment_size: Option<usize>) {
        let gso_lost = self.gso_segments_at_start > 1
            && self.state.max_gso_segments() < self.gso_segments_at_start;
        if segment_size.is_none() && gso_lost && error.raw_os_error() == Some(libc::EINVAL) {
            if let Ok(fresh) = UdpSocketState::new((&self.socket).into()) {
                self.state = fresh;
                self.gso_restored += 1;
                tracing::debug!(error = %error, "a destination refused a send; batched UDP sends stay on for the others");
            }
        }
    }

    /// Sends `parts` as consecutive datagrams of `segment_size` bytes each (the last may be
    /// shorter) in one GSO `sendmsg`, gathering them from where they lie: the kernel copies each
    /// part once, so sealed datagrams need no staging buffer (quinn-udp's `Transmit` takes one
    /// contiguous slice). Waits for socket room if the buffer is full. If the kernel refuses the
    /// segmentation (EIO: a device that cannot do it, after which [`Udp::max_gso_segments`] says
    /// 1; EINVAL: that, or a route that refuses the destination), each part is sent alone instead.
    pub fn send_parts(
        &mut self,
        destination: SocketAddr,
        parts: &[IoSlice<'_>],
        segment_size: usize,
    ) -> io::Result<()> {
        let target = match destination {
            SocketAddr::V4(v4) if self.ipv6 => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            other => other,
        };
        let address = socket2::SockAddr::from(target);
        let result = retry_when_full(&self.socket, || {
            send_segmented(&self.socket, &address, parts, segment_size)
        });
        match result {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                if e.raw_os_error() == Some(libc::EIO) {
                    self.gso_unsupported = true;
                    tracing::warn!(error = %e, "the underlay device cannot segment UDP; sending datagrams one by one");
                }
                let mut outcome = Ok(());
                for part in parts {
                    if let Err(e) = self.send(destination, part, None) {
                        outcome = Err(e);
                    }
                }
                outcome
            }
            other => other,
        }
    }

    fn send_once(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        retry_when_full(&self.socket, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Runs `send`; while it finds the socket buffer full, waits for room (at most [`SEND_WAIT`] in
/// all) and tries again.
fn retry_when_full(socket: &UdpSocket, mut send: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let give_up = std::time::Instant::now() + SEND_WAIT;
    loop {
        match send() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = give_up.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(e);
                }
                let mut fd = libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let millis = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
                // SAFETY: poll on one valid pollfd for at most `millis`.
                unsafe { libc::poll(&mut fd, 1, millis) };
            }
            other => return other,
        }
    }
}

/// One `sendmsg` of `parts` to `address` with a `UDP_SEGMENT` control message of
/// `segment_size`.
fn send_segmented(
    socket: &UdpSocket,
    address: &socket2::SockAddr,
    parts: &[IoSlice<'_>],
    segment_size: usize,
) -> io::Result<()> {
    let segment = u16::try_from(segment_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size over 65535"))?;
    // Room for one cmsghdr and its u16, aligned as cmsghdr requires.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize,
            libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize,
        )
    };
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: a zeroed msghdr is valid; every pointer stored in it (address, parts, control)
    // outlives the sendmsg call. IoSlice is guaranteed ABI-compatible with iovec on Unix.
    // CMSG_FIRSTHDR of a msghdr whose control buffer holds `space` bytes is non-null and points
    // into `control`, which is aligned for cmsghdr (u64).
    let sent = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_name = address.as_ptr() as *mut libc::c_void;
        message.msg_namelen = address.len();
        message.msg_iov = parts.as_ptr() as *mut libc::iovec;
        message.msg_iovlen = parts.len() as _;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_UDP;
        (*header).cmsg_type = libc::UDP_SEGMENT;
        (*header).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<u16>(), segment);
        libc::sendmsg(socket.as_raw_fd(), &message, 0)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `sockets` receives each of `payloads`, sent from one source port.
    fn receivers(sockets: usize, steer: bool, payloads: &[Vec<u8>]) -> Vec<usize> {
        {
            let first = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = first.local_addr().unwrap();
            let mut group = vec![first];
            for _ in 1..sockets {
                group.push(Udp::bind(addr).unwrap());
            }
            if steer {
                group[0].steer_by_lane(sockets as u32).unwrap();
            }
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut got = Vec::new();
            for payload in payloads {
                sender.send_to(payload, addr).unwrap();
                let mut found = None;
                for _ in 0..200 {
                    for (i, socket) in group.iter().enumerate() {
                        let mut buf = [0u8; 2048];
                        let mut meta = [RecvMeta::default()];
                        let mut slices = [IoSliceMut::new(&mut buf)];
                        if socket.try_recv(&mut slices, &mut meta).unwrap() > 0 {
                            found = Some(i);
                        }
                    }
                    if found.is_some() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                got.push(found.expect("datagram arrived"));
            }
            got
        }
    }

    fn with_lane(lane: u8) -> Vec<u8> {
        vec![1, 4, 1, lane, 9, 9, 9, 9]
    }

    #[test]
    fn datagrams_go_to_the_socket_of_their_lane() {
        for sockets in [2, 3] {
            let lanes: Vec<u8> = (0..8).collect();
            let payloads: Vec<Vec<u8>> = lanes.iter().map(|&l| with_lane(l)).collect();
            let got = receivers(sockets, true, &payloads);
            let want: Vec<usize> = lanes.iter().map(|&l| l as usize % sockets).collect();
            assert_eq!(got, want, "{sockets} sockets");
        }
    }

    #[test]
    fn a_datagram_too_short_for_a_lane_goes_to_the_first_socket() {
        assert_eq!(receivers(2, true, &[vec![1, 4]]), vec![0]);
    }

    #[test]
    fn parts_leave_as_one_datagram_each() {
        {
            for bind in ["127.0.0.1:0", "[::]:0"] {
                let mut sender = Udp::bind(bind.parse().unwrap()).unwrap();
                let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                receiver
                    .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let parts: Vec<Vec<u8>> = vec![vec![1; 100], vec![2; 100], vec![3; 40]];
                let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
                sender
                    .send_parts(receiver.local_addr().unwrap(), &slices, 100)
                    .unwrap();
                for part in &parts {
                    let mut buf = [0u8; 2048];
                    let n = receiver.recv(&mut buf).unwrap();
                    assert_eq!(&buf[..n], &part[..], "bound to {bind}");
                }
            }
        }
    }

    /// Not a test: the CPU a GSO send of 44 datagrams of 1420 bytes costs the sending thread when
    /// the kernel gathers them from 44 buffers (`send_parts`) against one contiguous buffer
    /// (`send`, which the worker used after copying the datagrams into a staging buffer; that
    /// copy is included). Rounds alternate; prints thread CPU ns per GB for each way.
    /// `cargo test --release --lib gso_gather -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, prints numbers"]
    fn gso_gather_against_a_contiguous_copy() {
        fn thread_cpu() -> std::time::Duration {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime with a valid clock id and a live timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        }
        const SEGMENT: usize = 1420;
        const COUNT: usize = 44;
        const SENDS: usize = 20_000;
        let mut sender = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        if sender.max_gso_segments() < COUNT {
            println!("no UDP GSO here");
            return;
        }
        // A receiver that never reads: its queue fills and the kernel drops, as cheaply as it can.
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sink.local_addr().unwrap();
        let buffers: Vec<Vec<u8>> = (0..COUNT).map(|i| vec![i as u8; SEGMENT]).collect();
        let mut staging = Vec::with_capacity(COUNT * SEGMENT);
        let gb = (SENDS * COUNT * SEGMENT) as f64 / 1e9;
        for round in 0..5 {
            let start = thread_cpu();
            for _ in 0..SENDS {
                let parts: Vec<IoSlice<'_>> = buffers.iter().map(|b| IoSlice::new(b)).collect();
                let _ = sender.send_parts(to, &parts, SEGMENT);
            }
            let gather = thread_cpu() - start;
            let start = thread_cpu();
            for _ in 0..SENDS {
                staging.clear();
                for b in &buffers {
                    staging.extend_from_slice(b);
                }
                let _ = sender.send(to, &staging, Some(SEGMENT));
            }
            let contiguous = thread_cpu() - start;
            println!(
                "round {round}: gathered {:.3} s per GB, staging copy + contiguous {:.3} s per GB",
                gather.as_secs_f64() / gb,
                contiguous.as_secs_f64() / gb
            );
        }
    }

    #[test]
    fn without_steering_one_source_lands_on_one_socket() {
        let payloads: Vec<Vec<u8>> = (0..8).map(with_lane).collect();
        let got = receivers(2, false, &payloads);
        assert!(got.iter().all(|&s| s == got[0]), "{got:?}");
    }
}
