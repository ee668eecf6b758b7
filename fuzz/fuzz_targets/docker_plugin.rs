//! The Docker plugin's request handling: arbitrary (path, body) pairs through `Plugin::handle`,
//! which parses them (src/wire/docker.rs) and dispatches them to the network and IPAM handlers,
//! over a host that keeps addresses and veth pairs in memory (no I/O). The first byte picks one of
//! the protocol's paths (or, past the table, takes the path from the input) so bodies reach every
//! handler. Invariants: no panic; every answer is a JSON object; a refusal is a 400, 404 or 500
//! with a non-empty `Err`; an IPv4 address handed out is an assignable address of the host's
//! range, and no two live owners ever hold the same one.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use meshd::core::ranges::{first_free_address, ContainerNetwork, HostNetwork, Range4};
use meshd::io::docker::{Plugin, PluginCounters, PluginHost};
use meshd::io::veth::VethNames;
use meshd::wire::docker::METHODS;

#[derive(Default)]
struct MemoryHost {
    addresses: Mutex<BTreeMap<Ipv4Addr, String>>,
    veths: Mutex<BTreeSet<String>>,
    next: Mutex<u64>,
}

impl PluginHost for MemoryHost {
    async fn allocate(
        &self,
        range: Range4,
        owner: String,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, String> {
        let mut addresses = self.addresses.lock().unwrap();
        let addr = match wanted {
            Some(a) if !range.is_assignable(a) => return Err(format!("{a} not assignable")),
            Some(a) if addresses.contains_key(&a) => return Err(format!("{a} in use")),
            Some(a) => a,
            None => first_free_address(&range, |a| addresses.contains_key(&a))
                .ok_or("exhausted")?,
        };
        assert!(range.is_assignable(addr), "handed out {addr} outside {range}");
        addresses.insert(addr, owner);
        Ok(addr)
    }

    async fn release(&self, addr: Ipv4Addr) -> Result<bool, String> {
        Ok(self.addresses.lock().unwrap().remove(&addr).is_some())
    }

    async fn create_veth(
        &self,
        names: VethNames,
        _bridge: String,
        _mtu: u16,
        _mac: [u8; 6],
    ) -> io::Result<()> {
        assert!(names.host.len() <= 15 && names.peer.len() <= 15);
        if self.veths.lock().unwrap().insert(names.host) {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"))
        }
    }

    async fn delete_veth(&self, host_name: String) -> io::Result<bool> {
        Ok(self.veths.lock().unwrap().remove(&host_name))
    }

    fn random(&self) -> u64 {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        *next
    }
}

fn host_network() -> HostNetwork {
    let network = ContainerNetwork::new(
        "10.77.0.0/16".parse().unwrap(),
        24,
        Some("fd77::/48".parse().unwrap()),
    )
    .unwrap();
    let range = network.range(3).unwrap();
    HostNetwork::new(&network, range, network.range6_for(&range), "br0".into(), 1400).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (path, body) = match METHODS.get(usize::from(selector)) {
        Some((path, _)) => (path.to_string(), rest),
        None => {
            // A raw path: up to the first NUL, the body after it.
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let path = String::from_utf8_lossy(&rest[..end]).into_owned();
            (path, rest.get(end + 1..).unwrap_or_default())
        }
    };
    let (_tx, rx) = tokio::sync::watch::channel(Some(host_network()));
    let plugin = Plugin::new(MemoryHost::default(), rx, Arc::new(PluginCounters::default()));
    // Twice, so a second request meets the state the first one left (leases, endpoints).
    for _ in 0..2 {
        let reply = futures::executor::block_on(plugin.handle(&path, body));
        let value: serde_json::Value =
            serde_json::from_slice(&reply.body).expect("every answer is JSON");
        assert!(value.is_object(), "{value}");
        match reply.status {
            200 => {}
            400 | 404 | 500 => {
                let err = value["Err"].as_str().expect("a refusal has Err");
                assert!(!err.is_empty());
            }
            other => panic!("unexpected status {other}"),
        }
    }
});
