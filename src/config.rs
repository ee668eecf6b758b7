//! The node's TOML configuration: parsing, validation and the errors an operator reads.
//!
//! Invariants: a `Config` that exists has passed every check (unknown keys rejected, names valid and
//! unique, keys decodable, addresses parsable, numbers in range), and every rejection names the file,
//! the line and the key. Paths inside the file are resolved against the config file's directory, so
//! a config tree can be moved as a whole. Reading the private key file (and checking its mode) lives
//! here too because it is part of loading a config, not of running a node.

use crate::core::cipher::CipherPreference;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use meshd_crypto::{Certificate, NetworkId, NetworkSecret, PublicKey, StaticSecret};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The listen address used when the config names none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6655";
/// Where `subnet.env` goes when the config names no `subnet_env`.
pub const DEFAULT_SUBNET_ENV: &str = "/run/meshd/subnet.env";
/// The TAP device name used when the config names none.
pub const DEFAULT_INTERFACE: &str = "meshd0";
/// TAP MTU when the config sets none: Ethernet's (and Docker's) 1500, so the TAP never drops what
/// containers on the same bridge send. Frames the path to a peer cannot carry are not dropped
/// silently either: TCP super-frames are cut smaller, other IP packets answered with ICMP
/// "fragmentation needed"/"packet too big" (docs/operations.md, *MTU*).
pub const DEFAULT_TAP_MTU: u16 = 1500;
/// Smallest TAP MTU accepted: IPv6 requires 1280 on every link.
pub const MIN_TAP_MTU: u16 = 1280;
/// Largest TAP MTU accepted: jumbo frames.
pub const MAX_TAP_MTU: u16 = 9000;

/// Where the Docker plugin socket is when the config names none: dockerd finds plugins by their
/// socket in /run/docker/plugins, and the file's name (`meshd`) is the driver's name.
pub const DEFAULT_DOCKER_PLUGIN_SOCKET: &str = "/run/docker/plugins/meshd.sock";

/// Most data-path workers `workers` may ask for (and what "one per CPU" is capped at): past a
/// handful, the shared node's lock and the kernel's queues gain nothing.
pub const MAX_WORKERS: usize = 16;

/// A loaded, validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub name: String,
    pub listen: SocketAddr,
    pub private_key_file: PathBuf,
    pub control_socket: PathBuf,
    pub control_group: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_level: Option<String>,
    /// Data-path workers, each with its own TAP queue and UDP socket; `None` means one per CPU
    /// this process may run on (at most [`MAX_WORKERS`]).
    pub workers: Option<usize>,
    /// Which data-path AEAD to use (`cipher`): `auto` negotiates AES-256-GCM between nodes with
    /// AES hardware and ChaCha20-Poly1305 otherwise.
    pub cipher: CipherPreference,
    pub interface: InterfaceConfig,
    pub switch: SwitchConfig,
    pub peers: Vec<PeerConfig>,
    /// Where the certificate, revocations and invitations live.
    pub state_dir: PathBuf,
    /// Where this host's container range is written in flannel's format (`subnet_env`).
    pub subnet_env: PathBuf,
    /// Endpoints other members should use to reach this node (default: derived from `listen`).
    pub advertise: Vec<SocketAddr>,
    pub network: NetworkConfig,
    /// The Docker network and IPAM plugin (`docker_plugin`, `docker_plugin_socket`).
    pub docker: DockerConfig,
}

/// The Docker plugin the daemon serves (src/io/docker/).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Serve the plugin (`docker_plugin`, default false). Needs `[interface] bridge`.
    pub enabled: bool,
    /// The plugin's Unix socket (`docker_plugin_socket`).
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The network's public key: every member's certificate must be signed by it.
    pub id: NetworkId,
    /// The network secret; only admins have one.
    pub secret_file: Option<PathBuf>,
    /// Lifetime of the certificates this node issues (admins).
    pub certificate_lifetime: Duration,
}

