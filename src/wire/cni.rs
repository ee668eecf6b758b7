//! The CNI plugin protocol (spec 1.0.0, and 0.4.0 whose results differ only in one field): the
//! `CNI_*` environment and the network configuration on stdin in, results and errors out.
//!
//! Owns parsing a runtime's call into a [`CniRequest`] and the JSON layouts of what the plugin
//! prints ([`CniResult`], [`CniError`], the `VERSION` answer). Parsing checks the cheapest things
//! first: the command, then the identifiers in the environment, then the size of stdin, the JSON
//! syntax, the version, the set of keys, and last the values. Invariants: a `CniCall` for `ADD`
//! or `CHECK` always has a network namespace; container ids, interface names and the network name
//! have been checked against the spec's character sets; the configuration never carries an
//! `ipam` section or a key this plugin does not know (the error names the key); every error
//! carries the spec's code for its kind, so the runtime can tell a bad config from a transient
//! failure.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// The spec versions whose configurations and results this plugin honours, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["0.4.0", "1.0.0"];
/// Largest network configuration read from stdin (a chained `prevResult` included).
pub const MAX_CONFIG_LEN: usize = 1 << 20;
/// The meshd config a network configuration without `meshd_config` uses.
pub const DEFAULT_MESHD_CONFIG: &str = "/etc/meshd/meshd.toml";
/// How long `ADD` waits for the daemon and its range when `meshd_wait_seconds` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// Longest `meshd_wait_seconds` accepted (a runtime gives up on a plugin long before).
pub const MAX_WAIT_SECONDS: u64 = 300;
/// Longest container id accepted.
pub const MAX_CONTAINER_ID: usize = 256;
/// Longest `CNI_ARGS` / `CNI_PATH` / `CNI_NETNS` accepted.
pub const MAX_ENV_VALUE: usize = 4096;

/// Keys of the network configuration: the spec's own, what runtimes insert, and meshd's.
const KNOWN_KEYS: [&str; 11] = [
    "cniVersion",
    "name",
    "type",
    "disableCheck",
    "args",
    "runtimeConfig",
    "capabilities",
    "prevResult",
    "dns",
    "meshd_config",
    "meshd_wait_seconds",
];

/// The spec's error codes (0-99 are the spec's, 100 and up this plugin's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodingFailure = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    /// No address could be reserved in this host's range.
    AddressFailure = 100,
    /// The veth pair or the namespace end could not be set up.
    InterfaceFailure = 101,
    /// `CHECK` found the attachment not as `ADD` left it.
    CheckFailed = 102,
}

/// An error as the plugin prints it: `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error as the one JSON object the spec wants on stdout.
    pub fn to_json(&self, version: CniVersion) -> String {
        let mut object = serde_json::json!({
            "cniVersion": version.as_str(),
            "code": self.code as u32,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            object["details"] = self.details.clone().into();
        }
        object.to_string()
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code as u32, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

/// A spec version this plugin honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_4_0,
    V1_0_0,
}

impl CniVersion {
    pub const LATEST: CniVersion = CniVersion::V1_0_0;

    pub fn parse(s: &str) -> Option<CniVersion> {
        match s {
            "0.4.0" => Some(CniVersion::V0_4_0),
            "1.0.0" => Some(CniVersion::V1_0_0),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
        }
    }
}

/// `CNI_COMMAND` for a call about a container (`VERSION` is [`CniRequest::Version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    fn parse(s: &str) -> Option<CniCommand> {
        match s {
            "ADD" => Some(CniCommand::Add),
            "DEL" => Some(CniCommand::Del),
            "CHECK" => Some(CniCommand::Check),
            _ => None,
        }
    }
}

/// The network configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub version: CniVersion,
    pub name: String,
    /// The meshd config whose daemon and state directory this network uses.
    pub meshd_config: PathBuf,
    /// How long `ADD` waits for the daemon to answer with a range.
    pub wait: Duration,
    /// The IPv4 addresses (with prefix lengths) of the `prevResult` the runtime passed, if any.
    pub prev_ips: Option<Vec<(Ipv4Addr, u8)>>,
}

