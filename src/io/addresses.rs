//! The host's container address store: which address of this host's range belongs to whom.
//!
//! Owns the file `<state_dir>/addresses.json` and its lock `<state_dir>/addresses.lock`. The
//! Docker plugin, the CNI plugin and `meshd attach` all allocate through [`AddressStore`], each
//! from its own process, so the store is the one place that knows which addresses are taken.
//!
//! Invariants: every operation takes an exclusive `flock` on the lock file (opened anew per
//! operation, so two threads of one process exclude each other exactly as two processes do),
//! re-reads the file, changes it and writes it back atomically (temporary file, fsync, rename,
//! directory fsync) before the lock is released, so no two owners are ever given the same address
//! and a crash leaves the old or the new file, never a mix. An owner holds at most one address
//! per range, and allocating again for it returns that address (CNI ADD and Docker retries are
//! idempotent). Addresses are only ever removed by a release: an address of a range this host no
//! longer holds stays recorded (and is never handed out again silently) until its owner is
//! released. A file that does not parse is an error, never an empty store. No file operation runs
//! while this thread holds the daemon's node (src/io/node_lock.rs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::core::ranges::{first_free_address, Range4};
use crate::io::node_lock::ensure_unlocked;

/// The store's file inside the state directory.
pub const STORE_FILE: &str = "addresses.json";
/// The lock file every operation holds exclusively.
pub const LOCK_FILE: &str = "addresses.lock";
/// Longest owner string accepted (a CNI container id is at most a few hundred bytes).
pub const MAX_OWNER_LEN: usize = 512;
/// Version of the file layout written here.
const STORE_VERSION: u32 = 1;

/// Why an allocation or release was refused. Messages name the address, range or owner.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("address store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("address store {path} is damaged ({reason}); fix or remove it by hand")]
    Damaged { path: PathBuf, reason: String },
    #[error("owner `{0}` is not usable: {1}")]
    BadOwner(String, &'static str),
    #[error(
        "{addr} cannot be given to a container: it is not an assignable address of this host's \
         range {range} (network, gateway and broadcast addresses are reserved)"
    )]
    NotAssignable { addr: Ipv4Addr, range: Range4 },
    #[error("{addr} is already in use by {owner}")]
    InUse { addr: Ipv4Addr, owner: String },
    #[error("{owner} already holds {held} in {range}; release it before asking for {wanted}")]
    OwnerHoldsOther {
        owner: String,
        held: Ipv4Addr,
        wanted: Ipv4Addr,
        range: Range4,
    },
    #[error("no free address left in {0}")]
    Exhausted(Range4),
}

impl From<AddressError> for io::Error {
    fn from(e: AddressError) -> io::Error {
        let kind = match &e {
            AddressError::Io { source, .. } => source.kind(),
            AddressError::Damaged { .. } => io::ErrorKind::InvalidData,
            AddressError::Exhausted(_) => io::ErrorKind::Other,
            AddressError::InUse { .. } | AddressError::OwnerHoldsOther { .. } => {
                io::ErrorKind::AddrInUse
            }
            AddressError::BadOwner(..) | AddressError::NotAssignable { .. } => {
                io::ErrorKind::InvalidInput
            }
        };
        io::Error::new(kind, e.to_string())
    }
}

/// The file's layout: `{"version":1,"addresses":{"10.77.3.2":"cni:abc/eth0",...}}`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    addresses: BTreeMap<Ipv4Addr, String>,
}

/// Handle on one state directory's address store; cheap, holds no file open between operations.
#[derive(Debug, Clone)]
pub struct AddressStore {
    file: PathBuf,
    lock: PathBuf,
    dir: PathBuf,
}

/// The exclusive lock, released when dropped (closing the descriptor releases the flock).
struct Locked {
    _file: File,
}

fn check_owner(owner: &str) -> Result<(), AddressError> {
    let bad = |why| Err(AddressError::BadOwner(owner.to_string(), why));
    if owner.is_empty() {
        return bad("it is empty");
    }
    if owner.len() > MAX_OWNER_LEN {
        return bad("it is longer than 512 bytes");
    }
    if owner.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    Ok(())
}

