//! Raw Ethernet frames from inside a container: AF_PACKET sockets for frames `ip`/`ping` cannot make
//! (802.1Q-tagged frames on kernels without the 8021q module, gratuitous ARP after a container move, a
//! rogue's flood) and for sniffing everything that reaches a container's eth0.
//!
//! Must be used from a thread that already entered the container's namespace (see `nsthread`): the
//! interface index is looked up in the caller's namespace. Receive calls time out after `RECV_TICK` so
//! callers can enforce their own deadline.

use std::ffi::CString;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const RECV_TICK: Duration = Duration::from_millis(200);
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IEEE 802 "local experimental" EtherType: nothing in the kernel consumes it.
pub const ETHERTYPE_EXPERIMENTAL: u16 = 0x88b5;

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

pub fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    assert_eq!(parts.len(), 6, "MAC {text:?} must have 6 octets");
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).unwrap_or_else(|e| panic!("MAC {text:?}: {e}"));
    }
    mac
}

/// A frame as read from a packet socket, with the VLAN tag the kernel may have moved out of the data.
pub struct Received {
    pub data: Vec<u8>,
    /// Tag control information reported in PACKET_AUXDATA (the kernel strips tags on receive).
    pub aux_vlan_tci: Option<u16>,
}

impl Received {
    /// (VLAN id, inner EtherType, payload) whether the tag is still inline or was reported out of band.
    pub fn vlan_view(&self) -> Option<(u16, u16, &[u8])> {
        let d = &self.data;
        if d.len() < 14 {
            return None;
        }
        let outer = u16::from_be_bytes([d[12], d[13]]);
        if outer == ETHERTYPE_VLAN && d.len() >= 18 {
            let tci = u16::from_be_bytes([d[14], d[15]]);
            return Some((tci & 0x0fff, u16::from_be_bytes([d[16], d[17]]), &d[18..]));
        }
        self.aux_vlan_tci.map(|tci| (tci & 0x0fff, outer, &d[14..]))
    }
}

pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a packet socket on `ifname`. `receive_all` subscribes to every EtherType (and asks for
    /// VLAN aux data); otherwise the socket only sends.
    pub fn open(ifname: &str, receive_all: bool) -> Result<PacketSocket, String> {
        let cname = CString::new(ifname).map_err(|e| e.to_string())?;
        // SAFETY: cname is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(os_error(&format!("if_nametoindex({ifname})")));
        }
        let protocol = if receive_all {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        // SAFETY: plain syscall; the result is checked before being wrapped.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        if raw < 0 {
            return Err(os_error("socket(AF_PACKET)"));
        }
        // SAFETY: raw is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = PacketSocket {
            fd,
            ifindex: ifindex as i32,
        };
        if receive_all {
            sock.bind(protocol)?;
            sock.set_int_opt(libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: RECV_TICK.as_micros() as libc::suseconds_t,
            };
            // SAFETY: tv is a valid timeval for the duration of the call.
            let rc = unsafe {
                libc::setsockopt(
                    sock.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(os_error("setsockopt(SO_RCVTIMEO)"));
            }
        }
        Ok(sock)
    }

    fn link_addr(&self, protocol_be: u16) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol_be;
        addr.sll_ifindex = self.ifindex;
        addr
    }

    fn bind(&self, protocol_be: u16) -> Result<(), String> {
        let addr = self.link_addr(protocol_be);
        // SAFETY: addr is a valid sockaddr_ll and the length matches.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(os_error("bind(AF_PACKET)"));
        }
        Ok(())
    }

    fn set_int_opt(&self, level: i32, name: i32, value: i32) -> Result<(), String> {
        // SAFETY: value lives for the duration of the call and the length matches.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&value as *const i32).cast(),
                mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(os_error("setsockopt"));
        }
        Ok(())
    }

    /// Sends one complete Ethernet frame (header included) out of the interface.
    pub fn send(&self, frame: &[u8]) -> Result<(), String> {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let addr = self.link_addr(ethertype.to_be());
        // SAFETY: frame and addr are valid for the given lengths.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_error("sendto(AF_PACKET)"));
        }
        Ok(())
    }

    /// Receives one frame; `Ok(None)` when nothing arrived within one receive tick.
    pub fn recv(&self) -> Result<Option<Received>, String> {
        let mut data = vec![0u8; 65536];
        // u64 elements keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is valid before we fill in the pointers.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        // SAFETY: every pointer in msg refers to live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Ok(None),
                _ if err.raw_os_error() == Some(libc::EINTR) => Ok(None),
                _ => Err(format!("recvmsg(AF_PACKET): {err}")),
            };
        }
        data.truncate(n as usize);
        let mut aux_vlan_tci = None;
        // SAFETY: the kernel filled msg's control area; the CMSG_* walkers stay within msg_controllen,
        // and the aux data is read unaligned into a plain struct.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET
                    && (*cmsg).cmsg_type == libc::PACKET_AUXDATA
                {
                    let aux: libc::tpacket_auxdata =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                        aux_vlan_tci = Some(aux.tp_vlan_tci);
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(Some(Received { data, aux_vlan_tci }))
    }
}

/// An Ethernet frame carrying an 802.1Q tag with VLAN id `vid`.
pub fn tagged_frame(
    dst: [u8; 6],
    src: [u8; 6],
    vid: u16,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(18 + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An untagged Ethernet frame.
pub fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len().max(46));
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame.resize(frame.len().max(60), 0);
    frame
}

/// Source MAC of a frame, if it is long enough to have one.
pub fn source_mac(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(6..12)?.try_into().ok()
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A broadcast ARP request from (`mac`, `sender`) asking who has `target`.
pub fn arp_request(
    mac: [u8; 6],
    sender: std::net::Ipv4Addr,
    target: std::net::Ipv4Addr,
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&1u16.to_be_bytes()); // request
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame.resize(60, 0);
    frame
}

/// A gratuitous ARP request announcing that `ip` is at `mac`, as hypervisors and container runtimes
/// send after a move so switches relearn the MAC's new port.
pub fn gratuitous_arp(mac: [u8; 6], ip: std::net::Ipv4Addr) -> Vec<u8> {
    arp_request(mac, ip, ip)
}
