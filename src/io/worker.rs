//! The data-path worker: the one owner of a node, its TAP queue and its UDP socket.
//!
//! Each wake-up handles a batch: up to `TAP_BATCH` frames from the TAP or a recvmmsg batch of
//! datagrams (with GRO, one buffer may hold many), then flushes what the core queued. Frames
//! received from peers are decrypted in place inside the receive buffer and written to the TAP
//! from there; frames read from the TAP are encrypted in place inside their pooled buffer. Nothing
//! on this path allocates once the pool is warm.
//!
//! With `offload`, the TAP carries a virtio-net header on every read and write. A read may be a
//! 64 KiB TSO super-frame: it is cut into wire-sized frames straight into pooled buffers (the one
//! copy). Frames received from peers go through a coalescer that merges in-order segments of a TCP
//! flow back into a super-frame, so the TAP is written once per flow burst rather than per frame.

use std::io::{self, IoSlice, IoSliceMut};
use std::time::Instant;

use quinn_udp::RecvMeta;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use tun_rs::AsyncDevice;

use super::control::ControlRequest;
use super::state::{StateDir, RESCAN_INTERVAL};
use super::udp::{Udp, MAX_DATAGRAM};
use super::RunError;
use crate::core::node::NodeEvent;
use crate::core::offload::{
    Coalescer, Segmenter, TapWrite, COALESCE_STAGING_LEN, MAX_SUPER_FRAME_LEN,
};
use crate::core::{Node, Received};
use crate::status::{InterfaceStatus, NodeStatus};
use crate::wire::{
    EthernetFrame, GsoType, MessageType, VnetHdr, VnetHdrSize, DATA_OVERHEAD, RELAY_OVERHEAD,
    VNET_HDR_LEN,
};

/// Frames read from the TAP per wake-up before the worker looks at the socket again.
pub const TAP_BATCH: usize = 64;
/// Super-frames (up to 45 wire frames each) read per wake-up with offloads on.
pub const TAP_OFFLOAD_BATCH: usize = 8;
/// recvmmsg batches handled per wake-up before the worker looks at the TAP again.
pub const UDP_BATCHES_PER_WAKE: usize = 8;
/// Datagrams per recvmmsg call.
const BATCH: usize = quinn_udp::BATCH_SIZE;
/// Largest payload of one GSO send (the kernel's limit for one UDP super-datagram is 64 KiB).
const GSO_MAX_BYTES: usize = 65_000;

/// What status needs that the core does not know.
pub struct StaticInfo {
    pub name: String,
    pub listen: String,
    pub interface: InterfaceStatus,
    pub started: Instant,
}

/// Failures of the io layer itself, reported beside the core's counters.
#[derive(Default)]
struct IoCounters {
    udp_send_errors: u64,
    udp_recv_errors: u64,
    tap_read_errors: u64,
    tap_write_errors: u64,
    tap_offload_errors: u64,
    tap_gso_reads: u64,
    tap_gro_writes: u64,
}

/// Buffers of a TAP opened with offloads: where super-frames are read, and the receive coalescer.
struct TapOffload {
    read_staging: Vec<u8>,
    coalescer: Coalescer<Vec<u8>>,
}

pub struct Worker {
    node: Node,
    tap: AsyncDevice,
    udp: Udp,
    info: StaticInfo,
    rx_bufs: Vec<Vec<u8>>,
    rx_meta: Vec<RecvMeta>,
    io_counters: IoCounters,
    gso_buf: Vec<u8>,
    offload: Option<TapOffload>,
    state: StateDir,
    /// The wildcard listen address whose port is advertised on every host address, when the
    /// config does not name the addresses to advertise; they are re-read as the host changes.
    auto_advertise: Option<std::net::SocketAddr>,
    next_address_scan: Instant,
}

