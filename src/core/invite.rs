//! Admission by invitation, sans-IO: the inviter's [`InviteBook`] and the new node's
//! [`JoinClient`], driven by `(now, bytes)` like the rest of the core.
//!
//! The exchange (docs/protocol.md, "Joining"): the joiner sends a JoinRequest carrying a Noise IK
//! initiation to the inviter key pinned in its token (prologue [`JOIN_PROLOGUE`]); the payload
//! holds the invite secret, its signing key, the name it wants and its endpoints. The inviter
//! answers with a JoinResponse whose Noise payload holds the certificate it issued and some
//! bootstrap members, or with an unauthenticated JoinRefused naming a reason.
//!
//! [`InviteBook`] owns the inviter's view of its invitations: the pending ones the io layer read
//! from disk (only the secret's hash, never the secret) and, in memory, the ones used since start
//! with the key and certificate they went to. Invariants: it checks cheapest first and does no
//! Diffie-Hellman work for a request that fails mac1, names another network, reaches a non-admin,
//! or names an unknown, expired or (beyond the resend window) used invitation; the secret is
//! compared in constant time; an invitation admits exactly one key: the same key retrying within
//! [`RESEND_WINDOW_SECS`] gets the same certificate again, any other key is refused; a used id stays
//! refused whatever list [`InviteBook::set_pending`] is handed later; every drop and refusal is
//! counted in [`JoinCounters`]. The handshake rate limit is the node's: it calls
//! `HandshakeLimiter::allow` before [`InviteBook::handle_request`].
//!
//! [`JoinClient`] owns one join attempt of a new node. Invariants: it talks only to the pinned
//! inviter key; it accepts a response only if mac1 (keyed by its own key, which only the inviter
//! learned) and Noise verify against one of its recent requests, and it returns a certificate only
//! after checking it names the token's network, its own keys and the requested name; replies for
//! other invitations and garbage are ignored and counted; a refusal for its invitation is final.
//! Nothing here reads a clock or the OS random source: time comes in as Unix seconds, randomness
//! from a [`CoreRng`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use meshd_crypto::{
    compute_mac1, mac1_key, respond, valid_member_name, verify_mac1, CertError, Certificate,
    CoreRng, CryptoError, Initiator, NetworkId, NetworkSecret, PublicKey, SigningPublicKey,
    StaticSecret,
};
use zeroize::Zeroizing;

use crate::wire::{
    classify, constant_time_eq, emit_join_refused, invite_id, InviteId, InviteToken, JoinRefused,
    JoinRequest, JoinResponse, MessageType, RefusalReason, RequestPayload, ResponsePayload,
    WireError, JOIN_REFUSED_LEN, MAX_JOIN_ENDPOINTS, MAX_RESPONSE_PAYLOAD,
};

pub use crate::wire::BootstrapMember;

/// The Noise prologue of the join handshake; differs from the data handshake's, so neither
/// message can be replayed as the other.
pub const JOIN_PROLOGUE: &[u8] = b"meshd join v1";
/// How long after admitting a key the inviter re-sends the same certificate to it (a lost reply).
pub const RESEND_WINDOW_SECS: u64 = 600;
/// How many of its recent requests a client can match a response against (one per retry).
pub const MAX_OUTSTANDING_REQUESTS: usize = 16;
/// How often `meshd join` re-sends its request while no answer came.
pub const JOIN_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// When `meshd join` gives up ([`JoinError::NoAnswer`]).
pub const JOIN_GIVE_UP_AFTER: Duration = Duration::from_secs(15);

/// What the inviter keeps about an invitation it handed out: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInvite {
    /// The first 16 bytes of `secret_hash`: how requests name the invitation in the clear.
    pub id: InviteId,
    /// SHA-256 of the secret.
    pub secret_hash: [u8; 32],
    /// Unix seconds; requests at or after this are refused.
    pub expires_at: u64,
    /// The only name this invitation may be used for, if any.
    pub name: Option<String>,
}

impl PendingInvite {
    /// Whether `id` is the first 16 bytes of `secret_hash`, as it must be.
    pub fn is_consistent(&self) -> bool {
        self.id == invite_id(&self.secret_hash)
    }
}

