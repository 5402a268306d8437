//! Decides which raw notify events matter, turns each into a `Change`, and folds changes into
//! the `Batch` that becomes a change set. `Sorter::sort` runs on notify's inotify thread, so it
//! must never block, touch the file system or read file contents; listing folders that appeared
//! happens only when a batch is flushed, off both notify's thread and the runtime.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Component, Path, PathBuf};

use notify::event::{EventKind, ModifyKind, RenameMode};

use super::error::describe_runtime_error;

/// A folder that appears with more entries than this is not listed entry by entry: the batch asks
/// for a full re-list instead, so a huge `cp -r` cannot hold up a flush for seconds.
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

/// What one raw event on a path below a root means for the paths a change set reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    /// Changed in place (contents, metadata) or renamed away without a matching arrival.
    Changed(PathBuf),
    /// Newly created: the name did not exist before.
    Created(PathBuf),
    /// Arrived by a rename, possibly over an existing file.
    MovedIn(PathBuf),
    /// Deleted.
    Removed(PathBuf),
    /// The old name of a rename whose new name is known too.
    MovedAway(PathBuf),
}

/// What one raw notify event contributes, after filtering.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    /// What happened below the roots, in event order (a rename has its old and its new name).
    pub ops: Vec<Op>,
    /// Roots, or folders and symlinks above them, that were created, removed or renamed.
    pub touched: Vec<PathBuf>,
    /// Why a full re-list is needed, if it is.
    pub reason: Option<String>,
}

impl Change {
    /// A change that asks for nothing is never sent: ignored writes must cause no work at all.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.touched.is_empty() && self.reason.is_none()
    }
}

/// The changes folded together for one change set.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Batch {
    /// Relevant paths below a watched root (files or folders).
    pub paths: BTreeSet<PathBuf>,
    /// Why a full re-list is needed, if it is.
    pub reasons: Vec<String>,
    /// Roots, or folders and symlinks above them, that were created, removed or renamed (a
    /// symlink swapped, say): they must be re-resolved before the next change set goes out.
    pub touched: BTreeSet<PathBuf>,
    /// Paths that arrived whole (created or moved in). Each may be a folder whose contents
    /// produced no events of their own: notify adds the watch on a new folder only after seeing
    /// it, so files written right after `mkdir` (or a folder moved in whole) are never reported.
    /// They are listed by `expand_appeared` when the batch is flushed, by which time the watch is
    /// in place and anything written later has events of its own.
    appeared: BTreeSet<PathBuf>,
    /// Paths created since this batch began that did not exist before it. Removing or renaming
    /// one away again cancels it, so a short-lived temporary (`sed -i`'s, say) leaves no trace.
    created: BTreeSet<PathBuf>,
}

