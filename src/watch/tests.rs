//! Tests of the watcher: real inotify on temporary folders for the file-system behaviour, paused
//! tokio time for the event loop's timing. Every wait is bounded.

use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use notify::RecursiveMode;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::filter::{Change, Op};
use super::roots::{Roots, WatchControl};
use super::{Bridge, ChangeSet, EventLoop, WatchConfig, WatchError, WatchPaths, Watcher};

/// Long enough for a change set to arrive on a loaded 2-core machine, short enough to fail fast.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long "nothing happens" is observed.
const QUIET: Duration = Duration::from_secs(1);

fn checkout() -> (tempfile::TempDir, WatchPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = WatchPaths {
        inventory: dir.path().join("inventory.d"),
        scripts: dir.path().join("scripts"),
        secrets: dir.path().join("secrets.d"),
    };
    for folder in [&paths.inventory, &paths.scripts, &paths.secrets] {
        fs::create_dir(folder).unwrap();
    }
    (dir, paths)
}

fn start(paths: &WatchPaths) -> (Watcher, mpsc::Receiver<ChangeSet>) {
    Watcher::start(paths, WatchConfig::default()).unwrap()
}

async fn next(rx: &mut mpsc::Receiver<ChangeSet>) -> ChangeSet {
    timeout(ARRIVAL, rx.recv())
        .await
        .expect("no change set arrived in time")
        .expect("watcher stopped")
}

/// Receives change sets until their paths include every one of `wanted`; returns them all.
async fn until_all(rx: &mut mpsc::Receiver<ChangeSet>, wanted: &[PathBuf]) -> Vec<ChangeSet> {
    let mut received: Vec<ChangeSet> = Vec::new();
    while !wanted
        .iter()
        .all(|path| received.iter().any(|set| set.paths.contains(path)))
    {
        received.push(next(rx).await);
    }
    received
}

