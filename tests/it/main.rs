//! The single integration-test crate of meshd. Each scenario family lives in its own module so the
//! crate links once: `netns` drives the real `meshd` binary across network namespaces (needs root).

mod containers;
mod gossip;
mod gossip_hardening;
mod netns;
mod sim;