/// An `ADD`, `DEL` or `CHECK`: who is attached where, with which configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniCall {
    pub command: CniCommand,
    pub container_id: String,
    pub ifname: String,
    /// Always `Some` for `ADD` and `CHECK`; `DEL` may come after the namespace is gone.
    pub netns: Option<PathBuf>,
    pub conf: NetConf,
}

impl CniCall {
    /// The owner string under which the address store and the veth names know this attachment.
    pub fn owner(&self) -> String {
        format!("cni:{}/{}", self.container_id, self.ifname)
    }
}

/// What the runtime asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniRequest {
    /// `VERSION`, answered in the requested version if it is one of ours.
    Version(CniVersion),
    Call(CniCall),
}

/// A parse failure with the version to report it in (the configuration's, once known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailure {
    pub version: CniVersion,
    pub error: CniError,
}

fn env_error(msg: String) -> ParseFailure {
    ParseFailure {
        version: CniVersion::LATEST,
        error: CniError::new(ErrorCode::InvalidEnvironment, msg),
    }
}

fn env_value(
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    key: &str,
) -> Result<Option<String>, ParseFailure> {
    let Some(value) = env(key) else {
        return Ok(None);
    };
    let value = value
        .into_string()
        .map_err(|_| env_error(format!("{key} is not valid UTF-8")))?;
    if value.len() > MAX_ENV_VALUE {
        return Err(env_error(format!(
            "{key} is longer than {MAX_ENV_VALUE} bytes"
        )));
    }
    Ok(Some(value))
}

fn required(
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    key: &str,
) -> Result<String, ParseFailure> {
    match env_value(env, key)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(env_error(format!("{key} is not set"))),
    }
}

/// The spec's container id: letters, digits, `_`, `.`, `-`, starting with a letter or digit.
fn check_container_id(id: &str) -> Result<(), String> {
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if id.len() <= MAX_CONTAINER_ID && first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "CNI_CONTAINERID `{id}` is not a container id (letters, digits, '_', '.', '-', \
             starting with a letter or digit, at most {MAX_CONTAINER_ID} characters)"
        ))
    }
}

/// The spec's network name: the container id's character set.
fn check_network_name(name: &str) -> Result<(), String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 255 {
        Ok(())
    } else {
        Err(format!(
            "network name `{name}` must be letters, digits, '_', '.', '-', starting with a \
             letter or digit"
        ))
    }
}

/// Which of `SUPPORTED_VERSIONS` a `VERSION` call's stdin asks for (the latest if it names none
/// or one we do not honour: the answer lists what we do).
fn requested_version(stdin: &[u8]) -> Result<CniVersion, ParseFailure> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Ok(CniVersion::LATEST);
    }
    let value: serde_json::Value = decode(stdin)?;
    Ok(value
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .and_then(CniVersion::parse)
        .unwrap_or(CniVersion::LATEST))
}

fn decoding(version: CniVersion, msg: String) -> ParseFailure {
    ParseFailure {
        version,
        error: CniError::new(ErrorCode::DecodingFailure, msg),
    }
}

fn decode(stdin: &[u8]) -> Result<serde_json::Value, ParseFailure> {
    if stdin.len() > MAX_CONFIG_LEN {
        return Err(decoding(
            CniVersion::LATEST,
            format!("the network configuration on stdin is larger than {MAX_CONFIG_LEN} bytes"),
        ));
    }
    serde_json::from_slice(stdin).map_err(|e| {
        decoding(
            CniVersion::LATEST,
            format!("the network configuration on stdin is not JSON: {e}"),
        )
    })
}

/// The `prevResult` fields this plugin reads; the rest of a result is the runtime's business.
#[derive(serde::Deserialize)]
struct PrevResult {
    #[serde(default)]
    ips: Vec<PrevIp>,
}

#[derive(serde::Deserialize)]
struct PrevIp {
    address: String,
}

