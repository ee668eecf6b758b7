//! The command line: argument parsing, the subcommands, and the exit-code contract.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Every failure prints
//! one line `meshd: error: ...` on stderr that says what to fix.

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
        /// The token `meshd invite` printed.
        token: String,
    },
    /// Remove a member from the network for good (admins only); spreads by gossip.
    Revoke {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// The member's name, as `meshd status` shows it.
        name: String,
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
}

/// An error with the exit code it maps to.
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
            } => init(&config, &name, listen, bridge, address),
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
            } => invite(&config, name.as_deref(), expires),
            Command::Join {
                config,
                name,
                listen,
                bridge,
                address,
                token,
            } => join(&config, name, listen, bridge, address, &token),
            Command::Revoke { config, name } => revoke(&config, &name),
            Command::AddPeer {
                config,
                name,
                public_key,
                endpoint,
            } => add_peer(&config, &name, public_key, endpoint),
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

fn invite(path: &Path, name: Option<&str>, expires: std::time::Duration) -> Result<(), CliError> {
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
    let endpoints = crate::io::host::advertised_endpoints(&config.advertise, config.listen);
    if endpoints.is_empty() {
        return Err(CliError::Usage(
            "no address to put in the token: set `advertise = [\"ADDR:PORT\"]` or a specific `listen` address".into(),
        ));
    }
    let seed = crate::io::os_seed().map_err(|e| CliError::Runtime(e.to_string()))?;
    let secret = InviteSecret::generate(&mut CoreRng::from_seed(seed));
    let expires_at = crate::io::unix_now().saturating_add(expires.as_secs());
    crate::io::invites::create_invite(&config.state_dir, expires_at, name, *secret.expose())
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

fn revoke(path: &Path, name: &str) -> Result<(), CliError> {
    use crate::core::membership::Revocation;
    let config = Config::load(path)?;
    let Some(network) = config.load_network_secret()? else {
        return Err(CliError::Runtime(
            "this node is not an admin of its network (its config has no [network] secret_file), so it cannot sign a revocation; run `meshd revoke` on an admin".into(),
        ));
    };
    if name == config.name {
        return Err(CliError::Usage(format!(
            "`{name}` is this node; revoke it from another admin"
        )));
    }
    // The running daemon knows every member by gossip; ask it for the key behind the name.
    let status = crate::io::control::query_status(&config.control_socket).map_err(|e| {
        CliError::Runtime(format!(
            "{e}; the daemon must be running so revoke can look up `{name}` and spread the revocation"
        ))
    })?;
    let member = status
        .members
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            CliError::Runtime(format!(
                "no member named `{name}` in this network (see `meshd status`)"
            ))
        })?;
    if member.state == "revoked" {
        println!("{name} is already revoked");
        return Ok(());
    }
    let key: PublicKey = member
        .public_key
        .parse()
        .map_err(|_| CliError::Runtime("the daemon reported a malformed key".into()))?;
    let now = crate::io::unix_now();
    let revocation = Revocation::issue(
        &network,
        key,
        name,
        now,
        now.saturating_add(config.network.certificate_lifetime.as_secs()),
    )
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