/// Lifetime of issued certificates when the config does not set one.
pub const DEFAULT_CERTIFICATE_LIFETIME_DAYS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub bridge: Option<String>,
    pub address: Option<Cidr>,
    pub mtu: u16,
    /// Open the TAP with IFF_VNET_HDR and TSO/USO: the kernel hands over 64 KiB super-frames.
    pub offload: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchConfig {
    pub fdb_max_entries: usize,
    pub fdb_ageing: Duration,
    /// Drop IPv6 router advertisements that come from other members.
    pub drop_router_advertisements: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
}

/// An interface address with its prefix length, e.g. `10.77.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not ADDRESS/PREFIX (for example 10.77.0.1/24)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix `{prefix}` must be a number from 0 to {max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a config could not be used. The `Display` form is what the operator sees.
#[derive(Debug)]
pub enum ConfigError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Something at a known place in the file is wrong.
    At {
        path: PathBuf,
        line: usize,
        key: Option<String>,
        message: String,
    },
    /// A problem with the file as a whole or with a file it points to.
    Other { path: PathBuf, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::At {
                path,
                line,
                key: Some(key),
                message,
            } => write!(f, "{}:{line}: key `{key}`: {message}", path.display()),
            ConfigError::At {
                path,
                line,
                key: None,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            ConfigError::Other { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

// The raw file shape. Validation that serde can express happens in `deserialize_with` helpers so
// toml attaches the span; cross-field checks use `Spanned` to point at the right line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Spanned<String>,
    listen: Option<SocketAddr>,
    private_key_file: PathBuf,
    control_socket: Option<PathBuf>,
    control_group: Option<String>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "de_log_level")]
    log_level: Option<String>,
    workers: Option<Spanned<usize>>,
    cipher: Option<Spanned<String>>,
    interface: Option<RawInterface>,
    switch: Option<RawSwitch>,
    #[serde(default)]
    peers: Vec<RawPeer>,
    state_dir: Option<PathBuf>,
    subnet_env: Option<PathBuf>,
    #[serde(default)]
    advertise: Vec<SocketAddr>,
    network: Option<RawNetwork>,
    docker_plugin: Option<Spanned<bool>>,
    docker_plugin_socket: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(deserialize_with = "de_network_id")]
    id: NetworkId,
    secret_file: Option<PathBuf>,
    certificate_lifetime_days: Option<Spanned<u64>>,
}

fn de_network_id<'de, D: Deserializer<'de>>(d: D) -> Result<NetworkId, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<NetworkId>().map_err(|_| {
        serde::de::Error::custom(
            "not a network id; use the 44-character value `meshd init` or `meshd join` wrote",
        )
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    #[serde(default, deserialize_with = "de_opt_ifname")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_ifname")]
    bridge: Option<String>,
    #[serde(default, deserialize_with = "de_opt_cidr")]
    address: Option<Cidr>,
    mtu: Option<Spanned<u16>>,
    offload: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    fdb_max_entries: Option<Spanned<usize>>,
    fdb_ageing_secs: Option<Spanned<u64>>,
    drop_router_advertisements: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    #[serde(deserialize_with = "de_public_key")]
    public_key: Spanned<PublicKey>,
    endpoint: Option<SocketAddr>,
}

fn de_public_key<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<PublicKey>, D::Error> {
    let s = Spanned::<String>::deserialize(d)?;
    let span = s.span();
    let key = s.get_ref().parse::<PublicKey>().map_err(|e| {
        serde::de::Error::custom(format!(
            "not a meshd public key ({e}); use the 44-character value printed by `meshd pubkey`"
        ))
    })?;
    Ok(Spanned::new(span, key))
}

fn de_opt_cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cidr>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

fn de_opt_ifname<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    validate_ifname(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

fn de_log_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" => Ok(Some(s)),
        _ => Err(serde::de::Error::custom(
            "must be one of error, warn, info, debug, trace",
        )),
    }
}

/// Linux interface names: 1 to 15 bytes, no '/', no whitespace, not "." or "..".
pub fn validate_ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "interface name `{s}` must be 1 to 15 characters long"
        ));
    }
    if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("`{s}` is not a valid interface name"));
    }
    Ok(())
}