macro_rules! join_counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Monotonic counters of the join exchange; the inviter uses the `rx_` ones, a client the
        /// `reply_` ones. Names are stable (status and metrics labels).
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct JoinCounters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl JoinCounters {
            /// Every counter with its stable name, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), self.$name)),*].into_iter()
            }
        }
    };
}

join_counters! {
    /// Join requests handed to the book.
    join_rx_requests,
    /// Dropped: not a well-formed JoinRequest (length, version, type).
    join_rx_malformed,
    /// Dropped: mac1 did not verify (sent without knowing our public key).
    join_rx_bad_mac1,
    /// Dropped: Noise processing failed (garbage, wrong prologue, or not addressed to our key).
    join_rx_handshake_failed,
    /// Refused: the request names another network.
    join_rx_wrong_network,
    /// Refused: this node holds no network key.
    join_rx_not_admin,
    /// Refused: no pending invitation has this id.
    join_rx_unknown_invite,
    /// Refused: the invitation expired.
    join_rx_expired,
    /// Refused: the invitation was used by another key (or before the resend window).
    join_rx_already_used,
    /// Refused (as unknown, after the DH): the secret does not match the invitation's hash.
    join_rx_bad_secret,
    /// Refused: the decrypted payload is malformed.
    join_rx_bad_payload,
    /// Refused: the name is invalid or not the one the invitation reserves.
    join_rx_name_refused,
    /// Refused: a member holds the name under another key.
    join_rx_name_taken,
    /// Refused: the certificate could not be issued or does not fit in a reply.
    join_rx_issue_failed,
    /// New members admitted.
    join_admitted,
    /// Certificates sent again to a key that retried after a lost reply.
    join_resent,
    /// Client: datagrams ignored because they are not a well-formed join reply.
    join_reply_malformed,
    /// Client: replies for another invitation.
    join_reply_other_invite,
    /// Client: responses whose mac1 did not verify.
    join_reply_bad_mac1,
    /// Client: responses that matched none of our requests (forged, or for a spent attempt).
    join_reply_handshake_failed,
    /// Client: datagrams of another message type.
    join_reply_unexpected_type,
}

/// What the inviter's node lends the book for one request.
pub struct JoinContext<'a> {
    /// Unix seconds (wall clock: invitations and certificates are dated).
    pub now_unix: u64,
    /// The inviter's static key; requests are Noise initiations to it.
    pub local: &'a StaticSecret,
    /// `mac1_key(local.public_key())`, computed once by the node.
    pub our_mac1_key: &'a [u8; 32],
    /// This node's network.
    pub network: NetworkId,
    /// The network key if this node is an admin; without it every request is refused `NotAdmin`.
    pub network_secret: Option<&'a NetworkSecret>,
    pub rng: &'a mut CoreRng,
    /// Whether a live member holds `name` under a key other than the given one.
    pub name_taken: &'a dyn Fn(&str, &PublicKey) -> bool,
    /// Members to hand to the new node, best first (the inviter itself should be among them); as
    /// many as fit are sent.
    pub bootstrap: &'a [BootstrapMember],
    /// Seconds a new certificate is valid.
    pub certificate_lifetime: u64,
}

/// A request the book accepted. The io layer must persist `mark_used(invite_id, name, key)` and
/// only once that succeeded send `reply`; if persisting fails it sends nothing, and the joiner's
/// retry yields the same admission again (`repeated`), which retries the write.
#[derive(Clone, Debug)]
pub struct Admission {
    pub invite_id: InviteId,
    pub name: String,
    pub key: PublicKey,
    pub certificate: Certificate,
    /// Where the new node says it can be reached (0 to 8 addresses, unverified).
    pub endpoints: Vec<SocketAddr>,
    /// The JoinResponse datagram, to send to the request's source.
    pub reply: Vec<u8>,
    /// True when this re-sends the certificate of an earlier admission of the same key.
    pub repeated: bool,
}

/// Why the book dropped a request without answering.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum JoinDrop {
    /// Not a well-formed JoinRequest.
    Malformed(WireError),
    /// mac1 did not verify.
    BadMac1,
    /// Noise processing or writing the response failed.
    HandshakeFailed,
}

