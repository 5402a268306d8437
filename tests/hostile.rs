//! Hostile files in a tree: FIFOs, devices and kernel pseudo-files where chom expects
//! plain files, dropped into the tree of a running `chom daemon` (over a real sshd on
//! 127.0.0.1) and given to `chom validate`. Nothing may block, nothing may be read
//! without bound, and names given on the command line never become paths outside the
//! state directory.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet::*;

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// `/proc/kmsg` blocks a reader until the kernel logs something; only root may open it.
fn blocking_pseudo_file() -> Option<&'static Path> {
    let kmsg = Path::new("/proc/kmsg");
    std::fs::File::open(kmsg).is_ok().then_some(kmsg)
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

#[test]
fn hostile_files_never_stall_the_daemon_and_hostile_status_files_are_replaced() {
    let fleet = Fleet::new();
    for name in ["web-1", "web-2", "web-3"] {
        fleet.write_file_server(name, "one");
    }
    let mut daemon = fleet.daemon(&[]);
    for name in ["web-1", "web-2", "web-3"] {
        wait_ready(&fleet, &daemon, name);
    }
    let inventory = fleet.inventory();

    // Resource files that are not files.
    mkfifo(&inventory.join("x.yaml"));
    std::os::unix::fs::symlink("/dev/zero", inventory.join("y.yaml")).unwrap();
    let pseudo = blocking_pseudo_file();
    match pseudo {
        Some(p) => std::os::unix::fs::symlink(p, inventory.join("z.yaml")).unwrap(),
        None => eprintln!("not root: /proc/kmsg cannot be opened, z.yaml -> /proc/kmsg skipped"),
    }
    // Status files that are not files: a FIFO, and a symlink to an endless device.
    std::fs::remove_file(fleet.status_path("web-2")).unwrap();
    mkfifo(&fleet.status_path("web-2"));
    std::fs::remove_file(fleet.status_path("web-3")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", fleet.status_path("web-3")).unwrap();
    // A helper every script would include.
    std::fs::create_dir_all(fleet.dir.path().join("scripts/lib")).unwrap();
    mkfifo(&fleet.dir.path().join("scripts/lib/hang.sh"));

    // Every server keeps being reconciled: a change to each is applied.
    for name in ["web-1", "web-2", "web-3"] {
        fleet.write_file_server(name, "two");
    }
    for name in ["web-1", "web-2", "web-3"] {
        wait_for(&format!("{name} at generation 2, Ready"), &daemon, || {
            fleet
                .status(name)
                .is_some_and(|s| s["status"]["observedGeneration"] == 2 && condition(&s, "Ready")["status"] == "True")
        });
        let out = fleet.dir.path().join(format!("{name}.out"));
        assert_eq!(std::fs::read_to_string(out).unwrap(), "two");
        assert!(
            is_regular_file(&fleet.status_path(name)),
            "{name}'s status file is a regular file again"
        );
    }

    // The hostile resource files get a status saying why, never a hang.
    let mut hostile = vec!["x", "y"];
    if pseudo.is_some() {
        hostile.push("z");
    }
    for name in hostile {
        wait_for(&format!("{name}'s never-valid status"), &daemon, || {
            fleet.status(name).is_some_and(|s| {
                condition(&s, "SpecValid")["status"] == "False"
                    && s["status"]["specErrors"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|e| e.as_str().unwrap_or("").contains("not-a-file")))
            })
        });
    }

    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("does not validate") && l.contains("x.yaml") && l.contains("not-a-file")),
        "the daemon logs the refused file:\n{log}"
    );

    let rss = rss_kib(daemon.child.id());
    assert!(rss > 0 && rss < 150 * 1024, "daemon RSS {rss} KiB");

    // A later edit still goes through, and SIGTERM stops the daemon well within its bound.
    fleet.write_file_server("web-1", "three");
    wait_for("web-1 at generation 3", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| s["status"]["observedGeneration"] == 3 && condition(&s, "Ready")["status"] == "True")
    });
    let started = Instant::now();
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
}

/// Runs `chom` in `dir`, killing it by PID if it outlives `bound`: (exit code, stdout).
fn run_bounded(dir: &Path, args: &[&str], bound: Duration) -> (Option<i32>, String) {
    let out_path = dir.join(format!(".out-{}", args.join("_").replace('/', "_")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(dir)
        .env("HOME", dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chom {args:?} still running after {bound:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&out_path).unwrap_or_default())
}

#[test]
fn validate_exits_1_promptly_on_hostile_files_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.d");
    std::fs::create_dir_all(&inventory).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts/lib")).unwrap();
    mkfifo(&inventory.join("x.yaml"));
    std::os::unix::fs::symlink("/dev/zero", inventory.join("y.yaml")).unwrap();
    if let Some(p) = blocking_pseudo_file() {
        std::os::unix::fs::symlink(p, inventory.join("z.yaml")).unwrap();
    }
    mkfifo(&dir.path().join("scripts/lib/hang.sh"));
    for format in ["human", "json", "github"] {
        let (code, out) = run_bounded(dir.path(), &["validate", "--format", format], Duration::from_secs(20));
        assert_eq!(code, Some(1), "{format}: {out}");
        for file in ["x.yaml", "y.yaml", "hang.sh"] {
            assert!(
                out.lines().any(|l| l.contains(file)) && out.contains("not-a-file"),
                "{format}: {file} not reported as not-a-file:\n{out}"
            );
        }
    }
    // Named explicitly, as pre-commit does.
    let (code, out) = run_bounded(dir.path(), &["validate", "inventory.d/x.yaml"], Duration::from_secs(20));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not-a-file"), "{out}");
}

#[test]
fn names_given_on_the_command_line_never_become_paths_outside_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inventory.d")).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("pins")).unwrap();
    std::fs::create_dir_all(state.join("hardware")).unwrap();
    // `state/pins/../../victim.json` is this file.
    let victim = dir.path().join("victim.json");
    std::fs::write(&victim, "{}").unwrap();
    let state_arg = state.to_str().unwrap();
    for args in [
        vec!["resume", "--state-dir", state_arg, "../../victim"],
        vec!["resume", "--state-dir", state_arg, "a/b"],
        vec!["rollback", "--state-dir", state_arg, "../../victim"],
        vec!["history", "--state-dir", state_arg, "--hardware", "../../victim"],
        vec!["get", "../x"],
        vec!["plan", "../x"],
    ] {
        let (code, _) = run_bounded(dir.path(), &args, Duration::from_secs(20));
        assert_eq!(code, Some(2), "{args:?} is a usage error");
        assert!(victim.exists(), "{args:?} removed a file outside the state dir");
    }
}