/// Node and peer names: 1 to 63 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
/// They appear in logs, status output and metric labels, so they must be plain.
pub fn validate_node_name(s: &str) -> Result<(), String> {
    let ok_len = !s.is_empty() && s.len() <= 63;
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid node name (1-63 characters of letters, digits, '-', '_', '.', starting with a letter or digit)"
        ))
    }
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The key written on the line where `span` starts, when the line is `key = value`.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[line_start..line_end];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if it were the content of the file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = |span: Range<usize>, key: Option<&str>, message: String| ConfigError::At {
            path: path.to_path_buf(),
            line: line_of(text, &span),
            key: key.map(str::to_string).or_else(|| key_at(text, &span)),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => at(span, None, e.message().trim().to_string()),
            None => ConfigError::Other {
                path: path.to_path_buf(),
                message: e.message().trim().to_string(),
            },
        })?;

        validate_node_name(raw.name.get_ref()).map_err(|m| at(raw.name.span(), Some("name"), m))?;
        let name = raw.name.into_inner();
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let iface = raw.interface.unwrap_or_default();
        if iface.bridge.is_some() && iface.address.is_some() {
            return Err(ConfigError::Other {
                path: path.to_path_buf(),
                message: "[interface] sets both `bridge` and `address`: choose one (put the address on the bridge instead)".into(),
            });
        }
        let mtu = match iface.mtu {
            Some(m) if !(MIN_TAP_MTU..=MAX_TAP_MTU).contains(m.get_ref()) => {
                return Err(at(
                    m.span(),
                    Some("interface.mtu"),
                    format!("must be from {MIN_TAP_MTU} to {MAX_TAP_MTU}"),
                ))
            }
            Some(m) => m.into_inner(),
            None => DEFAULT_TAP_MTU,
        };

        let workers = match raw.workers {
            Some(w) if *w.get_ref() > MAX_WORKERS => {
                return Err(at(
                    w.span(),
                    Some("workers"),
                    format!("must be from 0 (one per CPU) to {MAX_WORKERS}"),
                ))
            }
            Some(w) if *w.get_ref() == 0 => None,
            Some(w) => Some(w.into_inner()),
            None => None,
        };

        let cipher = match raw.cipher {
            None => CipherPreference::Auto,
            Some(c) => CipherPreference::parse(c.get_ref()).ok_or_else(|| {
                at(
                    c.span(),
                    Some("cipher"),
                    "must be \"auto\", \"aes-256-gcm\" or \"chacha20-poly1305\"".into(),
                )
            })?,
        };

        let sw = raw.switch.unwrap_or_default();
        let fdb_max_entries = match sw.fdb_max_entries {
            Some(n) if !(16..=1_000_000).contains(n.get_ref()) => {
                return Err(at(
                    n.span(),
                    Some("switch.fdb_max_entries"),
                    "must be from 16 to 1000000".into(),
                ))
            }
            Some(n) => n.into_inner(),
            None => 8192,
        };
        let fdb_ageing = match sw.fdb_ageing_secs {
            Some(n) if !(10..=86_400).contains(n.get_ref()) => {
                return Err(at(
                    n.span(),
                    Some("switch.fdb_ageing_secs"),
                    "must be from 10 to 86400 seconds".into(),
                ))
            }
            Some(n) => Duration::from_secs(n.into_inner()),
            None => Duration::from_secs(300),
        };
        let drop_router_advertisements = sw.drop_router_advertisements.unwrap_or(false);

        let Some(network) = raw.network else {
            return Err(ConfigError::Other {
                path: path.to_path_buf(),
                message: "missing [network] table: found a network with `meshd init` or join one with `meshd join`".into(),
            });
        };
        let certificate_lifetime = match network.certificate_lifetime_days {
            Some(d) if !(1..=3650).contains(d.get_ref()) => {
                return Err(at(
                    d.span(),
                    Some("network.certificate_lifetime_days"),
                    "must be from 1 to 3650 days".into(),
                ))
            }
            Some(d) => Duration::from_secs(d.into_inner() * 86_400),
            None => Duration::from_secs(DEFAULT_CERTIFICATE_LIFETIME_DAYS * 86_400),
        };
        let network = NetworkConfig {
            id: network.id,
            secret_file: network.secret_file.as_deref().map(resolve),
            certificate_lifetime,
        };

        let docker = DockerConfig {
            enabled: raw.docker_plugin.as_ref().is_some_and(|d| *d.get_ref()),
            socket: raw
                .docker_plugin_socket
                .as_deref()
                .map(resolve)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_PLUGIN_SOCKET)),
        };
        if let Some(enabled) = raw.docker_plugin.filter(|d| *d.get_ref()) {
            if iface.bridge.is_none() {
                return Err(at(
                    enabled.span(),
                    Some("docker_plugin"),
                    "needs [interface] bridge: containers are plugged into that bridge".into(),
                ));
            }
        }

        let mut peers: Vec<PeerConfig> = Vec::with_capacity(raw.peers.len());
        for p in raw.peers {
            let span = p.name.span();
            validate_node_name(p.name.get_ref()).map_err(|m| at(span.clone(), Some("name"), m))?;
            if *p.name.get_ref() == name {
                return Err(at(
                    span,
                    Some("name"),
                    format!("peer `{name}` has this node's own name"),
                ));
            }
            if peers.iter().any(|q| q.name == *p.name.get_ref()) {
                return Err(at(
                    span,
                    Some("name"),
                    format!("peer `{}` is listed twice", p.name.get_ref()),
                ));
            }
            let key_span = p.public_key.span();
            if peers
                .iter()
                .any(|q| q.public_key == *p.public_key.get_ref())
            {
                return Err(at(
                    key_span,
                    Some("public_key"),
                    "two peers share this public key".into(),
                ));
            }
            peers.push(PeerConfig {
                name: p.name.into_inner(),
                public_key: p.public_key.into_inner(),
                endpoint: p.endpoint,
            });
        }

        Ok(Config {
            path: path.to_path_buf(),
            listen: raw
                .listen
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("constant address parses")),
            private_key_file: resolve(&raw.private_key_file),
            control_socket: raw
                .control_socket
                .as_deref()
                .map(resolve)
                .unwrap_or_else(|| PathBuf::from(format!("/run/meshd/{name}.sock"))),
            control_group: raw.control_group,
            metrics_listen: raw.metrics_listen,
            log_level: raw.log_level,
            workers,
            cipher,
            interface: InterfaceConfig {
                name: iface.name.unwrap_or_else(|| DEFAULT_INTERFACE.to_string()),
                bridge: iface.bridge,
                address: iface.address,
                mtu,
                offload: iface.offload.unwrap_or(true),
            },
            switch: SwitchConfig {
                fdb_max_entries,
                fdb_ageing,
                drop_router_advertisements,
            },
            peers,
            state_dir: raw
                .state_dir
                .as_deref()
                .map(resolve)
                .unwrap_or_else(|| base.join(format!("{name}.state"))),
            subnet_env: raw
                .subnet_env
                .as_deref()
                .map(resolve)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SUBNET_ENV)),
            advertise: raw.advertise,
            network,
            docker,
            name,
        })
    }

    /// Where this node's certificate is kept.
    pub fn certificate_path(&self) -> PathBuf {
        self.state_dir.join("certificate")
    }

    /// Loads this node's certificate and checks it belongs to `key` in the configured network.
    /// Expiry is the caller's business (a node with an expired certificate can still start and
    /// renew it from an admin; its peers refuse it meanwhile).
    pub fn load_certificate(&self, key: &PublicKey) -> Result<Certificate, ConfigError> {
        let path = self.certificate_path();
        let other = |message: String| ConfigError::Other {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let certificate = decode_certificate_text(&text).map_err(other)?;
        if certificate.network != self.network.id {
            return Err(other(format!(
                "certificate is for network {}, but the config names {}",
                certificate.network, self.network.id
            )));
        }
        if certificate.static_key != *key {
            return Err(other(
                "certificate was issued for another key than private_key_file's".into(),
            ));
        }
        if certificate
            .verify(&self.network.id, certificate.issued_at)
            .is_err()
        {
            return Err(other(
                "certificate signature is not valid for this network".into(),
            ));
        }
        Ok(certificate)
    }

    /// The network secret, if this node is an admin (the file must be mode 0600).
    pub fn load_network_secret(&self) -> Result<Option<NetworkSecret>, ConfigError> {
        let Some(path) = &self.network.secret_file else {
            return Ok(None);
        };
        let text = read_secret_file(path)?;
        let secret = NetworkSecret::from_base64(&text).map_err(|e| ConfigError::Other {
            path: path.clone(),
            message: format!("not a meshd network secret: {e}"),
        })?;
        if secret.network_id() != self.network.id {
            return Err(ConfigError::Other {
                path: path.clone(),
                message: "this network secret belongs to another network than [network] id".into(),
            });
        }
        Ok(Some(secret))
    }

    /// Loads the private key, refusing a key file that others can read.
    pub fn load_private_key(&self) -> Result<StaticSecret, ConfigError> {
        read_private_key(&self.private_key_file)
    }
}

