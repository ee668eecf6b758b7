//! Membership against a hostile member (issue 14), on the virtual network of `gossip.rs`: a
//! member cannot evict another with a forged foca update, cannot make its own revocation
//! unrepairable by signing its record at the top of the version space, and a revocation lives
//! as long as the newest certificate of its key.
//!
//! Each attack is the one that worked before the fix, replayed against real `Membership`
//! state machines; the assertions are the properties the fix restores. Printed numbers are
//! virtual time and bytes.

use std::time::Duration;

use foca::{Codec as _, Header, Member, Message, State};
use meshd::core::membership::{
    member_item, revocation_expiry, MemberId, MemberRecord, MemberState, Revocation, WireCodec,
    ANTI_ENTROPY_INTERVAL, MAX_RECORD_VERSION, PAGE_UNSOLICITED, SUBTYPE_FOCA, SUBTYPE_RECORDS,
};

use super::gossip::{addr, network, secret, secs, HostSpec, Net, DAY};

/// The member the attacks are about.
const VICTIM: usize = 5;
/// The member that forges.
const ATTACKER: usize = 3;
/// The one host the forged update is sent to.
const TARGET: usize = 0;

/// A foca Gossip packet (membership payload, subtype included) from host `from` to host `to`,
/// carrying one member update about `about`, as host `from` could send it inside its session.
fn forged_update(net: &Net, from: usize, to: usize, about: MemberId, state: State) -> Vec<u8> {
    let header = Header {
        src: net.hosts[from].m.identity(),
        src_incarnation: 0,
        dst: net.hosts[to].m.identity(),
        message: Message::Gossip,
    };
    let mut codec = WireCodec;
    let mut payload = vec![SUBTYPE_FOCA];
    codec.encode_header(&header, &mut payload).unwrap();
    payload.extend_from_slice(&1u16.to_be_bytes());
    codec
        .encode_member(&Member::new(about, 0, state), &mut payload)
        .unwrap();
    payload
}

/// Delivers `payload` to host `to` as if host `from` had sent it inside their session.
fn deliver(net: &mut Net, from: usize, to: usize, payload: &[u8]) {
    let (key, now) = (net.hosts[from].key, net.now);
    net.hosts[to].m.handle_message(now, key, payload);
    net.drain(to);
}

/// An unsolicited records page holding `items`.
fn records_page(items: &[Vec<u8>]) -> Vec<u8> {
    let mut page = vec![SUBTYPE_RECORDS, PAGE_UNSOLICITED];
    page.extend_from_slice(&[0; 32]);
    for item in items {
        page.extend_from_slice(&(item.len() as u16).to_le_bytes());
        page.extend_from_slice(item);
    }
    page
}

/// The 10-member mesh of the report, converged and settled (every session made).
fn converged_mesh() -> Net {
    let mut net = Net::mesh(10, 0x14);
    net.run_until(Duration::from_secs(60), Net::converged)
        .expect("10 members converge");
    net.run_for(Duration::from_secs(60));
    assert!(net.converged());
    net
}

