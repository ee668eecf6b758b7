//! The data-path workers: one thread per core, each owning a TAP queue and a UDP socket, all
//! sharing one node state machine.
//!
//! Owns the data path and nothing else: TAP reads and writes, UDP batches, the node's timers, and
//! sealing and opening. The node (sessions, switch, membership, timers) sits behind the data-path
//! lock ([`NodeLock`]). A worker takes it once per batch for the cheap decisions (FDB, session and
//! counter, replay window) and does the expensive work without it: reading and writing its own
//! TAP queue and socket, cutting super-frames, and the AEAD. Frames leave the node framed but
//! unsealed (`Node::poll_deferred_transmit`) and arrive as [`OpenJob`]s opened outside the lock,
//! so N workers seal and open in parallel.
//!
//! Invariants. No file I/O or fsync under the lock: what the node decided that needs the disk
//! (events) is taken under the lock and written after it is released (src/io/duties.rs), and the
//! invitations a join request needs are read before the lock is taken; src/io/node_lock.rs checks
//! it. Flows stay in order: the kernel hands all frames of one flow to one TAP queue (flow hash),
//! so one worker seals them. The node queues what a worker's input produced on that worker's lane
//! and each worker drains only its own (`Node::set_lane`), so no other worker sends part of the
//! flow at the same time. The worker writes its index in each datagram's lane byte, and receivers
//! with several workers steer by it ([`super::udp`]), so one worker opens them. With offloads, a
//! TAP read may be a 64 KiB TSO super-frame, cut into wire frames straight into pooled buffers
//! (the one copy: GSO sends gather the sealed buffers with iovecs), under a single lock of the
//! node per super-frame, and received TCP segments are coalesced back into one TAP write. Segments
//! to a peer that accepts it keep partial checksums, and received ones are written with
//! `NEEDS_CSUM` (or completed here for a plain TAP). Nothing on the data path allocates once pools
//! are warm.
//!
//! Each worker is a thread with its own wait loop over its two descriptors and a waker
//! ([`super::wait`]), no async runtime: the wake-up is the data path's latency floor. Signals, the control socket,
//! rescans of the state directory and of the host's addresses are not here: they are
//! [`super::duties`], on the main thread's tokio runtime, which wake worker 0 when they changed
//! the node. Any worker fires the node's timers (whichever armed them) and acts on its
//! events.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use quinn_udp::RecvMeta;
use std::os::fd::AsRawFd;
use tracing::{debug, warn};
use tun_rs::SyncDevice;

use super::duties;
use super::node_lock::NodeLock;
use super::state::StateDir;
use super::udp::{Udp, MAX_DATAGRAM};
use super::wait::{Readiness, Waker};
use super::RunError;
use crate::core::frames::{
    Coalescer, PartialChecksum, Segmenter, TapWrite, COALESCE_STAGING_LEN, MAX_SUPER_FRAME_LEN,
};
use crate::core::invite::JoinGate;
use crate::core::node::NodeEvent;
use crate::core::SegmentPlan;
use crate::core::{
    BufferPool, DeferredTransmit, Inbound, Node, OpenJob, PacketBuf, Received, Transmit,
};
use crate::wire::{
    EthernetFrame, GsoType, MessageType, VnetHdr, VnetHdrSize, DATA_OVERHEAD, RELAY_OVERHEAD,
    VNET_HDR_LEN,
};

/// Frames read from the TAP per wake-up before the worker looks at the socket again.
pub const TAP_BATCH: usize = 64;
/// recvmmsg batches handled per wake-up before the worker looks at the TAP again.
pub const UDP_BATCHES_PER_WAKE: usize = 8;
/// Datagrams per recvmmsg call.
const BATCH: usize = quinn_udp::BATCH_SIZE;
/// Largest payload of one GSO send (the kernel's limit for one UDP super-datagram is 64 KiB).
const GSO_MAX_BYTES: usize = 65_000;
/// Most datagrams in one GSO send (Linux's `UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;
/// Idle buffers a worker keeps for itself; the node's own pool is topped up from them.
const LOCAL_POOL_IDLE_MAX: usize = 1024;
/// Idle buffers the node's pool is kept at by the workers (floods and handshakes draw on it).
const NODE_POOL_TOP_UP: usize = 64;
/// Datagrams one GRO receive buffer may hold, so the per-batch job lists never reallocate.
const SEGMENTS_PER_BUFFER: usize = 64;

