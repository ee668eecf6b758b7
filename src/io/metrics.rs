//! The Prometheus endpoint: `GET /metrics` on `metrics_listen`, rendered from a status snapshot.
//!
//! Metrics are built from the same snapshot `meshd status` uses, so the two can never disagree,
//! and the data path pays nothing for them between scrapes.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::control::ControlRequest;
use crate::status::NodeStatus;

type Labels = Vec<(String, String)>;

/// Renders a status snapshot in the Prometheus text format.
pub fn render(status: &NodeStatus) -> String {
    let mut registry = Registry::with_prefix("meshd");
    let events: Family<Labels, Counter> = Family::default();
    for (name, value) in &status.counters {
        events
            .get_or_create(&vec![("event".into(), name.clone())])
            .inc_by(*value);
    }
    registry.register(
        "events",
        "Packets and events by kind, drops by reason",
        events,
    );
    let rx: Family<Labels, Counter> = Family::default();
    let tx: Family<Labels, Counter> = Family::default();
    let up: Family<Labels, Gauge> = Family::default();
    for p in &status.peers {
        let l = vec![("peer".to_string(), p.name.clone())];
        rx.get_or_create(&l).inc_by(p.rx_bytes);
        tx.get_or_create(&l).inc_by(p.tx_bytes);
        up.get_or_create(&l).set(i64::from(p.state == "up"));
    }
    registry.register("peer_rx_bytes", "Payload bytes received from a peer", rx);
    registry.register("peer_tx_bytes", "Payload bytes sent to a peer", tx);
    registry.register("peer_up", "1 when the peer has an established session", up);
    let members: Family<Labels, Gauge> = Family::default();
    for state in ["alive", "suspect", "down", "revoked"] {
        let n = status.members.iter().filter(|m| m.state == state).count();
        members
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set(n as i64);
    }
    registry.register(
        "members",
        "Members of the network this node knows, by gossip state",
        members,
    );
    let expiry: Gauge = Gauge::default();
    expiry.set(status.certificate_expires as i64);
    registry.register(
        "certificate_expiry_timestamp_seconds",
        "When this node's certificate expires (unix seconds); alert well before it",
        expiry,
    );
    let fdb: Gauge = Gauge::default();
    fdb.set(status.fdb.len() as i64);
    registry.register("fdb_entries", "Entries in the switch table", fdb);
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    requests: mpsc::Sender<ControlRequest>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let (code, body) = if request.starts_with("GET /metrics") {
                let (tx, rx) = oneshot::channel();
                if requests.send(ControlRequest::Status(tx)).await.is_err() {
                    return;
                }
                match rx.await {
                    Ok(status) => ("200 OK", render(&status)),
                    Err(_) => return,
                }
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_peers_in_prometheus_text() {
        let status = NodeStatus::sample();
        let text = render(&status);
        assert!(
            text.contains("meshd_events_total{event=\"rx_replayed\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("meshd_peer_rx_bytes_total{peer=\"h2\"} 2048"),
            "{text}"
        );
        assert!(text.contains("meshd_peer_up{peer=\"h2\"} 1"), "{text}");
        assert!(text.contains("meshd_fdb_entries 1"), "{text}");
        assert!(text.contains("meshd_members{state=\"alive\"} 1"), "{text}");
        assert!(
            text.contains("meshd_members{state=\"revoked\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("meshd_certificate_expiry_timestamp_seconds 1800000000"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
