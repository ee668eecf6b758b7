//! The new node's side of the join exchange: one [`JoinClient`] attempt against the inviter key
//! pinned in the token, and what a successful join yields (see the parent module's invariants).

use std::collections::VecDeque;
use std::net::SocketAddr;

use meshd_crypto::{
    compute_mac1, mac1_key, valid_member_name, verify_mac1, CertError, Certificate, CoreRng,
    CryptoError, Initiator, NetworkId, PublicKey, SigningPublicKey, StaticSecret,
};
use zeroize::Zeroizing;

use crate::wire::{
    classify, InviteId, InviteToken, JoinRefused, JoinRequest, JoinResponse, MessageType,
    RefusalReason, RequestPayload, ResponsePayload, MAX_JOIN_ENDPOINTS,
};

use super::*;

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
    #[error(
        "the inviter has no container address range for this host: the range the invitation \
         names is held by a live member, or the network's subnet is full"
    )]
    NoRange,
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
            RefusalReason::NoRange => JoinError::NoRange,
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
