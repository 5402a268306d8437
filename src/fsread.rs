//! The one way chom reads a file: every inventory, role, status, script, secrets,
//! recipients, identity, known_hosts, tree config, history and pin file goes through
//! [`read`] (or [`read_to_string`], [`read_own`]). A file in a watched tree is whatever
//! someone put there, so a read must never block and never grow without bound:
//!
//! - the path is checked before it is opened: only a regular file (after following
//!   symlinks) is opened at all, so a FIFO, socket or device is refused without the side
//!   effects an open can have on a device;
//! - it is opened with `O_NONBLOCK | O_NOCTTY | O_CLOEXEC`, then the opened file is
//!   checked again (`fstat`: still a regular file, the same one) and its filesystem
//!   (`fstatfs`): `/proc`, `/sys` and the other kernel pseudo-filesystems report a size of
//!   0 and may block or never end, so they are refused too;
//! - at most `cap` bytes are read (one more tells an over-cap file apart), whatever size
//!   the file claims.
//!
//! The caps, per kind of file, are the constants in [`cap`].

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// How many bytes chom reads at most from each kind of file. A larger file is refused
/// with `too-large`.
pub mod cap {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    /// A Server or Role file in `inventory.d/`, and the tree config `chom.yaml`.
    pub const RESOURCE: u64 = MIB;
    /// A `<name>.status.yaml` (chom writes a few KiB).
    pub const STATUS: u64 = MIB;
    /// A component script, and each helper in `scripts/lib/`.
    pub const SCRIPT: u64 = MIB;
    /// A secrets file in `secrets.d/` (encrypted values, armored).
    pub const SECRETS: u64 = 4 * MIB;
    /// `secrets.d/.recipients`.
    pub const RECIPIENTS: u64 = MIB;
    /// An age identity file.
    pub const IDENTITY: u64 = 64 * KIB;
    /// An SSH private key.
    pub const SSH_KEY: u64 = 256 * KIB;
    /// A known_hosts file (a line per server and key type: a fleet of 10,000 servers
    /// with RSA keys is about 20 MiB).
    pub const KNOWN_HOSTS: u64 = 32 * MIB;
    /// A deployment record in the state directory's `history/`.
    pub const HISTORY_RECORD: u64 = 64 * MIB;
    /// A kept script or config in `objects/`.
    pub const OBJECT: u64 = 64 * MIB;
    /// A server's hardware snapshots (`hardware/<name>.jsonl`).
    pub const HARDWARE_LOG: u64 = 16 * MIB;
    /// A rollback pin (`pins/<name>.json`).
    pub const PIN: u64 = 64 * KIB;
    /// The owner written in a lock file.
    pub const LOCK_OWNER: u64 = 4 * KIB;
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read (missing, permissions, I/O).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file: a folder, FIFO, socket, device, kernel pseudo-file, or (for
    /// files chom writes itself) a symbolic link.
    #[error("{} is {what}, not a regular file; chom reads only plain files (replace it with one)", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead (`a named pipe (FIFO)`).
        what: &'static str,
    },
    /// Larger than the cap for its kind.
    #[error("{} is larger than {cap} bytes, chom's limit for this kind of file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        cap: u64,
    },
    /// Not UTF-8 text ([`read_to_string`] only).
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

impl ReadError {
    /// The finding code: `unreadable`, `not-a-file`, `too-large` or `not-utf8`.
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::Io { .. } => "unreadable",
            ReadError::NotAFile { .. } => "not-a-file",
            ReadError::TooLarge { .. } => "too-large",
            ReadError::NotUtf8 { .. } => "not-utf8",
        }
    }

    /// The problem, without the path (for messages that name the file already).
    pub fn problem(&self) -> String {
        match self {
            ReadError::Io { source, .. } => format!("cannot read the file: {source}"),
            ReadError::NotAFile { what, .. } => format!("this is {what}, not a regular file"),
            ReadError::TooLarge { cap, .. } => format!("the file is larger than {cap} bytes, chom's limit for it"),
            ReadError::NotUtf8 { .. } => "the file is not valid UTF-8 text".to_owned(),
        }
    }

    /// What to do about it.
    pub fn help(&self) -> &'static str {
        match self {
            ReadError::Io { .. } => "check that the file exists and that chom may read it",
            ReadError::NotAFile { .. } => {
                "chom reads only plain files: replace it with one (pipes, sockets, devices and /proc or /sys files are refused)"
            }
            ReadError::TooLarge { .. } => "trim or split the file",
            ReadError::NotUtf8 { .. } => "save the file as UTF-8 text",
        }
    }

    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::NotAFile { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::NotUtf8 { path } => path,
        }
    }
}

/// For callers whose errors carry an `io::Error` and name the file themselves: an I/O
/// error stays itself (so `NotFound` is still `NotFound`); the others become an error
/// of the matching kind whose message is [`ReadError::problem`].
impl From<ReadError> for std::io::Error {
    fn from(e: ReadError) -> Self {
        use std::io::ErrorKind;
        let kind = match &e {
            ReadError::Io { .. } => ErrorKind::Other,
            ReadError::NotAFile { .. } => ErrorKind::InvalidInput,
            ReadError::TooLarge { .. } => ErrorKind::FileTooLarge,
            ReadError::NotUtf8 { .. } => ErrorKind::InvalidData,
        };
        match e {
            ReadError::Io { source, .. } => source,
            other => std::io::Error::new(kind, other.problem()),
        }
    }
}

/// Reads the regular file at `path` (symlinks followed), at most `cap` bytes.
pub fn read(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    read_with(path, cap, true)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, cap: u64) -> Result<String, ReadError> {
    String::from_utf8(read(path, cap)?).map_err(|_| ReadError::NotUtf8 { path: path.to_owned() })
}

