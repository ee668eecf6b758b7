//! The CNI plugin's input: any environment and stdin either parse into a call whose invariants
//! hold (ADD and CHECK have a namespace, names are within their limits, the configuration's
//! version is one the plugin honours) or yield an error object with one of the spec's codes that
//! prints as JSON. It must never panic.

#![no_main]

use std::ffi::OsString;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshd::wire::cni::{parse_net_conf, parse_request, CniCommand, CniRequest, ErrorCode};

#[derive(Arbitrary, Debug)]
struct Input {
    command: u8,
    container_id: Option<String>,
    ifname: Option<String>,
    netns: Option<String>,
    args: Option<String>,
    stdin: Vec<u8>,
}

fn check_error(error: &meshd::wire::cni::CniError, version: meshd::wire::cni::CniVersion) {
    assert!(!error.msg.is_empty());
    let json: serde_json::Value = serde_json::from_str(&error.to_json(version)).unwrap();
    let code = json["code"].as_u64().unwrap();
    assert!(matches!(code, 1..=7 | 11 | 100..=102), "code {code}");
    assert_ne!(error.code, ErrorCode::CheckFailed, "parsing never fails a CHECK");
}

fuzz_target!(|input: Input| {
    let command = match input.command % 6 {
        0 => Some("ADD".to_string()),
        1 => Some("DEL".to_string()),
        2 => Some("CHECK".to_string()),
        3 => Some("VERSION".to_string()),
        4 => None,
        _ => Some(String::from_utf8_lossy(&input.stdin[..input.stdin.len().min(8)]).into()),
    };
    let env = |key: &str| -> Option<OsString> {
        match key {
            "CNI_COMMAND" => command.clone(),
            "CNI_CONTAINERID" => input.container_id.clone(),
            "CNI_IFNAME" => input.ifname.clone(),
            "CNI_NETNS" => input.netns.clone(),
            "CNI_ARGS" => input.args.clone(),
            _ => None,
        }
        .map(OsString::from)
    };
    match parse_request(&env, &input.stdin) {
        Ok(CniRequest::Version(_)) => assert_eq!(command.as_deref(), Some("VERSION")),
        Ok(CniRequest::Call(call)) => {
            assert!(!call.container_id.is_empty() && call.container_id.len() <= 256);
            assert!(!call.ifname.is_empty() && call.ifname.len() <= 15);
            if call.command != CniCommand::Del {
                assert!(call.netns.is_some());
            }
            assert!(call.conf.meshd_config.is_absolute());
        }
        Err(failure) => check_error(&failure.error, failure.version),
    }
    if let Err(failure) = parse_net_conf(&input.stdin) {
        check_error(&failure.error, failure.version);
    }
});