impl Batch {
    /// Records why a re-list is needed, once per distinct reason.
    pub fn add_reason(&mut self, reason: String) {
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    /// Folds in the next change, in the order the events happened.
    pub fn apply(&mut self, change: Change) {
        for op in change.ops {
            match op {
                Op::Changed(path) => {
                    self.paths.insert(path);
                }
                Op::Created(path) => {
                    // Already recorded means it existed earlier in this batch (and was removed
                    // or renamed away since): that earlier change must still be reported.
                    if self.paths.insert(path.clone()) {
                        self.created.insert(path.clone());
                    }
                    self.appeared.insert(path);
                }
                Op::MovedIn(path) => {
                    self.paths.insert(path.clone());
                    self.appeared.insert(path);
                }
                Op::Removed(path) => self.vanish(path, true),
                Op::MovedAway(path) => self.vanish(path, false),
            }
        }
        self.touched.extend(change.touched);
        if let Some(reason) = change.reason {
            self.add_reason(reason);
        }
    }

    /// `path` is gone. A removed folder is reported once, without its contents: what was recorded
    /// below it is dropped, as its own path already stands for "anything below may have changed".
    /// A path created within this batch leaves nothing behind at all.
    fn vanish(&mut self, path: PathBuf, removed: bool) {
        let created = self.created.remove(&path);
        if removed || created {
            let outside = |other: &PathBuf| !other.starts_with(&path) || *other == path;
            self.paths.retain(outside);
            self.created.retain(outside);
            self.appeared.retain(outside);
        }
        self.appeared.remove(&path);
        if created {
            self.paths.remove(&path);
        } else {
            self.paths.insert(path);
        }
    }

    /// Adds the contents of every path that arrived whole and is a folder. Blocking file-system
    /// work: call it off the runtime, once the batch is due.
    pub fn expand_appeared(&mut self) {
        for path in std::mem::take(&mut self.appeared) {
            expand_folder(&path, self);
        }
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

/// Sorts raw notify events against the configured roots.
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

    /// Turns one raw notify event, or error, into a change. Cheap and non-blocking: it runs on
    /// notify's inotify thread for every event, including the ones it drops.
    pub fn sort(&self, result: notify::Result<notify::Event>) -> Change {
        let mut change = Change::default();
        match result {
            Ok(event) => self.add_event(&event, &mut change),
            Err(error) => change.reason = Some(describe_runtime_error(&error)),
        }
        change
    }

    fn add_event(&self, event: &notify::Event, change: &mut Change) {
        // inotify's queue overflowed (notify reports it as `Other` with the `Rescan` flag).
        if event.need_rescan() {
            change.reason = Some("the kernel's inotify event queue overflowed".to_owned());
            return;
        }
        // Reads (ours included: the daemon re-reads files after every change) show up as Access
        // events; reacting to them would loop. `Other` carries only backend bookkeeping.
        if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
            return;
        }
        let count = event.paths.len();
        for (index, path) in event.paths.iter().enumerate() {
            match self.place(path) {
                Place::Inside => change.ops.push(op_for(&event.kind, index, count, path.clone())),
                // Metadata changes on a root (chmod, timestamps) leave its watch intact.
                Place::Root if is_structural(&event.kind) => change.touched.push(path.clone()),
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

/// What an event of `kind` means for its path at `index` of `count`. inotify reports a rename as
/// `From` (old name), `To` (new name) and then `Both` (old, new) when it can pair them up.
fn op_for(kind: &EventKind, index: usize, count: usize, path: PathBuf) -> Op {
    match kind {
        EventKind::Create(_) => Op::Created(path),
        EventKind::Remove(_) => Op::Removed(path),
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => Op::MovedIn(path),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if index + 1 == count => Op::MovedIn(path),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => Op::MovedAway(path),
        _ => Op::Changed(path),
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
                batch.add_reason(format!(
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
    use notify::event::{AccessKind, CreateKind, DataChange, Flag, RemoveKind};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        for path in paths {
            event = event.add_path(PathBuf::from(path));
        }
        event
    }

    fn sorter() -> Sorter {
        Sorter::new(vec![PathBuf::from("/repo/inventory.d"), PathBuf::from("/repo/scripts")])
    }

    /// Sorts `events` in order and folds them into one batch, as the event loop does.
    fn fold(sorter: &Sorter, events: Vec<notify::Event>) -> Batch {
        let mut batch = Batch::default();
        for event in events {
            batch.apply(sorter.sort(Ok(event)));
        }
        batch
    }

    fn paths(list: &[&str]) -> BTreeSet<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    /// What inotify reports for `rename(from, to)` inside watched folders.
    fn rename(from: &str, to: &str) -> [notify::Event; 3] {
        [
            event(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &[from]),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &[to]),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &[from, to]),
        ]
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
        let batch = fold(
            &sorter,
            vec![event(
                EventKind::Create(CreateKind::File),
                &["/home/u/.chom/inventory.d/web.yaml"],
            )],
        );
        assert_eq!(batch.paths, paths(&["/home/u/.chom/inventory.d/web.yaml"]));
    }

    #[test]
    fn anything_below_an_ignored_folder_is_dropped() {
        let change = sorter().sort(Ok(event(
            EventKind::Create(CreateKind::File),
            &["/repo/inventory.d/.git/objects/ab/cdef"],
        )));
        assert!(change.is_empty());
    }

    #[test]
    fn access_events_and_siblings_of_the_roots_are_dropped() {
        let sorter = sorter();
        for raw in [
            event(EventKind::Access(AccessKind::Any), &["/repo/inventory.d/web.yaml"]),
            event(EventKind::Create(CreateKind::File), &["/repo/README.md"]),
            event(EventKind::Other, &["/repo/inventory.d/web.yaml"]),
        ] {
            let change = sorter.sort(Ok(raw));
            assert!(change.is_empty(), "{change:?}");
        }
    }

    #[test]
    fn a_rename_over_a_root_marks_the_roots_as_touched() {
        let batch = fold(&sorter(), rename("/repo/inventory.d.tmp", "/repo/inventory.d").into());
        assert_eq!(batch.touched, paths(&["/repo/inventory.d"]));
        assert!(batch.paths.is_empty());
    }

    #[test]
    fn a_change_to_an_ancestor_of_a_root_marks_the_roots_as_touched() {
        let batch = fold(
            &sorter(),
            vec![event(EventKind::Remove(RemoveKind::Folder), &["/repo"])],
        );
        assert_eq!(batch.touched, paths(&["/repo"]));
    }

    #[test]
    fn a_rename_reports_both_paths_unless_one_is_ignored() {
        let mut events = Vec::from(rename("/repo/inventory.d/a.yaml", "/repo/inventory.d/b.yaml"));
        events.extend(rename("/repo/scripts/.x.sh.swp", "/repo/scripts/x.sh"));
        let batch = fold(&sorter(), events);
        let expected = [
            "/repo/inventory.d/a.yaml",
            "/repo/inventory.d/b.yaml",
            "/repo/scripts/x.sh",
        ];
        assert_eq!(batch.paths, paths(&expected));
    }

    #[test]
    fn a_rescan_event_asks_for_a_relist() {
        let overflow = notify::Event::new(EventKind::Other).set_flag(Flag::Rescan);
        let change = sorter().sort(Ok(overflow));
        assert!(
            change
                .reason
                .as_deref()
                .is_some_and(|reason| reason.contains("overflowed"))
        );
        let batch = fold(
            &sorter(),
            vec![notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)],
        );
        assert_eq!(batch.reasons.len(), 1);
    }

    #[test]
    fn a_notify_error_asks_for_a_relist_and_says_why() {
        let error = notify::Error::new(notify::ErrorKind::MaxFilesWatch).add_path("/repo/inventory.d/prod".into());
        let change = sorter().sort(Err(error));
        assert!(change.ops.is_empty());
        let reason = change.reason.unwrap_or_default();
        assert!(reason.contains("max_user_watches"), "{reason}");
    }

    #[test]
    fn a_removed_folder_is_reported_once_without_its_contents() {
        let batch = fold(
            &sorter(),
            vec![
                event(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/repo/inventory.d/eu/a.yaml"],
                ),
                event(EventKind::Remove(RemoveKind::File), &["/repo/inventory.d/eu/a.yaml"]),
                event(EventKind::Remove(RemoveKind::File), &["/repo/inventory.d/eu/b.yaml"]),
                event(EventKind::Remove(RemoveKind::Folder), &["/repo/inventory.d/eu"]),
                event(EventKind::Create(CreateKind::File), &["/repo/inventory.d/eu-west.yaml"]),
            ],
        );
        assert_eq!(
            batch.paths,
            paths(&["/repo/inventory.d/eu", "/repo/inventory.d/eu-west.yaml"])
        );
    }

    #[test]
    fn a_file_created_and_removed_within_a_batch_leaves_no_trace() {
        let batch = fold(
            &sorter(),
            vec![
                event(EventKind::Create(CreateKind::File), &["/repo/scripts/probe"]),
                event(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/repo/scripts/probe"],
                ),
                event(EventKind::Remove(RemoveKind::File), &["/repo/scripts/probe"]),
            ],
        );
        assert!(batch.paths.is_empty(), "{batch:?}");
    }

    #[test]
    fn a_temporary_renamed_over_a_file_reports_only_the_file() {
        // `sed -i`: write a new temporary next to the file, then rename it over the file.
        let mut events = vec![event(EventKind::Create(CreateKind::File), &["/repo/inventory.d/sedX1"])];
        events.extend(rename("/repo/inventory.d/sedX1", "/repo/inventory.d/web.yaml"));
        let batch = fold(&sorter(), events);
        assert_eq!(batch.paths, paths(&["/repo/inventory.d/web.yaml"]));
    }

    #[test]
    fn a_file_removed_and_recreated_and_removed_again_is_still_reported() {
        let file = "/repo/inventory.d/web.yaml";
        let mut events = vec![event(EventKind::Remove(RemoveKind::File), &[file])];
        events.push(event(EventKind::Create(CreateKind::File), &[file]));
        events.push(event(EventKind::Remove(RemoveKind::File), &[file]));
        // Moved over an existing file, then removed: the caller knew the file, so it hears of it.
        events.extend(rename("/repo/inventory.d/new.yaml", "/repo/inventory.d/db.yaml"));
        events.push(event(
            EventKind::Remove(RemoveKind::File),
            &["/repo/inventory.d/db.yaml"],
        ));
        let batch = fold(&sorter(), events);
        assert_eq!(
            batch.paths,
            paths(&[file, "/repo/inventory.d/new.yaml", "/repo/inventory.d/db.yaml"])
        );
    }

    #[test]
    fn folders_that_arrived_are_listed_when_the_batch_is_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("inventory.d");
        fs::create_dir_all(root.join("prod/eu")).unwrap();
        fs::write(root.join("prod/eu/web.yaml"), "").unwrap();
        fs::write(root.join("prod/eu/web.status.yaml"), "").unwrap();
        let sorter = Sorter::new(vec![root.clone()]);
        let mut batch = Batch::default();
        let prod = root.join("prod");
        batch.apply(sorter.sort(Ok(
            notify::Event::new(EventKind::Create(CreateKind::Folder)).add_path(prod.clone()),
        )));
        assert_eq!(batch.paths, BTreeSet::from([prod.clone()]));

        batch.expand_appeared();
        let expected = BTreeSet::from([prod.clone(), prod.join("eu"), prod.join("eu/web.yaml")]);
        assert_eq!(batch.paths, expected);
    }
}