/// Reads a file chom writes itself (a status file): like [`read_to_string`], but a
/// symbolic link is refused as `not-a-file` rather than followed, since chom never
/// writes one; the caller replaces it.
pub fn read_own(path: &Path, cap: u64) -> Result<String, ReadError> {
    let bytes = read_with(path, cap, false)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 { path: path.to_owned() })
}

/// Checks, without opening it, that `path` is a regular file (symlinks followed) and
/// returns its metadata; for callers that hand the path to code that reads it itself.
pub fn check(path: &Path) -> Result<Metadata, ReadError> {
    let meta = std::fs::metadata(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    refuse_non_regular(path, &meta)?;
    Ok(meta)
}

/// Opens (creating, mode `mode`) a file chom appends to (the audit trail, hardware
/// snapshots): without blocking, and refused unless it is a regular file, so a FIFO or
/// device in its place is an error, never a wait.
pub fn open_append(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file; remove it and chom creates it again",
                path.display()
            ),
        ));
    }
    Ok(file)
}

fn read_with(path: &Path, cap: u64, follow: bool) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    // Checked before the open: opening a device can have effects of its own.
    let before = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(io)?;
    refuse_non_regular(path, &before)?;
    let mut flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    if !follow {
        flags |= rustix::fs::OFlags::NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(io)?;
    // The same file, still a regular one (it may have been swapped since the check).
    let meta = file.metadata().map_err(io)?;
    refuse_non_regular(path, &meta)?;
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        return Err(io(std::io::Error::other("the file was replaced while being opened")));
    }
    refuse_pseudo_file(path, &file)?;
    if meta.len() > cap {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            cap,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            cap,
        });
    }
    Ok(bytes)
}

fn refuse_non_regular(path: &Path, meta: &Metadata) -> Result<(), ReadError> {
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    };
    Err(ReadError::NotAFile {
        path: path.to_owned(),
        what,
    })
}

/// Refuses files of the kernel's pseudo-filesystems: they look regular but report a size
/// of 0, and some block (`/proc/kmsg`) or never end.
#[cfg(target_os = "linux")]
fn refuse_pseudo_file(path: &Path, file: &File) -> Result<(), ReadError> {
    use rustix::fs::FsWord;
    // linux/magic.h
    const PSEUDO: [u32; 14] = [
        0x0000_9fa0, // proc
        0x6265_6572, // sysfs
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0x6265_6570, // configfs
        0xcafe_4a11, // bpf
        0xde5e_81e4, // efivarfs
        0x6165_676c, // pstore
        0x6573_5543, // fusectl
        0x4249_4e4d, // binfmt_misc
        0x0000_1cd1, // devpts
    ];
    let Ok(fs) = rustix::fs::fstatfs(file) else {
        return Ok(());
    };
    if PSEUDO.iter().any(|&magic| magic as FsWord == fs.f_type) {
        return Err(ReadError::NotAFile {
            path: path.to_owned(),
            what: "a kernel pseudo-file (/proc, /sys)",
        });
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn refuse_pseudo_file(_path: &Path, _file: &File) -> Result<(), ReadError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status().unwrap();
        assert!(made.success());
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "x: 1\n").unwrap();
        assert_eq!(read_to_string(&path, 100).unwrap(), "x: 1\n");
        assert_eq!(read_own(&path, 100).unwrap(), "x: 1\n");
        assert_eq!(read(&path, 5).unwrap(), b"x: 1\n");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        mkfifo(&path);
        let e = read(&path, 100).unwrap_err();
        assert_eq!(e.code(), "not-a-file", "{e}");
        assert!(e.to_string().contains("named pipe"), "{e}");
        // Through a symlink too.
        let link = dir.path().join("y.yaml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(read(&link, 100).unwrap_err().code(), "not-a-file");
    }

    #[test]
    fn devices_and_kernel_pseudo_files_are_refused() {
        let e = read(Path::new("/dev/zero"), 100).unwrap_err();
        assert_eq!(e.code(), "not-a-file", "{e}");
        assert!(e.to_string().contains("character device"), "{e}");
        // Regular files of size 0 that never end or block.
        for pseudo in ["/proc/self/status", "/proc/kmsg", "/sys/kernel/uevent_seqnum"] {
            if std::fs::metadata(pseudo).is_ok() {
                let e = read(Path::new(pseudo), 100).unwrap_err();
                assert!(matches!(e.code(), "not-a-file" | "unreadable"), "{pseudo}: {e}");
            }
        }
        let e = read(Path::new("/proc/self/status"), 1 << 20).unwrap_err();
        assert_eq!(e.code(), "not-a-file", "{e}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'a'; 101]).unwrap();
        let e = read(&path, 100).unwrap_err();
        assert_eq!(e.code(), "too-large");
        assert!(e.to_string().contains("larger than 100 bytes"), "{e}");
        assert_eq!(read(&path, 101).unwrap().len(), 101);
    }

    #[test]
    fn own_files_refuse_symlinks_and_missing_files_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, "a").unwrap();
        let link = dir.path().join("s.status.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_own(&link, 10).unwrap_err().code(), "not-a-file");
        assert_eq!(read_to_string(&link, 10).unwrap(), "a");
        let missing = read(&dir.path().join("nope"), 10).unwrap_err();
        assert!(missing.is_not_found());
        assert_eq!(std::io::Error::from(missing).kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn appending_to_a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        mkfifo(&path);
        assert!(open_append(&path, 0o640).is_err());
        let plain = dir.path().join("plain.jsonl");
        assert!(open_append(&plain, 0o640).is_ok());
    }

    #[test]
    fn a_folder_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path(), 10).unwrap_err();
        assert_eq!(e.code(), "not-a-file");
        assert!(check(dir.path()).is_err());
    }
}