/// Failures and events of the io layer itself, reported beside the core's counters; shared by
/// all workers.
#[derive(Default)]
pub struct IoCounters {
    udp_send_errors: AtomicU64,
    udp_recv_errors: AtomicU64,
    udp_gso_restored: AtomicU64,
    tap_read_errors: AtomicU64,
    tap_write_errors: AtomicU64,
    tap_offload_errors: AtomicU64,
    tap_gso_reads: AtomicU64,
    tap_gro_writes: AtomicU64,
    /// The Docker plugin's requests and refusals (src/io/docker/).
    pub docker: Arc<crate::io::docker::PluginCounters>,
}

impl IoCounters {
    /// Every counter with the name status reports it under.
    pub fn report(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("io_udp_send_errors", &self.udp_send_errors),
            ("io_udp_gso_restored", &self.udp_gso_restored),
            ("io_udp_recv_errors", &self.udp_recv_errors),
            ("io_tap_read_errors", &self.tap_read_errors),
            ("io_tap_write_errors", &self.tap_write_errors),
            ("io_tap_offload_errors", &self.tap_offload_errors),
            ("io_tap_gso_reads", &self.tap_gso_reads),
            ("io_tap_gro_writes", &self.tap_gro_writes),
        ]
        .map(|(name, counter)| (name, counter.load(Relaxed)))
        .into_iter()
        .chain(self.docker.report())
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// Buffers of a TAP opened with offloads: where super-frames are read, and the receive coalescer.
struct TapOffload {
    read_staging: Vec<u8>,
    coalescer: Coalescer<Vec<u8>>,
}

/// Where one received data message sits in the receive buffers while it is opened.
struct RxJob {
    buffer: usize,
    start: usize,
    end: usize,
    job: OpenJob,
}

pub struct Worker {
    lane: u8,
    node: Arc<NodeLock>,
    state: Arc<Mutex<StateDir>>,
    /// What the worker waits on: its TAP queue, its socket, and its waker.
    readiness: Readiness,
    /// Wakes the worker from another thread: the duties wake worker 0 after changing the node,
    /// so what they queued on lane 0 leaves and the timer follows the node's new deadline.
    waker: Arc<Waker>,
    io: Arc<IoCounters>,
    tap: SyncDevice,
    udp: Udp,
    rx_bufs: Vec<Vec<u8>>,
    rx_meta: Vec<RecvMeta>,
    rx_jobs: Vec<RxJob>,
    /// Frames to write to the TAP: receive buffer, range, and where the checksum is still to be
    /// completed if the peer left it partial.
    rx_frames: Vec<(usize, usize, usize, Option<PartialChecksum>)>,
    /// Wire frames cut from the TAP, waiting for the node.
    tx_frames: Vec<PacketBuf>,
    /// What the node produced for this worker, taken under the lock.
    out: NodeOutput,
    /// Sealed datagrams waiting to be sent, in the node's order.
    outbox: VecDeque<Transmit>,
    /// Join replies to send, after their invitation was recorded as used.
    replies: Vec<(SocketAddr, Vec<u8>)>,
    pool: BufferPool,
    /// The node's cheap checks of a join request: only a request that passes them (length,
    /// version, type, mac1) makes the worker look at the invitations on disk.
    join_gate: JoinGate,
    /// The datagrams of one GSO send, held until the kernel has copied them.
    run: Vec<Transmit>,
    offload: Option<TapOffload>,
}

/// What a worker takes from the node under its lock and acts on after releasing it.
struct NodeOutput {
    /// Datagrams the node framed, waiting to be sealed, in the node's order.
    unsealed: VecDeque<DeferredTransmit>,
    /// Frames the node generated for the TAP (ICMP answers), waiting to be written.
    tap_out: Vec<PacketBuf>,
    /// What the node decided that needs the disk, taken under the lock, written after it.
    events: Vec<NodeEvent>,
    /// When the node's timers next need it.
    deadline: Option<Instant>,
    /// Taken under the lock that fed the node this turn (TAP reads, `finish_batch`, due timers),
    /// so `flush` need not take the lock again.
    fresh: bool,
}

impl NodeOutput {
    /// Takes what the node queued on `lane`, and keeps the node's own pool stocked from `pool`'s
    /// spare buffers, so floods and handshakes do not allocate while buffers circulate through the
    /// workers.
    fn take_from(&mut self, node: &mut Node, lane: u8, pool: &mut BufferPool) {
        self.fresh = true;
        while let Some(event) = node.poll_event() {
            self.events.push(event);
        }
        while let Some(frame) = node.poll_tap_frame() {
            self.tap_out.push(frame);
        }
        // Sealing is the expensive part; it happens in `send_outbox`, after the lock is dropped.
        while let Some(deferred) = node.poll_deferred_transmit(lane) {
            self.unsealed.push_back(deferred);
        }
        while node.idle_buffers() < NODE_POOL_TOP_UP && pool.idle() > NODE_POOL_TOP_UP {
            node.recycle(pool.take());
        }
        self.deadline = node.poll_timeout();
    }
}

impl Worker {
    /// Worker number `lane` of `node`, with the state directory its events are written to.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lane: u8,
        node: Arc<NodeLock>,
        state: Arc<Mutex<StateDir>>,
        io: Arc<IoCounters>,
        tap: SyncDevice,
        udp: Udp,
        offload: bool,
    ) -> io::Result<Worker> {
        tap.set_nonblocking(true)?;
        let waker = Arc::new(Waker::new()?);
        let readiness = Readiness::new(tap.as_raw_fd(), udp.as_raw_fd(), &waker);
        let (max_frame, buffer_frame, join_gate) = {
            let node = node.lock(lane);
            (node.max_frame(), node.buffer_frame_len(), node.join_gate())
        };
        let per_buf = if udp.gro_segments() > 1 {
            MAX_DATAGRAM
        } else {
            // A relayed datagram carries a whole inner datagram plus the relay envelope.
            max_frame + 2 * DATA_OVERHEAD + RELAY_OVERHEAD
        };
        let segments = BATCH * udp.gro_segments().clamp(1, SEGMENTS_PER_BUFFER);
        Ok(Worker {
            lane,
            node,
            state,
            readiness,
            waker,
            io,
            rx_bufs: (0..BATCH).map(|_| vec![0u8; per_buf]).collect(),
            rx_meta: vec![RecvMeta::default(); BATCH],
            rx_jobs: Vec::with_capacity(segments),
            rx_frames: Vec::with_capacity(segments),
            tx_frames: Vec::with_capacity(TAP_BATCH),
            out: NodeOutput {
                unsealed: VecDeque::with_capacity(4 * TAP_BATCH),
                tap_out: Vec::new(),
                events: Vec::new(),
                deadline: None,
                fresh: false,
            },
            outbox: VecDeque::with_capacity(4 * TAP_BATCH),
            replies: Vec::new(),
            pool: BufferPool::new(buffer_frame, LOCAL_POOL_IDLE_MAX),
            join_gate,
            tap,
            udp,
            run: Vec::with_capacity(MAX_GSO_SEGMENTS),
            offload: offload.then(|| TapOffload {
                read_staging: vec![0; VNET_HDR_LEN + MAX_SUPER_FRAME_LEN],
                coalescer: Coalescer::new(vec![0; COALESCE_STAGING_LEN], VnetHdrSize::Legacy),
            }),
        })
    }

