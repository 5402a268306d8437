//! Keeps the inotify watches pointed at the three configured roots while the roots themselves
//! change: a folder created late, removed, replaced, or reached through a symlink that a GitOps
//! tool swaps (git-sync: `inventory.d -> .worktrees/<rev>/inventory.d`). It must not read or
//! judge the files below the roots, and it must not send anything: it only reports why a full
//! re-list is due.
//!
//! inotify watches inodes, not names. A watch added through a symlink stays on the old target
//! after the link is swapped, so without this module the daemon would go deaf after the first
//! `git-sync` update. Two things catch a swap: the parent folder of each root (and of every
//! symlink on the way to it) is watched non-recursively, so replacing the link shows up as an
//! event; and every flush and periodic tick compares each root's resolved identity (canonical
//! path plus device and inode) with the one the watch was set up on.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode};

use super::WatchPaths;
use super::error::{WatchError, describe_runtime_error, watch_error};

/// The two operations this module needs from notify's watcher; a trait so the event loop can be
/// tested without inotify.
pub(super) trait WatchControl: Send {
    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()>;
    fn unwatch(&mut self, path: &Path) -> notify::Result<()>;
}

impl WatchControl for RecommendedWatcher {
    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        notify::Watcher::watch(self, path, mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        notify::Watcher::unwatch(self, path)
    }
}

/// Which configured folder a root is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    Inventory,
    Scripts,
    Secrets,
}

impl RootKind {
    fn label(self) -> &'static str {
        match self {
            RootKind::Inventory => "inventory",
            RootKind::Scripts => "scripts",
            RootKind::Secrets => "secrets",
        }
    }
}

/// What a root path resolves to right now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    target: PathBuf,
    /// Device and inode, so that a folder deleted and recreated under the same name counts as a
    /// new folder (its old inotify watch died with it).
    file: (u64, u64),
}

fn identify(path: &Path) -> Option<Identity> {
    let meta = fs::metadata(path).ok().filter(|meta| meta.is_dir())?;
    let target = fs::canonicalize(path).ok()?;
    Some(Identity {
        target,
        file: file_key(&meta),
    })
}

