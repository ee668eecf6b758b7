//! Handshake floods against hosts that carry traffic: an attacker that knows the victims' public
//! keys (so its initiations pass mac1) but cannot receive at the addresses it sends from. The
//! victims must keep every session through rekeys past `REJECT_AFTER_TIME` and spend no DH work
//! on the flood once under load, and a real initiator under load must get a cookie and finish its
//! handshake with mac2.

use meshd::core::limit::{UNCHALLENGED_BURST, UNCHALLENGED_PER_SECOND};
use meshd::core::peer::REJECT_AFTER_TIME;

use super::*;

/// Distinct initiations the attacker cycles through per victim (each costs it one mac1).
const MESSAGES_PER_VICTIM: usize = 61;

/// An attacker that sends valid-mac1 initiations from spoofed addresses (none of them a host, so
/// whatever the victims answer is lost). Half carry an all-zero mac2, half a random one.
struct Attacker {
    /// Per victim host, the initiations to cycle through.
    messages: Vec<Vec<Vec<u8>>>,
    sources: Vec<SocketAddr>,
    next_message: usize,
    next_source: usize,
    /// Whether sources are picked at random (else in turn).
    jittered: bool,
    rng: NetRng,
    sent: Vec<u64>,
}

/// An initiation an outsider who knows the victim's public key can make: random contents (it
/// fails Noise: no member key behind it) with a valid mac1, and a zero mac2 when `zero_mac2`
/// (else random bytes there). Shared with the namespace flood test.
pub(crate) fn forged_initiation(
    mac1_key: &[u8; 32],
    rng: &mut CoreRng,
    zero_mac2: bool,
) -> Vec<u8> {
    let len = handshake_init_len(8 + 300);
    let mut msg = vec![0u8; len];
    rng.fill_bytes(&mut msg);
    msg[..4].copy_from_slice(&[1, 1, 0, 0]);
    let covered = len - 32;
    let mac = compute_mac1(mac1_key, &msg[..covered]);
    msg[covered..covered + 16].copy_from_slice(&mac);
    if zero_mac2 {
        msg[covered + 16..].fill(0);
    }
    msg
}

impl Attacker {
    fn new(victims: usize, sources: usize, jittered: bool, seed: u64) -> Attacker {
        let mut rng = CoreRng::from_seed([seed as u8; 32]);
        let messages = (0..victims)
            .map(|victim| {
                let key = mac1_key(&StaticSecret::from_bytes(secret(victim)).public_key());
                (0..MESSAGES_PER_VICTIM)
                    .map(|i| forged_initiation(&key, &mut rng, i % 2 == 0))
                    .collect()
            })
            .collect();
        let sources = (0..sources)
            .map(|i| SocketAddr::from(([198, 18, (i / 256) as u8, i as u8], 1024 + i as u16)))
            .collect();
        Attacker {
            messages,
            sources,
            next_message: 0,
            next_source: 0,
            jittered,
            rng: NetRng(seed | 1),
            sent: vec![0; victims],
        }
    }

    fn send(&mut self, sim: &mut Sim, victim: usize) {
        let source = if self.jittered {
            self.sources[self.rng.below(self.sources.len() as u64) as usize]
        } else {
            self.next_source = (self.next_source + 1) % self.sources.len();
            self.sources[self.next_source]
        };
        self.next_message = (self.next_message + 1) % MESSAGES_PER_VICTIM;
        let msg = self.messages[victim][self.next_message].clone();
        self.sent[victim] += 1;
        sim.deliver(victim, source, msg);
    }
}

