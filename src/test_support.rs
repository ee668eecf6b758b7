//! Helpers shared by the unit tests of several modules.

use std::path::Path;

/// Checks that the committed fuzz seed at `path` still equals `bytes`, or with
/// `MESHD_WRITE_FUZZ_SEEDS=1` (re)writes it, so seed corpora follow the formats they exercise.
pub(crate) fn check_or_write_fuzz_seed(path: &Path, bytes: &[u8]) {
    if std::env::var_os("MESHD_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().expect("seed paths have a folder")).unwrap();
        std::fs::write(path, bytes).unwrap();
        return;
    }
    let on_disk = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with MESHD_WRITE_FUZZ_SEEDS=1",
            path.display()
        )
    });
    assert_eq!(
        on_disk,
        bytes,
        "{} is stale; regenerate with MESHD_WRITE_FUZZ_SEEDS=1",
        path.display()
    );
}
