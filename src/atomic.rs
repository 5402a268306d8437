//! Atomic file replacement, the one way chom writes a file that others read (status
//! files, secrets files, history records): a hidden temp file in the same folder, write,
//! fsync, mode, rename over the target, fsync of the folder. A crash, a full disk or a
//! read-only folder leaves the old file or the new one, never a torn one.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Replaces `path` with `bytes`, giving it `mode` (tempfile creates files 0600, so the
/// mode is set before the rename). The temp name is hidden, so watchers and the
/// validator skip it.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".chom-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_write_replaces_the_file_whole_with_its_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        std::fs::write(&path, "old").unwrap();
        super::write(&path, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_read_only_folder_is_an_error_and_the_old_file_survives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        std::fs::write(&path, "old").unwrap();
        // A path under a regular file cannot be created, whoever runs the test (root
        // ignores permission bits).
        let bad = path.join("y.yaml");
        assert!(super::write(&bad, b"new", 0o644).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    }
}
