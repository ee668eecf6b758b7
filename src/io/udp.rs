//! The underlay UDP socket: batched receives (recvmmsg, GRO) and sends through quinn-udp.
//!
//! The socket is created with SO_REUSEPORT so that later one socket per worker can share the port,
//! and with large kernel buffers so bursts are absorbed by the kernel rather than dropped.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Kernel socket buffer size requested in each direction.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Largest UDP payload that can arrive in one datagram.
pub const MAX_DATAGRAM: usize = 65535;

/// Sizes the kernel buffers. With CAP_NET_ADMIN (which meshd needs for the TAP anyway) the
/// FORCE variants go past `net.core.rmem_max`, whose default (208 KiB) drops bursts at line rate;
/// without it the plain options apply, capped by the sysctl, which only costs burst room.
fn size_buffers(socket: &std::net::UdpSocket, state: &UdpSocketState) {
    use std::os::fd::AsRawFd;
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
    state: UdpSocketState,
    /// Datagrams per GSO send the kernel offered when the socket was made.
    gso_segments_at_start: usize,
    /// GSO sends turned off by quinn-udp and turned back on here (see `send`).
    pub gso_restored: u64,
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
        let std_socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new((&std_socket).into())?;
        size_buffers(&std_socket, &state);
        Ok(Udp {
            gso_segments_at_start: state.max_gso_segments(),
            socket: UdpSocket::from_std(std_socket)?,
            state,
            gso_restored: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams the kernel may coalesce into one receive buffer.
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Receives a batch without blocking; `Ok(0)` means nothing was ready.
    pub fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        match self.socket.try_io(Interest::READABLE, || {
            self.state.recv((&self.socket).into(), bufs, meta)
        }) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Datagrams one segmentation-offload send may carry (1 without UDP GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends `contents` as one datagram, or with `segment_size` as several datagrams of that size
    /// (the last may be shorter) in one system call, waiting for socket room if the buffer is full.
    pub async fn send(
        &mut self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let result = self.send_once(destination, contents, segment_size).await;
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

    async fn send_once(
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
        loop {
            match self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            }) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }
}
