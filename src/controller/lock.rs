//! One owner per inventory. The lock lives in the inventory folder itself, not in a
//! state directory, so two daemons with different `--state-dir`s (or a daemon and a
//! one-shot `chom reconcile`) can never both write one tree's status files.
//!
//! Files (hidden, so never read as resources; `chom init`'s .gitignore lists them):
//! - `.chom.lock`: an unsharded daemon and every one-shot writer (`reconcile`,
//!   `rollback`, `resume`) hold it exclusively and write who they are into it; a sharded
//!   daemon holds it shared, so shards coexist with each other but not with an owner of
//!   the whole tree.
//! - `.chom.shard-K-of-N.lock`: held exclusively by the daemon of shard K/N, with who it
//!   is inside. Shards of different N would overlap (a server's shard is its hash mod N),
//!   so a daemon that finds a live shard lock of another N refuses to start.
//!
//! Locks are `flock`s: the kernel drops them when the process dies, so a crash never
//! leaves a stale owner.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shard::Shard;
use crate::status::Timestamp;

/// The lock of the whole tree, in the inventory folder.
pub const LOCK_FILE: &str = ".chom.lock";

/// Who holds an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerInfo {
    /// `daemon`, `reconcile`, `rollback`, `resume`.
    pub command: String,
    /// Its process id.
    pub pid: u32,
    /// `user@host`.
    pub by: String,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// `K/N` for a sharded daemon, `0/1` otherwise.
    pub shard: String,
    /// Since when.
    pub since: Timestamp,
    /// Where a daemon takes `chom reconcile` requests (see `daemon::handoff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl OwnerInfo {
    /// This process, about to own an inventory as `command`.
    pub fn this_process(command: &str, state_dir: &Path, shard: Shard) -> OwnerInfo {
        OwnerInfo {
            command: command.to_owned(),
            pid: std::process::id(),
            by: crate::audit::who(),
            state_dir: std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf()),
            shard: shard.to_string(),
            since: Timestamp::now(),
            socket: None,
        }
    }

    fn describe(&self) -> String {
        let shard = if self.shard == "0/1" {
            String::new()
        } else {
            format!(", shard {}", self.shard)
        };
        format!(
            "chom {} (PID {}, {}, state dir {}{shard}, since {})",
            self.command,
            self.pid,
            self.by,
            self.state_dir.display(),
            self.since
        )
    }
}

/// Why an inventory cannot be owned.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// Someone else owns it.
    #[error("{inventory} is owned by {}; {hint}", describe(holders))]
    Owned {
        /// The inventory folder.
        inventory: PathBuf,
        /// Who holds it (empty when the lock is held but its owner did not say).
        holders: Vec<OwnerInfo>,
        /// What to do.
        hint: String,
    },
    /// A daemon of another shard layout runs on the tree.
    #[error(
        "{inventory} is reconciled by a daemon with shard layout {other} ({}); every daemon on one inventory must use the same N in --shard K/N, or their servers overlap",
        describe(holders)
    )]
    ShardLayout {
        /// The inventory folder.
        inventory: PathBuf,
        /// The other layout.
        other: String,
        /// Who.
        holders: Vec<OwnerInfo>,
    },
    /// The lock file cannot be used.
    #[error("cannot lock {path}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn describe(holders: &[OwnerInfo]) -> String {
    if holders.is_empty() {
        return "another chom process".to_owned();
    }
    holders
        .iter()
        .map(OwnerInfo::describe)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Held ownership of an inventory; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Owner {
    _files: Vec<File>,
}

/// Opens (creating) a lock file. Without blocking: a FIFO or device put in its place is
/// refused, never waited on.
fn open(path: &Path) -> Result<File, OwnerError> {
    let io = |source| OwnerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file; remove it, chom creates its lock files itself",
        )));
    }
    Ok(file)
}

/// `O_NONBLOCK | O_NOCTTY`, so opening whatever is at a lock file's path never blocks.
const NONBLOCK: i32 = (rustix::fs::OFlags::NONBLOCK.bits() | rustix::fs::OFlags::NOCTTY.bits()) as i32;

/// Opens an existing lock file to test or read it, if it is a regular file.
fn open_existing(path: &Path) -> Option<File> {
    let file = OpenOptions::new().read(true).custom_flags(NONBLOCK).open(path).ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

fn write_info(file: &File, info: &OwnerInfo) {
    let mut f = file;
    let _ = file.set_len(0);
    if let Ok(json) = serde_json::to_string(info) {
        let _ = writeln!(f, "{json}");
    }
}

fn read_info(path: &Path) -> Option<OwnerInfo> {
    // A lock file is tiny; read at most 4 KiB of it.
    let text = crate::fsread::read_to_string(path, crate::fsread::cap::LOCK_OWNER).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// `(K, N, path)` of every `.chom.shard-K-of-N.lock` in `inventory`.
fn shard_files(inventory: &Path) -> Vec<(u32, u32, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(inventory) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(".chom.shard-")?.strip_suffix(".lock")?;
            let (k, n) = rest.split_once("-of-")?;
            Some((k.parse().ok()?, n.parse().ok()?, e.path()))
        })
        .collect()
}