fn parse_v4_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((addr.parse().ok()?, prefix))
}

/// Parses the network configuration (stdin of `ADD`, `DEL` and `CHECK`).
pub fn parse_net_conf(stdin: &[u8]) -> Result<NetConf, ParseFailure> {
    let value = decode(stdin)?;
    let object = value.as_object().ok_or_else(|| {
        decoding(
            CniVersion::LATEST,
            "the network configuration must be a JSON object".into(),
        )
    })?;
    let version = match object.get("cniVersion") {
        Some(serde_json::Value::String(v)) => CniVersion::parse(v).ok_or_else(|| ParseFailure {
            version: CniVersion::LATEST,
            error: CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "cniVersion {v:?} is not supported; meshd-cni honours {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ),
        })?,
        Some(_) => {
            return Err(decoding(
                CniVersion::LATEST,
                "cniVersion must be a string".into(),
            ))
        }
        None => {
            return Err(ParseFailure {
                version: CniVersion::LATEST,
                error: CniError::new(ErrorCode::InvalidNetworkConfig, "cniVersion is missing"),
            })
        }
    };
    let invalid = |msg: String| ParseFailure {
        version,
        error: CniError::new(ErrorCode::InvalidNetworkConfig, msg),
    };
    for key in object.keys() {
        if key == "ipam" {
            return Err(ParseFailure {
                version,
                error: CniError::new(
                    ErrorCode::UnsupportedField,
                    "meshd-cni hands out addresses from this host's meshd range itself: remove \
                     the `ipam` section",
                ),
            });
        }
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(ParseFailure {
                version,
                error: CniError::new(
                    ErrorCode::UnsupportedField,
                    format!(
                        "unknown key `{key}` in the network configuration (meshd-cni knows {})",
                        KNOWN_KEYS.join(", ")
                    ),
                ),
            });
        }
    }
    let string = |key: &str| -> Result<Option<&str>, ParseFailure> {
        match object.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(decoding(version, format!("`{key}` must be a string"))),
        }
    };
    let name = string("name")?.ok_or_else(|| invalid("`name` is missing".into()))?;
    check_network_name(name).map_err(invalid)?;
    let kind = string("type")?.ok_or_else(|| invalid("`type` is missing".into()))?;
    if kind.is_empty() {
        return Err(invalid("`type` is empty".into()));
    }
    let meshd_config = match string("meshd_config")? {
        None => PathBuf::from(DEFAULT_MESHD_CONFIG),
        Some(p) if p.starts_with('/') && !p.contains('\0') => PathBuf::from(p),
        Some(p) => {
            return Err(invalid(format!(
                "meshd_config `{p}` must be an absolute path"
            )))
        }
    };
    let wait = match object.get("meshd_wait_seconds") {
        None => DEFAULT_WAIT,
        Some(v) => match v.as_u64() {
            Some(s) if s <= MAX_WAIT_SECONDS => Duration::from_secs(s),
            _ => {
                return Err(invalid(format!(
                    "meshd_wait_seconds must be a whole number from 0 to {MAX_WAIT_SECONDS}, \
                     not {v}"
                )))
            }
        },
    };
    if let Some(v) = object.get("disableCheck") {
        if !v.is_boolean() {
            return Err(decoding(
                version,
                "`disableCheck` must be true or false".into(),
            ));
        }
    }
    let prev_ips = match object.get("prevResult") {
        None | Some(serde_json::Value::Null) => None,
        Some(prev) => {
            let prev = PrevResult::deserialize_from(prev)
                .map_err(|e| decoding(version, format!("`prevResult` is not a CNI result: {e}")))?;
            Some(
                prev.ips
                    .iter()
                    .filter_map(|ip| parse_v4_cidr(&ip.address))
                    .collect(),
            )
        }
    };
    Ok(NetConf {
        version,
        name: name.to_string(),
        meshd_config,
        wait,
        prev_ips,
    })
}

impl PrevResult {
    fn deserialize_from(value: &serde_json::Value) -> Result<PrevResult, serde_json::Error> {
        serde::Deserialize::deserialize(value)
    }
}

