//! Containers across hosts (issue 13): hosts in network namespaces joined by meshd, each holding an
//! address range of the network's container subnet, with containers plugged in by the Docker
//! plugin, `meshd-cni` or `meshd attach`. [`hosts::MeshHosts`] is the shared set-up; each module
//! holds the tests of one way in. Needs root (skips with a message otherwise; fails instead when
//! `CI=true`).

mod attach;
pub mod cni;
mod docker;
mod dockerd;
mod flood;
pub mod hosts;
mod podman;
mod ranges;
