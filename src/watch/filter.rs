//! Decides which debounced notify events matter and turns one debouncer delivery into a `Batch`.
//! It runs on the debouncer's own thread, so it may touch the file system (to list a folder that
//! just appeared) but must never block on tokio or read file contents.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Component, Path, PathBuf};

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify_debouncer_full::DebounceEventResult;

use super::error::describe_runtime_error;

/// A folder that appears with more entries than this is not listed entry by entry: the batch asks
/// for a full re-list instead, so a huge `cp -r` cannot make the debouncer thread walk for seconds.
const MAX_EXPANDED_ENTRIES: usize = 10_000;

/// Tells whether chom must never react to a file or folder with this name.
///
/// Only the last component of `path` is judged, so a checkout that lives below a hidden folder
/// (`~/.local/share/chom/inventory.d`) still counts. Callers that walk a tree apply it to every
/// entry, which makes an ignored folder (such as `.git/`) hide everything below it; the watcher
/// does the same for every component below a watched root.
///
/// Ignored: the daemon's own `*.status.yaml` / `*.status.yml` (reacting to them would make every
/// status write trigger another reconcile), hidden names (`.git`, `.x.swp`, the `.tmpXXXX` names
/// the `tempfile` crate uses), and the temporary names editors and VCS tools leave behind (`*~`,
/// `#x#`, vim's `4913` probe, `*.tmp`, `*.swp`, `*.swx`, `*.orig`, `*.rej`).
pub fn is_ignored(path: &Path) -> bool {
    path.file_name().is_some_and(is_ignored_name)
}

fn is_ignored_name(name: &OsStr) -> bool {
    // Byte-level checks keep non-UTF-8 names working; every pattern here is ASCII.
    let name = name.as_encoded_bytes();
    const SUFFIXES: [&[u8]; 8] = [
        b".status.yaml",
        b".status.yml",
        b".tmp",
        b".swp",
        b".swx",
        b".orig",
        b".rej",
        b"~",
    ];
    name.starts_with(b".")
        || (name.len() >= 2 && name.starts_with(b"#") && name.ends_with(b"#"))
        || name == b"4913"
        || SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}

/// Everything one debouncer delivery contributed, after filtering.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Batch {
    /// Relevant paths below a watched root (files or folders).
    pub paths: BTreeSet<PathBuf>,
    /// Why a full re-list is needed, if it is.
    pub reasons: Vec<String>,
    /// Roots, or folders and symlinks above them, that were created, removed or renamed (a
    /// symlink swapped, say): they must be re-resolved before the next change set goes out.
    pub touched: BTreeSet<PathBuf>,
}

impl Batch {
    /// A batch that asks for nothing is never sent: ignored writes must cause no work at all.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.reasons.is_empty() && self.touched.is_empty()
    }

    /// Records why a re-list is needed, once per distinct reason.
    pub fn add_reason(&mut self, reason: String) {
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    /// Folds a later batch into this one.
    pub fn merge(&mut self, other: Batch) {
        self.paths.extend(other.paths);
        for reason in other.reasons {
            self.add_reason(reason);
        }
        self.touched.extend(other.touched);
    }
}

/// Where an event path sits relative to the watched roots.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// Below a root and not hidden by an ignored component.
    Inside,
    /// Below a root, but some component is ignored (`.git/…`, `x.status.yaml`, `.x.swp`).
    Ignored,
    /// A root itself or an ancestor of one: the folder or a symlink leading to it changed.
    Root,
    /// A sibling seen through a parent-folder watch; none of chom's business.
    Outside,
}

/// Sorts debounced events against the configured roots.
#[derive(Debug, Clone)]
pub(super) struct Sorter {
    roots: Vec<PathBuf>,
}