/// Parses a runtime's call: `env` looks up one variable (`std::env::var_os` in the plugin),
/// `stdin` is the network configuration.
pub fn parse_request(
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    stdin: &[u8],
) -> Result<CniRequest, ParseFailure> {
    let command_text = required(env, "CNI_COMMAND")?;
    if command_text == "VERSION" {
        return Ok(CniRequest::Version(requested_version(stdin)?));
    }
    let command = CniCommand::parse(&command_text).ok_or_else(|| {
        env_error(format!(
            "CNI_COMMAND `{command_text}` is not one of ADD, DEL, CHECK, VERSION"
        ))
    })?;
    let container_id = required(env, "CNI_CONTAINERID")?;
    check_container_id(&container_id).map_err(env_error)?;
    let ifname = required(env, "CNI_IFNAME")?;
    crate::config::validate_ifname(&ifname).map_err(|e| env_error(format!("CNI_IFNAME: {e}")))?;
    let netns = match env_value(env, "CNI_NETNS")? {
        Some(path) if !path.is_empty() => {
            if !path.starts_with('/') || path.contains('\0') {
                return Err(env_error(format!(
                    "CNI_NETNS `{path}` must be an absolute path"
                )));
            }
            Some(PathBuf::from(path))
        }
        _ if command == CniCommand::Del => None,
        _ => return Err(env_error("CNI_NETNS is not set".into())),
    };
    // CNI_ARGS and CNI_PATH are read only for their length check: meshd-cni takes no
    // per-container arguments and calls no other plugin.
    env_value(env, "CNI_ARGS")?;
    env_value(env, "CNI_PATH")?;
    let conf = parse_net_conf(stdin)?;
    Ok(CniRequest::Call(CniCall {
        command,
        container_id,
        ifname,
        netns,
        conf,
    }))
}