/// How often the host's addresses are re-read for automatic advertising.
const ADDRESS_SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl Worker {
    pub fn new(
        node: Node,
        tap: AsyncDevice,
        udp: Udp,
        info: StaticInfo,
        offload: bool,
        state: StateDir,
        auto_advertise: Option<std::net::SocketAddr>,
    ) -> Worker {
        let per_buf = if udp.gro_segments() > 1 {
            MAX_DATAGRAM
        } else {
            // A relayed datagram carries a whole inner datagram plus the relay envelope.
            node.max_frame() + 2 * DATA_OVERHEAD + RELAY_OVERHEAD
        };
        Worker {
            rx_bufs: (0..BATCH).map(|_| vec![0u8; per_buf]).collect(),
            rx_meta: vec![RecvMeta::default(); BATCH],
            node,
            tap,
            udp,
            info,
            io_counters: IoCounters::default(),
            state,
            auto_advertise,
            next_address_scan: Instant::now() + ADDRESS_SCAN_INTERVAL,
            gso_buf: Vec::with_capacity(GSO_MAX_BYTES + 2048),
            offload: offload.then(|| TapOffload {
                read_staging: vec![0; VNET_HDR_LEN + MAX_SUPER_FRAME_LEN],
                coalescer: Coalescer::new(vec![0; COALESCE_STAGING_LEN], VnetHdrSize::Legacy),
            }),
        }
    }

    pub async fn run(
        mut self,
        mut control: mpsc::Receiver<ControlRequest>,
    ) -> Result<(), RunError> {
        let mut sigterm = signal(SignalKind::terminate())
            .map_err(|e| RunError(format!("installing SIGTERM handler: {e}")))?;
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| RunError(format!("installing SIGINT handler: {e}")))?;
        let timer = tokio::time::sleep_until(Instant::now().into());
        tokio::pin!(timer);
        let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.node.handle_timeout(Instant::now());
        self.flush().await;
        loop {
            if let Some(deadline) = self.node.poll_timeout() {
                timer.as_mut().reset(deadline.into());
            }
            tokio::select! {
                _ = sigterm.recv() => { info!("SIGTERM received, shutting down"); return Ok(()) }
                _ = sigint.recv() => { info!("SIGINT received, shutting down"); return Ok(()) }
                r = self.tap.readable() => {
                    r.map_err(|e| RunError(format!("TAP device failed: {e}")))?;
                    self.read_tap();
                }
                r = self.udp.readable() => {
                    r.map_err(|e| RunError(format!("UDP socket failed: {e}")))?;
                    self.read_udp().await;
                }
                _ = &mut timer => {
                    self.node.handle_timeout(Instant::now());
                }
                Some(request) = control.recv() => self.answer(request),
                _ = rescan.tick() => {
                    let now = Instant::now();
                    self.state.refresh(&mut self.node);
                    self.state.refresh_revocations(now, &mut self.node);
                    self.state.remember_members(now, &self.node);
                    self.rescan_addresses(now);
                }
            }
            self.handle_events().await;
            self.flush().await;
        }
    }

    fn read_tap(&mut self) {
        if self.offload.is_some() {
            return self.read_tap_offload();
        }
        let now = Instant::now();
        for _ in 0..TAP_BATCH {
            let mut buf = self.node.take_buffer();
            match self.tap.try_recv(buf.frame_area()) {
                Ok(n) => {
                    buf.set_frame_len(n);
                    self.node.handle_tap_frame(now, buf);
                }
                Err(e) => {
                    self.node.recycle(buf);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.io_counters.tap_read_errors += 1;
                        warn!(error = %e, "TAP read failed");
                    }
                    return;
                }
            }
        }
    }

    /// Reads super-frames behind their virtio-net header and cuts each into wire-sized frames.
    fn read_tap_offload(&mut self) {
        let now = Instant::now();
        let Some(offload) = self.offload.as_mut() else {
            return;
        };
        for _ in 0..TAP_OFFLOAD_BATCH {
            let n = match self.tap.try_recv(&mut offload.read_staging) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.io_counters.tap_read_errors += 1;
                        warn!(error = %e, "TAP read failed");
                    }
                    return;
                }
            };
            let read = &offload.read_staging[..n];
            let Ok(header) = VnetHdr::new_checked(read, VnetHdrSize::Legacy) else {
                self.io_counters.tap_offload_errors += 1;
                continue;
            };
            let fields = header.fields();
            if fields.gso() != GsoType::None {
                self.io_counters.tap_gso_reads += 1;
            }
            // TCP super-frames are cut to fit the path to where they go, so TCP never needs an
            // ICMP round trip; anything else too big is answered by the node.
            let max_frame = EthernetFrame::new_checked(header.frame())
                .map_or(usize::MAX, |eth| self.node.frame_limit_for(now, eth.dst()));
            let mut segments = match Segmenter::with_max_frame(&fields, header.frame(), max_frame) {
                Ok(s) => s,
                Err(e) => {
                    self.io_counters.tap_offload_errors += 1;
                    debug!(error = %e, "TAP super-frame not segmentable");
                    continue;
                }
            };
            loop {
                let mut buf = self.node.take_buffer();
                match segments.next_into(buf.frame_area()) {
                    Ok(Some(len)) => {
                        buf.set_frame_len(len);
                        self.node.handle_tap_frame(now, buf);
                    }
                    Ok(None) => {
                        self.node.recycle(buf);
                        break;
                    }
                    Err(e) => {
                        self.node.recycle(buf);
                        self.io_counters.tap_offload_errors += 1;
                        debug!(error = %e, "TAP super-frame segmentation failed");
                        break;
                    }
                }
            }
        }
    }

    async fn read_udp(&mut self) {
        for _ in 0..UDP_BATCHES_PER_WAKE {
            let mut bufs = self.rx_bufs.iter_mut();
            let mut slices: [IoSliceMut<'_>; BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(bufs.next().expect("BATCH buffers")));
            let count = match self.udp.try_recv(&mut slices, &mut self.rx_meta) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    self.io_counters.udp_recv_errors += 1;
                    debug!(error = %e, "UDP receive failed");
                    return;
                }
            };
            let now = Instant::now();
            for i in 0..count {
                let meta = self.rx_meta[i];
                let stride = meta.stride.max(1);
                let buf = &mut self.rx_bufs[i][..meta.len];
                if buf.is_empty() {
                    // A zero-length datagram is still a datagram: the core counts it as malformed.
                    let _ = self.node.handle_datagram(now, meta.addr, buf);
                    continue;
                }
                for segment in buf.chunks_mut(stride) {
                    if segment.get(1) == Some(&u8::from(MessageType::JoinRequest)) {
                        // `meshd invite` may have written the invitation a moment ago.
                        self.state.refresh_for_join(now, &mut self.node);
                    }
                    if let Received::Frame(range) =
                        self.node.handle_datagram(now, meta.addr, segment)
                    {
                        match self.offload.as_mut() {
                            Some(offload) => {
                                let (tap, counters) = (&self.tap, &mut self.io_counters);
                                offload
                                    .coalescer
                                    .push(&segment[range], |w| write_tap_vnet(tap, w, counters));
                            }
                            None => {
                                write_tap(&self.tap, &segment[range], &mut self.io_counters).await
                            }
                        }
                    }
                }
            }
            if let Some(offload) = self.offload.as_mut() {
                let (tap, counters) = (&self.tap, &mut self.io_counters);
                offload
                    .coalescer
                    .flush(|w| write_tap_vnet(tap, w, counters));
            }
            // Sends queued by handshakes or keepalives go out between batches, not after all.
            self.flush().await;
        }
    }

    /// Re-reads the host's addresses (automatic advertising only), so a host that was given a
    /// new address tells the members where to find it.
    fn rescan_addresses(&mut self, now: Instant) {
        let Some(listen) = self.auto_advertise else {
            return;
        };
        if now < self.next_address_scan {
            return;
        }
        self.next_address_scan = now + ADDRESS_SCAN_INTERVAL;
        let endpoints = crate::enroll::advertised_endpoints(&[], listen);
        if !endpoints.is_empty() {
            self.node.set_advertise(endpoints);
        }
    }

    /// Writes the frames the node generated for the TAP (ICMP too-big answers to containers).
    async fn write_generated_frames(&mut self) {
        while let Some(frame) = self.node.poll_tap_frame() {
            if self.offload.is_some() {
                // A plain frame behind an all-zero virtio-net header: no offload requested.
                let header = [0u8; VNET_HDR_LEN];
                let slices = [IoSlice::new(&header), IoSlice::new(frame.bytes())];
                if let Err(e) = self.tap.try_send_vectored(&slices) {
                    self.io_counters.tap_write_errors += 1;
                    debug!(error = %e, "TAP write failed");
                }
            } else {
                write_tap(&self.tap, frame.bytes(), &mut self.io_counters).await;
            }
            self.node.recycle(frame);
        }
    }

    /// Sends everything the core queued. Runs of equal-sized datagrams to one destination (the
    /// common case under load: full-MTU frames to one peer) are coalesced into one GSO send; a lone
    /// datagram goes straight from its pooled buffer, without the staging copy.
    async fn flush(&mut self) {
        self.write_generated_frames().await;
        let max_segments = self.udp.max_gso_segments().max(1);
        while let Some(first) = self.node.poll_transmit() {
            let destination = first.destination;
            let segment = first.packet.len();
            let continues_run = |t: &crate::core::Transmit| {
                t.destination == destination && t.packet.len() <= segment
            };
            if max_segments == 1 || !self.node.peek_transmit().is_some_and(continues_run) {
                send_counted(
                    &mut self.udp,
                    &mut self.io_counters,
                    destination,
                    first.packet.bytes(),
                    None,
                )
                .await;
                self.node.recycle(first.packet);
                continue;
            }
            self.gso_buf.clear();
            self.gso_buf.extend_from_slice(first.packet.bytes());
            self.node.recycle(first.packet);
            let mut segments = 1;
            while segments < max_segments && self.gso_buf.len() + segment <= GSO_MAX_BYTES {
                if !self.node.peek_transmit().is_some_and(continues_run) {
                    break;
                }
                let t = self.node.poll_transmit().expect("peeked");
                let last = t.packet.len() < segment;
                self.gso_buf.extend_from_slice(t.packet.bytes());
                self.node.recycle(t.packet);
                segments += 1;
                if last {
                    break;
                }
            }
            let segment_size = (segments > 1).then_some(segment);
            send_counted(
                &mut self.udp,
                &mut self.io_counters,
                destination,
                &self.gso_buf,
                segment_size,
            )
            .await;
        }
    }

    /// Acts on what the core decided that needs the disk: an admitted join is recorded as used
    /// before its reply is sent (if recording fails the reply is withheld; the joiner retries).
    async fn handle_events(&mut self) {
        while let Some(event) = self.node.poll_event() {
            match event {
                NodeEvent::JoinAdmitted {
                    invite_id,
                    name,
                    key,
                    reply,
                    destination,
                } => {
                    if let Err(e) =
                        super::invites::mark_used(self.state.root(), &invite_id, &name, &key)
                    {
                        warn!(%name, error = %e, "cannot record the invitation as used; not answering the join");
                        continue;
                    }
                    send_counted(
                        &mut self.udp,
                        &mut self.io_counters,
                        destination,
                        &reply,
                        None,
                    )
                    .await;
                }
                NodeEvent::Revoked(revocation) => self.state.persist_revocation(&revocation),
                NodeEvent::CertificateRenewed(certificate) => {
                    self.state.persist_certificate(&certificate)
                }
            }
        }
    }

    fn answer(&mut self, request: ControlRequest) {
        match request {
            ControlRequest::Status(reply) => {
                let now = Instant::now();
                let core = self.node.status(now);
                let mut counters = core.counters;
                let io = &self.io_counters;
                for (k, v) in [
                    ("io_udp_send_errors", io.udp_send_errors),
                    ("io_udp_gso_restored", self.udp.gso_restored),
                    ("io_udp_recv_errors", io.udp_recv_errors),
                    ("io_tap_read_errors", io.tap_read_errors),
                    ("io_tap_write_errors", io.tap_write_errors),
                    ("io_tap_offload_errors", io.tap_offload_errors),
                    ("io_tap_gso_reads", io.tap_gso_reads),
                    ("io_tap_gro_writes", io.tap_gro_writes),
                ] {
                    counters.insert(k.to_string(), v);
                }
                let _ = reply.send(NodeStatus {
                    name: self.info.name.clone(),
                    public_key: core.public_key,
                    listen: self.info.listen.clone(),
                    interface: self.info.interface.clone(),
                    uptime_secs: now.duration_since(self.info.started).as_secs(),
                    network: core.network,
                    certificate_expires: core.certificate_expires,
                    members: core.members,
                    peers: core.peers,
                    fdb: core.fdb,
                    counters,
                });
            }
        }
    }
}