impl JoinDrop {
    /// A short, stable label for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            JoinDrop::Malformed(e) => e.as_str(),
            JoinDrop::BadMac1 => "bad_mac1",
            JoinDrop::HandshakeFailed => "handshake_failed",
        }
    }
}

/// What the node does with a join request.
#[derive(Clone, Debug)]
pub enum JoinOutcome {
    /// Persist the admission, then send its reply.
    Admitted(Box<Admission>),
    /// Send `reply` (a JoinRefused) back to the source.
    Refused {
        reason: RefusalReason,
        reply: [u8; JOIN_REFUSED_LEN],
    },
    /// Send nothing; the reason is already counted.
    Dropped(JoinDrop),
}

impl JoinOutcome {
    /// The datagram to send back, if any (for an admission: only after persisting it).
    pub fn reply(&self) -> Option<&[u8]> {
        match self {
            JoinOutcome::Admitted(admission) => Some(&admission.reply),
            JoinOutcome::Refused { reply, .. } => Some(reply),
            JoinOutcome::Dropped(_) => None,
        }
    }
}

/// The invitation a request names, as found before any DH.
enum Target {
    Pending(PendingInvite),
    Used(Box<UsedInvite>),
}

/// An invitation used since this book was created.
#[derive(Clone, Debug)]
struct UsedInvite {
    secret_hash: [u8; 32],
    expires_at: u64,
    key: PublicKey,
    name: String,
    certificate: Certificate,
    used_at: u64,
}

/// The inviter's invitations; see the module documentation.
#[derive(Debug, Default)]
pub struct InviteBook {
    pending: HashMap<InviteId, PendingInvite>,
    used: HashMap<InviteId, UsedInvite>,
    counters: JoinCounters,
}

