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

pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
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
        // Best effort: an unprivileged kernel limit may cap these, which only costs burst room.
        let _ = state.set_recv_buffer_size((&std_socket).into(), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size((&std_socket).into(), SOCKET_BUFFER_BYTES);
        Ok(Udp {
            socket: UdpSocket::from_std(std_socket)?,
            state,
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

    /// Sends one datagram, waiting for socket room if the kernel buffer is full.
    pub async fn send(&self, destination: SocketAddr, contents: &[u8]) -> io::Result<()> {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
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