    /// What wakes this worker from another thread (the duties hold worker 0's).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Runs for good (the daemon ends when the duties stop it), or until waiting on its
    /// descriptors fails.
    ///
    /// The loop waits on its two descriptors and its waker with `ppoll`, the node's next deadline
    /// as the timeout ([`super::wait`]), and reads a bounded batch from whichever is ready: one
    /// wait, one read and one send per packet when traffic is light. A tokio `select!` polled
    /// four futures and re-armed a timer on every turn; an edge-triggered loop has to read until
    /// a read finds nothing and wait once more in between.
    pub fn run(mut self) -> Result<(), RunError> {
        self.flush();
        loop {
            // A timer already due runs before the wait rather than after a zero-timeout one.
            if self.fire_due_timers() {
                self.flush();
            }
            let timeout = self
                .out
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            let ready = self
                .readiness
                .wait(timeout, &self.waker)
                .map_err(|e| RunError(format!("waiting for the TAP and UDP socket: {e}")))?;
            if ready.tap_failed {
                return Err(RunError(
                    "TAP device failed (detached or deleted under meshd)".into(),
                ));
            }
            self.fire_due_timers();
            if ready.tap {
                self.read_tap();
            }
            if ready.udp {
                self.read_udp();
            }
            // Also after a wake-up from the duties: it sends what they queued on this lane.
            self.flush();
        }
    }