/// Sends one datagram (or a GSO run) and counts a failure; the underlay refusing a send (no
/// route, a full queue) must not stop the worker.
async fn send_counted(
    udp: &mut Udp,
    counters: &mut IoCounters,
    destination: std::net::SocketAddr,
    contents: &[u8],
    segment_size: Option<usize>,
) {
    if let Err(e) = udp.send(destination, contents, segment_size).await {
        counters.udp_send_errors += 1;
        debug!(%destination, error = %e, "UDP send failed");
    }
}

async fn write_tap(tap: &AsyncDevice, frame: &[u8], counters: &mut IoCounters) {
    let result = match tap.try_send(frame) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => tap.send(frame).await,
        other => other,
    };
    if let Err(e) = result {
        counters.tap_write_errors += 1;
        debug!(error = %e, "TAP write failed");
    }
}

/// Writes one frame or super-frame behind its virtio-net header. A TAP write does not block in
/// practice (the kernel queues it); if it would, the frame is dropped and counted rather than
/// stalling the batch.
fn write_tap_vnet(tap: &AsyncDevice, write: TapWrite<'_>, counters: &mut IoCounters) {
    let result = match write.contiguous() {
        Some(bytes) => tap.try_send(bytes),
        None => tap.try_send_vectored(&[
            IoSlice::new(write.vnet_header()),
            IoSlice::new(write.frame()),
        ]),
    };
    match result {
        Ok(_) if write.segments() > 1 => counters.tap_gro_writes += 1,
        Ok(_) => {}
        Err(e) => {
            counters.tap_write_errors += 1;
            debug!(error = %e, "TAP write failed");
        }
    }
}