/// The `VERSION` answer.
pub fn version_json(version: CniVersion) -> String {
    serde_json::json!({
        "cniVersion": version.as_str(),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResultInterface {
    pub name: String,
    pub mac: String,
    /// The namespace path for the container's interface; absent for the host's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResultIp {
    /// `"4"` or `"6"` in 0.4.0 results; 1.0.0 dropped the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    pub address: String,
    pub gateway: IpAddr,
    /// Index into `interfaces`.
    pub interface: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResultRoute {
    pub dst: String,
    pub gw: IpAddr,
}

/// One address the plugin gave the container interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachedIp {
    pub address: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
    /// Whether the plugin added the default route via `gateway` (a namespace that had one
    /// already keeps it, and the result does not claim it).
    pub default_route: bool,
}

/// The result of a successful `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    pub interfaces: Vec<ResultInterface>,
    pub ips: Vec<ResultIp>,
    pub routes: Vec<ResultRoute>,
    pub dns: BTreeMap<String, String>,
}

impl CniResult {
    /// The result for a host veth `host` and a container interface `inside` (index 1) with
    /// `ips`.
    pub fn attachment(
        version: CniVersion,
        host: ResultInterface,
        inside: ResultInterface,
        ips: &[AttachedIp],
    ) -> CniResult {
        let old_layout = version == CniVersion::V0_4_0;
        CniResult {
            cni_version: version.as_str(),
            interfaces: vec![host, inside],
            ips: ips
                .iter()
                .map(|ip| ResultIp {
                    version: old_layout.then_some(if ip.address.is_ipv4() { "4" } else { "6" }),
                    address: format!("{}/{}", ip.address, ip.prefix),
                    gateway: ip.gateway,
                    interface: 1,
                })
                .collect(),
            routes: ips
                .iter()
                .filter(|ip| ip.default_route)
                .map(|ip| ResultRoute {
                    dst: if ip.address.is_ipv4() {
                        "0.0.0.0/0"
                    } else {
                        "::/0"
                    }
                    .into(),
                    gw: ip.gateway,
                })
                .collect(),
            dns: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"meshnet","type":"meshd-cni","meshd_config":"/etc/m.toml"}"#;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/c1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn parse(pairs: &[(&str, &str)], stdin: &str) -> Result<CniRequest, ParseFailure> {
        parse_request(&env_of(pairs), stdin.as_bytes())
    }

    fn code(pairs: &[(&str, &str)], stdin: &str) -> ErrorCode {
        parse(pairs, stdin).unwrap_err().error.code
    }

    #[test]
    fn an_add_parses_with_defaults() {
        let CniRequest::Call(call) = parse(&add_env(), CONF).unwrap() else {
            panic!("not a call")
        };
        assert_eq!(call.command, CniCommand::Add);
        assert_eq!(call.owner(), "cni:abc123/eth0");
        assert_eq!(call.netns, Some(PathBuf::from("/run/netns/c1")));
        assert_eq!(call.conf.meshd_config, PathBuf::from("/etc/m.toml"));
        assert_eq!(call.conf.wait, DEFAULT_WAIT);
        assert_eq!(call.conf.prev_ips, None);
        let minimal =
            parse_net_conf(br#"{"cniVersion":"0.4.0","name":"n","type":"meshd-cni"}"#).unwrap();
        assert_eq!(minimal.meshd_config, PathBuf::from(DEFAULT_MESHD_CONFIG));
        assert_eq!(minimal.version, CniVersion::V0_4_0);
    }

    #[test]
    fn environment_errors_are_code_4() {
        let mut env = add_env();
        env[0] = ("CNI_COMMAND", "GC");
        assert_eq!(code(&env, CONF), ErrorCode::InvalidEnvironment);
        assert_eq!(code(&[], CONF), ErrorCode::InvalidEnvironment);
        for (key, bad) in [
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "eth0/1"),
            ("CNI_IFNAME", "averyveryverylongname"),
            ("CNI_NETNS", "relative/path"),
        ] {
            let env: Vec<_> = add_env()
                .into_iter()
                .map(|(k, v)| if k == key { (k, bad) } else { (k, v) })
                .collect();
            let failure = parse(&env, CONF).unwrap_err();
            assert_eq!(
                failure.error.code,
                ErrorCode::InvalidEnvironment,
                "{key}={bad}"
            );
            assert!(failure.error.msg.contains(key), "{}", failure.error.msg);
        }
        let no_netns: Vec<_> = add_env()
            .into_iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert_eq!(code(&no_netns, CONF), ErrorCode::InvalidEnvironment);
        // DEL may come after the namespace is gone.
        let mut del = no_netns.clone();
        del[0] = ("CNI_COMMAND", "DEL");
        let CniRequest::Call(call) = parse(&del, CONF).unwrap() else {
            panic!("not a call")
        };
        assert_eq!(call.netns, None);
    }

    #[test]
    fn stdin_errors_have_the_spec_codes() {
        let env = add_env();
        assert_eq!(code(&env, "{not json"), ErrorCode::DecodingFailure);
        assert_eq!(code(&env, "[1,2]"), ErrorCode::DecodingFailure);
        assert_eq!(code(&env, ""), ErrorCode::DecodingFailure);
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_CONFIG_LEN));
        assert_eq!(code(&env, &huge), ErrorCode::DecodingFailure);
        assert_eq!(
            code(&env, r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#),
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            code(&env, r#"{"cniVersion":1,"name":"n","type":"t"}"#),
            ErrorCode::DecodingFailure
        );
        let unknown = parse(
            &env,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","bridge":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(unknown.error.code, ErrorCode::UnsupportedField);
        assert!(
            unknown.error.msg.contains("`bridge`"),
            "{}",
            unknown.error.msg
        );
        let ipam = parse(
            &env,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"host-local"}}"#,
        )
        .unwrap_err();
        assert_eq!(ipam.error.code, ErrorCode::UnsupportedField);
        for bad in [
            r#"{"cniVersion":"1.0.0","type":"t"}"#,
            r#"{"cniVersion":"1.0.0","name":"-n","type":"t"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","meshd_config":"rel.toml"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","meshd_wait_seconds":301}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","meshd_wait_seconds":-1}"#,
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        ] {
            assert_eq!(code(&env, bad), ErrorCode::InvalidNetworkConfig, "{bad}");
        }
        assert_eq!(
            code(
                &env,
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":7}}"#
            ),
            ErrorCode::DecodingFailure
        );
    }

    #[test]
    fn runtime_inserted_keys_and_prev_result_are_accepted() {
        let conf = parse_net_conf(
            br#"{"cniVersion":"1.0.0","name":"n","type":"meshd-cni","disableCheck":false,
                "runtimeConfig":{},"args":{},"meshd_wait_seconds":0,
                "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],
                  "ips":[{"address":"10.77.3.2/16","gateway":"10.77.3.1","interface":0},
                         {"address":"fd77::2/64"}]}}"#,
        )
        .unwrap();
        assert_eq!(conf.wait, Duration::ZERO);
        assert_eq!(
            conf.prev_ips,
            Some(vec![("10.77.3.2".parse().unwrap(), 16)])
        );
    }

    #[test]
    fn version_answers_list_what_is_honoured() {
        let env = [("CNI_COMMAND", "VERSION")];
        assert_eq!(
            parse(&env, r#"{"cniVersion":"0.4.0"}"#).unwrap(),
            CniRequest::Version(CniVersion::V0_4_0)
        );
        assert_eq!(
            parse(&env, "").unwrap(),
            CniRequest::Version(CniVersion::LATEST)
        );
        assert_eq!(code(&env, "{"), ErrorCode::DecodingFailure);
        let answer: serde_json::Value =
            serde_json::from_str(&version_json(CniVersion::V1_0_0)).unwrap();
        assert_eq!(
            answer["supportedVersions"],
            serde_json::json!(["0.4.0", "1.0.0"])
        );
    }

    #[test]
    fn results_and_errors_have_the_spec_layout() {
        let host = ResultInterface {
            name: "mc0123".into(),
            mac: "02:00:00:00:00:01".into(),
            sandbox: None,
        };
        let inside = ResultInterface {
            name: "eth0".into(),
            mac: "02:00:00:00:00:02".into(),
            sandbox: Some("/run/netns/c1".into()),
        };
        let v4 = AttachedIp {
            address: "10.77.3.2".parse().unwrap(),
            prefix: 16,
            gateway: "10.77.3.1".parse().unwrap(),
            default_route: true,
        };
        let v6 = AttachedIp {
            address: "fd77:0:0:3::2".parse().unwrap(),
            prefix: 48,
            gateway: "fd77:0:0:3::1".parse().unwrap(),
            default_route: true,
        };
        let result =
            CniResult::attachment(CniVersion::V1_0_0, host.clone(), inside.clone(), &[v4, v6]);
        let json: serde_json::Value = serde_json::to_value(&result).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "mc0123", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/c1"}
                ],
                "ips": [
                    {"address": "10.77.3.2/16", "gateway": "10.77.3.1", "interface": 1},
                    {"address": "fd77:0:0:3::2/48", "gateway": "fd77:0:0:3::1", "interface": 1}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.77.3.1"},
                    {"dst": "::/0", "gw": "fd77:0:0:3::1"}
                ],
                "dns": {}
            })
        );
        let kept_route = AttachedIp {
            default_route: false,
            ..v4
        };
        let old = CniResult::attachment(CniVersion::V0_4_0, host, inside, &[kept_route, v6]);
        let old = serde_json::to_value(&old).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(
            old["routes"],
            serde_json::json!([{"dst": "::/0", "gw": "fd77:0:0:3::1"}])
        );
        let error = CniError::new(ErrorCode::TryAgainLater, "no range yet").with_details("d");
        let json: serde_json::Value =
            serde_json::from_str(&error.to_json(CniVersion::V1_0_0)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion":"1.0.0","code":11,"msg":"no range yet","details":"d"})
        );
    }
}
