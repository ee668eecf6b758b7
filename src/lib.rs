//! meshd: a userspace encrypted Layer-2 mesh VPN.
//!
//! The crate is split by who may touch the operating system. `wire` parses and emits untrusted bytes
//! through checked views; `core` holds every protocol state machine and is sans-IO (time and bytes come
//! in as arguments, transmits and frames go out through queues); `config`, `status` and `cli` turn
//! files, state and arguments into values; only `io` opens devices and sockets, reads clocks and talks
//! netlink. `cni` (the `meshd-cni` plugin) and `attach` (`meshd attach`/`detach`) put containers and
//! namespaces on the container network through `io::plug`.

pub mod attach;
pub mod cli;
pub mod cni;
pub mod config;
pub mod core;
pub mod enroll;
pub mod io;
pub mod status;
#[cfg(test)]
mod test_support;
pub mod wire;