impl Sorter {
    /// `roots` must be absolute and spelled the way they were handed to notify, because notify
    /// reports event paths by joining names onto the watched path, without resolving symlinks.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Sorter { roots }
    }

    /// Turns one debouncer delivery into a batch.
    pub fn batch(&self, result: DebounceEventResult) -> Batch {
        let mut batch = Batch::default();
        match result {
            Ok(events) => {
                for event in events {
                    self.add_event(&event.event, &mut batch);
                }
            }
            Err(errors) => batch.reasons.extend(errors.iter().map(describe_runtime_error)),
        }
        batch
    }

    fn add_event(&self, event: &notify::Event, batch: &mut Batch) {
        if event.need_rescan() {
            batch
                .reasons
                .push("the kernel's inotify event queue overflowed".to_owned());
            return;
        }
        // Reads (ours included: the daemon re-reads files after every change) show up as Access
        // events; reacting to them would loop. `Other` carries only backend bookkeeping.
        if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
            return;
        }
        for (index, path) in event.paths.iter().enumerate() {
            match self.place(path) {
                Place::Inside => {
                    if may_be_new_folder(&event.kind, index, event.paths.len()) {
                        expand_folder(path, batch);
                    }
                    batch.paths.insert(path.clone());
                }
                // Metadata changes on a root (chmod, timestamps) leave its watch intact.
                Place::Root if is_structural(&event.kind) => {
                    batch.touched.insert(path.clone());
                }
                Place::Root => {}
                Place::Ignored | Place::Outside => {}
            }
        }
    }

    fn place(&self, path: &Path) -> Place {
        // The longest matching root wins, in case someone nests one root inside another.
        let root = self
            .roots
            .iter()
            .filter(|root| path != root.as_path() && path.starts_with(root))
            .max_by_key(|root| root.components().count());
        if let Some(root) = root {
            let hidden = path.strip_prefix(root).is_ok_and(|relative| {
                relative
                    .components()
                    .any(|part| matches!(part, Component::Normal(name) if is_ignored_name(name)))
            });
            return if hidden { Place::Ignored } else { Place::Inside };
        }
        if self.roots.iter().any(|root| root.starts_with(path)) {
            Place::Root
        } else {
            Place::Outside
        }
    }
}

/// Whether an event can mean that the folder at its path is now a different one.
fn is_structural(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
    )
}

/// Whether the path at `index` may be a folder that just arrived, whose contents inotify may
/// not have reported: notify adds the watch on a new folder only after seeing it, so files
/// written right after `mkdir` (or a folder moved in whole) produce no events of their own.
fn may_be_new_folder(kind: &EventKind, index: usize, count: usize) -> bool {
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => true,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => index + 1 == count,
        _ => false,
    }
}