    /// Runs the node's timers if their deadline has come, and takes what they produced; whether
    /// they ran.
    fn fire_due_timers(&mut self) -> bool {
        let now = Instant::now();
        if self.out.deadline.is_none_or(|d| d > now) {
            return false;
        }
        let mut node = self.node.lock(self.lane);
        node.handle_timeout(now);
        self.out.take_from(&mut node, self.lane, &mut self.pool);
        true
    }

    fn take_buffer(&mut self) -> PacketBuf {
        self.pool.take()
    }

    fn read_tap(&mut self) {
        if self.offload.is_some() {
            return self.read_tap_offload();
        }
        for _ in 0..TAP_BATCH {
            let mut buf = self.take_buffer();
            match self.tap.recv(buf.frame_area()) {
                Ok(n) => {
                    buf.set_frame_len(n);
                    self.tx_frames.push(buf);
                }
                Err(e) => {
                    self.pool.give(buf);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        bump(&self.io.tap_read_errors);
                        warn!(error = %e, "TAP read failed");
                    }
                    break;
                }
            }
        }
        self.hand_tap_frames(Instant::now());
    }

    /// Gives the frames read from the TAP to the node and takes what they produced, under one
    /// lock.
    fn hand_tap_frames(&mut self, now: Instant) {
        if self.tx_frames.is_empty() {
            return;
        }
        let mut node = self.node.lock(self.lane);
        for frame in self.tx_frames.drain(..) {
            node.handle_tap_frame(now, frame);
        }
        self.out.take_from(&mut node, self.lane, &mut self.pool);
    }

    /// Reads one super-frame behind its virtio-net header and cuts it into wire-sized frames.
    /// One per wake-up: a super-frame already fills a GSO send (up to 64 KiB), and sending it
    /// before trying the next read takes a system call off every packet's latency (RTT 16 µs
    /// lower, throughput unchanged, measured against 8 per wake-up). The TAP stays readable, so
    /// the next super-frame follows on the next turn of the loop.
    fn read_tap_offload(&mut self) {
        let Some(offload) = self.offload.as_mut() else {
            return;
        };
        let n = match self.tap.recv(&mut offload.read_staging) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    bump(&self.io.tap_read_errors);
                    warn!(error = %e, "TAP read failed");
                }
                return;
            }
        };
        let now = Instant::now();
        let read = &offload.read_staging[..n];
        let Ok(header) = VnetHdr::new_checked(read, VnetHdrSize::Legacy) else {
            bump(&self.io.tap_offload_errors);
            return;
        };
        let fields = header.fields();
        if fields.gso() != GsoType::None {
            bump(&self.io.tap_gso_reads);
        }
        // One lock for the whole super-frame: where it goes decides how it is cut (TCP segments
        // fit the path, so TCP never needs an ICMP round trip; checksums stay partial for a peer
        // that completes them), then the node switches the segments and hands back the datagrams.
        let mut node = self.node.lock(self.lane);
        let plan = match EthernetFrame::new_checked(header.frame()) {
            Ok(eth) => node.segment_plan(now, eth.dst()),
            Err(_) => SegmentPlan {
                max_frame: usize::MAX,
                partial_checksums: false,
            },
        };
        let mut segments = match Segmenter::with_max_frame(&fields, header.frame(), plan.max_frame)
        {
            Ok(s) if plan.partial_checksums => s.leave_checksums_partial(),
            Ok(s) => s,
            Err(e) => {
                bump(&self.io.tap_offload_errors);
                debug!(error = %e, "TAP super-frame not segmentable");
                return;
            }
        };
        let partial = segments.partial_checksum();
        let (pool, io) = (&mut self.pool, &*self.io);
        let cut = std::iter::from_fn(|| {
            let mut buf = pool.take();
            match segments.next_into(buf.frame_area()) {
                Ok(Some(len)) => {
                    buf.set_frame_len(len);
                    if let Some(at) = partial {
                        buf.set_partial_checksum(at);
                    }
                    Some(buf)
                }
                Ok(None) => {
                    pool.give(buf);
                    None
                }
                Err(e) => {
                    pool.give(buf);
                    bump(&io.tap_offload_errors);
                    debug!(error = %e, "TAP super-frame segmentation failed");
                    None
                }
            }
        });
        node.handle_tap_segments(now, cut);
        self.out.take_from(&mut node, self.lane, &mut self.pool);
    }

    /// Receives up to [`UDP_BATCHES_PER_WAKE`] batches, stopping after one that did not fill.
    fn read_udp(&mut self) {
        for _ in 0..UDP_BATCHES_PER_WAKE {
            let mut bufs = self.rx_bufs.iter_mut();
            let mut slices: [IoSliceMut<'_>; BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(bufs.next().expect("BATCH buffers")));
            let count = match self.udp.try_recv(&mut slices, &mut self.rx_meta) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    bump(&self.io.udp_recv_errors);
                    debug!(error = %e, "UDP receive failed");
                    return;
                }
            };
            let now = Instant::now();
            self.begin_batch(now, count);
            // The AEAD, outside the lock: other workers' batches go on meanwhile.
            for job in &mut self.rx_jobs {
                job.job
                    .open(&mut self.rx_bufs[job.buffer][job.start..job.end]);
            }
            self.finish_batch(now);
            self.write_received();
            if count < BATCH {
                // The socket had no more: asking again would only cost a receive that finds
                // nothing (the wait reports it readable again if more arrived meanwhile).
                return;
            }
            // Sends queued by handshakes or keepalives go out between batches, not after all.
            self.flush();
        }
    }

    /// The first half of a receive batch, under one lock: every datagram is checked, and data
    /// messages for live sessions become jobs to open. A join request in the batch that passed
    /// the cheap checks first has the invitations re-read, before the lock: `meshd invite` may
    /// have written one a moment ago. Anything else costs no file access.
    fn begin_batch(&mut self, now: Instant, count: usize) {
        let invites = if self.batch_has_join_request(count) {
            duties::lock_state(&self.state).invites_for_join(now)
        } else {
            None
        };
        let mut node = self.node.lock(self.lane);
        if let Some(pending) = invites {
            node.set_pending_invites(pending);
        }
        for i in 0..count {
            let meta = self.rx_meta[i];
            let stride = meta.stride.max(1);
            let buf = &mut self.rx_bufs[i][..meta.len];
            if buf.is_empty() {
                // A zero-length datagram is still a datagram: the core counts it as malformed.
                let _ = node.handle_datagram(now, meta.addr, buf);
                continue;
            }
            let mut start = 0;
            for segment in buf.chunks_mut(stride) {
                let end = start + segment.len();
                match node.begin_datagram(now, meta.addr, segment) {
                    Inbound::Open(job) => self.rx_jobs.push(RxJob {
                        buffer: i,
                        start,
                        end,
                        job,
                    }),
                    Inbound::Done(Received::Frame(range)) => {
                        self.rx_frames
                            .push((i, start + range.start, start + range.end, None))
                    }
                    Inbound::Done(Received::FramePartialChecksum(range, at)) => self
                        .rx_frames
                        .push((i, start + range.start, start + range.end, Some(at))),
                    Inbound::Done(Received::Nothing) => {}
                }
                start = end;
            }
        }
    }

    /// Whether any datagram of the batch is a join request that passed the [`JoinGate`] (length,
    /// version, type, mac1; no lock): a four-byte datagram of type JoinRequest is not one.
    fn batch_has_join_request(&self, count: usize) -> bool {
        let join = u8::from(MessageType::JoinRequest);
        self.rx_meta[..count]
            .iter()
            .zip(&self.rx_bufs)
            .any(|(meta, buf)| {
                buf[..meta.len].chunks(meta.stride.max(1)).any(|segment| {
                    segment.get(1) == Some(&join) && self.join_gate.check(segment).is_ok()
                })
            })
    }

    /// The second half, under one lock again: replay windows, MAC learning, delivery decisions;
    /// and what the batch produced is taken under the same lock.
    fn finish_batch(&mut self, now: Instant) {
        if self.rx_jobs.is_empty() {
            return;
        }
        let mut node = self.node.lock(self.lane);
        for RxJob {
            buffer,
            start,
            end,
            job,
        } in self.rx_jobs.drain(..)
        {
            let datagram = &mut self.rx_bufs[buffer][start..end];
            let (range, partial) = match node.finish_datagram(now, job, datagram) {
                Received::Frame(range) => (range, None),
                Received::FramePartialChecksum(range, at) => (range, Some(at)),
                Received::Nothing => continue,
            };
            self.rx_frames
                .push((buffer, start + range.start, start + range.end, partial));
        }
        self.out.take_from(&mut node, self.lane, &mut self.pool);
    }

    /// Writes the frames of a receive batch to this worker's TAP queue, coalescing TCP segments.
    /// A frame whose peer left its checksum partial goes to the kernel behind a `NEEDS_CSUM`
    /// header; without offloads it is completed here first.
    fn write_received(&mut self) {
        for (buffer, start, end, partial) in self.rx_frames.drain(..) {
            let frame = &mut self.rx_bufs[buffer][start..end];
            match self.offload.as_mut() {
                Some(offload) => {
                    let (tap, io) = (&self.tap, &*self.io);
                    offload
                        .coalescer
                        .push_with(frame, partial, |w| write_tap_vnet(tap, w, io));
                }
                None => {
                    if let Some(at) = partial {
                        at.complete(frame);
                    }
                    write_tap(&self.tap, frame, &self.io)
                }
            }
        }
        if let Some(offload) = self.offload.as_mut() {
            let (tap, io) = (&self.tap, &*self.io);
            offload.coalescer.flush(|w| write_tap_vnet(tap, w, io));
        }
    }

    /// Takes what the node queued (datagrams, generated frames, events) under one lock, then
    /// writes what the events need to the disk, seals and sends, all without it.
    fn flush(&mut self) {
        if !std::mem::take(&mut self.out.fresh) {
            let mut node = self.node.lock(self.lane);
            self.out.take_from(&mut node, self.lane, &mut self.pool);
            self.out.fresh = false;
        }
        duties::persist_events(&self.state, &mut self.out.events, &mut self.replies);
        self.write_generated_frames();
        let replies = std::mem::take(&mut self.replies);
        for (destination, reply) in &replies {
            send_counted(&mut self.udp, &self.io, *destination, reply);
        }
        self.replies = replies;
        self.replies.clear();
        self.send_outbox();
    }

    /// Writes the frames the node generated for the TAP (ICMP too-big answers to containers).
    fn write_generated_frames(&mut self) {
        let frames = std::mem::take(&mut self.out.tap_out);
        for frame in &frames {
            if self.offload.is_some() {
                // A plain frame behind an all-zero virtio-net header: no offload requested.
                let header = [0u8; VNET_HDR_LEN];
                let slices = [IoSlice::new(&header), IoSlice::new(frame.bytes())];
                if let Err(e) = self.tap.send_vectored(&slices) {
                    bump(&self.io.tap_write_errors);
                    debug!(error = %e, "TAP write failed");
                }
            } else {
                write_tap(&self.tap, frame.bytes(), &self.io);
            }
        }
        self.out.tap_out = frames;
        for frame in self.out.tap_out.drain(..) {
            self.pool.give(frame);
        }
    }

    /// Seals what the node framed and sends it. Runs of equal-sized datagrams to one destination
    /// (the common case under load: full-MTU frames to one peer) leave in one GSO send that the
    /// kernel gathers from their pooled buffers (`Udp::send_parts`), so a datagram is never
    /// copied in user space after sealing.
    fn send_outbox(&mut self) {
        let mut failed = 0;
        while let Some(deferred) = self.out.unsealed.pop_front() {
            match deferred.seal(self.lane) {
                Ok(transmit) => self.outbox.push_back(transmit),
                Err(buf) => {
                    failed += 1;
                    self.pool.give(buf);
                }
            }
        }
        if failed > 0 {
            let mut node = self.node.lock(self.lane);
            for _ in 0..failed {
                node.count_seal_failure();
            }
        }
        let max_segments = self.udp.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS);
        while let Some(first) = self.outbox.pop_front() {
            let destination = first.destination;
            let segment = first.packet.len();
            let continues_run =
                |t: &Transmit| t.destination == destination && t.packet.len() <= segment;
            if max_segments == 1 || !self.outbox.front().is_some_and(continues_run) {
                send_counted(&mut self.udp, &self.io, destination, first.packet.bytes());
                self.pool.give(first.packet);
                continue;
            }
            // The run's datagrams are gathered by the kernel from their own buffers: no
            // staging copy, one system call.
            self.run.clear();
            self.run.push(first);
            let mut bytes = segment;
            while self.run.len() < max_segments && bytes + segment <= GSO_MAX_BYTES {
                if !self.outbox.front().is_some_and(continues_run) {
                    break;
                }
                let t = self.outbox.pop_front().expect("peeked");
                let last = t.packet.len() < segment;
                bytes += t.packet.len();
                self.run.push(t);
                if last {
                    break;
                }
            }
            let mut parts: [IoSlice<'_>; MAX_GSO_SEGMENTS] =
                std::array::from_fn(|_| IoSlice::new(&[]));
            for (part, t) in parts.iter_mut().zip(&self.run) {
                *part = IoSlice::new(t.packet.bytes());
            }
            let parts = &parts[..self.run.len()];
            if let Err(e) = self.udp.send_parts(destination, parts, segment) {
                bump(&self.io.udp_send_errors);
                debug!(%destination, error = %e, "UDP send failed");
            }
            for t in self.run.drain(..) {
                self.pool.give(t.packet);
            }
        }
    }
}

