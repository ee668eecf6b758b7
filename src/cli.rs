//! The command line: argument parsing, the subcommands, and the exit-code contract.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Every failure prints
//! one line `meshd: error: ...` on stderr that says what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshd_crypto::{CoreRng, PublicKey, StaticSecret};

use crate::config::{self, Cidr, Config};

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
    /// Create a config file and a private key for a new node.
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
    /// Add a static peer to the config file.
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
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log_level.as_deref().unwrap_or("info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    // Check the key before touching any device so a bad key file is a config error (exit 2).
    config.load_private_key()?;
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
    if path.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; refusing to overwrite it",
            path.display()
        )));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Runtime(format!("creating {}: {e}", dir.display())))?;
    let key_name = format!("{name}.key");
    let key_path = dir.join(&key_name);
    let seed = crate::io::os_seed().map_err(|e| CliError::Runtime(e.to_string()))?;
    let secret = StaticSecret::generate(&mut CoreRng::from_seed(seed));
    config::write_private_key(&key_path, &secret).map_err(|e| {
        CliError::Runtime(format!("writing private key {}: {e}", key_path.display()))
    })?;

    let mut text = format!(
        "# meshd node configuration; see docs/operations.md for every key.\nname = {}\nlisten = {}\nprivate_key_file = {}  # mode 0600, never share it\n\n[interface]\n",
        toml_string(name),
        toml_string(&listen.map_or(config::DEFAULT_LISTEN.to_string(), |l| l.to_string())),
        toml_string(&key_name),
    );
    match (&bridge, address) {
        (Some(b), _) => text.push_str(&format!("bridge = {}\n", toml_string(b))),
        (None, Some(a)) => text.push_str(&format!("address = {}\n", toml_string(&a.to_string()))),
        (None, None) => {
            text.push_str("# bridge = \"br0\"          # or: address = \"10.77.0.1/24\"\n")
        }
    }
    text.push_str(
        "\n# Peers: add with `meshd add-peer --config PATH --name NAME --public-key KEY --endpoint ADDR:PORT`\n",
    );
    // Validate what we are about to write, so init can never produce a config that fails to load.
    Config::parse(path, &text)?;
    write_atomically(path, &text)?;
    println!("{}", secret.public_key());
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let tmp = path.with_extension("toml.tmp");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::Runtime(format!("writing {}: {e}", path.display()))
    })
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
