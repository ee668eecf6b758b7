//! Creating a node on disk: founding a network (`meshd init`) and writing a joined node's files.
//!
//! Owns the layout of a node's files next to its config (`NAME.key`, `NAME.network.key` for
//! admins, the state directory `NAME.state/` with the certificate) and the text of a new config.
//! Invariants: nothing is written unless every input was valid; the config file is written last
//! and atomically, so an interrupted init or join never leaves a config that points at missing
//! files; secret files are created with mode 0600 and never overwritten; the rendered config is
//! parsed before it is written, so these commands cannot produce a config that fails to load.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use meshd_crypto::{Certificate, NetworkId, PublicKey};

use crate::config::{self, Cidr, Config, ConfigError};

/// Paths of a new node's files, relative names as written into its config.
pub struct NodeFiles {
    pub config: PathBuf,
    pub dir: PathBuf,
    pub key_name: String,
    pub network_secret_name: String,
    pub state_name: String,
}

impl NodeFiles {
    pub fn plan(config: &Path, name: &str) -> NodeFiles {
        let dir = config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        NodeFiles {
            config: config.to_path_buf(),
            dir,
            key_name: format!("{name}.key"),
            network_secret_name: format!("{name}.network.key"),
            state_name: format!("{name}.state"),
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(&self.key_name)
    }

    pub fn network_secret_path(&self) -> PathBuf {
        self.dir.join(&self.network_secret_name)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(&self.state_name)
    }

    /// Refuses to touch a node that already exists (config, key or state).
    pub fn check_unused(&self) -> Result<(), String> {
        for p in [&self.config, &self.key_path(), &self.state_dir()] {
            if p.exists() {
                return Err(format!(
                    "{} already exists; refusing to overwrite it",
                    p.display()
                ));
            }
        }
        Ok(())
    }
}

/// What goes into a new node's config.
pub struct NewConfig<'a> {
    pub name: &'a str,
    pub listen: Option<SocketAddr>,
    pub bridge: Option<&'a str>,
    pub address: Option<Cidr>,
    pub network: NetworkId,
    /// Admins name their network secret file.
    pub admin: bool,
    /// Bootstrap members: (name, key, endpoint).
    pub peers: &'a [(String, PublicKey, Option<SocketAddr>)],
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Renders and validates the config text for `files`.
pub fn render_config(files: &NodeFiles, new: &NewConfig<'_>) -> Result<String, ConfigError> {
    let mut text = format!(
        "# meshd node configuration; see docs/operations.md for every key.\nname = {}\nlisten = {}\nprivate_key_file = {}  # mode 0600, never share it\nstate_dir = {}     # certificate, revocations, invitations\n",
        toml_string(new.name),
        toml_string(
            &new.listen
                .map_or(config::DEFAULT_LISTEN.to_string(), |l| l.to_string())
        ),
        toml_string(&files.key_name),
        toml_string(&files.state_name),
    );
    text.push_str("\n[interface]\n");
    match (new.bridge, new.address) {
        (Some(b), _) => text.push_str(&format!("bridge = {}\n", toml_string(b))),
        (None, Some(a)) => text.push_str(&format!("address = {}\n", toml_string(&a.to_string()))),
        (None, None) => {
            text.push_str("# bridge = \"br0\"          # or: address = \"10.77.0.1/24\"\n")
        }
    }
    text.push_str(&format!(
        "\n[network]\nid = {}\n",
        toml_string(&new.network.to_string())
    ));
    if new.admin {
        text.push_str(&format!(
            "secret_file = {}  # admins only: signs certificates and revocations; mode 0600\n",
            toml_string(&files.network_secret_name)
        ));
    }
    if new.peers.is_empty() {
        text.push_str(
            "\n# Bootstrap members are added by `meshd join`; the rest are learned by gossip.\n",
        );
    }
    for (name, key, endpoint) in new.peers {
        text.push_str(&format!(
            "\n[[peers]]  # bootstrap member; the rest are learned by gossip\nname = {}\npublic_key = {}\n",
            toml_string(name),
            toml_string(&key.to_string())
        ));
        if let Some(e) = endpoint {
            text.push_str(&format!("endpoint = {}\n", toml_string(&e.to_string())));
        }
    }
    Config::parse(&files.config, &text)?;
    Ok(text)
}

/// Creates the state directory (mode 0700) if needed.
pub fn create_state_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    crate::io::node_lock::ensure_unlocked("creating the state directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `text` to `path` through a temporary file and a rename, so readers see the old or
/// the new content, never a mix.
///
/// Refuses to run while this thread holds the daemon's node (src/io/node_lock.rs): the write and
/// its fsync must never stall the data path.
/// Creates the temporary file `path` for an atomic write, with `mode`: `O_CREAT|O_EXCL|
/// O_NOFOLLOW`, so it is always a new file this process made, never one someone placed there or
/// a symlink to elsewhere. A leftover (a crash between create and rename) is removed once (the
/// link itself, if it is one) and the creation retried.
pub fn create_temporary(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

pub fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    crate::io::node_lock::ensure_unlocked("writing a file")?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = create_temporary(&tmp, 0o644)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Stores this node's certificate in its state directory.
pub fn write_certificate(state_dir: &Path, certificate: &Certificate) -> std::io::Result<()> {
    create_state_dir(state_dir)?;
    write_atomically(
        &state_dir.join("certificate"),
        config::encode_certificate_text(certificate).as_bytes(),
    )
}

/// The endpoints a node tells others to use: the configured `advertise` list, else `listen` if
/// it names an address, else every address in `local` (this host's, see
/// `crate::io::host::local_addresses`) with the listen port (IPv4 first). `local` is only read in
/// the last case; [`needs_local_addresses`] says when it is.
pub fn advertised_endpoints(
    advertise: &[SocketAddr],
    listen: SocketAddr,
    local: &[IpAddr],
) -> Vec<SocketAddr> {
    if !advertise.is_empty() {
        return advertise.to_vec();
    }
    if !needs_local_addresses(advertise, listen) {
        return vec![listen];
    }
    let mut ips = local.to_vec();
    if listen.is_ipv4() {
        ips.retain(|ip| ip.is_ipv4());
    }
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.into_iter()
        .take(8)
        .map(|ip| SocketAddr::new(ip, listen.port()))
        .collect()
}

/// Whether [`advertised_endpoints`] needs the host's addresses: nothing is configured to
/// advertise and `listen` is a wildcard.
pub fn needs_local_addresses(advertise: &[SocketAddr], listen: SocketAddr) -> bool {
    advertise.is_empty() && listen.ip().is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_never_writes_through_a_planted_temporary_file() {
        let dir = std::env::temp_dir().join(format!("meshd-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("members");
        // Someone plants the temporary name as a symlink to another file.
        std::os::unix::fs::symlink(&victim, dir.join("members.tmp")).unwrap();
        write_atomically(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new contents");
        assert!(!dir.join("members.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