#[cfg(unix)]
fn file_key(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_key(_meta: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

#[derive(Debug)]
struct Root {
    kind: RootKind,
    /// Absolute but not canonical: notify names events after the path it was given, and the
    /// caller knows the roots by these names, not by the target of a symlink.
    path: PathBuf,
    identity: Option<Identity>,
    watched: bool,
}

impl Root {
    fn describe_move(&self, now: Option<&Identity>) -> String {
        let (label, path) = (self.kind.label(), self.path.display());
        match (&self.identity, now) {
            (None, _) => format!("{label} folder {path} appeared"),
            (Some(_), None) => format!("{label} folder {path} disappeared"),
            (Some(before), Some(after)) if before.target != after.target => format!(
                "{label} folder {path} now resolves to {} (was {})",
                after.target.display(),
                before.target.display()
            ),
            (Some(_), Some(_)) => format!("{label} folder {path} was replaced"),
        }
    }
}

/// The configured roots and the parent folders watched to notice them changing.
#[derive(Debug, Default)]
pub(super) struct Roots {
    roots: Vec<Root>,
    /// Folders watched non-recursively: parents of the roots and of symlinks leading to them.
    anchors: BTreeSet<PathBuf>,
}

impl Roots {
    /// Resolves the configured paths; only a missing inventory folder is an error, because
    /// `scripts/` and `secrets.d/` may legitimately arrive later.
    pub fn new(paths: &WatchPaths) -> Result<Self, WatchError> {
        let configured = [
            (RootKind::Inventory, &paths.inventory),
            (RootKind::Scripts, &paths.scripts),
            (RootKind::Secrets, &paths.secrets),
        ];
        let mut roots = Vec::with_capacity(configured.len());
        for (kind, path) in configured {
            let path = std::path::absolute(path).map_err(|source| WatchError::Watch {
                path: path.clone(),
                source: notify::Error::io(source),
            })?;
            roots.push(Root {
                kind,
                path,
                identity: None,
                watched: false,
            });
        }
        if let Some(inventory) = roots.first()
            && identify(&inventory.path).is_none()
        {
            return Err(WatchError::InventoryMissing {
                path: paths.inventory.clone(),
            });
        }
        Ok(Roots {
            roots,
            anchors: BTreeSet::new(),
        })
    }

    /// The absolute root paths, as notify will spell them in events.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|root| root.path.clone()).collect()
    }

    /// Sets up the first watches. A root that exists but cannot be watched is fatal here: the
    /// daemon would otherwise run without ever noticing changes.
    pub fn watch_initial(&mut self, control: &mut dyn WatchControl) -> Result<(), WatchError> {
        for root in &mut self.roots {
            root.identity = identify(&root.path);
            if root.identity.is_some() {
                control
                    .watch(&root.path, RecursiveMode::Recursive)
                    .map_err(|source| watch_error(&root.path, source))?;
                root.watched = true;
            }
        }
        self.sync_anchors(control, false);
        Ok(())
    }

    /// Re-resolves every root and moves watches where needed. `touched` holds paths at or above
    /// a root that saw a structural event (create, remove, rename); such a root is re-watched
    /// even if it resolves to the same inode, because inode numbers are reused and a folder
    /// renamed away and back keeps its identity but may have lost its watch.
    ///
    /// Returns why a full re-list is needed; empty if nothing moved. Watches are in place
    /// before this returns, so a re-list the caller starts afterwards misses nothing.
    pub fn refresh(&mut self, control: &mut dyn WatchControl, touched: &BTreeSet<PathBuf>) -> Vec<String> {
        let mut reasons = Vec::new();
        let mut any_moved = false;
        for root in &mut self.roots {
            let now = identify(&root.path);
            let moved = now != root.identity;
            let was_touched = touched.iter().any(|path| root.path.starts_with(path));
            let exists = now.is_some();
            if !moved && !(exists && (was_touched || !root.watched)) {
                continue;
            }
            if moved {
                reasons.push(root.describe_move(now.as_ref()));
                any_moved = true;
            } else if was_touched && root.watched {
                reasons.push(format!(
                    "{} folder {} or a folder above it was replaced or renamed",
                    root.kind.label(),
                    root.path.display()
                ));
            }
            tracing::info!(root = %root.path.display(), moved, was_touched, "re-establishing watch");
            if root.watched {
                // A stale watch would keep reporting the old target's events under the root's
                // name. It may already be gone (notify drops watches on deleted folders).
                let _ = control.unwatch(&root.path);
                root.watched = false;
            }
            if exists {
                match control.watch(&root.path, RecursiveMode::Recursive) {
                    Ok(()) => root.watched = true,
                    Err(error) => {
                        // Remove whatever part of the recursive watch was added before the
                        // failure; the next flush or periodic tick tries again.
                        let _ = control.unwatch(&root.path);
                        tracing::warn!(root = %root.path.display(), %error, "cannot watch folder");
                        reasons.push(describe_runtime_error(&error.add_path(root.path.clone())));
                    }
                }
            }
            root.identity = now;
        }
        self.sync_anchors(control, any_moved || !touched.is_empty());
        reasons
    }

    /// Folders to watch non-recursively: each root's parent (to see the root appear, vanish or
    /// be replaced) and the parent of every symlink on the way to a root (to see the link swap).
    fn desired_anchors(&self) -> BTreeSet<PathBuf> {
        let mut anchors = BTreeSet::new();
        for root in &self.roots {
            for (depth, path) in root.path.ancestors().enumerate() {
                let is_link = fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
                if (depth == 0 || is_link)
                    && let Some(parent) = path.parent()
                {
                    anchors.insert(parent.to_path_buf());
                }
            }
        }
        // A non-recursive watch on a folder inside a root would replace notify's recursive entry
        // for it, so such folders are left to the root's own watch.
        anchors.retain(|dir| dir.is_dir() && !self.roots.iter().any(|root| dir.starts_with(&root.path)));
        anchors
    }

    /// Brings the anchor watches in line with `desired_anchors`. With `renew`, existing anchors
    /// are re-added too, since the folder behind an unchanged name may be a new one. Failures
    /// only cost latency (the periodic re-list still notices), so they are logged, not fatal.
    fn sync_anchors(&mut self, control: &mut dyn WatchControl, renew: bool) {
        let desired = self.desired_anchors();
        for stale in &self.anchors {
            if renew || !desired.contains(stale) {
                let _ = control.unwatch(stale);
            }
        }
        let previous = std::mem::take(&mut self.anchors);
        for dir in desired {
            if !renew && previous.contains(&dir) {
                self.anchors.insert(dir);
                continue;
            }
            match control.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.anchors.insert(dir);
                }
                Err(error) => tracing::warn!(folder = %dir.display(), %error, "cannot watch parent folder"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records calls instead of talking to inotify.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    impl WatchControl for Recorder {
        fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
            self.calls.push(format!("watch {} {mode:?}", path.display()));
            Ok(())
        }

        fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
            self.calls.push(format!("unwatch {}", path.display()));
            Ok(())
        }
    }

    fn layout() -> (tempfile::TempDir, WatchPaths) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("inventory.d")).unwrap();
        let paths = WatchPaths {
            inventory: dir.path().join("inventory.d"),
            scripts: dir.path().join("scripts"),
            secrets: dir.path().join("secrets.d"),
        };
        (dir, paths)
    }

    #[test]
    fn a_missing_inventory_folder_is_a_clear_error() {
        let (dir, mut paths) = layout();
        paths.inventory = dir.path().join("nope");
        let error = Roots::new(&paths).unwrap_err();
        assert!(matches!(error, WatchError::InventoryMissing { .. }));
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    #[test]
    fn missing_optional_roots_are_seen_through_their_parent_and_watched_once_created() {
        let (dir, paths) = layout();
        let mut roots = Roots::new(&paths).unwrap();
        let mut recorder = Recorder::default();
        roots.watch_initial(&mut recorder).unwrap();
        let parent = std::path::absolute(dir.path()).unwrap();
        assert_eq!(roots.anchors, BTreeSet::from([parent]));

        fs::create_dir(&paths.scripts).unwrap();
        let reasons = roots.refresh(&mut recorder, &BTreeSet::new());
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains("scripts folder") && reasons[0].contains("appeared"),
            "{reasons:?}"
        );
        assert!(
            recorder.calls.iter().any(|call| call.ends_with("scripts Recursive")),
            "{:?}",
            recorder.calls
        );

        recorder.calls.clear();
        assert!(roots.refresh(&mut recorder, &BTreeSet::new()).is_empty());
        assert!(
            recorder.calls.is_empty(),
            "an unchanged tree must not touch the watches"
        );
    }
}