/// Sends one datagram and counts a failure; the underlay refusing a send (no
/// route, a full queue) must not stop the worker.
fn send_counted(udp: &mut Udp, io: &IoCounters, destination: SocketAddr, contents: &[u8]) {
    let restored = udp.gso_restored;
    if let Err(e) = udp.send(destination, contents, None) {
        bump(&io.udp_send_errors);
        debug!(%destination, error = %e, "UDP send failed");
    }
    if udp.gso_restored != restored {
        bump(&io.udp_gso_restored);
    }
}

/// Writes one plain frame; like [`write_tap_vnet`], a write that would block drops the frame and
/// counts it.
fn write_tap(tap: &SyncDevice, frame: &[u8], io: &IoCounters) {
    if let Err(e) = tap.send(frame) {
        bump(&io.tap_write_errors);
        debug!(error = %e, "TAP write failed");
    }
}

/// Writes one frame or super-frame behind its virtio-net header. A TAP write does not block in
/// practice (the kernel queues it); if it would, the frame is dropped and counted rather than
/// stalling the batch.
fn write_tap_vnet(tap: &SyncDevice, write: TapWrite<'_>, io: &IoCounters) {
    let result = match write.contiguous() {
        Some(bytes) => tap.send(bytes),
        None => tap.send_vectored(&[
            IoSlice::new(write.vnet_header()),
            IoSlice::new(write.frame()),
        ]),
    };
    match result {
        Ok(_) if write.segments() > 1 => bump(&io.tap_gro_writes),
        Ok(_) => {}
        Err(e) => {
            bump(&io.tap_write_errors);
            debug!(error = %e, "TAP write failed");
        }
    }
}