impl InviteBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the pending invitations with `invites` (the io layer re-reads the invites
    /// directory and hands the result in). Entries whose id does not match their hash are ignored.
    /// Invitations used since start stay used even if they appear here again.
    pub fn set_pending(&mut self, invites: Vec<PendingInvite>) {
        self.pending = invites
            .into_iter()
            .filter(PendingInvite::is_consistent)
            .map(|invite| (invite.id, invite))
            .collect();
    }

    /// The pending invitations, by id.
    pub fn pending(&self) -> impl Iterator<Item = &PendingInvite> {
        self.pending.values()
    }

    pub fn counters(&self) -> &JoinCounters {
        &self.counters
    }

    /// Forgets used invitations that can matter no more: expired, and past the resend window.
    fn prune(&mut self, now: u64) {
        self.used.retain(|_, used| {
            now < used.expires_at || now < used.used_at.saturating_add(RESEND_WINDOW_SECS)
        });
    }

    fn refuse(counter: &mut u64, reason: RefusalReason, id: &InviteId) -> JoinOutcome {
        *counter += 1;
        JoinOutcome::Refused {
            reason,
            reply: emit_join_refused(reason, id),
        }
    }

    /// Processes one JoinRequest datagram that arrived from `_from` (the caller rate-limits by it
    /// beforehand and sends any reply back to it). See the module documentation for the order of
    /// checks.
    pub fn handle_request(
        &mut self,
        ctx: &mut JoinContext<'_>,
        _from: SocketAddr,
        datagram: &[u8],
    ) -> JoinOutcome {
        let now = ctx.now_unix;
        let c = &mut self.counters;
        c.join_rx_requests += 1;
        let request = match JoinRequest::new_checked(datagram) {
            Ok(request) => request,
            Err(e) => {
                c.join_rx_malformed += 1;
                return JoinOutcome::Dropped(JoinDrop::Malformed(e));
            }
        };
        if !verify_mac1(ctx.our_mac1_key, request.mac1_covered(), request.mac1()) {
            c.join_rx_bad_mac1 += 1;
            return JoinOutcome::Dropped(JoinDrop::BadMac1);
        }
        let id = request.invite_id();
        if request.network() != *ctx.network.as_bytes() {
            return Self::refuse(
                &mut c.join_rx_wrong_network,
                RefusalReason::WrongNetwork,
                &id,
            );
        }
        let Some(network_secret) = ctx.network_secret else {
            return Self::refuse(&mut c.join_rx_not_admin, RefusalReason::NotAdmin, &id);
        };

        self.prune(now);
        let c = &mut self.counters;
        // Which invitation, and what the secret must hash to; all without DH.
        let target = match (self.used.get(&id), self.pending.get(&id)) {
            (Some(used), _) if now < used.used_at.saturating_add(RESEND_WINDOW_SECS) => {
                Target::Used(Box::new(used.clone()))
            }
            (Some(_), _) => {
                return Self::refuse(&mut c.join_rx_already_used, RefusalReason::AlreadyUsed, &id)
            }
            (None, None) => {
                return Self::refuse(
                    &mut c.join_rx_unknown_invite,
                    RefusalReason::UnknownInvite,
                    &id,
                )
            }
            (None, Some(pending)) if now >= pending.expires_at => {
                return Self::refuse(&mut c.join_rx_expired, RefusalReason::Expired, &id)
            }
            (None, Some(pending)) => Target::Pending(pending.clone()),
        };
        let secret_hash = match &target {
            Target::Used(used) => used.secret_hash,
            Target::Pending(pending) => pending.secret_hash,
        };

        let responder = match respond(ctx.local, JOIN_PROLOGUE, ctx.rng, request.noise()) {
            Ok(responder) => responder,
            Err(_) => {
                c.join_rx_handshake_failed += 1;
                return JoinOutcome::Dropped(JoinDrop::HandshakeFailed);
            }
        };
        let joiner = responder.remote_static();
        let Some(payload) = RequestPayload::decode(responder.payload()) else {
            return Self::refuse(&mut c.join_rx_bad_payload, RefusalReason::Malformed, &id);
        };
        if !constant_time_eq(&payload.secret.hash(), &secret_hash) {
            return Self::refuse(&mut c.join_rx_bad_secret, RefusalReason::UnknownInvite, &id);
        }

        let (certificate, expires_at, repeated) = match target {
            Target::Used(used) if used.key == joiner => (used.certificate, used.expires_at, true),
            Target::Used(_) => {
                return Self::refuse(&mut c.join_rx_already_used, RefusalReason::AlreadyUsed, &id)
            }
            Target::Pending(pending) => {
                let name = &payload.name;
                if !valid_member_name(name) || pending.name.as_ref().is_some_and(|n| n != name) {
                    return Self::refuse(
                        &mut c.join_rx_name_refused,
                        RefusalReason::NameRefused,
                        &id,
                    );
                }
                let issued_here = self
                    .used
                    .values()
                    .any(|used| used.name == *name && used.key != joiner);
                if issued_here || (ctx.name_taken)(name, &joiner) {
                    return Self::refuse(&mut c.join_rx_name_taken, RefusalReason::NameTaken, &id);
                }
                match Certificate::issue(
                    network_secret,
                    name,
                    joiner,
                    payload.signing_key,
                    now,
                    now.saturating_add(ctx.certificate_lifetime),
                    false,
                ) {
                    Ok(certificate) => (certificate, pending.expires_at, false),
                    Err(_) => {
                        return Self::refuse(
                            &mut c.join_rx_issue_failed,
                            RefusalReason::Malformed,
                            &id,
                        )
                    }
                }
            }
        };

        let Some((payload_bytes, _)) =
            ResponsePayload::encode(&certificate.encode(), ctx.bootstrap, MAX_RESPONSE_PAYLOAD)
        else {
            return Self::refuse(&mut c.join_rx_issue_failed, RefusalReason::Malformed, &id);
        };
        let mut reply = vec![0u8; JoinResponse::len_for_payload(payload_bytes.len())];
        let written = match JoinResponse::new_emit(&mut reply[..]) {
            Ok(mut message) => {
                message.set_invite_id(&id);
                responder.write_response(&payload_bytes, message.noise_mut())
            }
            Err(_) => Err(CryptoError::BufferTooSmall),
        };
        if written.is_err() {
            c.join_rx_handshake_failed += 1;
            return JoinOutcome::Dropped(JoinDrop::HandshakeFailed);
        }
        let mut message = JoinResponse::new_unchecked(&mut reply[..]);
        let mac = compute_mac1(&mac1_key(&joiner), message.mac1_covered());
        message.set_mac1(&mac);

        if repeated {
            c.join_resent += 1;
        } else {
            c.join_admitted += 1;
            self.pending.remove(&id);
            self.used.insert(
                id,
                UsedInvite {
                    secret_hash,
                    expires_at,
                    key: joiner,
                    name: certificate.name.clone(),
                    certificate: certificate.clone(),
                    used_at: now,
                },
            );
        }
        JoinOutcome::Admitted(Box::new(Admission {
            invite_id: id,
            name: certificate.name.clone(),
            key: joiner,
            certificate,
            endpoints: payload.endpoints,
            reply,
            repeated,
        }))
    }
}

