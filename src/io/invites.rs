//! The inviter's invitations on disk: one small JSON file per invitation under
//! `<state_dir>/invites/`, named after the invite id.
//!
//! Owns the file format and its three operations: [`create_invite`] (by `meshd invite`),
//! [`load_pending`] (the daemon re-reads the directory and hands the result to
//! `core::invite::InviteBook::set_pending`) and [`mark_used`] (the daemon records an admission
//! before it sends the certificate). Invariants: a file holds the SHA-256 of the secret, never the
//! secret; every write is atomic (a temporary file with mode 0600 in the same directory, synced,
//! renamed over the target, directory synced), so a crash leaves the old or the new file and
//! never half of one; a used invitation stays marked used across restarts, so `load_pending` never
//! returns it again; a file that does not parse or does not check out (id not matching its hash,
//! file name not matching its id, an invalid reserved name) is skipped with a warning and never
//! stops the daemon. The directory is created with mode 0700. Every operation refuses to run
//! while its thread holds the node (src/io/node_lock.rs): the daemon reads and marks invitations
//! with the data-path lock released.

use crate::core::ranges::Range4;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use meshd_crypto::{valid_member_name, PublicKey};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::node_lock::ensure_unlocked;
use crate::core::invite::PendingInvite;
use crate::wire::{invite_id, InviteId, InviteSecret, INVITE_ID_LEN};

/// The directory under the state directory that holds invitations.
pub const INVITES_DIR: &str = "invites";
/// The file format version written in every invitation file.
const FORMAT: u32 = 1;
/// Invitation files are tiny; anything larger is not one of ours.
const MAX_FILE_LEN: u64 = 16 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteFile {
    format: u32,
    /// Hex of the 16-byte invite id.
    id: String,
    /// Hex of SHA-256(secret).
    secret_sha256: String,
    /// Unix seconds.
    expires_at: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    used: Option<UsedBy>,
    /// The address range the new member is to hold (`meshd invite --range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<Range4>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsedBy {
    name: String,
    /// The joiner's static key, base64.
    key: String,
    /// Unix seconds.
    at: u64,
}

impl InviteFile {
    /// The pending invitation this file describes, or why it does not check out.
    fn to_pending(&self) -> Result<PendingInvite, &'static str> {
        if self.format != FORMAT {
            return Err("unknown format version");
        }
        let id: InviteId = from_hex(&self.id).ok_or("id is not 32 hex digits")?;
        let secret_hash: [u8; 32] =
            from_hex(&self.secret_sha256).ok_or("secret_sha256 is not 64 hex digits")?;
        if invite_id(&secret_hash) != id {
            return Err("id does not match secret_sha256");
        }
        if let Some(name) = &self.name {
            if !valid_member_name(name) {
                return Err("the reserved name is not a valid member name");
            }
        }
        Ok(PendingInvite {
            id,
            secret_hash,
            expires_at: self.expires_at,
            name: self.name.clone(),
            range: self.range,
        })
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn invites_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(INVITES_DIR)
}

fn file_name(id: &InviteId) -> String {
    format!("{}.json", to_hex(id))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes `contents` to `dir/name` atomically with mode 0600.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    ensure_unlocked("writing an invitation")?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = crate::enroll::create_temporary(&tmp, 0o600)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read_file(path: &Path) -> io::Result<InviteFile> {
    ensure_unlocked("reading an invitation")?;
    let mut text = String::new();
    File::open(path)?
        .take(MAX_FILE_LEN + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(invalid("too large to be an invitation"));
    }
    serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))
}

fn write_file(dir: &Path, file: &InviteFile, id: &InviteId) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(file).map_err(|e| invalid(e.to_string()))?;
    text.push('\n');
    write_atomic(dir, &file_name(id), text.as_bytes())
}

/// Records a new invitation for `secret` (only its hash is written) and returns what the book
/// needs. Fails with `InvalidInput` for an invalid reserved name and `AlreadyExists` if the
/// invitation is already on disk.
pub fn create_invite(
    state_dir: &Path,
    expires_at: u64,
    name: Option<&str>,
    range: Option<Range4>,
    secret: [u8; 32],
) -> io::Result<PendingInvite> {
    if let Some(name) = name {
        if !valid_member_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a valid member name"),
            ));
        }
    }
    let secret = InviteSecret::from_bytes(secret);
    let secret_hash = secret.hash();
    let id = invite_id(&secret_hash);
    let dir = invites_dir(state_dir);
    ensure_unlocked("creating the invites directory")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    if dir.join(file_name(&id)).exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "this invitation already exists",
        ));
    }
    let file = InviteFile {
        format: FORMAT,
        id: to_hex(&id),
        secret_sha256: to_hex(&secret_hash),
        expires_at,
        name: name.map(str::to_owned),
        used: None,
        range,
    };
    write_file(&dir, &file, &id)?;
    Ok(PendingInvite {
        id,
        secret_hash,
        expires_at,
        name: name.map(str::to_owned),
        range,
    })
}

/// The invitations that are neither used nor expired (by the system clock). A missing directory
/// is no invitations; a file that does not check out is skipped with a warning.
pub fn load_pending(state_dir: &Path) -> io::Result<Vec<PendingInvite>> {
    load_pending_at(state_dir, super::unix_now())
}

