//! The config parser: any text either loads or yields an error that names the file (and, when it
//! points into the file, a line that exists). It must never panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use meshd::config::{Config, ConfigError};

fuzz_target!(|text: &str| {
    let path = Path::new("/etc/meshd/fuzz.toml");
    match Config::parse(path, text) {
        Ok(config) => {
            assert!(!config.name.is_empty());
            assert!(config.interface.mtu >= meshd::config::MIN_TAP_MTU);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("/etc/meshd/fuzz.toml"), "{message}");
            if let ConfigError::At { line, .. } = e {
                assert!(
                    line >= 1 && line <= text.lines().count() + 1,
                    "line {line} out of range"
                );
            }
        }
    }
});
