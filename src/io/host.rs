//! The host as the daemon and the CLI see it: the addresses of its interfaces.
//!
//! Owns the `getifaddrs` call. Invariant: it is a system call that walks every interface, so the
//! daemon makes it without holding the node (src/io/duties.rs gathers the addresses first, then
//! takes the lock only to hand the resulting endpoints over); the choice of what to advertise
//! from them is `crate::enroll::advertised_endpoints`, which takes them as input.

use std::net::{IpAddr, SocketAddr};

/// Addresses of this host's interfaces that other hosts may reach it on: every address that is
/// up, not loopback, not unspecified and not IPv6 link-local, each once, in the kernel's order.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a linked list we only read and free with freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
                continue;
            }
            let ip = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            };
            let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            if !ip.is_loopback() && !ip.is_unspecified() && !link_local_v6 && !out.contains(&ip) {
                out.push(ip);
            }
        }
        libc::freeifaddrs(list);
    }
    out
}

/// The endpoints to advertise for `advertise` and `listen` (see
/// `crate::enroll::advertised_endpoints`), reading the host's addresses only when they are needed.
pub fn advertised_endpoints(advertise: &[SocketAddr], listen: SocketAddr) -> Vec<SocketAddr> {
    let local = if crate::enroll::needs_local_addresses(advertise, listen) {
        local_addresses()
    } else {
        Vec::new()
    };
    crate::enroll::advertised_endpoints(advertise, listen, &local)
}