/// What a successful join yields: everything `meshd join` writes before the node starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub network: NetworkId,
    /// Verified: names `network`, the new node's keys and the requested name.
    pub certificate: Certificate,
    /// Members to contact first, as the inviter listed them (entries with an invalid name or our
    /// own key removed).
    pub bootstrap: Vec<BootstrapMember>,
}

/// Why a join failed; the message is what the user reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(
        "this invitation expired at {} (this machine's clock says {}); ask an admin for a new one",
        format_unix(*expires_at),
        format_unix(*now)
    )]
    TokenExpired { expires_at: u64, now: u64 },
    #[error(
        "`{0}` is not a valid member name (1-63 characters of letters, digits, '-', '_', '.', \
         starting with a letter or digit)"
    )]
    InvalidName(String),
    #[error(
        "this invitation is for the name `{reserved}`, not `{requested}`; join as `{reserved}`"
    )]
    NameNotReserved { reserved: String, requested: String },
    #[error("at most {MAX_JOIN_ENDPOINTS} endpoints can be advertised, not {0}")]
    TooManyEndpoints(usize),
    #[error("could not start the join handshake: {0}")]
    Crypto(CryptoError),
    #[error(
        "the inviter does not know this invitation: it was deleted, or used or expired and \
         cleaned up, or the inviter's daemon restarted after using it"
    )]
    UnknownInvite,
    #[error("this invitation expired at {}; ask an admin for a new one", format_unix(*expires_at))]
    Expired { expires_at: u64 },
    #[error("this invitation was already used; ask an admin for a new one")]
    AlreadyUsed,
    #[error("the name `{0}` is taken in this network; choose another")]
    NameTaken(String),
    #[error("the inviter refused the name `{0}`")]
    NameRefused(String),
    #[error("this token belongs to another network than the inviter's")]
    WrongNetwork,
    #[error("the inviter cannot sign certificates: it is not an admin of the network")]
    NotAdmin,
    #[error("the inviter could not accept the request (is it running the same meshd release?)")]
    Malformed,
    #[error(
        "the inviter refused with reason code {0}, which this meshd does not know; upgrade meshd"
    )]
    UnknownRefusal(u8),
    #[error("the inviter's answer is malformed: {0}")]
    BadResponse(&'static str),
    #[error("the inviter sent a certificate that does not check out: {0}")]
    BadCertificate(String),
    #[error(
        "the inviter at {} did not answer: is its daemon running and the port reachable?",
        list_endpoints(.0)
    )]
    NoAnswer(Vec<SocketAddr>),
}

fn list_endpoints(endpoints: &[SocketAddr]) -> String {
    endpoints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian; no time zone database).