/// Adds every non-ignored entry below `folder` to the batch. Symlinks are reported but not
/// followed, so a link loop cannot make this walk forever.
fn expand_folder(folder: &Path, batch: &mut Batch) {
    let is_folder = fs::symlink_metadata(folder).is_ok_and(|meta| meta.is_dir());
    if !is_folder {
        return;
    }
    let mut found = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        // A folder that vanished again before we got here simply has nothing to report.
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if is_ignored_name(&entry.file_name()) {
                continue;
            }
            if found.len() >= MAX_EXPANDED_ENTRIES {
                batch.reasons.push(format!(
                    "more than {MAX_EXPANDED_ENTRIES} entries appeared under {}",
                    folder.display()
                ));
                return;
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    batch.paths.extend(found);
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, Flag, RemoveKind};
    use notify_debouncer_full::DebouncedEvent;
    use std::time::Instant;

    fn event(kind: EventKind, paths: &[&str]) -> DebouncedEvent {
        let mut event = notify::Event::new(kind);
        for path in paths {
            event = event.add_path(PathBuf::from(path));
        }
        DebouncedEvent::new(event, Instant::now())
    }

    fn sorter() -> Sorter {
        Sorter::new(vec![PathBuf::from("/repo/inventory.d"), PathBuf::from("/repo/scripts")])
    }

    #[test]
    fn status_hidden_and_editor_temp_names_are_ignored() {
        for name in [
            "web-7.status.yaml",
            "web-7.status.yml",
            ".git",
            ".web-7.yaml.swp",
            ".tmpA1b2C3",
            "web-7.yaml~",
            "#web-7.yaml#",
            "4913",
            "web-7.yaml.tmp",
            "web-7.swp",
            "web-7.swx",
            "web-7.yaml.orig",
            "web-7.yaml.rej",
        ] {
            assert!(is_ignored(Path::new(name)), "{name} should be ignored");
        }
    }

    #[test]
    fn resources_scripts_and_secrets_are_not_ignored() {
        for name in [
            "web-7.yaml",
            "observability.yml",
            "install-node.sh",
            "db.age",
            "status.yaml",
            "#",
            "49130",
        ] {
            assert!(!is_ignored(Path::new(name)), "{name} should not be ignored");
        }
    }

    #[test]
    fn a_hidden_folder_above_the_root_does_not_hide_the_root() {
        let sorter = Sorter::new(vec![PathBuf::from("/home/u/.chom/inventory.d")]);
        let batch = sorter.batch(Ok(vec![event(
            EventKind::Create(CreateKind::File),
            &["/home/u/.chom/inventory.d/web.yaml"],
        )]));
        assert_eq!(
            batch.paths,
            BTreeSet::from([PathBuf::from("/home/u/.chom/inventory.d/web.yaml")])
        );
    }

    #[test]
    fn anything_below_an_ignored_folder_is_dropped() {
        let batch = sorter().batch(Ok(vec![event(
            EventKind::Create(CreateKind::File),
            &["/repo/inventory.d/.git/objects/ab/cdef"],
        )]));
        assert!(batch.is_empty());
    }

    #[test]
    fn access_events_and_siblings_of_the_roots_are_dropped() {
        let batch = sorter().batch(Ok(vec![
            event(EventKind::Access(AccessKind::Any), &["/repo/inventory.d/web.yaml"]),
            event(EventKind::Create(CreateKind::File), &["/repo/README.md"]),
        ]));
        assert!(batch.is_empty());
    }

    #[test]
    fn a_rename_over_a_root_marks_the_roots_as_touched() {
        let batch = sorter().batch(Ok(vec![event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["/repo/inventory.d.tmp", "/repo/inventory.d"],
        )]));
        assert_eq!(batch.touched, BTreeSet::from([PathBuf::from("/repo/inventory.d")]));
        assert!(batch.paths.is_empty());
    }

    #[test]
    fn a_change_to_an_ancestor_of_a_root_marks_the_roots_as_touched() {
        let batch = sorter().batch(Ok(vec![event(EventKind::Remove(RemoveKind::Folder), &["/repo"])]));
        assert_eq!(batch.touched, BTreeSet::from([PathBuf::from("/repo")]));
    }

    #[test]
    fn a_rename_reports_both_paths_unless_one_is_ignored() {
        let batch = sorter().batch(Ok(vec![
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/repo/inventory.d/a.yaml", "/repo/inventory.d/b.yaml"],
            ),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/repo/scripts/.x.sh.swp", "/repo/scripts/x.sh"],
            ),
        ]));
        let expected = [
            "/repo/inventory.d/a.yaml",
            "/repo/inventory.d/b.yaml",
            "/repo/scripts/x.sh",
        ];
        assert_eq!(batch.paths, expected.iter().map(PathBuf::from).collect());
    }

    #[test]
    fn a_rescan_event_asks_for_a_relist() {
        let overflow = notify::Event::new(EventKind::Other).set_flag(Flag::Rescan);
        let batch = sorter().batch(Ok(vec![DebouncedEvent::new(overflow, Instant::now())]));
        assert_eq!(batch.reasons.len(), 1);
        assert!(batch.reasons[0].contains("overflowed"));
    }

    #[test]
    fn merging_keeps_every_path_and_each_reason_once() {
        let mut first = Batch {
            reasons: vec!["a".into()],
            ..Batch::default()
        };
        first.paths.insert("/x".into());
        let mut second = Batch {
            reasons: vec!["a".into(), "b".into()],
            ..Batch::default()
        };
        second.touched.insert("/repo".into());
        second.paths.insert("/y".into());
        first.merge(second);
        assert_eq!(first.paths.len(), 2);
        assert_eq!(first.reasons, ["a", "b"]);
        assert_eq!(first.touched.len(), 1);
    }
}