async fn assert_quiet(rx: &mut mpsc::Receiver<ChangeSet>) {
    if let Ok(received) = timeout(QUIET, rx.recv()).await {
        panic!("expected no change set, got {received:?}");
    }
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

#[tokio::test]
async fn creating_a_file_yields_one_change_set_containing_it() {
    let (_dir, paths) = checkout();
    let (_watcher, mut rx) = start(&paths);
    let file = paths.inventory.join("web-1.yaml");
    write(&file, "kind: Server\n");

    let set = next(&mut rx).await;
    assert_eq!(set.paths, BTreeSet::from([file]));
    assert!(!set.relist && set.reason.is_none(), "{set:?}");
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn modifying_and_then_deleting_a_file_are_both_reported() {
    let (_dir, paths) = checkout();
    let file = paths.inventory.join("web-1.yaml");
    write(&file, "kind: Server\n");
    let (_watcher, mut rx) = start(&paths);

    fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(b"spec: {}\n")
        .unwrap();
    assert_eq!(next(&mut rx).await.paths, BTreeSet::from([file.clone()]));

    fs::remove_file(&file).unwrap();
    assert_eq!(next(&mut rx).await.paths, BTreeSet::from([file]));
}

#[tokio::test]
async fn renaming_a_file_reports_the_old_and_the_new_path() {
    let (_dir, paths) = checkout();
    let old = paths.inventory.join("web-1.yaml");
    let new = paths.inventory.join("web-2.yaml");
    write(&old, "kind: Server\n");
    let (_watcher, mut rx) = start(&paths);

    fs::rename(&old, &new).unwrap();
    let received = until_all(&mut rx, &[old, new]).await;
    assert_eq!(received.len(), 1, "{received:?}");
}

#[tokio::test]
async fn an_editors_atomic_save_reports_only_the_final_path() {
    let (_dir, paths) = checkout();
    let file = paths.inventory.join("web-1.yaml");
    write(&file, "kind: Server\n");
    let (_watcher, mut rx) = start(&paths);

    // vim probes the folder with `4913`, keeps a swap file, then writes a temporary and renames
    // it over the original.
    write(&paths.inventory.join("4913"), "");
    fs::remove_file(paths.inventory.join("4913")).unwrap();
    write(&paths.inventory.join(".web-1.yaml.swp"), "swap");
    let temporary = paths.inventory.join("web-1.yaml.tmp");
    write(&temporary, "kind: Server\nspec: {}\n");
    fs::rename(&temporary, &file).unwrap();

    let set = next(&mut rx).await;
    assert_eq!(set.paths, BTreeSet::from([file]));
}

#[tokio::test]
async fn writing_status_files_never_causes_a_change_set() {
    let (_dir, paths) = checkout();
    let (_watcher, mut rx) = start(&paths);

    write(&paths.inventory.join("web-1.status.yaml"), "phase: Ready\n");
    write(&paths.inventory.join("web-2.status.yml"), "phase: Ready\n");
    // The way the daemon writes status: a hidden temporary in the same folder, then a rename.
    let mut temporary = tempfile::NamedTempFile::new_in(&paths.inventory).unwrap();
    temporary.write_all(b"phase: Ready\n").unwrap();
    temporary.persist(paths.inventory.join("web-3.status.yaml")).unwrap();

    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn hidden_and_temporary_files_never_cause_a_change_set() {
    let (_dir, paths) = checkout();
    let (_watcher, mut rx) = start(&paths);

    for name in [
        ".web-1.yaml.swp",
        ".web-1.yaml.swx",
        "web-1.yaml~",
        "#web-1.yaml#",
        "x.tmp",
        "x.orig",
        "x.rej",
    ] {
        write(&paths.inventory.join(name), "");
    }
    fs::create_dir(paths.inventory.join(".git")).unwrap();
    write(&paths.inventory.join(".git").join("HEAD"), "ref: refs/heads/main\n");

    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn a_burst_of_300_files_arrives_in_at_most_three_change_sets() {
    let (_dir, paths) = checkout();
    let (_watcher, mut rx) = start(&paths);

    let files: Vec<PathBuf> = (0..300)
        .map(|n| paths.inventory.join(format!("web-{n}.yaml")))
        .collect();
    for file in &files {
        write(file, "kind: Server\n");
    }

    let received = until_all(&mut rx, &files).await;
    assert!(received.len() <= 3, "{} change sets for one burst", received.len());
}

#[tokio::test]
async fn changes_in_scripts_and_secrets_are_reported() {
    let (_dir, paths) = checkout();
    let (_watcher, mut rx) = start(&paths);

    let script = paths.scripts.join("node-exporter.sh");
    let secret = paths.secrets.join("grafana.age");
    write(&script, "#!/bin/sh\n");
    write(&secret, "age-encryption.org/v1\n");

    until_all(&mut rx, &[script, secret]).await;
}

#[tokio::test]
async fn a_file_written_right_after_its_sub_folder_was_created_is_reported() {
    let (_dir, paths) = checkout();
    let (_watcher, mut rx) = start(&paths);

    // No pause between the two: inotify has not watched `prod/` yet when the file appears.
    let folder = paths.inventory.join("prod");
    fs::create_dir(&folder).unwrap();
    let file = folder.join("web-1.yaml");
    write(&file, "kind: Server\n");

    until_all(&mut rx, &[file]).await;
}

#[tokio::test]
async fn a_folder_moved_in_whole_reports_the_files_inside_it() {
    let (dir, paths) = checkout();
    let staged = dir.path().join("staging");
    fs::create_dir_all(staged.join("eu")).unwrap();
    write(&staged.join("eu").join("web-1.yaml"), "kind: Server\n");
    write(&staged.join("eu").join("web-1.status.yaml"), "phase: Ready\n");
    let (_watcher, mut rx) = start(&paths);

    // inotify reports only the folder itself; its contents never produce events of their own.
    let folder = paths.inventory.join("prod");
    fs::rename(&staged, &folder).unwrap();
    let expected = [folder.clone(), folder.join("eu"), folder.join("eu").join("web-1.yaml")];
    let received = until_all(&mut rx, &expected).await;
    let reported: BTreeSet<PathBuf> = received.into_iter().flat_map(|set| set.paths).collect();
    assert_eq!(reported, BTreeSet::from(expected));
}

#[tokio::test]
async fn a_scripts_folder_created_after_start_is_watched() {
    let (_dir, paths) = checkout();
    fs::remove_dir(&paths.scripts).unwrap();
    let (_watcher, mut rx) = start(&paths);

    fs::create_dir(&paths.scripts).unwrap();
    let set = next(&mut rx).await;
    assert!(set.relist, "{set:?}");
    assert!(
        set.reason.as_deref().is_some_and(|reason| reason.contains("appeared")),
        "{set:?}"
    );

    let script = paths.scripts.join("node-exporter.sh");
    write(&script, "#!/bin/sh\n");
    until_all(&mut rx, &[script]).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_swap_of_the_inventory_root_requests_a_relist_and_follows_the_new_target() {
    let (dir, paths) = checkout();
    fs::remove_dir(&paths.inventory).unwrap();
    let (rev_a, rev_b) = (dir.path().join("rev-a"), dir.path().join("rev-b"));
    fs::create_dir(&rev_a).unwrap();
    fs::create_dir(&rev_b).unwrap();
    std::os::unix::fs::symlink(&rev_a, &paths.inventory).unwrap();
    let (_watcher, mut rx) = start(&paths);

    // `ln -sfn rev-b inventory.d` done atomically, as git-sync does: new link, rename over.
    let staged = dir.path().join("inventory.d.swap");
    std::os::unix::fs::symlink(&rev_b, &staged).unwrap();
    fs::rename(&staged, &paths.inventory).unwrap();

    let set = next(&mut rx).await;
    assert!(set.relist, "{set:?}");
    assert!(
        set.reason
            .as_deref()
            .is_some_and(|reason| reason.contains("now resolves to")),
        "{set:?}"
    );

    // Seen through the link, under the configured name.
    write(&rev_b.join("web-1.yaml"), "kind: Server\n");
    until_all(&mut rx, &[paths.inventory.join("web-1.yaml")]).await;
    // The old target is no longer watched.
    write(&rev_a.join("web-9.yaml"), "kind: Server\n");
    assert_quiet(&mut rx).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_swapped_symlink_above_the_inventory_root_is_followed_too() {
    // git-sync's own layout: `current -> .worktrees/<rev>`, inventory at `current/inventory.d`.
    let dir = tempfile::tempdir().unwrap();
    let (rev_a, rev_b) = (dir.path().join(".worktrees/a"), dir.path().join(".worktrees/b"));
    for rev in [&rev_a, &rev_b] {
        fs::create_dir_all(rev.join("inventory.d")).unwrap();
    }
    let current = dir.path().join("current");
    std::os::unix::fs::symlink(&rev_a, &current).unwrap();
    let paths = WatchPaths {
        inventory: current.join("inventory.d"),
        scripts: current.join("scripts"),
        secrets: current.join("secrets.d"),
    };
    let (_watcher, mut rx) = start(&paths);

    let staged = dir.path().join("current.swap");
    std::os::unix::fs::symlink(&rev_b, &staged).unwrap();
    fs::rename(&staged, &current).unwrap();
    let set = next(&mut rx).await;
    assert!(set.relist, "{set:?}");

    write(&rev_b.join("inventory.d").join("web-1.yaml"), "kind: Server\n");
    until_all(&mut rx, &[paths.inventory.join("web-1.yaml")]).await;
}

#[tokio::test]
async fn dropping_the_watcher_closes_the_channel() {
    let (_dir, paths) = checkout();
    let (watcher, mut rx) = start(&paths);
    drop(watcher);
    assert!(timeout(ARRIVAL, rx.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_missing_inventory_folder_stops_the_start() {
    let (_dir, mut paths) = checkout();
    paths.inventory = paths.inventory.join("missing");
    let error = Watcher::start(&paths, WatchConfig::default()).unwrap_err();
    assert!(matches!(error, WatchError::InventoryMissing { .. }), "{error:?}");
}

#[test]
fn starting_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let (_dir, paths) = checkout();
    let error = Watcher::start(&paths, WatchConfig::default()).unwrap_err();
    assert!(matches!(error, WatchError::NoRuntime), "{error:?}");
}

#[test]
fn the_watcher_and_its_change_sets_can_move_between_tasks() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Watcher>();
    assert_send::<mpsc::Receiver<ChangeSet>>();
}

#[test]
fn a_zero_debounce_is_rejected() {
    let (_dir, paths) = checkout();
    let config = WatchConfig {
        debounce: Duration::ZERO,
        ..WatchConfig::default()
    };
    let error = Watcher::start(&paths, config).unwrap_err();
    assert!(error.to_string().contains("debounce must be at least"), "{error}");
}

/// Stands in for notify's watcher where the event loop is tested on its own.
struct NoWatches;

impl WatchControl for NoWatches {
    fn watch(&mut self, _path: &Path, _mode: RecursiveMode) -> notify::Result<()> {
        Ok(())
    }

    fn unwatch(&mut self, _path: &Path) -> notify::Result<()> {
        Ok(())
    }
}

/// An event loop without inotify, fed through a `Bridge` with room for `capacity` changes.
/// The returned `Arc` keeps the stand-in watcher alive.
fn event_loop(capacity: usize) -> (Bridge, mpsc::Receiver<ChangeSet>, EventLoop, Arc<Mutex<NoWatches>>) {
    let (raw_tx, raw_rx) = mpsc::channel(capacity);
    let (tx, rx) = mpsc::channel(1);
    let overflowed = Arc::new(AtomicBool::new(false));
    let control = Arc::new(Mutex::new(NoWatches));
    let weak = Arc::downgrade(&control);
    let weak: Weak<Mutex<dyn WatchControl>> = weak;
    let config = WatchConfig {
        debounce: Duration::from_millis(150),
        relist_every: Duration::from_secs(300),
    };
    let bridge = Bridge {
        tx: raw_tx,
        overflowed: Arc::clone(&overflowed),
    };
    let event_loop = EventLoop {
        raw: raw_rx,
        out: tx,
        overflowed,
        roots: Roots::default(),
        control: weak,
        config,
    };
    (bridge, rx, event_loop, control)
}

fn change(path: &str) -> Change {
    Change {
        ops: vec![Op::Changed(PathBuf::from(path))],
        ..Change::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_channel_turns_the_next_change_set_into_a_relist() {
    let (bridge, mut rx, event_loop, _control) = event_loop(1);
    bridge.deliver(change("/repo/inventory.d/a.yaml"));
    // No room left: this one is dropped, and must not block.
    bridge.deliver(change("/repo/inventory.d/b.yaml"));
    tokio::spawn(event_loop.run());

    let set = next(&mut rx).await;
    assert!(set.relist, "{set:?}");
    assert!(
        set.reason.as_deref().is_some_and(|reason| reason.contains("dropped")),
        "{set:?}"
    );
    assert!(set.paths.contains(Path::new("/repo/inventory.d/a.yaml")));
}

#[tokio::test(start_paused = true)]
async fn changes_arriving_within_the_debounce_window_become_one_change_set() {
    let (bridge, mut rx, event_loop, _control) = event_loop(64);
    tokio::spawn(event_loop.run());
    // A burst: events 20 ms apart (under a third of the 150 ms window) are one change set.
    for n in 0..5 {
        bridge.deliver(change(&format!("/repo/inventory.d/web-{n}.yaml")));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let set = next(&mut rx).await;
    assert_eq!(set.paths.len(), 5, "{set:?}");
    assert!(!set.relist);

    // After a quiet window, a new batch is a new change set.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bridge.deliver(change("/repo/inventory.d/late.yaml"));
    assert_eq!(next(&mut rx).await.paths.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_steady_trickle_never_holds_a_change_back_past_two_windows() {
    let (bridge, mut rx, event_loop, _control) = event_loop(64);
    tokio::spawn(event_loop.run());
    let started = tokio::time::Instant::now();
    let sender = tokio::spawn(async move {
        for n in 0..20 {
            bridge.deliver(change(&format!("/repo/inventory.d/web-{n}.yaml")));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        bridge
    });
    let first = next(&mut rx).await;
    assert!(
        started.elapsed() <= Duration::from_millis(310),
        "held {:?}",
        started.elapsed()
    );
    let mut seen = first.paths.len();
    while seen < 20 {
        seen += next(&mut rx).await.paths.len();
    }
    assert_eq!(seen, 20);
    drop(sender.await);
}

#[tokio::test(start_paused = true)]
async fn changes_pile_up_into_one_change_set_while_the_receiver_is_busy() {
    let (bridge, mut rx, event_loop, _control) = event_loop(64);
    tokio::spawn(event_loop.run());
    bridge.deliver(change("/repo/inventory.d/first.yaml"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The first change set fills the channel; these three wait behind it and merge.
    for name in ["a", "b", "c"] {
        bridge.deliver(change(&format!("/repo/inventory.d/{name}.yaml")));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(next(&mut rx).await.paths.len(), 1);
    assert_eq!(next(&mut rx).await.paths.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_idle_watcher_requests_a_periodic_relist() {
    let (_bridge, mut rx, event_loop, _control) = event_loop(64);
    let every = event_loop.config.relist_every;
    tokio::spawn(event_loop.run());
    let started = tokio::time::Instant::now();

    let set = timeout(every * 2, rx.recv()).await.unwrap().unwrap();
    assert!(set.relist && set.paths.is_empty(), "{set:?}");
    assert_eq!(set.reason.as_deref(), Some("periodic re-list"));
    assert!(started.elapsed() >= every);
}

/// Counts how often the wrapped future is polled, that is, how often its task was woken.
struct CountPolls<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_event_loop_does_not_wake_before_the_relist_timer() {
    let (bridge, mut rx, event_loop, _control) = event_loop(64);
    let (debounce, every) = (event_loop.config.debounce, event_loop.config.relist_every);
    let polls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(CountPolls {
        inner: Box::pin(event_loop.run()),
        polls: Arc::clone(&polls),
    });
    let idle = debounce * 100;
    assert!(idle * 2 < every);

    // Paused time jumps straight to the earliest timer of any task, so a periodic tick of the
    // event loop's own (as notify-debouncer-full's thread had) would wake it on the way.
    tokio::time::sleep(idle).await;
    assert_eq!(polls.load(Ordering::Relaxed), 1, "the event loop woke while idle");

    // After a burst has gone out, nothing but the re-list timer is left armed.
    bridge.deliver(change("/repo/inventory.d/web-1.yaml"));
    assert_eq!(next(&mut rx).await.paths.len(), 1);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let settled = polls.load(Ordering::Relaxed);
    tokio::time::sleep(idle).await;
    assert_eq!(
        polls.load(Ordering::Relaxed),
        settled,
        "the event loop woke while idle after a change set"
    );
    assert!(rx.try_recv().is_err(), "nothing happened, so nothing may be sent");
}