/// [`load_pending`] at an explicit time (Unix seconds).
pub fn load_pending_at(state_dir: &Path, now_unix: u64) -> io::Result<Vec<PendingInvite>> {
    ensure_unlocked("reading invitations")?;
    let dir = invites_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut pending = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            warn!(file = ?entry.path(), "ignoring a file with a non-UTF-8 name in the invites directory");
            continue;
        };
        // Temporary files of an interrupted write.
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let stem = match name.strip_suffix(".json") {
            Some(stem) if stem.len() == 2 * INVITE_ID_LEN => stem,
            _ => {
                warn!(file = %path.display(), "ignoring a file that is not an invitation");
                continue;
            }
        };
        let file = match read_file(&path) {
            Ok(file) => file,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "ignoring an unreadable invitation");
                continue;
            }
        };
        let invite = match file.to_pending() {
            Ok(invite) if to_hex(&invite.id) == stem => invite,
            Ok(_) => {
                warn!(file = %path.display(), "ignoring an invitation whose file name is not its id");
                continue;
            }
            Err(reason) => {
                warn!(file = %path.display(), reason, "ignoring an invalid invitation");
                continue;
            }
        };
        if file.used.is_none() && now_unix < invite.expires_at {
            pending.push(invite);
        }
    }
    pending.sort_by_key(|invite| invite.id);
    Ok(pending)
}

/// Records that invitation `id` admitted `key` under `name`, atomically, so it is refused after a
/// restart. Marking it again for the same key succeeds without rewriting; for another key it fails
/// with `InvalidData`. A missing invitation is `NotFound`.
pub fn mark_used(state_dir: &Path, id: &InviteId, name: &str, key: &PublicKey) -> io::Result<()> {
    let dir = invites_dir(state_dir);
    let mut file = read_file(&dir.join(file_name(id)))?;
    let key_text = key.to_string();
    match &file.used {
        Some(used) if used.key == key_text => return Ok(()),
        Some(_) => return Err(invalid("this invitation was already used by another key")),
        None => {}
    }
    file.used = Some(UsedBy {
        name: name.to_owned(),
        key: key_text,
        at: super::unix_now(),
    });
    write_file(&dir, &file, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "meshd-invites-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn create_load_mark_used() {
        let state = TempDir::new();
        assert!(load_pending_at(&state.0, NOW).unwrap().is_empty());
        let a = create_invite(&state.0, NOW + 3600, Some("web-1"), None, [1; 32]).unwrap();
        let b = create_invite(&state.0, NOW + 60, None, None, [2; 32]).unwrap();
        assert_eq!(a.secret_hash, InviteSecret::from_bytes([1; 32]).hash());
        assert!(a.is_consistent() && b.is_consistent());
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort_by_key(|i| i.id);
        assert_eq!(load_pending_at(&state.0, NOW).unwrap(), expected);

        // Files are private and hold no secret.
        let dir = invites_dir(&state.0);
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let path = dir.join(file_name(&a.id));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&to_hex(&[1; 32])));

        // Expired invitations are not pending.
        assert_eq!(
            load_pending_at(&state.0, NOW + 60).unwrap(),
            vec![a.clone()]
        );

        let key = PublicKey::from_bytes([9; 32]);
        mark_used(&state.0, &a.id, "web-1", &key).unwrap();
        assert_eq!(load_pending_at(&state.0, NOW).unwrap(), vec![b.clone()]);
        // Idempotent for the same key, refused for another.
        mark_used(&state.0, &a.id, "web-1", &key).unwrap();
        let err = mark_used(&state.0, &a.id, "web-1", &PublicKey::from_bytes([8; 32])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = mark_used(&state.0, &[7; 16], "x", &key).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn create_refuses_bad_names_and_duplicates() {
        let state = TempDir::new();
        let err = create_invite(&state.0, NOW, Some("bad name"), None, [1; 32]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        create_invite(&state.0, NOW, None, None, [1; 32]).unwrap();
        let err = create_invite(&state.0, NOW, None, None, [1; 32]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn junk_files_are_skipped() {
        let state = TempDir::new();
        let good = create_invite(&state.0, NOW + 10, None, None, [3; 32]).unwrap();
        let dir = invites_dir(&state.0);
        fs::write(dir.join("README"), "hello").unwrap();
        fs::write(dir.join(".half-written.json.tmp"), "{").unwrap();
        fs::write(dir.join(format!("{}.json", "ab".repeat(16))), "not json").unwrap();
        // Valid JSON, but the id does not belong to the hash.
        let mut forged = read_file(&dir.join(file_name(&good.id))).unwrap();
        forged.id = "cd".repeat(16);
        write_file(&dir, &forged, &[0xcd; 16]).unwrap();
        // Valid invitation under the wrong file name.
        let mut renamed = read_file(&dir.join(file_name(&good.id))).unwrap();
        renamed.format = FORMAT;
        write_file(&dir, &renamed, &[0xef; 16]).unwrap();
        // Unknown field.
        fs::write(
            dir.join(format!("{}.json", "01".repeat(16))),
            r#"{"format":1,"id":"","secret_sha256":"","expires_at":0,"extra":1}"#,
        )
        .unwrap();
        fs::create_dir(dir.join(format!("{}.json", "02".repeat(16)))).unwrap();
        assert_eq!(load_pending_at(&state.0, NOW).unwrap(), vec![good]);
    }

    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(from_hex::<16>(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex::<2>("zz00"), None);
        assert_eq!(from_hex::<2>("000"), None);
        assert_eq!(from_hex::<2>("0é0"), None);
    }
}