impl AddressStore {
    /// The store of `state_dir`, creating the directory (mode 0700) and the lock file if needed.
    pub fn open(state_dir: &Path) -> io::Result<AddressStore> {
        crate::enroll::create_state_dir(state_dir)?;
        let store = AddressStore {
            file: state_dir.join(STORE_FILE),
            lock: state_dir.join(LOCK_FILE),
            dir: state_dir.to_path_buf(),
        };
        drop(store.open_lock_file()?);
        Ok(store)
    }

    /// The store's file (for messages and tests).
    pub fn path(&self) -> &Path {
        &self.file
    }

    fn open_lock_file(&self) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        ensure_unlocked("opening the address store lock")?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(&self.lock)
    }

    fn io_error(&self, source: io::Error) -> AddressError {
        AddressError::Io {
            path: self.file.clone(),
            source,
        }
    }

    fn take_lock(&self) -> Result<Locked, AddressError> {
        let file = self.open_lock_file().map_err(|e| self.io_error(e))?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Locked { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(self.io_error(err));
            }
        }
    }

    fn read(&self, _locked: &Locked) -> Result<StoreFile, AddressError> {
        ensure_unlocked("reading the address store").map_err(|e| self.io_error(e))?;
        let text = match std::fs::read(&self.file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(StoreFile {
                    version: STORE_VERSION,
                    addresses: BTreeMap::new(),
                })
            }
            Err(e) => return Err(self.io_error(e)),
        };
        let damaged = |reason: String| AddressError::Damaged {
            path: self.file.clone(),
            reason,
        };
        let store: StoreFile = serde_json::from_slice(&text).map_err(|e| damaged(e.to_string()))?;
        if store.version != STORE_VERSION {
            return Err(damaged(format!(
                "version {} is not the {STORE_VERSION} this meshd writes",
                store.version
            )));
        }
        Ok(store)
    }

    fn write(&self, _locked: &Locked, store: &StoreFile) -> Result<(), AddressError> {
        let mut text = serde_json::to_vec_pretty(store).map_err(|e| self.io_error(e.into()))?;
        text.push(b'\n');
        crate::enroll::write_atomically(&self.file, &text).map_err(|e| self.io_error(e))?;
        // The rename is durable only once the directory is synced.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io_error(e))
    }

    /// Gives `owner` an address of `range`: the one it already holds there if any (idempotent),
    /// else `wanted` if it is assignable and free, else the lowest free assignable address.
    pub fn allocate(
        &self,
        range: Range4,
        owner: &str,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, AddressError> {
        check_owner(owner)?;
        if let Some(addr) = wanted {
            if !range.is_assignable(addr) {
                return Err(AddressError::NotAssignable { addr, range });
            }
        }
        let locked = self.take_lock()?;
        let mut store = self.read(&locked)?;
        let held = store
            .addresses
            .iter()
            .find(|(addr, o)| o.as_str() == owner && range.contains(**addr))
            .map(|(addr, _)| *addr);
        if let Some(held) = held {
            return match wanted {
                Some(wanted) if wanted != held => Err(AddressError::OwnerHoldsOther {
                    owner: owner.to_string(),
                    held,
                    wanted,
                    range,
                }),
                _ => Ok(held),
            };
        }
        let addr = match wanted {
            Some(addr) => {
                if let Some(other) = store.addresses.get(&addr) {
                    return Err(AddressError::InUse {
                        addr,
                        owner: other.clone(),
                    });
                }
                addr
            }
            None => first_free_address(&range, |a| store.addresses.contains_key(&a))
                .ok_or(AddressError::Exhausted(range))?,
        };
        store.addresses.insert(addr, owner.to_string());
        self.write(&locked, &store)?;
        Ok(addr)
    }

    /// Releases every address `owner` holds and returns them; an owner with none is no error.
    pub fn release_owner(&self, owner: &str) -> Result<Vec<Ipv4Addr>, AddressError> {
        check_owner(owner)?;
        let locked = self.take_lock()?;
        let mut store = self.read(&locked)?;
        let released: Vec<Ipv4Addr> = store
            .addresses
            .iter()
            .filter(|(_, o)| o.as_str() == owner)
            .map(|(addr, _)| *addr)
            .collect();
        if !released.is_empty() {
            store.addresses.retain(|_, o| o.as_str() != owner);
            self.write(&locked, &store)?;
        }
        Ok(released)
    }

    /// Releases one address whoever holds it; `false` if it was not taken.
    pub fn release_address(&self, addr: Ipv4Addr) -> Result<bool, AddressError> {
        let locked = self.take_lock()?;
        let mut store = self.read(&locked)?;
        if store.addresses.remove(&addr).is_none() {
            return Ok(false);
        }
        self.write(&locked, &store)?;
        Ok(true)
    }

    /// The addresses `owner` holds, lowest first.
    pub fn lookup_owner(&self, owner: &str) -> Result<Vec<Ipv4Addr>, AddressError> {
        let locked = self.take_lock()?;
        let store = self.read(&locked)?;
        Ok(store
            .addresses
            .iter()
            .filter(|(_, o)| o.as_str() == owner)
            .map(|(addr, _)| *addr)
            .collect())
    }

    /// Every taken address with its owner, lowest address first.
    pub fn list(&self) -> Result<Vec<(Ipv4Addr, String)>, AddressError> {
        let locked = self.take_lock()?;
        Ok(self.read(&locked)?.addresses.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meshd-addresses-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn range(s: &str) -> Range4 {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn allocation_is_lowest_free_idempotent_and_persists_across_reopen() {
        let dir = temp_dir("persist");
        let r = range("10.77.3.0/24");
        let store = AddressStore::open(&dir).unwrap();
        assert_eq!(
            store.allocate(r, "cni:a/eth0", None).unwrap(),
            ip("10.77.3.2")
        );
        assert_eq!(
            store.allocate(r, "cni:b/eth0", None).unwrap(),
            ip("10.77.3.3")
        );
        assert_eq!(
            store.allocate(r, "cni:a/eth0", None).unwrap(),
            ip("10.77.3.2"),
            "a second ADD for the same owner returns its address"
        );
        drop(store);

        let reopened = AddressStore::open(&dir).unwrap();
        assert_eq!(
            reopened.list().unwrap(),
            vec![
                (ip("10.77.3.2"), "cni:a/eth0".to_string()),
                (ip("10.77.3.3"), "cni:b/eth0".to_string()),
            ]
        );
        assert_eq!(
            reopened.lookup_owner("cni:b/eth0").unwrap(),
            vec![ip("10.77.3.3")]
        );
        // A freed address is the lowest free one again.
        assert_eq!(
            reopened.release_owner("cni:a/eth0").unwrap(),
            vec![ip("10.77.3.2")]
        );
        assert_eq!(
            reopened.allocate(r, "cni:c/eth0", None).unwrap(),
            ip("10.77.3.2")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn releases_are_idempotent() {
        let dir = temp_dir("release");
        let r = range("10.77.3.0/24");
        let store = AddressStore::open(&dir).unwrap();
        let a = store.allocate(r, "attach:ns1/eth1", None).unwrap();
        assert_eq!(store.release_owner("attach:ns1/eth1").unwrap(), vec![a]);
        assert_eq!(
            store.release_owner("attach:ns1/eth1").unwrap(),
            Vec::<Ipv4Addr>::new()
        );
        assert_eq!(
            store.release_owner("never-seen").unwrap(),
            Vec::<Ipv4Addr>::new()
        );
        let b = store.allocate(r, "docker:ep1", None).unwrap();
        assert!(store.release_address(b).unwrap());
        assert!(!store.release_address(b).unwrap());
        assert!(store.list().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wanted_addresses_must_be_assignable_and_free() {
        let dir = temp_dir("wanted");
        let r = range("10.77.3.0/24");
        let store = AddressStore::open(&dir).unwrap();
        assert_eq!(
            store
                .allocate(r, "docker:a", Some(ip("10.77.3.9")))
                .unwrap(),
            ip("10.77.3.9")
        );
        let in_use = store
            .allocate(r, "docker:b", Some(ip("10.77.3.9")))
            .unwrap_err();
        assert_eq!(
            in_use.to_string(),
            "10.77.3.9 is already in use by docker:a"
        );
        for reserved in ["10.77.3.0", "10.77.3.1", "10.77.3.255", "10.77.4.7"] {
            let err = store
                .allocate(r, "docker:b", Some(ip(reserved)))
                .unwrap_err();
            assert!(
                matches!(err, AddressError::NotAssignable { .. }),
                "{reserved}: {err}"
            );
            assert!(err.to_string().contains(reserved), "{err}");
        }
        let other = store
            .allocate(r, "docker:a", Some(ip("10.77.3.10")))
            .unwrap_err();
        assert!(
            matches!(other, AddressError::OwnerHoldsOther { .. }),
            "{other}"
        );
        // Asking again for the address already held is idempotent.
        assert_eq!(
            store
                .allocate(r, "docker:a", Some(ip("10.77.3.9")))
                .unwrap(),
            ip("10.77.3.9")
        );
        assert!(matches!(
            store.allocate(r, "", None).unwrap_err(),
            AddressError::BadOwner(..)
        ));
        assert!(matches!(
            store.allocate(r, "a\nb", None).unwrap_err(),
            AddressError::BadOwner(..)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_range_is_reported_and_other_ranges_addresses_are_kept() {
        let dir = temp_dir("full");
        let small = range("10.77.3.0/30"); // one assignable address: .2
        let store = AddressStore::open(&dir).unwrap();
        assert_eq!(store.allocate(small, "a", None).unwrap(), ip("10.77.3.2"));
        let err = store.allocate(small, "b", None).unwrap_err();
        assert_eq!(err.to_string(), "no free address left in 10.77.3.0/30");
        // The host moves to another range: the old address stays recorded until released.
        let new_range = range("10.77.4.0/24");
        assert_eq!(
            store.allocate(new_range, "a", None).unwrap(),
            ip("10.77.4.2")
        );
        assert_eq!(
            store.lookup_owner("a").unwrap(),
            vec![ip("10.77.3.2"), ip("10.77.4.2")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_store() {
        let dir = temp_dir("damaged");
        let store = AddressStore::open(&dir).unwrap();
        std::fs::write(
            store.path(),
            b"{\"version\":1,\"addresses\":{\"nope\":\"x\"}}",
        )
        .unwrap();
        let err = store.list().unwrap_err();
        assert!(matches!(err, AddressError::Damaged { .. }), "{err}");
        std::fs::write(store.path(), b"{\"version\":9,\"addresses\":{}}").unwrap();
        let err = store
            .allocate(range("10.77.3.0/24"), "a", None)
            .unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        std::fs::write(store.path(), b"{\"version\":1,\"addresses\":{},\"x\":1}").unwrap();
        assert!(matches!(
            store.list().unwrap_err(),
            AddressError::Damaged { .. }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two stores on one directory (as two processes would have; the lock file is opened anew
    /// per operation, so each thread holds its own open file description and its own flock)
    /// allocating at once never hand out the same address twice.
    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = temp_dir("concurrent");
        let r = range("10.77.3.0/24");
        let per_thread = 40;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let store = AddressStore::open(&dir).unwrap();
                    (0..per_thread)
                        .map(|i| store.allocate(r, &format!("t{t}/{i}"), None).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 4 * per_thread);
        assert_eq!(distinct.len(), all.len(), "an address was handed out twice");
        assert_eq!(
            AddressStore::open(&dir).unwrap().list().unwrap().len(),
            all.len(),
            "no allocation was lost to a concurrent write"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