/// Parses the text form of a certificate file (base64 of its encoding).
pub fn decode_certificate_text(text: &str) -> Result<Certificate, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "not a meshd certificate (bad base64)".to_string())?;
    match Certificate::decode(&bytes) {
        Ok((c, used)) if used == bytes.len() => Ok(c),
        Ok(_) => Err("not a meshd certificate (trailing bytes)".into()),
        Err(e) => Err(format!("not a meshd certificate: {e}")),
    }
}

/// The text form of a certificate file.
pub fn encode_certificate_text(certificate: &Certificate) -> String {
    use base64::Engine as _;
    let mut text = base64::engine::general_purpose::STANDARD.encode(certificate.encode());
    text.push('\n');
    text
}

/// Reads a private key file, which must not be readable by group or others.
pub fn read_private_key(path: &Path) -> Result<StaticSecret, ConfigError> {
    let text = read_secret_file(path)?;
    StaticSecret::from_base64(&text).map_err(|e| ConfigError::Other {
        path: path.to_path_buf(),
        message: format!("not a meshd private key: {e}"),
    })
}

/// Reads a secret file, refusing one that group or others can read.
fn read_secret_file(path: &Path) -> Result<zeroize::Zeroizing<String>, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let other = |message: String| ConfigError::Other {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (owner, user) = (
        std::os::unix::fs::MetadataExt::uid(&meta),
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() },
    );
    if owner != user {
        return Err(other(format!(
            "secret key file is owned by uid {owner}, not by the user meshd runs as (uid {user}); chown it to that user"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(other(format!(
            "secret key file has mode {mode:04o}; it must be readable by its owner only (chmod 600)"
        )));
    }
    Ok(zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?,
    ))
}

/// Writes a network secret file with mode 0600, failing if it already exists.
pub fn write_network_secret(path: &Path, secret: &NetworkSecret) -> std::io::Result<()> {
    write_new_secret_file(path, secret.to_base64().as_bytes())
}

/// Writes a private key file with mode 0600, failing if it already exists.
pub fn write_private_key(path: &Path, secret: &StaticSecret) -> std::io::Result<()> {
    write_new_secret_file(path, secret.to_base64().as_bytes())
}

fn write_new_secret_file(path: &Path, encoded: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(encoded)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q2Jq7nB5bY4sWJfK0l3mJ0o2n8iZ6oQk6b0hY2uVx1s=";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/meshd/meshd.toml"), text)
    }

    fn minimal() -> String {
        format!("name = \"h1\"\nprivate_key_file = \"h1.key\"\nnetwork = {{ id = \"{KEY}\" }}\n")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.name, "h1");
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.private_key_file, PathBuf::from("/etc/meshd/h1.key"));
        assert_eq!(c.control_socket, PathBuf::from("/run/meshd/h1.sock"));
        assert_eq!(c.interface.name, "meshd0");
        assert_eq!(c.interface.mtu, DEFAULT_TAP_MTU);
        assert_eq!(c.workers, None, "one worker per CPU by default");
        assert!(c.interface.offload, "offloads are on by default");
        assert_eq!(c.switch.fdb_max_entries, 8192);
        assert_eq!(c.switch.fdb_ageing, Duration::from_secs(300));
        assert!(c.peers.is_empty());
    }

    #[test]
    fn full_config_parses() {
        let text = format!(
            "{}listen = \"10.201.0.1:6655\"\ncontrol_socket = \"/tmp/x.sock\"\nworkers = 3\n[interface]\nbridge = \"br0\"\nmtu = 1400\noffload = false\n[[peers]]\nname = \"h2\"\npublic_key = \"{KEY}\"\nendpoint = \"10.201.0.2:6655\"\n",
            minimal()
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.interface.bridge.as_deref(), Some("br0"));
        assert_eq!(c.interface.mtu, 1400);
        assert!(!c.interface.offload);
        assert_eq!(c.workers, Some(3));
        assert_eq!(
            parse(&format!("{}workers = 0\n", minimal()))
                .unwrap()
                .workers,
            None
        );
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].public_key.to_string(), KEY);
        assert_eq!(
            c.peers[0].endpoint,
            Some("10.201.0.2:6655".parse().unwrap())
        );
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err(&format!("{}colour = \"red\"\n", minimal()));
        assert!(e.contains(":4:"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_listen_names_key_and_line() {
        let e = err(&format!("{}listen = \"nowhere\"\n", minimal()));
        assert!(e.contains(":4:") && e.contains("`listen`"), "{e}");
    }

    #[test]
    fn bad_public_key_names_key_and_line() {
        let e = err(&format!(
            "{}[[peers]]\nname = \"h2\"\npublic_key = \"abc\"\n",
            minimal()
        ));
        assert!(e.contains(":6:") && e.contains("public_key"), "{e}");
    }

    #[test]
    fn duplicate_peer_and_own_name_rejected() {
        let p = format!("[[peers]]\nname = \"h2\"\npublic_key = \"{KEY}\"\n");
        let e = err(&format!("{}{p}{p}", minimal()));
        assert!(e.contains(":8:") && e.contains("twice"), "{e}");
        let e = err(&format!(
            "{}[[peers]]\nname = \"h1\"\npublic_key = \"{KEY}\"\n",
            minimal()
        ));
        assert!(e.contains("own name"), "{e}");
    }

    #[test]
    fn out_of_range_values_rejected() {
        let e = err(&format!("{}[interface]\nmtu = 100\n", minimal()));
        assert!(e.contains(":5:") && e.contains("interface.mtu"), "{e}");
        let e = err(&format!("{}workers = 99\n", minimal()));
        assert!(
            e.contains(":4:") && e.contains("`workers`") && e.contains("16"),
            "{e}"
        );
        let e = err(&format!("{}workers = \"two\"\n", minimal()));
        assert!(e.contains(":4:") && e.contains("workers"), "{e}");
        let e = err(&format!("{}[switch]\nfdb_ageing_secs = 1\n", minimal()));
        assert!(e.contains("fdb_ageing_secs"), "{e}");
        let e = err(&format!(
            "{}[interface]\naddress = \"10.0.0.1/40\"\n",
            minimal()
        ));
        assert!(e.contains(":5:") && e.contains("address"), "{e}");
        let e = err(&format!(
            "{}[interface]\nname = \"averyveryverylongname\"\n",
            minimal()
        ));
        assert!(e.contains("15 characters"), "{e}");
    }
    #[test]
    fn switch_router_advertisements_and_subnet_env_have_defaults_and_are_read() {
        let c = parse(&minimal()).unwrap();
        assert!(!c.switch.drop_router_advertisements);
        assert_eq!(c.subnet_env, PathBuf::from(DEFAULT_SUBNET_ENV));
        let c = parse(&format!(
            "subnet_env = \"/tmp/h1.env\"\n{}[switch]\ndrop_router_advertisements = true\n",
            minimal()
        ))
        .unwrap();
        assert!(c.switch.drop_router_advertisements);
        assert_eq!(c.subnet_env, PathBuf::from("/tmp/h1.env"));
        let e = err(&format!(
            "{}[switch]\ndrop_router_advertisements = 1\n",
            minimal()
        ));
        assert!(e.contains("drop_router_advertisements"), "{e}");
    }

    #[test]
    fn cipher_is_auto_by_default_and_names_its_key_and_line_when_bad() {
        assert_eq!(parse(&minimal()).unwrap().cipher, CipherPreference::Auto);
        let c = parse(&format!("{}cipher = \"aes-256-gcm\"\n", minimal())).unwrap();
        assert_eq!(
            c.cipher,
            CipherPreference::Only(meshd_crypto::Cipher::Aes256Gcm)
        );
        let c = parse(&format!("{}cipher = \"chacha20-poly1305\"\n", minimal())).unwrap();
        assert_eq!(
            c.cipher,
            CipherPreference::Only(meshd_crypto::Cipher::ChaCha20Poly1305)
        );
        let e = err(&format!("{}cipher = \"aes\"\n", minimal()));
        assert!(
            e.contains(":4:") && e.contains("`cipher`") && e.contains("aes-256-gcm"),
            "{e}"
        );
    }

    #[test]
    fn docker_plugin_is_off_by_default_and_needs_a_bridge() {
        let c = parse(&minimal()).unwrap();
        assert!(!c.docker.enabled);
        assert_eq!(c.docker.socket, PathBuf::from(DEFAULT_DOCKER_PLUGIN_SOCKET));
        let c = parse(&format!(
            "{}docker_plugin = true\ndocker_plugin_socket = \"plugins/meshd.sock\"\n[interface]\nbridge = \"br0\"\n",
            minimal()
        ))
        .unwrap();
        assert!(c.docker.enabled);
        assert_eq!(
            c.docker.socket,
            PathBuf::from("/etc/meshd/plugins/meshd.sock"),
            "relative to the config file"
        );
        let e = err(&format!("{}docker_plugin = true\n", minimal()));
        assert!(
            e.contains(":4:") && e.contains("`docker_plugin`") && e.contains("bridge"),
            "{e}"
        );
        let e = err(&format!("{}docker_plugin = \"yes\"\n", minimal()));
        assert!(e.contains(":4:") && e.contains("docker_plugin"), "{e}");
        let e = err(&format!("{}docker_plugin_sock = \"x\"\n", minimal()));
        assert!(e.contains(":4:") && e.contains("docker_plugin_sock"), "{e}");
    }

    #[test]
    fn bridge_and_address_exclusive() {
        let e = err(&format!(
            "{}[interface]\nbridge = \"br0\"\naddress = \"10.0.0.1/24\"\n",
            minimal()
        ));
        assert!(e.contains("choose one"), "{e}");
    }

    #[test]
    fn missing_required_key_is_reported() {
        let e = err("name = \"h1\"\n");
        assert!(e.contains("private_key_file"), "{e}");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_node_name("h1").is_ok());
        assert!(validate_node_name("web-01.dc2").is_ok());
        assert!(validate_node_name("").is_err());
        assert!(validate_node_name("-x").is_err());
        assert!(validate_node_name("a b").is_err());
        assert!(validate_node_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn cidr_parses_and_displays() {
        let c: Cidr = "fd77::1/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd77::1/64");
        assert!("10.0.0.1".parse::<Cidr>().is_err());
        assert!("10.0.0.1/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn private_key_mode_is_enforced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meshd-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let _ = std::fs::remove_file(&path);
        let secret = StaticSecret::from_bytes([7; 32]);
        write_private_key(&path, &secret).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = read_private_key(&path).unwrap();
        assert_eq!(back.public_key(), secret.public_key());
        assert!(write_private_key(&path, &secret).is_err(), "no overwrite");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private_key(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