/// Runs `net` for `window` in steps of one second; returns the fewest other hosts that
/// reported `member` up at the end of any step.
fn watch(net: &mut Net, member: usize, window: Duration) -> usize {
    let key = net.hosts[member].key;
    let mut fewest = usize::MAX;
    for _ in 0..window.as_secs() {
        net.run_for(Duration::from_secs(1));
        let up = net
            .alive()
            .filter(|(i, h)| *i != member && h.up.contains(&key))
            .count();
        fewest = fewest.min(up);
    }
    fewest
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------------- (a) forged updates

/// The reported attack: one foca Gossip message from member 3 to one host, "member 5,
/// generation u32::MAX, down". Before, no host kept member 5 up after 10 s, member 5 rejoined
/// about 43 times a second for good, and gossip traffic rose 36x. Now the update is dropped
/// (the generation is not the one member 5 signed) and counted, and nothing else happens.
#[test]
fn a_forged_down_at_generation_max_evicts_nobody() {
    let window = Duration::from_secs(300);
    let mut control = converged_mesh();
    let mut attacked = converged_mesh();
    assert_eq!(
        control.bytes_sent, attacked.bytes_sent,
        "the two runs are the same run until the attack"
    );
    let (control_before, attacked_before) = (control.bytes_sent, attacked.bytes_sent);
    let victim_key = attacked.hosts[VICTIM].key;
    let generation = attacked.hosts[VICTIM].m.identity().generation;

    let forged = forged_update(
        &attacked,
        ATTACKER,
        TARGET,
        MemberId {
            key: victim_key,
            generation: u32::MAX,
        },
        State::Down,
    );
    deliver(&mut attacked, ATTACKER, TARGET, &forged);
    assert_eq!(
        attacked.counter(TARGET, "updates_wrong_generation"),
        1,
        "the forged update is dropped and counted"
    );

    // Before the fix every host had dropped member 5 within 10 s; watch 30 times as long.
    let fewest = watch(&mut attacked, VICTIM, window);
    watch(&mut control, VICTIM, window);
    assert_eq!(
        fewest, 9,
        "member 5 stayed up at every other host, every second"
    );
    assert!(attacked.converged());
    assert_eq!(
        attacked.hosts[VICTIM].m.identity().generation,
        generation,
        "member 5 never had to rejoin"
    );
    for (i, h) in attacked.alive() {
        let row = h.m.members(attacked.now);
        let state = row.iter().find(|r| r.key == victim_key).map(|r| r.state);
        assert_eq!(state, Some(MemberState::Alive), "host {i}");
    }
    assert_eq!(attacked.total("updates_wrong_generation"), 1);

    let attacked_bytes = attacked.bytes_sent - attacked_before;
    let control_bytes = control.bytes_sent - control_before;
    println!(
        "gossip hardening: forged down at u32::MAX: {attacked_bytes} B of gossip in {} s, {control_bytes} B without it",
        window.as_secs()
    );
    assert!(
        attacked_bytes <= control_bytes + control_bytes / 10,
        "no refutation storm: {attacked_bytes} B against {control_bytes} B"
    );
}

/// The same forgery in every form: to every host (the victim itself included), at u32::MAX,
/// at the generation a rejoin would take next and at an older one. Only the generation in the
/// victim's signed record counts anywhere. At that generation an update is SWIM's own word (a
/// member may say another is down, threat-model.md): the victim refutes with one rejoin under
/// a generation it signs and is back everywhere within seconds, without a storm.
#[test]
fn only_the_signed_generation_counts_and_a_true_generation_costs_one_rejoin() {
    let mut net = converged_mesh();
    let victim_key = net.hosts[VICTIM].key;
    let generation = net.hosts[VICTIM].m.identity().generation;
    let mut sent = 0;
    for to in (0..net.hosts.len()).filter(|&to| to != ATTACKER) {
        for (g, state) in [
            (u32::MAX, State::Down),
            (generation + 1, State::Down),
            (generation - 1, State::Suspect),
        ] {
            let about = MemberId {
                key: victim_key,
                generation: g,
            };
            let forged = forged_update(&net, ATTACKER, to, about, state);
            deliver(&mut net, ATTACKER, to, &forged);
            sent += 1;
        }
    }
    assert_eq!(watch(&mut net, VICTIM, Duration::from_secs(60)), 9);
    assert_eq!(net.total("updates_wrong_generation"), sent);
    assert_eq!(net.hosts[VICTIM].m.identity().generation, generation);

    // Down at the true generation, to one host.
    let about = MemberId {
        key: victim_key,
        generation,
    };
    let forged = forged_update(&net, ATTACKER, TARGET, about, State::Down);
    deliver(&mut net, ATTACKER, TARGET, &forged);
    let back = net
        .run_until(Duration::from_secs(60), |net| {
            net.hosts[VICTIM].m.identity().generation > generation && net.converged()
        })
        .expect("the victim rejoins and is back everywhere");
    println!(
        "gossip hardening: down at the true generation: victim back at all after {:.1} s",
        secs(back)
    );
    assert!(back < Duration::from_secs(20), "took {back:?}");
    net.run_for(Duration::from_secs(60));
    assert!(net.converged());
    assert_eq!(
        net.hosts[VICTIM].m.identity().generation,
        generation + 1,
        "exactly one rejoin"
    );
}

// ------------------------------------------------------- (b) revocation against u64::MAX

const BAD: usize = 7;
const MISSED: usize = 4;

/// How a repair went: how long it took after the broadcast was over, and the anti-entropy
/// work that brought it (index entries host 4 wanted, revocations pushed to anyone) at the
/// start and at the end.
struct Repair {
    took: Option<Duration>,
    anti_entropy: (u64, u64),
}

fn anti_entropy_work(net: &Net) -> u64 {
    net.counter(MISSED, "index_keys_wanted") + net.total("revocations_pushed")
}

/// Member 7 signs its own record at `version` and gives it to everyone else; then an admin
/// revokes it while host 4 loses every message carrying the revocation for 30 s (the whole
/// broadcast). Returns the net and how the repair of host 4 went after that.
fn repair_after_a_record_at(version: u64, seed: u64) -> (Net, Repair) {
    let mut net = Net::new(seed);
    net.add(HostSpec {
        admin: true,
        ..HostSpec::default()
    });
    for _ in 1..10 {
        net.add(HostSpec::default());
    }
    net.bootstrap_all();
    net.run_until(Duration::from_secs(60), Net::converged)
        .expect("converged");
    net.run_for(Duration::from_secs(30));

    let bad_key = net.hosts[BAD].key;
    let cert = net.hosts[BAD].cert.clone();
    let record = MemberRecord::sign(
        &secret(BAD).signing_key(),
        &network().network_id(),
        bad_key,
        net.hosts[BAD].m.identity().generation,
        version,
        cert.issued_at,
        &[addr(BAD)],
    )
    .unwrap();
    let page = records_page(&[member_item(&cert, &record)]);
    for to in (0..net.hosts.len()).filter(|&to| to != BAD) {
        deliver(&mut net, BAD, to, &page);
    }
    net.run_for(Duration::from_secs(5));

    let unix = net.unix();
    let revocation =
        Revocation::issue(&network(), bad_key, "host-7", unix, unix + 30 * DAY).unwrap();
    let needle = revocation.encode();
    let cut_until = net.now + Duration::from_secs(30);
    net.drop_filter = Some(Box::new(move |now, to, payload| {
        to == MISSED && now < cut_until && contains(payload, &needle)
    }));
    let now = net.now;
    net.hosts[0].m.revoke(now, revocation).unwrap();
    net.drain(0);
    net.run_until(Duration::from_secs(30), |net| {
        net.alive()
            .filter(|(i, _)| *i != BAD && *i != MISSED)
            .all(|(_, h)| h.m.is_revoked(&bad_key))
    })
    .expect("the revocation reaches every other member");
    net.run_for(cut_until.saturating_duration_since(net.now));
    assert!(
        !net.hosts[MISSED].m.is_revoked(&bad_key),
        "host 4 missed the broadcast"
    );
    let work_before = anti_entropy_work(&net);
    let took = net.run_until(Duration::from_secs(300), |net| {
        net.hosts[MISSED].m.is_revoked(&bad_key) && !net.hosts[MISSED].up.contains(&bad_key)
    });
    let anti_entropy = (work_before, anti_entropy_work(&net));
    (net, Repair { took, anti_entropy })
}

/// Anti-entropy runs every 60 s plus up to 15 s of jitter at each member, and repair takes a
/// round from either side: two intervals are a generous bound.
fn repair_bound() -> Duration {
    2 * (ANTI_ENTROPY_INTERVAL + ANTI_ENTROPY_INTERVAL / 4)
}

fn assert_repaired(net: &mut Net, repair: Repair, what: &str) {
    let bad_key = net.hosts[BAD].key;
    let took = repair
        .took
        .unwrap_or_else(|| panic!("{what}: host 4 was never repaired"));
    println!(
        "gossip hardening: {what}: host 4 learned the missed revocation by anti-entropy after {:.1} s",
        secs(took)
    );
    assert!(took <= repair_bound(), "{what}: took {took:?}");
    let (work_before, work_after) = repair.anti_entropy;
    assert!(work_after > work_before, "{what}: repaired by anti-entropy");
    // It refuses the member from then on: its newest record too.
    let before = net.counter(MISSED, "record_revoked");
    let cert = net.hosts[BAD].cert.clone();
    let record = MemberRecord::sign(
        &secret(BAD).signing_key(),
        &network().network_id(),
        bad_key,
        net.hosts[BAD].m.identity().generation,
        net.hosts[BAD].m.record_version() + 1,
        cert.issued_at,
        &[addr(BAD)],
    )
    .unwrap();
    let page = records_page(&[member_item(&cert, &record)]);
    // Relayed by another member: the revoked one itself is not even listened to.
    deliver(net, 1, MISSED, &page);
    assert_eq!(net.counter(MISSED, "record_revoked"), before + 1, "{what}");
    net.run_for(Duration::from_secs(30));
    for (i, h) in net.alive().filter(|(i, _)| *i != BAD) {
        assert!(h.m.is_revoked(&bad_key), "{what}: host {i}");
        assert!(!h.up.contains(&bad_key), "{what}: host {i}");
    }
}

/// The reported attack: the record at u64::MAX hashed and indexed exactly as a revocation, so
/// host 4 (holding that record) matched every digest and was never repaired. Such a record is
/// now refused (`record_version_invalid`), and the revocation reaches host 4 within a bounded
/// time.
#[test]
fn a_record_at_u64_max_cannot_hide_a_missed_revocation() {
    let (mut net, repair) = repair_after_a_record_at(u64::MAX, 0x1402);
    assert_repaired(&mut net, repair, "record at u64::MAX");
    assert_eq!(
        net.total("record_version_invalid"),
        9,
        "every member refused the record at u64::MAX"
    );
}

/// The highest version a record may carry is taken, and still loses to the revocation in
/// every comparison (digest, index, what is newer).
#[test]
fn a_revocation_outranks_a_record_at_the_highest_version() {
    let (mut net, repair) = repair_after_a_record_at(MAX_RECORD_VERSION, 0x1403);
    assert_repaired(&mut net, repair, "record at MAX_RECORD_VERSION");
    assert_eq!(
        net.total("record_version_invalid"),
        0,
        "the record was taken"
    );
}

// ------------------------------------------------------------ (c) revocation lifetime

/// Member 7 holds a certificate for 40 minutes; the admin issues certificates for 10. The
/// expiry an admin now writes into a revocation is the newest certificate's (not now + its own
/// lifetime), and a revocation written the old way is still kept by every member until that
/// certificate expires: before, it lapsed after 10 minutes and member 7 came back for 30.
#[test]
fn a_revocation_lives_as_long_as_the_newest_certificate_of_its_key() {
    let admin_lifetime = Duration::from_secs(10 * 60);
    let mut net = Net::new(0x1404);
    net.add(HostSpec {
        admin: true,
        cert_lifetime: admin_lifetime,
    });
    for i in 1..10 {
        net.add(HostSpec {
            admin: false,
            cert_lifetime: if i == BAD {
                Duration::from_secs(40 * 60)
            } else {
                HostSpec::default().cert_lifetime
            },
        });
    }
    net.bootstrap_all();
    net.run_until(Duration::from_secs(60), Net::converged)
        .expect("converged");
    let bad_key = net.hosts[BAD].key;
    let cert_expiry = net.hosts[BAD].cert.expires_at;
    let unix = net.unix();

    // What `meshd revoke` writes: the newest certificate the admin's table shows for the key.
    let newest = net.hosts[0]
        .m
        .members(net.now)
        .into_iter()
        .find(|r| r.key == bad_key)
        .map(|r| r.cert_expires_at);
    assert_eq!(newest, Some(cert_expiry));
    assert_eq!(
        revocation_expiry(unix, admin_lifetime, newest),
        cert_expiry,
        "the revocation expires with the newest certificate"
    );
    assert_eq!(
        revocation_expiry(unix, admin_lifetime, Some(unix + 60)),
        unix + admin_lifetime.as_secs(),
        "and never before now + the admin's certificate lifetime"
    );

    // A revocation written the old way: now + the admin's lifetime.
    let short = unix + admin_lifetime.as_secs();
    let revocation = Revocation::issue(&network(), bad_key, "host-7", unix, short).unwrap();
    let now = net.now;
    net.hosts[0].m.revoke(now, revocation).unwrap();
    net.drain(0);
    net.run_until(Duration::from_secs(30), |net| {
        net.alive()
            .filter(|(i, _)| *i != BAD)
            .all(|(_, h)| h.m.is_revoked(&bad_key))
    })
    .expect("the revocation reaches every member");
    for (i, h) in net.alive().filter(|(i, _)| *i != BAD) {
        let row = h.m.members(net.now).into_iter().find(|r| r.key == bad_key);
        let row = row.unwrap_or_else(|| panic!("host {i} lists the revoked key"));
        assert_eq!(row.state, MemberState::Revoked, "host {i}");
        assert_eq!(
            row.cert_expires_at, cert_expiry,
            "host {i} keeps it as long"
        );
        assert!(net.counter(i, "revocation_extended") >= 1, "host {i}");
    }

    // Past the revocation's own expiry, and up to the certificate's: still refused everywhere,
    // though member 7 keeps running and gossiping.
    let past_short = Duration::from_secs(short - net.unix() + 60);
    net.run_for(past_short);
    loop {
        for (i, h) in net.alive().filter(|(i, _)| *i != BAD) {
            assert!(h.m.is_revoked(&bad_key), "host {i} at {}", net.unix());
            assert!(!h.up.contains(&bad_key), "host {i} at {}", net.unix());
        }
        if net.unix() + 60 >= cert_expiry {
            break;
        }
        net.run_for(Duration::from_secs(60));
    }
    assert_eq!(net.total("revocations_expired"), 0);

    // After the certificate expired, the revocation may go: the certificate is refused anyway.
    net.run_for(Duration::from_secs(cert_expiry + 120 - net.unix()));
    for (i, h) in net.alive().filter(|(i, _)| *i != BAD) {
        assert!(!h.m.is_revoked(&bad_key), "host {i} dropped the revocation");
        assert!(
            !h.up.contains(&bad_key),
            "host {i} does not take member 7 back"
        );
    }
    assert!(net.converged_except(BAD));
}