pub fn format_unix(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, shifted so the era starts on 0000-03-01.
    let z = days as i128 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One join attempt of a new node; see the module documentation.
pub struct JoinClient {
    network: NetworkId,
    inviter: PublicKey,
    inviter_mac1_key: [u8; 32],
    our_mac1_key: [u8; 32],
    id: InviteId,
    expires_at: u64,
    secret: StaticSecret,
    signing_key: SigningPublicKey,
    name: String,
    payload: Zeroizing<Vec<u8>>,
    rng: CoreRng,
    now_unix: u64,
    outstanding: VecDeque<Initiator>,
    finished: bool,
    counters: JoinCounters,
}

impl JoinClient {
    /// Prepares a join with `token` for the node whose new static key is `new_secret`, asking for
    /// `name` and advertising `endpoints`. Refuses locally what the inviter would refuse anyway:
    /// an expired token, an invalid name, another name than the token reserves.
    pub fn new(
        token: &InviteToken,
        new_secret: &StaticSecret,
        name: &str,
        endpoints: Vec<SocketAddr>,
        rng: &mut CoreRng,
        now_unix: u64,
    ) -> Result<JoinClient, JoinError> {
        if now_unix >= token.expires_at() {
            return Err(JoinError::TokenExpired {
                expires_at: token.expires_at(),
                now: now_unix,
            });
        }
        if !valid_member_name(name) {
            return Err(JoinError::InvalidName(name.to_owned()));
        }
        if let Some(reserved) = token.name() {
            if reserved != name {
                return Err(JoinError::NameNotReserved {
                    reserved: reserved.to_owned(),
                    requested: name.to_owned(),
                });
            }
        }
        if endpoints.len() > MAX_JOIN_ENDPOINTS {
            return Err(JoinError::TooManyEndpoints(endpoints.len()));
        }
        let signing_key = new_secret.signing_key().public();
        let payload = RequestPayload {
            secret: token.secret().clone(),
            signing_key,
            name: name.to_owned(),
            endpoints,
        }
        .encode();
        let mut client = JoinClient {
            network: token.network(),
            inviter: token.inviter(),
            inviter_mac1_key: mac1_key(&token.inviter()),
            our_mac1_key: mac1_key(&new_secret.public_key()),
            id: token.id(),
            expires_at: token.expires_at(),
            secret: new_secret.clone(),
            signing_key,
            name: name.to_owned(),
            payload,
            rng: rng.fork(),
            now_unix,
            outstanding: VecDeque::with_capacity(MAX_OUTSTANDING_REQUESTS),
            finished: false,
            counters: JoinCounters::default(),
        };
        // Surfaces a handshake set-up failure here rather than at the first send.
        Initiator::new(
            &client.secret,
            &client.inviter,
            JOIN_PROLOGUE,
            &mut client.rng,
        )
        .map_err(JoinError::Crypto)?;
        Ok(client)
    }

    /// A JoinRequest datagram to send to the inviter's endpoints. Call again to retry: each call
    /// is a fresh Noise initiation (new ephemeral key) with the same contents, and a response to
    /// any of the last [`MAX_OUTSTANDING_REQUESTS`] is accepted.
    pub fn request(&mut self) -> Result<Vec<u8>, JoinError> {
        let mut initiator =
            Initiator::new(&self.secret, &self.inviter, JOIN_PROLOGUE, &mut self.rng)
                .map_err(JoinError::Crypto)?;
        let mut datagram = vec![0u8; JoinRequest::len_for_payload(self.payload.len())];
        let mut message = JoinRequest::new_emit(&mut datagram[..])
            .map_err(|_| JoinError::Crypto(CryptoError::BufferTooSmall))?;
        message.set_invite_id(&self.id);
        message.set_network(self.network.as_bytes());
        initiator
            .write_init(&self.payload, message.noise_mut())
            .map_err(JoinError::Crypto)?;
        let mac = compute_mac1(&self.inviter_mac1_key, message.mac1_covered());
        message.set_mac1(&mac);
        if self.outstanding.len() == MAX_OUTSTANDING_REQUESTS {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(initiator);
        Ok(datagram)
    }

    /// The invitation this client uses.
    pub fn invite_id(&self) -> InviteId {
        self.id
    }

    pub fn counters(&self) -> &JoinCounters {
        &self.counters
    }

    /// Processes a datagram that arrived on the join socket. `Ok(None)`: not an answer to us
    /// (ignored and counted); keep waiting. `Ok(Some)`: joined. `Err`: the inviter refused, or
    /// answered with something that does not check out; retrying will not help.
    pub fn handle_reply(&mut self, datagram: &[u8]) -> Result<Option<JoinResult>, JoinError> {
        if self.finished {
            self.counters.join_reply_handshake_failed += 1;
            return Ok(None);
        }
        match classify(datagram) {
            Ok(MessageType::JoinRefused) => self.on_refused(datagram),
            Ok(MessageType::JoinResponse) => self.on_response(datagram),
            Ok(_) => {
                self.counters.join_reply_unexpected_type += 1;
                Ok(None)
            }
            Err(_) => {
                self.counters.join_reply_malformed += 1;
                Ok(None)
            }
        }
    }

    fn on_refused(&mut self, datagram: &[u8]) -> Result<Option<JoinResult>, JoinError> {
        let Ok(refusal) = JoinRefused::new_checked(datagram) else {
            self.counters.join_reply_malformed += 1;
            return Ok(None);
        };
        if refusal.invite_id() != self.id {
            self.counters.join_reply_other_invite += 1;
            return Ok(None);
        }
        self.finished = true;
        self.outstanding.clear();
        Err(match refusal.reason() {
            RefusalReason::UnknownInvite => JoinError::UnknownInvite,
            RefusalReason::Expired => JoinError::Expired {
                expires_at: self.expires_at,
            },
            RefusalReason::AlreadyUsed => JoinError::AlreadyUsed,
            RefusalReason::NameTaken => JoinError::NameTaken(self.name.clone()),
            RefusalReason::WrongNetwork => JoinError::WrongNetwork,
            RefusalReason::NotAdmin => JoinError::NotAdmin,
            RefusalReason::Malformed => JoinError::Malformed,
            RefusalReason::NameRefused => JoinError::NameRefused(self.name.clone()),
            RefusalReason::Unknown(code) => JoinError::UnknownRefusal(code),
        })
    }

    fn on_response(&mut self, datagram: &[u8]) -> Result<Option<JoinResult>, JoinError> {
        let Ok(response) = JoinResponse::new_checked(datagram) else {
            self.counters.join_reply_malformed += 1;
            return Ok(None);
        };
        if response.invite_id() != self.id {
            self.counters.join_reply_other_invite += 1;
            return Ok(None);
        }
        if !verify_mac1(&self.our_mac1_key, response.mac1_covered(), response.mac1()) {
            self.counters.join_reply_bad_mac1 += 1;
            return Ok(None);
        }
        // Newest first: the answer to the latest retry is the likeliest.
        let payload = self
            .outstanding
            .iter_mut()
            .rev()
            .find_map(|initiator| initiator.try_read_response(response.noise()).ok())
            .map(|(payload, _keys)| payload);
        let Some(payload) = payload else {
            self.counters.join_reply_handshake_failed += 1;
            return Ok(None);
        };
        // The answer is authenticated by the pinned inviter key from here on: whatever is wrong
        // with it is final.
        self.finished = true;
        self.outstanding.clear();
        let payload = ResponsePayload::decode(&payload)
            .ok_or(JoinError::BadResponse("its contents do not parse"))?;
        let certificate = self.check_certificate(&payload.certificate)?;
        let ours = self.secret.public_key();
        let bootstrap = payload
            .members
            .into_iter()
            .filter(|member| valid_member_name(&member.name) && member.key != ours)
            .collect();
        Ok(Some(JoinResult {
            network: self.network,
            certificate,
            bootstrap,
        }))
    }

    fn check_certificate(&self, bytes: &[u8]) -> Result<Certificate, JoinError> {
        let bad = |e: CertError| JoinError::BadCertificate(e.to_string());
        let (certificate, used) = Certificate::decode(bytes).map_err(bad)?;
        if used != bytes.len() {
            return Err(JoinError::BadCertificate(
                "trailing bytes after the certificate".into(),
            ));
        }
        certificate
            .verify(&self.network, self.now_unix)
            .map_err(bad)?;
        if certificate.static_key != self.secret.public_key()
            || certificate.signing_key != self.signing_key
        {
            return Err(JoinError::BadCertificate(
                "it is issued to other keys than ours".into(),
            ));
        }
        if certificate.name != self.name {
            return Err(JoinError::BadCertificate(format!(
                "it is issued to the name `{}`, not `{}`",
                certificate.name, self.name
            )));
        }
        Ok(certificate)
    }
}

impl core::fmt::Debug for JoinClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinClient")
            .field("network", &self.network)
            .field("inviter", &self.inviter)
            .field("name", &self.name)
            .field("outstanding", &self.outstanding.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