/// True when another process holds a lock on `path` (shared or exclusive).
fn held(path: &Path) -> bool {
    let Some(file) = open_existing(path) else { return false };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

impl Owner {
    /// Takes `inventory` for `info` (the daemon of `shard`, or a one-shot writer with
    /// [`Shard::ALL`]). Refused, naming the owner, when another process has it.
    pub fn acquire(inventory: &Path, info: &OwnerInfo, shard: Shard, hint: &str) -> Result<Owner, OwnerError> {
        let main_path = inventory.join(LOCK_FILE);
        let main = open(&main_path)?;
        let owned = |holders| OwnerError::Owned {
            inventory: inventory.to_path_buf(),
            holders,
            hint: hint.to_owned(),
        };
        if shard.count <= 1 {
            return match main.try_lock() {
                Ok(()) => {
                    write_info(&main, info);
                    Ok(Owner { _files: vec![main] })
                }
                Err(std::fs::TryLockError::WouldBlock) => Err(owned(Owner::holders(inventory))),
                Err(std::fs::TryLockError::Error(source)) => Err(OwnerError::Io {
                    path: main_path,
                    source,
                }),
            };
        }
        match main.try_lock_shared() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(owned(Owner::holders(inventory))),
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OwnerError::Io {
                    path: main_path,
                    source,
                });
            }
        }
        let mine = inventory.join(format!(".chom.shard-{}-of-{}.lock", shard.index, shard.count));
        let file = open(&mine)?;
        match file.try_lock() {
            Ok(()) => write_info(&file, info),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(owned(read_info(&mine).into_iter().collect()));
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(OwnerError::Io { path: mine, source }),
        }
        // Written before looking: of two daemons of different layouts starting at once,
        // at least the later one sees the other.
        let others: Vec<(u32, u32, PathBuf)> = shard_files(inventory)
            .into_iter()
            .filter(|(_, n, path)| *n != shard.count && held(path))
            .collect();
        if let Some((_, n, _)) = others.first() {
            return Err(OwnerError::ShardLayout {
                inventory: inventory.to_path_buf(),
                other: format!("K/{n}"),
                holders: others.iter().filter_map(|(_, _, p)| read_info(p)).collect(),
            });
        }
        Ok(Owner {
            _files: vec![main, file],
        })
    }

    /// Who holds `inventory` now: the exclusive owner, else every live shard daemon.
    pub fn holders(inventory: &Path) -> Vec<OwnerInfo> {
        let main_path = inventory.join(LOCK_FILE);
        let Some(main) = open_existing(&main_path) else {
            return Vec::new();
        };
        match main.try_lock_shared() {
            // Shared taken: no exclusive owner; any holders are shard daemons.
            Ok(()) => {
                let _ = main.unlock();
                shard_files(inventory)
                    .into_iter()
                    .filter(|(_, _, p)| held(p))
                    .filter_map(|(_, _, p)| read_info(&p))
                    .collect()
            }
            Err(_) => read_info(&main_path).into_iter().collect(),
        }
    }

    /// The daemon that owns `inventory`, if one runs.
    pub fn daemon(inventory: &Path) -> Option<OwnerInfo> {
        Owner::daemons(inventory).into_iter().next()
    }

    /// Every daemon that owns `inventory` (one, or one per shard).
    pub fn daemons(inventory: &Path) -> Vec<OwnerInfo> {
        Owner::holders(inventory)
            .into_iter()
            .filter(|o| o.command == "daemon")
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(command: &str, shard: Shard) -> OwnerInfo {
        OwnerInfo::this_process(command, Path::new("/var/lib/chom"), shard)
    }

    /// A dropped lock is free once no process shares its file description. Another
    /// test thread spawning a process shares it between fork and exec, so wait for
    /// that (bounded, 2 s) instead of failing on it.
    fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..200 {
            if let Some(value) = f() {
                return value;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the lock was still held 2 s after its owner was dropped");
    }

    fn shard(text: &str) -> Shard {
        text.parse().unwrap()
    }

    #[test]
    fn a_second_owner_is_refused_with_the_first_ones_pid_and_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = Owner::acquire(dir.path(), &info("daemon", Shard::ALL), Shard::ALL, "stop it first").unwrap();
        let err = Owner::acquire(dir.path(), &info("reconcile", Shard::ALL), Shard::ALL, "stop it first").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("chom daemon (PID {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("state dir /var/lib/chom"), "{text}");
        assert!(text.ends_with("; stop it first"), "{text}");
        assert_eq!(Owner::daemon(dir.path()).map(|o| o.pid), Some(std::process::id()));
        drop(first);
        eventually(|| Owner::daemon(dir.path()).is_none().then_some(()));
        eventually(|| Owner::acquire(dir.path(), &info("reconcile", Shard::ALL), Shard::ALL, "").ok());
    }

    #[test]
    fn shards_of_one_layout_coexist_but_not_with_a_whole_tree_owner_or_another_layout() {
        let dir = tempfile::tempdir().unwrap();
        let s0 = Owner::acquire(dir.path(), &info("daemon", shard("0/2")), shard("0/2"), "").unwrap();
        let s1 = Owner::acquire(dir.path(), &info("daemon", shard("1/2")), shard("1/2"), "").unwrap();
        assert!(matches!(
            Owner::acquire(dir.path(), &info("daemon", shard("1/2")), shard("1/2"), ""),
            Err(OwnerError::Owned { .. })
        ));
        assert!(matches!(
            Owner::acquire(dir.path(), &info("daemon", Shard::ALL), Shard::ALL, ""),
            Err(OwnerError::Owned { .. })
        ));
        assert!(matches!(
            Owner::acquire(dir.path(), &info("daemon", shard("0/3")), shard("0/3"), ""),
            Err(OwnerError::ShardLayout { .. })
        ));
        assert_eq!(Owner::holders(dir.path()).len(), 2);
        drop((s0, s1));
        let whole = eventually(|| Owner::acquire(dir.path(), &info("daemon", Shard::ALL), Shard::ALL, "").ok());
        assert!(matches!(
            Owner::acquire(dir.path(), &info("daemon", shard("0/2")), shard("0/2"), ""),
            Err(OwnerError::Owned { .. })
        ));
        drop(whole);
    }
}
