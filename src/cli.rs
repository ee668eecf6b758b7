//! The command line: argument parsing, the subcommands, and the exit-code contract.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Every failure prints
//! one line `meshd: error: ...` on stderr that says what to fix.

use crate::core::ranges::{
    choose_range, ContainerNetwork, Grant, Range4, Range6, DEFAULT_HOST_PREFIX,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshd_crypto::{Certificate, CoreRng, NetworkSecret, PublicKey, StaticSecret};

use crate::config::{self, Cidr, Config};
use crate::enroll::{self, render_config, NewConfig, NodeFiles};
use crate::wire::{InviteSecret, InviteToken};

#[derive(Parser, Debug)]
#[command(
    name = "meshd",
    version,
    about = "Encrypted Layer-2 mesh VPN: one virtual switch across hosts",
    long_about = "Encrypted Layer-2 mesh VPN: one virtual switch across hosts.\n\nRun the node with `meshd --config PATH`; see the subcommands for setup and inspection."
)]
pub struct Cli {
    /// Run the node with this config file in the foreground until SIGINT/SIGTERM.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The network's container address space, fixed when the network is founded.
#[derive(clap::Args, Debug)]
struct ContainerArgs {
    /// The network's IPv4 container subnet (e.g. 10.77.0.0/16); every member is granted a
    /// range of it when admitted. Without it the network has no container addresses.
    #[arg(long, value_name = "CIDR")]
    subnet: Option<Range4>,
    /// The network's IPv6 container subnet (e.g. fd77::/48); every member gets a /64 of it.
    #[arg(long, value_name = "CIDR", requires = "subnet")]
    subnet6: Option<Range6>,
    /// Prefix length of each member's IPv4 range.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HOST_PREFIX, requires = "subnet")]
    host_prefix: u8,
}

impl ContainerArgs {
    fn network(&self) -> Result<Option<ContainerNetwork>, CliError> {
        let Some(subnet) = self.subnet else {
            return Ok(None);
        };
        ContainerNetwork::new(subnet, self.host_prefix, self.subnet6)
            .map(Some)
            .map_err(|e| CliError::Usage(format!("--subnet/--subnet6/--host-prefix: {e}")))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Found a new network: config, node key, network secret (this node is its first admin), certificate.
    Init {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// This node's name, unique in the mesh.
        #[arg(long)]
        name: String,
        /// UDP address to listen on.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Linux bridge to enslave the TAP device into (created if missing).
        #[arg(long, value_name = "BR", conflicts_with = "address")]
        bridge: Option<String>,
        /// Address for the TAP device itself, when no bridge is used.
        #[arg(long, value_name = "CIDR")]
        address: Option<Cidr>,
        #[command(flatten)]
        containers: ContainerArgs,
    },
    /// Print this node's public key.
    Pubkey {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Show the running daemon's peers, switch table and counters.
    Status {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a one-time invitation token for a new host (admins only).
    Invite {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Reserve this member name for the new host.
        #[arg(long)]
        name: Option<String>,
        /// How long the token stays valid (s, m, h or d suffix).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        expires: std::time::Duration,
        /// The container address range the new host is to hold (one of the network's host
        /// ranges, e.g. 10.77.9.0/24); default: the lowest free one at admission.
        #[arg(long, value_name = "CIDR")]
        range: Option<Range4>,
    },
    /// Join a network with a token from `meshd invite`: writes this host's key, certificate and config.
    Join {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// This host's member name (default: the name the token reserves).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        #[arg(long, value_name = "BR", conflicts_with = "address")]
        bridge: Option<String>,
        #[arg(long, value_name = "CIDR")]
        address: Option<Cidr>,
        /// The token `meshd invite` printed. It shows in the process list and shell history;
        /// prefer `--token-file`.
        #[arg(required_unless_present = "token_file", conflicts_with = "token_file")]
        token: Option<String>,
        /// Read the token from this file (`-`: standard input) instead of the command line.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
    },
    /// Remove a member from the network for good (admins only); spreads by gossip.
    Revoke {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// The member's name, as `meshd status` shows it. It must name exactly one member that
        /// is not revoked yet; if it names several, say which with `--key`.
        #[arg(required_unless_present = "key")]
        name: Option<String>,
        /// The member's key, as `meshd status` shows it.
        #[arg(long, value_name = "KEY")]
        key: Option<PublicKey>,
    },
    /// Add a bootstrap member (a peer to contact at start) to the config file.
    AddPeer {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// The peer's key, as printed by `meshd pubkey` on it.
        #[arg(long, value_name = "KEY")]
        public_key: PublicKey,
        /// Where the peer listens; omit if it only connects to us.
        #[arg(long, value_name = "ADDR:PORT")]
        endpoint: Option<SocketAddr>,
    },
    /// Put a network namespace on the container network: a veth pair into the bridge, an address
    /// of this host's range, a default route via the gateway.
    Attach(crate::attach::AttachArgs),
    /// Undo `meshd attach`: delete the interface and release its address.
    Detach(crate::attach::DetachArgs),
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Runtime(String),
}

impl From<config::ConfigError> for CliError {
    fn from(e: config::ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("meshd: error: {m}");
            ExitCode::from(2)
        }
        Err(CliError::Runtime(m)) => {
            eprintln!("meshd: error: {m}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), CliError> {
    match (cli.command, cli.config) {
        (None, Some(path)) => run(&path),
        (None, None) => Err(CliError::Usage(
            "nothing to do: run the node with `meshd --config PATH`, or see `meshd --help`".into(),
        )),
        (Some(_), Some(_)) => Err(CliError::Usage(
            "put --config after the subcommand, e.g. `meshd status --config PATH`".into(),
        )),
        (Some(command), None) => match command {
            Command::Init {
                config,
                name,
                listen,
                bridge,
                address,
                containers,
            } => init(
                &config,
                &name,
                listen,
                bridge,
                address,
                containers.network()?,
            ),
            Command::Pubkey { config } => {
                let c = Config::load(&config)?;
                println!("{}", c.load_private_key()?.public_key());
                Ok(())
            }
            Command::Status { config, json } => status(&config, json),
            Command::Invite {
                config,
                name,
                expires,
                range,
            } => invite(&config, name.as_deref(), expires, range),
            Command::Join {
                config,
                name,
                listen,
                bridge,
                address,
                token,
                token_file,
            } => {
                let token = match (token, token_file) {
                    (Some(token), _) => token,
                    (None, Some(file)) => read_token(&file)?,
                    (None, None) => return Err(CliError::Usage("no token given".into())),
                };
                join(&config, name, listen, bridge, address, &token)
            }
            Command::Revoke { config, name, key } => revoke(&config, name.as_deref(), key),
            Command::AddPeer {
                config,
                name,
                public_key,
                endpoint,
            } => add_peer(&config, &name, public_key, endpoint),
            Command::Attach(args) => crate::attach::run_attach(args),
            Command::Detach(args) => crate::attach::run_detach(args),
        },
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // quinn-udp reports every refused send at info (and meshd counts them); at the daemon's
    // default level that would be a line a second per unreachable peer.
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| config.log_level.clone().unwrap_or_else(|| "info".into()));
    let spec = if spec.contains("quinn_udp") {
        spec
    } else {
        format!("{spec},quinn_udp=warn")
    };
    let filter =
        EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info,quinn_udp=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    // Check the keys and certificate before touching any device, so a bad file is a config
    // error (exit 2).
    let key = config.load_private_key()?;
    config.load_certificate(&key.public_key())?;
    config.load_network_secret()?;
    init_logging(&config);
    crate::io::run(config).map_err(|e| CliError::Runtime(e.to_string()))
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn init(
    path: &Path,
    name: &str,
    listen: Option<SocketAddr>,
    bridge: Option<String>,
    address: Option<Cidr>,
    containers: Option<ContainerNetwork>,
) -> Result<(), CliError> {
    config::validate_node_name(name).map_err(CliError::Usage)?;
    if let Some(b) = &bridge {
        config::validate_ifname(b).map_err(CliError::Usage)?;
    }
    let files = NodeFiles::plan(path, name);
    files.check_unused().map_err(CliError::Usage)?;
    std::fs::create_dir_all(&files.dir)
        .map_err(|e| CliError::Runtime(format!("creating {}: {e}", files.dir.display())))?;
    let runtime = |what: &str, p: &Path| {
        let what = format!("writing {what} {}", p.display());
        move |e: std::io::Error| CliError::Runtime(format!("{what}: {e}"))
    };

    let seed = crate::io::os_seed().map_err(|e| CliError::Runtime(e.to_string()))?;
    let mut rng = CoreRng::from_seed(seed);
    let secret = StaticSecret::generate(&mut rng);
    let mut network_seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rng, &mut network_seed);
    let network = NetworkSecret::from_seed(network_seed);
    let now = crate::io::unix_now();
    let lifetime = config::DEFAULT_CERTIFICATE_LIFETIME_DAYS * 86_400;
    let certificate = Certificate::issue(
        &network,
        name,
        secret.public_key(),
        secret.signing_key().public(),
        now,
        now + lifetime,
        true,
    )
    .and_then(|certificate| {
        // The founder holds the network's first range.
        let grant = containers
            .and_then(|network| Grant::new(network, network.range(0)?, now))
            .map(|g| g.to_certificate());
        certificate.with_grant(&network, grant)
    })
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let text = render_config(
        &files,
        &NewConfig {
            name,
            listen,
            bridge: bridge.as_deref(),
            address,
            network: network.network_id(),
            admin: true,
            peers: &[],
        },
    )?;

    let key_path = files.key_path();
    config::write_private_key(&key_path, &secret).map_err(runtime("private key", &key_path))?;
    let secret_path = files.network_secret_path();
    config::write_network_secret(&secret_path, &network)
        .map_err(runtime("network secret", &secret_path))?;
    enroll::write_certificate(&files.state_dir(), &certificate)
        .map_err(runtime("certificate in", &files.state_dir()))?;
    enroll::write_atomically(path, text.as_bytes()).map_err(runtime("config", path))?;
    println!("{}", secret.public_key());
    eprintln!(
        "founded network {} with {name} as its first admin; add hosts with `meshd invite --config {}`",
        network.network_id(),
        path.display()
    );
    Ok(())
}

/// `meshd invite --range`: the range must be one of the network's host ranges, and (when the
/// daemon answers) not overlap a range a member holds. The admin checks again at admission.
fn check_invite_range(config: &Config, key: &PublicKey, range: Range4) -> Result<(), CliError> {
    let certificate = config.load_certificate(key)?;
    let Some(grant) = certificate.grant.as_ref().and_then(Grant::from_certificate) else {
        return Err(CliError::Usage(format!(
            "--range {range}: this network has no container subnet (it was founded without \
             `meshd init --subnet`)"
        )));
    };
    choose_range(&grant.network, Some(range), &[])
        .map_err(|e| CliError::Usage(format!("--range: {e}")))?;
    if let Ok(status) = crate::io::control::query_status(&config.control_socket) {
        let own = status
            .host_network
            .as_ref()
            .map(|h| (status.name.as_str(), h.range));
        let members = status
            .members
            .iter()
            .filter(|m| m.state != "revoked")
            .filter_map(|m| Some((m.name.as_str(), m.range?)));
        if let Some((holder, _)) = own
            .into_iter()
            .chain(members)
            .find(|(_, r)| r.overlaps(&range))
        {
            return Err(CliError::Usage(format!(
                "--range {range} overlaps the range member `{holder}` holds; `meshd status` lists \
                 the ranges in use"
            )));
        }
    }
    Ok(())
}

/// Parses `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3_600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s > 0)
    .ok_or_else(|| format!("`{text}` is not a positive duration like 90s, 15m, 1h or 7d"))?;
    Ok(std::time::Duration::from_secs(secs))
}

fn invite(
    path: &Path,
    name: Option<&str>,
    expires: std::time::Duration,
    range: Option<Range4>,
) -> Result<(), CliError> {
    let config = Config::load(path)?;
    if let Some(n) = name {
        config::validate_node_name(n).map_err(CliError::Usage)?;
    }
    if config.load_network_secret()?.is_none() {
        return Err(CliError::Runtime(
            "this node is not an admin of its network (its config has no [network] secret_file), so it cannot sign certificates; run `meshd invite` on an admin".into(),
        ));
    }
    let key = config.load_private_key()?;
    if let Some(range) = range {
        check_invite_range(&config, &key.public_key(), range)?;
    }
    let endpoints = crate::io::host::advertised_endpoints(&config.advertise, config.listen);
    if endpoints.is_empty() {
        return Err(CliError::Usage(
            "no address to put in the token: set `advertise = [\"ADDR:PORT\"]` or a specific `listen` address".into(),
        ));
    }
    let seed = crate::io::os_seed().map_err(|e| CliError::Runtime(e.to_string()))?;
    let secret = InviteSecret::generate(&mut CoreRng::from_seed(seed));
    let expires_at = crate::io::unix_now().saturating_add(expires.as_secs());
    crate::io::invites::create_invite(&config.state_dir, expires_at, name, range, *secret.expose())
        .map_err(|e| {
            CliError::Runtime(format!(
                "recording the invitation in {}: {e}",
                config.state_dir.display()
            ))
        })?;
    let token = InviteToken::new(
        config.network.id,
        key.public_key(),
        endpoints,
        secret,
        expires_at,
        name.map(str::to_string),
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    println!("{}", token.encode());
    eprintln!(
        "valid until {} for one join; on the new host run: meshd join --config PATH{} TOKEN",
        crate::core::invite::format_unix(expires_at),
        if name.is_some() { "" } else { " --name NAME" }
    );
    Ok(())
}

fn join(
    path: &Path,
    name: Option<String>,
    listen: Option<SocketAddr>,
    bridge: Option<String>,
    address: Option<Cidr>,
    token_text: &str,
) -> Result<(), CliError> {
    let token = InviteToken::parse(token_text).map_err(|e| CliError::Runtime(e.to_string()))?;
    let name = match (name, token.name()) {
        (Some(n), _) => n,
        (None, Some(reserved)) => reserved.to_string(),
        (None, None) => {
            return Err(CliError::Usage(
                "--name is required: this invitation does not reserve a name".into(),
            ))
        }
    };
    config::validate_node_name(&name).map_err(CliError::Usage)?;
    if let Some(b) = &bridge {
        config::validate_ifname(b).map_err(CliError::Usage)?;
    }
    let files = NodeFiles::plan(path, &name);
    files.check_unused().map_err(CliError::Usage)?;

    let seed = crate::io::os_seed().map_err(|e| CliError::Runtime(e.to_string()))?;
    let mut rng = CoreRng::from_seed(seed);
    let secret = StaticSecret::generate(&mut rng);
    let listen_addr = listen.unwrap_or_else(|| {
        config::DEFAULT_LISTEN
            .parse()
            .expect("constant address parses")
    });
    let result = crate::io::join::join(&token, &secret, &name, listen_addr, &mut rng)
        .map_err(|e| CliError::Runtime(e.to_string()))?;

    // The inviter is the one bootstrap member written down: it answered just now, and gossip
    // through it brings every other member within seconds.
    let peers: Vec<(String, PublicKey, Option<SocketAddr>)> = result
        .bootstrap
        .iter()
        .filter(|m| m.key == token.inviter())
        .map(|m| {
            let reached = m.endpoints.iter().find(|e| token.endpoints().contains(e));
            (
                m.name.clone(),
                m.key,
                reached.or(m.endpoints.first()).copied(),
            )
        })
        .collect();
    let text = render_config(
        &files,
        &NewConfig {
            name: &name,
            listen,
            bridge: bridge.as_deref(),
            address,
            network: result.network,
            admin: false,
            peers: &peers,
        },
    )?;
    std::fs::create_dir_all(&files.dir)
        .map_err(|e| CliError::Runtime(format!("creating {}: {e}", files.dir.display())))?;
    let key_path = files.key_path();
    config::write_private_key(&key_path, &secret).map_err(|e| {
        CliError::Runtime(format!("writing private key {}: {e}", key_path.display()))
    })?;
    enroll::write_certificate(&files.state_dir(), &result.certificate).map_err(|e| {
        CliError::Runtime(format!(
            "writing the certificate in {}: {e}",
            files.state_dir().display()
        ))
    })?;
    write_atomically(path, &text)?;
    println!("{}", secret.public_key());
    eprintln!(
        "joined network {} as {name} (certificate valid until {}); start the node with `meshd --config {}`",
        result.network,
        crate::core::invite::format_unix(result.certificate.expires_at),
        path.display()
    );
    Ok(())
}

/// The token in `path` (`-`: standard input), without surrounding whitespace.
fn read_token(path: &Path) -> Result<String, CliError> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map(|_| text)
            .map_err(|e| CliError::Usage(format!("reading the token from standard input: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!("reading the token from {}: {e}", path.display()))
        })?
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::Usage(format!(
            "{} holds no token",
            if path == Path::new("-") {
                "standard input".to_string()
            } else {
                path.display().to_string()
            }
        )));
    }
    Ok(token.to_string())
}

/// Whom `meshd revoke` acts on.
#[derive(Debug, PartialEq, Eq)]
enum RevokeTarget {
    /// A current member: revoke this key, issued to this name.
    Member { name: String, key: PublicKey },
    /// The member named is revoked already (and no current one holds the name or key).
    AlreadyRevoked { name: String, key: PublicKey },
}

/// Resolves `name` and/or `key` against the members the daemon knows: a name must be held by
/// exactly one member that is not revoked (a name can be reused after its old holder was
/// revoked, so several entries may carry it); with `key`, that member, whose name must match.
fn revoke_target(
    members: &[crate::status::MemberStatus],
    name: Option<&str>,
    key: Option<PublicKey>,
) -> Result<RevokeTarget, CliError> {
    let key_of = |m: &crate::status::MemberStatus| m.public_key.parse::<PublicKey>().ok();
    let matching: Vec<(&crate::status::MemberStatus, PublicKey)> = members
        .iter()
        .filter_map(|m| Some((m, key_of(m)?)))
        .filter(|(m, k)| name.is_none_or(|n| m.name == n) && key.is_none_or(|want| *k == want))
        .collect();
    let what = match (name, key) {
        (Some(n), Some(k)) => format!("member `{n}` with key {k}"),
        (Some(n), None) => format!("member named `{n}`"),
        (None, Some(k)) => format!("member with key {k}"),
        (None, None) => return Err(CliError::Usage("name a member or give --key".into())),
    };
    let (current, revoked): (Vec<_>, Vec<_>) = matching
        .into_iter()
        .partition(|(m, _)| m.state != "revoked");
    match (current.as_slice(), revoked.first()) {
        ([(m, k)], _) => Ok(RevokeTarget::Member {
            name: m.name.clone(),
            key: *k,
        }),
        ([], Some((m, k))) => Ok(RevokeTarget::AlreadyRevoked {
            name: m.name.clone(),
            key: *k,
        }),
        ([], None) => Err(CliError::Runtime(format!(
            "no {what} in this network (see `meshd status`)"
        ))),
        (several, _) => {
            let keys: Vec<String> = several.iter().map(|(_, k)| k.to_string()).collect();
            Err(CliError::Usage(format!(
                "{} current members are named `{}`; say which with --key: {}",
                several.len(),
                name.unwrap_or_default(),
                keys.join(", ")
            )))
        }
    }
}

fn revoke(path: &Path, name: Option<&str>, key: Option<PublicKey>) -> Result<(), CliError> {
    use crate::core::membership::Revocation;
    let config = Config::load(path)?;
    let Some(network) = config.load_network_secret()? else {
        return Err(CliError::Runtime(
            "this node is not an admin of its network (its config has no [network] secret_file), so it cannot sign a revocation; run `meshd revoke` on an admin".into(),
        ));
    };
    let own_key = config.load_private_key()?.public_key();
    if key == Some(own_key) || (key.is_none() && name == Some(config.name.as_str())) {
        return Err(CliError::Usage(format!(
            "`{}` is this node; revoke it from another admin",
            config.name
        )));
    }
    // The running daemon knows every member by gossip; ask it for the key behind the name.
    let status = crate::io::control::query_status(&config.control_socket).map_err(|e| {
        CliError::Runtime(format!(
            "{e}; the daemon must be running so revoke can look up the member and spread the revocation"
        ))
    })?;
    let (name, key) = match revoke_target(&status.members, name, key)? {
        RevokeTarget::Member { name, key } => (name, key),
        RevokeTarget::AlreadyRevoked { name, key } => {
            println!("{name} ({key}) is already revoked");
            return Ok(());
        }
    };
    if key == own_key {
        return Err(CliError::Usage(format!(
            "`{name}` is this node; revoke it from another admin"
        )));
    }
    let name = name.as_str();
    let now = crate::io::unix_now();
    // Kept (and the key refused) until the newest certificate the daemon has seen for the key
    // expires, and no earlier than any certificate this admin could have issued before now.
    let key_text = key.to_string();
    let newest_certificate = status
        .members
        .iter()
        .filter(|m| m.public_key == key_text)
        .map(|m| m.certificate_expires)
        .max();
    let expires_at = crate::core::membership::revocation_expiry(
        now,
        config.network.certificate_lifetime,
        newest_certificate,
    );
    let revocation = Revocation::issue(&network, key, name, now, expires_at)
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    crate::io::state::write_revocation(&config.state_dir, &revocation).map_err(|e| {
        CliError::Runtime(format!(
            "storing the revocation in {}: {e}",
            config.state_dir.display()
        ))
    })?;
    println!("revoked {name} ({key})");
    eprintln!("the daemon applies it within a second and spreads it by gossip; every member then refuses {name}");
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    enroll::write_atomically(path, text.as_bytes())
        .map_err(|e| CliError::Runtime(format!("writing {}: {e}", path.display())))
}

fn add_peer(
    path: &Path,
    name: &str,
    public_key: PublicKey,
    endpoint: Option<SocketAddr>,
) -> Result<(), CliError> {
    Config::load(path)?;
    let old = std::fs::read_to_string(path)
        .map_err(|e| CliError::Runtime(format!("reading {}: {e}", path.display())))?;
    let mut text = old.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "\n[[peers]]\nname = {}\npublic_key = {}\n",
        toml_string(name),
        toml_string(&public_key.to_string())
    ));
    if let Some(e) = endpoint {
        text.push_str(&format!("endpoint = {}\n", toml_string(&e.to_string())));
    }
    Config::parse(path, &text)?;
    write_atomically(path, &text)
}

fn status(path: &Path, json: bool) -> Result<(), CliError> {
    let config = Config::load(path)?;
    let status = crate::io::control::query_status(&config.control_socket)
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serializes")
        );
    } else {
        print!("{}", status.render_table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MemberStatus;

    fn member(name: &str, seed: u8, state: &str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            public_key: key(seed).to_string(),
            certificate_expires: 0,
            state: state.into(),
            endpoints: Vec::new(),
            direct: false,
            via: None,
            admin: false,
            range: None,
        }
    }

    fn key(seed: u8) -> PublicKey {
        StaticSecret::from_bytes([seed; 32]).public_key()
    }

    #[test]
    fn a_reused_name_resolves_to_its_current_holder_not_the_revoked_one() {
        let members = [member("web", 1, "revoked"), member("web", 2, "alive")];
        assert_eq!(
            revoke_target(&members, Some("web"), None).unwrap(),
            RevokeTarget::Member {
                name: "web".into(),
                key: key(2)
            }
        );
        assert_eq!(
            revoke_target(&members, None, Some(key(1))).unwrap(),
            RevokeTarget::AlreadyRevoked {
                name: "web".into(),
                key: key(1)
            }
        );
    }

    #[test]
    fn an_ambiguous_name_is_refused_with_its_keys_and_key_picks_one() {
        let members = [member("db", 3, "alive"), member("db", 4, "down")];
        let Err(CliError::Usage(message)) = revoke_target(&members, Some("db"), None) else {
            panic!("an ambiguous name must be a usage error");
        };
        assert!(message.contains(&key(3).to_string()) && message.contains(&key(4).to_string()));
        assert_eq!(
            revoke_target(&members, Some("db"), Some(key(4))).unwrap(),
            RevokeTarget::Member {
                name: "db".into(),
                key: key(4)
            }
        );
        assert!(matches!(
            revoke_target(&members, Some("web"), Some(key(4))),
            Err(CliError::Runtime(_))
        ));
        assert!(matches!(
            revoke_target(&members, Some("nobody"), None),
            Err(CliError::Runtime(_))
        ));
    }

    #[test]
    fn join_takes_its_token_from_a_file_or_the_command_line_but_not_both() {
        let dir = std::env::temp_dir().join(format!("meshd-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  meshd1-token-text\n").unwrap();
        assert_eq!(read_token(&file).unwrap(), "meshd1-token-text");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(read_token(&file), Err(CliError::Usage(_))));
        assert!(matches!(
            read_token(&dir.join("missing")),
            Err(CliError::Usage(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();

        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let base = ["meshd", "join", "--config", "c.toml"];
        assert!(parse(&[&base[..], &["TOKEN"]].concat()).is_ok());
        assert!(parse(&[&base[..], &["--token-file", "-"]].concat()).is_ok());
        assert!(parse(&base).is_err(), "a token is required");
        assert!(parse(&[&base[..], &["TOKEN", "--token-file", "t"]].concat()).is_err());
        let revoke = ["meshd", "revoke", "--config", "c.toml"];
        assert!(parse(&revoke).is_err(), "a name or a key is required");
        let k = key(1).to_string();
        assert!(parse(&[&revoke[..], &["--key", k.as_str()]].concat()).is_ok());
    }
}