/// Three hosts exchange a frame every 100 ms in each of the 6 directions for `duration`, while
/// each receives `rate` initiations per second from `sources` addresses (evenly spaced and in
/// turn, or a random number each millisecond from random sources when `jittered`). Asserts that
/// every peer view stays up and every frame arrives once, and that the flood cost no DH work
/// once the hosts were under load.
fn flood_while_exchanging(rate: u64, sources: usize, jittered: bool, seed: u64) {
    const HOSTS: usize = 3;
    let duration = Duration::from_secs(240);
    assert!(duration > REJECT_AFTER_TIME + Duration::from_secs(30));
    let mut sim = Sim::new(HOSTS, seed);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.all_up());
    let dh_before: Vec<u64> = (0..HOSTS)
        .map(|h| sim.counter(h, "rx_handshake_dh"))
        .collect();
    let mut attacker = Attacker::new(HOSTS, sources, jittered, seed);
    let per_ms = rate / 1000;
    let mut frames_sent = 0u64;
    let millis = duration.as_millis() as u64;
    for ms in 0..millis {
        if ms % 100 == 0 {
            for a in 0..HOSTS {
                for b in (0..HOSTS).filter(|&b| b != a) {
                    sim.send_frame(a, &frame(mac(b, 1), mac(a, 1), ms / 100, 200));
                }
            }
            frames_sent += 1;
        }
        if ms % 1000 == 0 {
            assert!(sim.all_up(), "a peer view went down at {} s", ms / 1000);
        }
        for victim in 0..HOSTS {
            let count = if jittered {
                sim.net.below(2 * per_ms + 1)
            } else {
                per_ms
            };
            for _ in 0..count {
                attacker.send(&mut sim, victim);
            }
        }
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_for(Duration::from_millis(500));
    assert!(sim.all_up(), "every peer view is up at the end");

    for b in 0..HOSTS {
        for a in (0..HOSTS).filter(|&a| a != b) {
            let mut seen: Vec<u64> = sim.hosts[b]
                .delivered
                .iter()
                .filter(|f| f[..6] == mac(b, 1) && f[6..12] == mac(a, 1))
                .map(|f| seq_of(f))
                .collect();
            let n = seen.len();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), n, "host {b} received duplicates from {a}");
            assert_eq!(
                seen,
                (0..frames_sent).collect::<Vec<_>>(),
                "host {b} lost frames from {a}"
            );
        }
    }

    // The flood's random Noise never decrypts, so each of its initiations that got DH work
    // failed there. Only those before the host noticed the load may have: the unchallenged
    // bucket's burst, plus what it refilled while the flood drained it.
    let drain = UNCHALLENGED_BURST as f64 / (rate - UNCHALLENGED_PER_SECOND) as f64;
    let before_load = UNCHALLENGED_BURST + (UNCHALLENGED_PER_SECOND as f64 * drain).ceil() as u64;
    for (h, dh_before) in dh_before.into_iter().enumerate() {
        let flood_dh = sim.counter(h, "rx_handshake_failed");
        let dh = sim.counter(h, "rx_handshake_dh") - dh_before;
        let challenged = sim.counter(h, "tx_cookie_replies");
        let completed = sim.counter(h, "handshakes_completed");
        eprintln!(
            "host {h}: flood {} initiations, {flood_dh} got DH, {challenged} cookie replies; \
             {dh} responder DH in all, {} with mac2, {} cookies received, {completed} handshakes",
            attacker.sent[h],
            sim.counter(h, "rx_handshake_mac2"),
            sim.counter(h, "rx_cookie_replies"),
        );
        assert!(
            flood_dh <= before_load,
            "host {h}: the flood cost DH only before the load was noticed ({flood_dh} > {before_load})"
        );
        assert!(
            dh <= flood_dh + completed,
            "host {h}: every other DH completed a real handshake"
        );
        assert!(
            challenged + flood_dh + sim.counter(h, "rx_handshake_ratelimited") >= attacker.sent[h],
            "host {h}: every flood initiation was challenged, limited or failed"
        );
    }
    // The rekeys themselves went through the cookie exchange (each host is the initiator of some
    // of its sessions and the responder of others, so this holds for the three together).
    assert!(sim.total("rx_handshake_mac2") >= 1);
    assert!(sim.total("rx_cookie_replies") >= 1);
    assert_eq!(sim.total("rx_bad_cookie_reply"), 0);
}

#[test]
fn flood_of_1000_per_second_from_64_sources_takes_no_session_down() {
    flood_while_exchanging(1000, 64, false, 141);
}

#[test]
fn flood_of_3000_per_second_from_256_jittered_sources_takes_no_session_down() {
    flood_while_exchanging(3000, 256, true, 142);
}

#[test]
fn an_initiator_under_load_gets_a_cookie_and_completes_with_mac2() {
    let mut sim = Sim::new(2, 143);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.all_up());
    // Host 1 restarts while host 0 is flooded: its first initiation (mac2 all zero, as every node
    // sends without a cookie) is answered with a cookie, and a later one carries mac2.
    let mut attacker = Attacker::new(1, 64, false, 143);
    for ms in 0..10_000 {
        if ms == 1000 {
            sim.restart(1, 1143);
        }
        attacker.send(&mut sim, 0);
        attacker.send(&mut sim, 0);
        sim.run_for(Duration::from_millis(1));
    }
    assert!(
        sim.all_up(),
        "the restarted host is back up under the flood"
    );
    assert!(sim.counter(1, "rx_cookie_replies") >= 1);
    assert_eq!(sim.counter(1, "rx_bad_cookie_reply"), 0);
    assert!(sim.counter(0, "rx_handshake_mac2") >= 1);
    assert!(sim.counter(0, "tx_cookie_replies") >= 19_000);
    assert!(sim.counter(0, "rx_handshake_failed") <= 2 * UNCHALLENGED_BURST);
    exchange(&mut sim, 0, 1, 20, Duration::from_millis(10));
}

#[test]
fn a_cookie_reply_for_no_pending_initiation_is_dropped() {
    let mut sim = Sim::new(2, 144);
    sim.run_for(Duration::from_secs(1));
    let mut reply = vec![0u8; meshd::wire::COOKIE_REPLY_LEN];
    reply[..4].copy_from_slice(&[1, 3, 0, 0]);
    let from = sim.hosts[1].addr;
    let (unknown, malformed) = (
        sim.counter(0, "rx_unknown_index"),
        sim.counter(0, "rx_malformed"),
    );
    sim.deliver(0, from, reply.clone());
    sim.deliver(0, from, reply[..40].to_vec());
    assert_eq!(sim.counter(0, "rx_unknown_index"), unknown + 1);
    assert_eq!(sim.counter(0, "rx_malformed"), malformed + 1);
    assert_eq!(sim.counter(0, "rx_cookie_replies"), 0);
    exchange(&mut sim, 0, 1, 5, Duration::from_millis(10));
}
