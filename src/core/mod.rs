//! The sans-IO core: every protocol state machine of a node, driven by `(now, bytes)`.
//!
//! Nothing in here reads a clock, the OS random source or a socket; the `io` layer owns those and feeds
//! their results in. That keeps every behaviour reproducible under a virtual clock in tests.

pub mod buffer;
pub mod cipher;
pub mod clock;
pub mod cookie;
pub mod counters;
pub mod frames;
pub mod guard;
pub mod invite;
pub mod limit;
pub mod membership;
pub mod node;
pub mod peer;
pub mod pmtu;
pub mod ranges;
pub mod switch;

pub use buffer::{BufferPool, PacketBuf};
pub use counters::Counters;
pub use node::{
    DeferredTransmit, Inbound, Node, NodeConfig, NodeSnapshot, OpenJob, PeerSpec, Received,
    SegmentPlan, Transmit,
};
