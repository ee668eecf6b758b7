//! `meshd join`'s exchange with the inviter: the sans-IO [`JoinClient`] (src/core/invite.rs)
//! driven over a UDP socket with the real clocks.
//!
//! Owns the socket, the retry schedule and the deadline. Invariants: requests go to the token's
//! endpoints only and replies are taken from them only (anything else on the socket is ignored);
//! a request is re-sent every [`JOIN_RETRY_INTERVAL`] and the exchange gives up after
//! [`JOIN_GIVE_UP_AFTER`] with a message naming the endpoints it tried; one unreachable endpoint
//! does not stop the others. Every failure is a runtime error (exit code 1) whose message is the
//! line the operator reads. Writing the joined node's files is the CLI's job, after this returns.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use meshd_crypto::{CoreRng, StaticSecret};

use super::RunError;
use crate::core::invite::{JoinClient, JoinResult, JOIN_GIVE_UP_AFTER, JOIN_RETRY_INTERVAL};
use crate::wire::InviteToken;

/// How long one receive waits before the loop looks at the clock again.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(200);

/// Joins the network of `token` as `name` with the new static key `secret`, telling the inviter
/// this host listens on `listen` (a wildcard is advertised on every host address). Returns the
/// verified certificate and bootstrap members.
pub fn join(
    token: &InviteToken,
    secret: &StaticSecret,
    name: &str,
    listen: SocketAddr,
    rng: &mut CoreRng,
) -> Result<JoinResult, RunError> {
    let endpoints = super::host::advertised_endpoints(&[], listen);
    let mut client = JoinClient::new(token, secret, name, endpoints, rng, super::unix_now())
        .map_err(|e| RunError(e.to_string()))?;

    let v6 = token.endpoints().iter().all(|e| e.is_ipv6());
    let bind: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .expect("constant address parses");
    let socket =
        UdpSocket::bind(bind).map_err(|e| RunError(format!("opening a UDP socket: {e}")))?;
    socket
        .set_read_timeout(Some(RECEIVE_TIMEOUT))
        .map_err(|e| RunError(e.to_string()))?;
    let started = Instant::now();
    let mut next_send = started;
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        if now.duration_since(started) >= JOIN_GIVE_UP_AFTER {
            let tried: Vec<String> = token.endpoints().iter().map(|e| e.to_string()).collect();
            return Err(RunError(format!(
                "the inviter at {} did not answer within {}s: is its daemon running and UDP reachable from here?",
                tried.join(", "),
                JOIN_GIVE_UP_AFTER.as_secs()
            )));
        }
        if now >= next_send {
            let request = client.request().map_err(|e| RunError(e.to_string()))?;
            for endpoint in token.endpoints() {
                // One unreachable address (say an IPv6 one on an IPv4 socket) must not stop the others.
                let _ = socket.send_to(&request, endpoint);
            }
            next_send = now + JOIN_RETRY_INTERVAL;
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue
            }
            Err(e) => return Err(RunError(format!("receiving: {e}"))),
        };
        if !token.endpoints().contains(&from) {
            continue;
        }
        match client.handle_reply(&buf[..n]) {
            Ok(Some(result)) => return Ok(result),
            Ok(None) => continue,
            Err(e) => return Err(RunError(e.to_string())),
        }
    }
}
