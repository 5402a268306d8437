//! `chom daemon` end to end: a real daemon process over a tree in a temp dir, talking to
//! a real OpenSSH sshd on 127.0.0.1. Files are dropped, edited, broken and deleted by
//! the test; status files must follow.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet::*;
use serde_json::Value;

#[test]
fn status_files_follow_files_being_added_edited_broken_and_removed() {
    let fleet = Fleet::new();
    let mut daemon = fleet.daemon(&[]);
    let out = fleet.dir.path().join("web-1.out");

    fleet.write_file_server("web-1", "one");
    wait_ready(&fleet, &daemon, "web-1");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "one");
    let s = fleet.status("web-1").unwrap();
    assert_eq!(s["metadata"]["generation"], 1);
    assert_eq!(condition(&s, "SpecValid")["status"], "True");

    fleet.write_file_server("web-1", "two");
    wait_for("generation 2 applied", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| s["status"]["observedGeneration"] == 2 && condition(&s, "Ready")["status"] == "True")
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "two");

    // Broken: the last valid state stays in force, the status says why, others go on.
    fleet.write(
        "web-1",
        "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: web-1\nspec:\n  adress: x\n",
    );
    wait_for("SpecValid=False", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| condition(&s, "SpecValid")["status"] == "False")
    });
    let s = fleet.status("web-1").unwrap();
    let errors = s["status"]["specErrors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("web-1.yaml:6:3: error[unknown-field]")),
        "{errors:?}"
    );
    assert_eq!(s["metadata"]["generation"], 2);
    fleet.write(
        "web-2",
        &fleet.server_text("web-2", &fleet.file_component("web-2", "x")),
    );
    wait_for("web-2 Ready", &daemon, || {
        fleet
            .status("web-2")
            .is_some_and(|s| condition(&s, "Ready")["status"] == "True")
    });

    // A file that never validated gets a status saying why.
    fleet.write(
        "web-3",
        "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: web-3\nspec: {}\n",
    );
    wait_for("web-3 status", &daemon, || {
        fleet
            .status("web-3")
            .is_some_and(|s| condition(&s, "SpecValid")["status"] == "False")
    });

    // Deleted: status removed.
    std::fs::remove_file(fleet.inventory().join("web-2.yaml")).unwrap();
    wait_for("web-2 status removed", &daemon, || !fleet.status_path("web-2").exists());
    assert!(daemon.log().contains("server removed from the inventory"));

    // Metrics are served on the address the daemon logged.
    let addr = daemon.metrics_addr();
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("chom_reconcile_total{result=\"success\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chom_server_detected_cpu{server=\"web-1\"}"),
        "{metrics}"
    );
    assert!(http_get(&addr, "/readyz").starts_with("HTTP/1.1 200"));

    // A second daemon on the same inventory refuses to start, whatever its state dir (the
    // lock is the inventory's), and so do one-shot commands that write; the refusal names
    // the owner's PID and state dir.
    let other_state = tempfile::tempdir().unwrap();
    let owner = format!("is owned by chom daemon (PID {}", daemon.child.id());
    for args in [
        vec!["daemon"],
        vec!["daemon", "--state-dir", other_state.path().to_str().unwrap()],
        vec!["rollback", "web-1"],
    ] {
        let second = Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(fleet.dir.path())
            .env("HOME", fleet.dir.path())
            .args(&args)
            .args(["--known-hosts", fleet.sshd.known_hosts.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&owner), "{args:?}: {stderr}");
        assert!(stderr.contains("/.chom"), "{args:?} names the state dir: {stderr}");
    }
    assert!(
        std::fs::read_dir(other_state.path()).unwrap().next().is_none() || !other_state.path().join("history").exists(),
        "the refused daemon recorded nothing"
    );

    let exit = daemon.terminate();
    assert!(exit.success(), "{exit:?}: {}", daemon.log());
    no_temp_files(&fleet.inventory());

    // The audit trail saw every action that changed something or was refused.
    let audit = std::fs::read_to_string(fleet.dir.path().join(".chom/audit.jsonl")).unwrap();
    let actions: Vec<String> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for expected in [
        "daemon.started",
        "component.applied",
        "daemon.refused",
        "daemon.stopped",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert_eq!(
        actions.iter().filter(|a| *a == "component.applied").count(),
        3,
        "one, two, web-2: {actions:?}"
    );
}

#[test]
fn a_burst_of_500_files_reconciles_each_server_exactly_once() {
    let fleet = Fleet::new();
    let daemon = fleet.daemon(&["--workers", "16"]);
    std::thread::sleep(Duration::from_millis(300));
    // Suspended servers go through the whole queue and status path without SSH, so
    // the test measures the informer and the queue, not the sshd.
    for i in 0..500 {
        let name = format!("s-{i:03}");
        std::fs::write(
            fleet.inventory().join(format!("{name}.yaml")),
            fleet.server_text(&name, "  suspend: true\n"),
        )
        .unwrap();
    }
    wait_for("500 statuses", &daemon, || daemon.reconciles().len() == 500);
    std::thread::sleep(Duration::from_secs(1));
    let counts = daemon.reconciles();
    assert!(
        counts.values().all(|c| *c == 1),
        "{:?}",
        counts.iter().filter(|(_, c)| **c != 1).collect::<Vec<_>>()
    );
    for i in (0..500).step_by(50) {
        let s = fleet.status(&format!("s-{i:03}")).unwrap();
        assert_eq!(condition(&s, "Ready")["reason"], "Suspended");
    }

    // An idle daemon neither reconciles nor writes.
    let mtimes = |fleet: &Fleet| -> Vec<std::time::SystemTime> {
        (0..500)
            .map(|i| {
                std::fs::metadata(fleet.status_path(&format!("s-{i:03}")))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .collect()
    };
    let before = mtimes(&fleet);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(mtimes(&fleet), before, "no status writes while idle");
    assert_eq!(
        daemon.reconciles().values().sum::<usize>(),
        500,
        "no reconciles while idle"
    );
}

#[test]
fn sigterm_during_a_slow_reconcile_lets_it_finish_and_exits_cleanly() {
    let fleet = Fleet::new();
    fleet.write(
        "slow-1",
        &fleet.server_text("slow-1", "  components:\n    - name: slow\n"),
    );
    let mut daemon = fleet.daemon(&[]);
    wait_for("the slow component to start", &daemon, || {
        daemon.log().contains("daemon started")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit:?}: {}", daemon.log());
    assert!(started.elapsed() < Duration::from_secs(30));
    let s = fleet
        .status("slow-1")
        .expect("the in-flight reconcile finished and wrote its status");
    assert_eq!(condition(&s, "Ready")["status"], "True");
    no_temp_files(&fleet.inventory());
}

#[test]
fn three_shards_partition_the_fleet_and_each_takes_its_own_lock() {
    let fleet = Fleet::new();
    for i in 0..30 {
        let name = format!("s-{i:02}");
        std::fs::write(
            fleet.inventory().join(format!("{name}.yaml")),
            fleet.server_text(&name, "  suspend: true\n"),
        )
        .unwrap();
    }
    let daemons: Vec<Daemon> = (0..3).map(|k| fleet.daemon(&["--shard", &format!("{k}/3")])).collect();
    let total = || daemons.iter().map(|d| d.reconciles().len()).sum::<usize>();
    wait_for("30 servers reconciled across the shards", &daemons[0], || total() == 30);
    let owner = |name: &str| -> Vec<usize> { (0..3).filter(|k| daemons[*k].reconciles().contains_key(name)).collect() };
    for i in 0..30 {
        let name = format!("s-{i:02}");
        assert_eq!(owner(&name).len(), 1, "{name} reconciled by {:?}", owner(&name));
        assert!(fleet.status(&name).is_some());
    }
    let before: Vec<Vec<usize>> = (0..30).map(|i| owner(&format!("s-{i:02}"))).collect();
    fleet.write("s-new", &fleet.server_text("s-new", "  suspend: true\n"));
    wait_for("the new server reconciled by one shard", &daemons[0], || {
        owner("s-new").len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<Vec<usize>> = (0..30).map(|i| owner(&format!("s-{i:02}"))).collect();
    assert_eq!(before, after, "no other server moved");
    assert_eq!(
        daemons
            .iter()
            .map(|d| d.reconciles().values().sum::<usize>())
            .sum::<usize>(),
        31,
        "nothing reconciled twice"
    );
}

#[test]
fn the_daemon_leaves_a_pinned_server_alone_until_resume() {
    let fleet = Fleet::new();
    let out = fleet.dir.path().join("web-1.out");
    fleet.write_file_server("web-1", "one");
    let mut daemon = fleet.daemon(&[]);
    wait_ready(&fleet, &daemon, "web-1");
    assert!(daemon.terminate().success());
    // Pin it at its current desired state (what `chom rollback` leaves behind), then
    // change what is on the server: a pinned server must not be corrected.
    let hash = fleet.status("web-1").unwrap()["metadata"]["desiredHash"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::create_dir_all(fleet.dir.path().join(".chom/pins")).unwrap();
    std::fs::write(
        fleet.dir.path().join(".chom/pins/web-1.json"),
        format!("{{\"deployment\": \"d-test\", \"desiredHash\": \"{hash}\", \"pinnedAt\": \"2026-11-26T12:00:00Z\", \"by\": \"test@host\"}}"),
    )
    .unwrap();
    std::fs::write(&out, "changed by hand").unwrap();
    let mut daemon = fleet.daemon(&[]);
    wait_for("web-1 Pinned", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| condition(&s, "Pinned")["status"] == "True")
    });
    assert_eq!(condition(&fleet.status("web-1").unwrap(), "Ready")["reason"], "Pinned");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "changed by hand",
        "a pinned server is left alone"
    );
    assert!(daemon.terminate().success());
    // Resumed: the next daemon applies the desired state again.
    let resume = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(fleet.dir.path())
        .args(["resume", "web-1"])
        .output()
        .unwrap();
    assert!(resume.status.success());
    std::fs::write(fleet.dir.path().join("scripts/file.sh"), format!("{FILE_SCRIPT}# v2\n")).unwrap();
    let mut daemon = fleet.daemon(&[]);
    wait_for("web-1 re-applied", &daemon, || {
        std::fs::read_to_string(&out).is_ok_and(|t| t == "one")
    });
    assert!(daemon.terminate().success());
}

#[test]
fn a_daemon_deployment_can_be_rolled_back_to_and_a_started_daemon_checks_every_server() {
    let fleet = Fleet::new();
    let out = fleet.dir.path().join("web-1.out");
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    fleet.write_file_server("web-1", "one");
    let mut daemon = fleet.daemon(&[]);
    wait_ready(&fleet, &daemon, "web-1");
    assert_eq!(read(), "one");
    fleet.write_file_server("web-1", "two");
    wait_for("web-1 at generation 2", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| s["status"]["observedGeneration"] == 2 && condition(&s, "Ready")["status"] == "True")
    });
    assert_eq!(read(), "two");
    assert!(daemon.terminate().success());

    // Both daemon passes are deployments in the history, with their scripts kept.
    let history = chom(&fleet, &["history", "web-1", "-o", "json"]);
    let records: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    let first = records[0]["id"].as_str().unwrap().to_owned();
    let kh = fleet.sshd.known_hosts.to_str().unwrap().to_owned();
    let rollback = chom(&fleet, &["rollback", "web-1", "--to", &first, "--known-hosts", &kh]);
    assert!(
        rollback.status.success(),
        "{}{}",
        String::from_utf8_lossy(&rollback.stdout),
        String::from_utf8_lossy(&rollback.stderr)
    );
    assert_eq!(read(), "one", "the daemon's first deployment is back on the server");
    // The rollback is a deployment of its own in the history.
    let history = chom(&fleet, &["history", "web-1", "-o", "json"]);
    let records: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[2]["servers"][0]["components"][0]["state"], "Applied");

    // A daemon started on the tree leaves the rollback alone: it is never silently undone.
    let mut daemon = fleet.daemon(&[]);
    wait_for("web-1 Pinned", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| condition(&s, "Ready")["reason"] == "Pinned")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(), "one");
    // Resumed while the daemon runs: the pin is released and the daemon told at once.
    let resume = chom(&fleet, &["resume", "web-1"]);
    assert!(resume.status.success(), "{}", String::from_utf8_lossy(&resume.stderr));
    assert!(
        String::from_utf8_lossy(&resume.stdout).contains("was told to reconcile it now"),
        "{}",
        String::from_utf8_lossy(&resume.stdout)
    );
    wait_for("web-1 back at two", &daemon, || read() == "two");
    // `chom reconcile` while the daemon runs is handed to it: the daemon checks now (its
    // interval is 10m), corrects the drift, and the answer prints here.
    std::fs::write(&out, "changed by hand").unwrap();
    let handed = chom(&fleet, &["reconcile", "--known-hosts", &kh]);
    let text = String::from_utf8_lossy(&handed.stdout).into_owned();
    assert!(
        handed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&handed.stderr)
    );
    assert!(
        text.contains(&format!("handed to the daemon (PID {})", daemon.child.id())),
        "{text}"
    );
    assert!(text.contains("drift in file corrected"), "{text}");
    assert_eq!(read(), "two", "corrected before the command returned");
    assert!(daemon.terminate().success());

    // Drift while no daemon runs: the next daemon checks every component in its first pass
    // (the interval is the default 10m) and corrects it.
    std::fs::write(&out, "changed by hand").unwrap();
    let mut daemon = fleet.daemon(&[]);
    wait_for("drift corrected", &daemon, || read() == "two");
    wait_for("Drifted=False DriftCorrected", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| condition(&s, "Drifted")["reason"] == "DriftCorrected")
    });
    assert!(daemon.terminate().success());
    let audit = std::fs::read_to_string(fleet.dir.path().join(".chom/audit.jsonl")).unwrap();
    assert!(audit.contains("\"action\":\"drift.corrected\""), "{audit}");
}

#[test]
fn shutdown_past_its_bound_kills_the_remote_script_and_records_the_server_as_interrupted() {
    let fleet = Fleet::new();
    let pidfile = fleet.dir.path().join("long.pid");
    std::fs::write(
        fleet.dir.path().join("scripts/long.sh"),
        "echo $$ > \"$CHOM_CFG_PIDFILE\"\nsleep 60\n",
    )
    .unwrap();
    fleet.write(
        "long-1",
        &fleet.server_text(
            "long-1",
            &format!(
                "  components:\n    - name: long\n      config: {{pidfile: {}}}\n",
                pidfile.display()
            ),
        ),
    );
    let mut daemon = fleet.daemon(&["--shutdown-timeout", "1s"]);
    wait_for("the long script to start", &daemon, || pidfile.exists());
    std::thread::sleep(Duration::from_millis(200));
    let remote = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let started = Instant::now();
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit:?}: {}", daemon.log());
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let alive = || {
        Command::new("kill")
            .args(["-0", &remote])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let waited = Instant::now();
    while alive() {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the remote script {remote} still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = fleet.status("long-1").expect("the interrupted pass wrote its status");
    assert_eq!(condition(&s, "Ready")["reason"], "Interrupted", "{s}");
}

/// The summary of a pass over the drifted fleet: rep-1's drift reported, fix-1's corrected.
#[track_caller]
fn same_verdict(summary: &str) {
    let line = |name: &str| summary.lines().find(|l| l.starts_with(name)).unwrap_or_default();
    assert!(line("rep-1").contains("DriftFound"), "{summary}");
    assert!(line("fix-1").contains("Reconciled"), "{summary}");
}

#[test]
fn plan_reconcile_and_the_daemon_give_the_same_verdict_on_a_drifted_fleet() {
    let fleet = Fleet::new();
    let out = |name: &str| fleet.dir.path().join(format!("{name}.out"));
    let read = |name: &str| std::fs::read_to_string(out(name)).unwrap_or_default();
    fleet.write(
        "fix-1",
        &fleet.server_text("fix-1", &fleet.file_component("fix-1", "one")),
    );
    let report = format!("  driftPolicy: report\n{}", fleet.file_component("rep-1", "one"));
    fleet.write("rep-1", &fleet.server_text("rep-1", &report));
    let kh = fleet.sshd.known_hosts.to_str().unwrap().to_owned();
    let first = chom(&fleet, &["reconcile", "--known-hosts", &kh]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stdout));
    std::fs::write(out("fix-1"), "hand").unwrap();
    std::fs::write(out("rep-1"), "hand").unwrap();

    // The plan finds drift on both.
    let plan = chom(&fleet, &["plan", "--known-hosts", &kh]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(3), "{text}");
    assert_eq!(text.matches("drift found by check mode").count(), 2, "{text}");

    // The daemon, checking every server when it starts, corrects one and reports the other.
    let mut daemon = fleet.daemon(&[]);
    wait_for("fix-1 corrected", &daemon, || read("fix-1") == "one");
    wait_for("rep-1 reported", &daemon, || {
        fleet
            .status("rep-1")
            .is_some_and(|s| condition(&s, "Drifted")["status"] == "True")
    });
    let rep = fleet.status("rep-1").unwrap();
    assert_eq!(condition(&rep, "Ready")["reason"], "DriftFound");
    assert_eq!(read("rep-1"), "hand", "reported, not corrected");
    let fix = fleet.status("fix-1").unwrap();
    assert_eq!(condition(&fix, "Drifted")["reason"], "DriftCorrected");
    // Handed to the daemon, an explicit pass says the same.
    let handed = chom(&fleet, &["reconcile", "--known-hosts", &kh]);
    let text = String::from_utf8_lossy(&handed.stdout).into_owned();
    assert!(text.contains("handed to the daemon"), "{text}");
    same_verdict(&text);
    assert!(daemon.terminate().success());

    // And so does a one-shot pass, and the plan after it.
    let one_shot = chom(&fleet, &["reconcile", "--known-hosts", &kh]);
    let text = String::from_utf8_lossy(&one_shot.stdout).into_owned();
    assert!(!text.contains("handed to the daemon"), "{text}");
    same_verdict(&text);
    let plan = chom(&fleet, &["plan", "--known-hosts", &kh]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(3), "{text}");
    assert_eq!(
        text.matches("drift found by check mode").count(),
        1,
        "only rep-1: {text}"
    );
    let get = chom(&fleet, &["get"]);
    let text = String::from_utf8_lossy(&get.stdout).into_owned();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(line("rep-1").split_whitespace().nth(5), Some("True"), "DRIFTED: {text}");
    assert_eq!(
        line("fix-1").split_whitespace().nth(5),
        Some("False"),
        "DRIFTED: {text}"
    );
}

/// The value of an unlabelled metric in an exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// A status write that fails is reported by `/readyz` and the metrics, and the status file
/// is caught up within seconds once the folder is writable again: no new pass, no edit.
fn a_failed_status_write_is_retried(
    break_writes: impl FnOnce(&Fleet),
    trigger: impl FnOnce(&Fleet),
    restore: impl FnOnce(&Fleet),
) {
    let fleet = Fleet::new();
    fleet.write_file_server("web-1", "one");
    let mut daemon = fleet.daemon(&[]);
    wait_ready(&fleet, &daemon, "web-1");
    let addr = daemon.metrics_addr();
    assert!(http_get(&addr, "/readyz").starts_with("HTTP/1.1 200"));
    let before = std::fs::read_to_string(fleet.status_path("web-1")).unwrap();

    let passes = daemon.reconciles().get("web-1").copied().unwrap_or(0);
    break_writes(&fleet);
    trigger(&fleet);
    wait_for("the pass and /readyz reporting the unwritten status", &daemon, || {
        daemon.reconciles().get("web-1").copied().unwrap_or(0) > passes
            && http_get(&addr, "/readyz").starts_with("HTTP/1.1 503")
    });
    let readyz = http_get(&addr, "/readyz");
    assert!(
        readyz.contains("1 status file could not be written") && readyz.contains("web-1.status.yaml"),
        "{readyz}"
    );
    let metrics = http_get(&addr, "/metrics");
    assert_eq!(metric(&metrics, "chom_status_writes_pending"), Some(1.0), "{metrics}");
    assert!(
        metric(&metrics, "chom_status_write_failures_total").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let passes = daemon.reconciles().get("web-1").copied();

    restore(&fleet);
    let restored = Instant::now();
    wait_for("the status file to be caught up", &daemon, || {
        std::fs::read_to_string(fleet.status_path("web-1")).is_ok_and(|now| now != before)
    });
    let took = restored.elapsed();
    eprintln!("status caught up {took:?} after the folder became writable");
    assert!(took < Duration::from_secs(10), "caught up only after {took:?}");
    let s = fleet.status("web-1").unwrap();
    assert_eq!(condition(&s, "Ready")["status"], "True", "{s}");
    assert_eq!(
        daemon.reconciles().get("web-1").copied(),
        passes,
        "no new pass was needed"
    );
    wait_for("/readyz to recover", &daemon, || {
        http_get(&addr, "/readyz").starts_with("HTTP/1.1 200")
    });
    let metrics = http_get(&addr, "/metrics");
    assert_eq!(metric(&metrics, "chom_status_writes_pending"), Some(0.0), "{metrics}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
    no_temp_files(&fleet.inventory());
}

#[test]
fn a_status_file_that_cannot_be_replaced_is_retried_and_caught_up() {
    // A directory where the status file goes makes the atomic rename fail (EISDIR), for
    // root too, which ignores permission bits.
    a_failed_status_write_is_retried(
        |fleet| {
            std::fs::remove_file(fleet.status_path("web-1")).unwrap();
            std::fs::create_dir(fleet.status_path("web-1")).unwrap();
        },
        |fleet| fleet.write_file_server("web-1", "two"),
        |fleet| std::fs::remove_dir(fleet.status_path("web-1")).unwrap(),
    );
}

/// A read-only bind mount, undone on drop.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(dir: &Path) -> Option<Self> {
        let run = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !run(&["--bind"]) {
            return None;
        }
        let mount = Self(dir.to_owned());
        run(&["-o", "remount,bind,ro"]).then_some(mount)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_inventory_folder_is_retried_and_caught_up() {
    let scratch = tempfile::tempdir().unwrap();
    if !running_as_root() || ReadOnlyMount::new(scratch.path()).is_none() {
        eprintln!("skipped: a read-only bind mount needs root (the directory variant runs instead)");
        return;
    }
    let mount = std::cell::RefCell::new(None);
    a_failed_status_write_is_retried(
        |fleet| {
            *mount.borrow_mut() = Some(ReadOnlyMount::new(&fleet.inventory()).expect("bind mount"));
            let probe = std::fs::write(fleet.inventory().join(".probe"), "x").unwrap_err();
            assert_eq!(probe.raw_os_error(), Some(30), "EROFS: {probe}");
        },
        // The inventory cannot be edited now: `chom reconcile` is handed to the daemon.
        |fleet| {
            let kh = fleet.sshd.known_hosts.to_str().unwrap().to_owned();
            let handed = chom(fleet, &["reconcile", "web-1", "--known-hosts", &kh]);
            assert!(
                !handed.status.success(),
                "an unwritten status is not a success: {}",
                String::from_utf8_lossy(&handed.stdout)
            );
        },
        |_| drop(mount.borrow_mut().take()),
    );
}

/// CPU time (user + system) a process has used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses: utime and
    // stime are the 14th and 15th fields of the line, the 12th and 13th after it.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// One HTTP GET, bounded in time; `None` when nothing answered.
fn http_get_within(addr: &str, path: &str, limit: Duration) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, limit).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn idle_connections_beyond_the_descriptor_limit_do_not_make_the_metrics_listener_spin() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let fleet = Fleet::new();
    let mut daemon = fleet.daemon(&[]);
    let addr = daemon.metrics_addr();
    let pid = daemon.child.id();
    // Lower the running daemon's descriptor limit, then hold more idle connections than it.
    let limited = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(limited.success());
    let idle: Vec<std::net::TcpStream> = (0..150).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let tick = 100.0; // USER_HZ, the unit of /proc/PID/stat's times on Linux
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = (cpu_ticks(pid) - before) as f64 / tick;
    eprintln!("daemon CPU over 3 s with 150 idle connections and 64 descriptors: {used:.2} s");
    assert!(used < 0.5, "the daemon used {used:.2} s of CPU in 3 s");

    drop(idle);
    let closed = Instant::now();
    let mut answer = None;
    wait_for("/metrics to answer again", &daemon, || {
        answer = http_get_within(&addr, "/metrics", Duration::from_secs(5));
        answer.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 200"))
    });
    eprintln!(
        "/metrics answered {:?} after the idle connections closed",
        closed.elapsed()
    );
    assert!(answer.unwrap().contains("chom_workqueue_depth"));
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[test]
fn owners_that_would_overlap_are_refused_whatever_their_state_dir_or_shard_layout() {
    let fleet = Fleet::new();
    fleet.write_file_server("web-1", "one");
    let mut s0 = fleet.daemon(&["--shard", "0/2"]);
    wait_for("shard 0/2 started", &s0, || s0.log().contains("daemon started"));
    let other_state = tempfile::tempdir().unwrap();
    let known_hosts = fleet.sshd.known_hosts.to_str().unwrap().to_owned();
    let refused = |args: &[&str], says: &str| {
        let mut all = args.to_vec();
        all.extend(["--known-hosts", &known_hosts]);
        let out = chom(&fleet, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} was not refused: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("PID {}", s0.child.id())),
            "{args:?} names the owner: {stderr}"
        );
    };
    // The whole tree, from any state dir, overlaps every shard.
    refused(&["daemon"], "is owned by chom daemon");
    refused(
        &["daemon", "--state-dir", other_state.path().to_str().unwrap()],
        "is owned by chom daemon",
    );
    // Another N would hash servers into other shards.
    refused(&["daemon", "--shard", "1/3"], "shard layout K/2");
    // The same shard twice, from another state dir.
    refused(
        &[
            "daemon",
            "--shard",
            "0/2",
            "--state-dir",
            other_state.path().to_str().unwrap(),
        ],
        "is owned by chom daemon",
    );
    // The other shard of the same layout is welcome.
    let mut s1 = fleet.daemon(&["--shard", "1/2"]);
    wait_ready(&fleet, &s0, "web-1");
    assert!(s1.child.try_wait().unwrap().is_none(), "shard 1/2 exited: {}", s1.log());
    assert!(s1.terminate().success());
    assert!(s0.terminate().success());
}

#[test]
fn suspended_servers_spend_none_of_the_start_rate() {
    let fleet = Fleet::new();
    // At one start per second, twenty suspended servers ahead of it would hold the active
    // one back by twenty seconds if each took a token.
    for i in 0..20 {
        let text = fleet.server_text(&format!("a-{i:02}"), "  suspend: true\n");
        fleet.write(&format!("a-{i:02}"), &text);
    }
    fleet.write_file_server("z-web", "one");
    let started = Instant::now();
    let mut daemon = fleet.daemon(&["--rate", "1", "--burst", "1"]);
    wait_ready(&fleet, &daemon, "z-web");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the active server waited {took:?}");
    let suspended = fleet.status("a-00").unwrap();
    assert_eq!(condition(&suspended, "Ready")["reason"], "Suspended", "{suspended}");
    assert!(daemon.terminate().success());
}

#[test]
fn a_requested_pass_on_open_connections_is_not_held_back_by_the_start_rate() {
    let fleet = Fleet::new();
    for i in 0..8 {
        fleet.write_file_server(&format!("web-{i}"), "one");
    }
    // The first pass spends the whole burst; a token then comes every 5 s.
    let mut daemon = fleet.daemon(&["--rate", "0.2", "--burst", "8"]);
    for i in 0..8 {
        wait_ready(&fleet, &daemon, &format!("web-{i}"));
    }
    // Every server's connection is pooled now: the requested pass needs no handshake, so
    // it does not wait 35 s for seven more tokens.
    let kh = fleet.sshd.known_hosts.to_str().unwrap().to_owned();
    let started = Instant::now();
    let handed = chom(&fleet, &["reconcile", "--known-hosts", &kh]);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&handed.stdout).into_owned();
    assert!(
        handed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&handed.stderr)
    );
    assert!(text.contains("handed to the daemon"), "{text}");
    assert!(took < Duration::from_secs(15), "the requested pass took {took:?}");
    assert!(daemon.terminate().success());
}

#[test]
fn without_chom_log_the_daemon_logs_its_start_changes_removals_and_failures_naming_the_server() {
    let fleet = Fleet::new();
    std::fs::write(
        fleet.dir.path().join("scripts/broken.sh"),
        "echo 'no space left' >&2\nexit 3\n",
    )
    .unwrap();
    fleet.write_file_server("web-1", "hello");
    fleet.write(
        "web-2",
        &fleet.server_text("web-2", "  components:\n    - name: broken\n"),
    );
    let mut daemon = fleet.daemon_logging(&[], None);
    wait_ready(&fleet, &daemon, "web-1");
    wait_for("web-2's failure in its status", &daemon, || {
        fleet
            .status("web-2")
            .is_some_and(|s| condition(&s, "Ready")["reason"] == "ComponentFailed")
    });
    std::fs::remove_file(fleet.inventory().join("web-1.yaml")).unwrap();
    wait_for("the removal logged", &daemon, || {
        daemon.log().contains("server removed from the inventory")
    });
    assert!(daemon.terminate().success());
    let lines: Vec<Value> = daemon
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |message: &str| -> Value {
        lines
            .iter()
            .find(|v| v["message"] == message)
            .cloned()
            .unwrap_or_else(|| panic!("no {message:?} line in\n{}", daemon.log()))
    };
    let started = find("daemon started");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["servers"], 2);
    assert_eq!(started["shard"], "0/1");
    assert!(
        started["inventory"].as_str().unwrap().ends_with("inventory.d"),
        "{started}"
    );
    assert!(
        started["metrics"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{started}"
    );
    let applied = find("component applied with changes");
    assert_eq!(applied["level"], "INFO");
    assert_eq!(applied["span"]["server"], "web-1", "{applied}");
    assert_eq!(applied["component"], "file");
    let failed = find("component failed");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["span"]["server"], "web-2", "{failed}");
    let removed = find("server removed from the inventory");
    assert_eq!(removed["level"], "INFO");
    assert_eq!(removed["server"], "web-1");
    // Every line logged inside a server's pass names it; nothing below info by default.
    for v in &lines {
        assert_ne!(v["level"], "DEBUG", "{v}");
        if v["target"].as_str().is_some_and(|t| t.starts_with("chom::reconcile")) {
            assert!(v["span"]["server"].is_string(), "{v}");
        }
    }
}

/// Every `chom_…` name in `text` (a dashboard or a rules file).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("chom_") {
        let start = i + at;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "chom_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok && end > start + "chom_".len() {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn the_dashboard_and_alert_rules_name_only_metrics_a_running_daemon_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let rules_file = root.join("prometheus/chom-rules.yml");
    let dashboard_file = root.join("grafana/chom-dashboard.json");
    let dashboard = std::fs::read_to_string(&dashboard_file).unwrap();
    let rules = std::fs::read_to_string(&rules_file).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10), "panels");
    let named: std::collections::BTreeSet<String> = metric_names(&dashboard)
        .into_iter()
        .chain(metric_names(&rules))
        .collect();
    assert!(named.len() >= 15, "{named:?}");

    // A daemon with a pass, an applied component and drift found and corrected, so every
    // series has a sample.
    let fleet = Fleet::new();
    fleet.write_file_server("web-1", "hello");
    let daemon = fleet.daemon(&[]);
    wait_ready(&fleet, &daemon, "web-1");
    std::fs::write(fleet.dir.path().join("web-1.out"), "changed by hand").unwrap();
    // An explicit pass, handed to the daemon, checks every component now.
    let handed = chom(&fleet, &["reconcile"]);
    assert!(handed.status.success(), "{}", String::from_utf8_lossy(&handed.stdout));
    wait_for("the drift corrected", &daemon, || {
        fleet
            .status("web-1")
            .is_some_and(|s| s["status"]["components"][0]["lastCheckResult"] == "DriftCorrected")
    });
    let addr = daemon.metrics_addr();
    let exposition = http_get(&addr, "/metrics");
    let exported: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with("chom_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{exposition}");
    for needle in [
        "chom_server_condition{server=\"web-1\",type=\"Ready\",status=\"True\"} 1",
        "chom_drift_found_total{component=\"file\"} 1",
        "chom_drift_corrected_total{component=\"file\"} 1",
        "chom_ready 1",
    ] {
        assert!(exposition.contains(needle), "{needle}\n{exposition}");
    }

    // The rules load in Prometheus's own checker, when it is installed (.ci/run installs it).
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let check = Command::new("promtool")
                .args(["check", "rules"])
                .arg(&rules_file)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "promtool check rules:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            // And the alerts fire when they should (contrib/prometheus/chom-rules.test.yml).
            let test = Command::new("promtool")
                .args(["test", "rules"])
                .arg(root.join("prometheus/chom-rules.test.yml"))
                .output()
                .unwrap();
            assert!(
                test.status.success(),
                "promtool test rules:\n{}{}",
                String::from_utf8_lossy(&test.stdout),
                String::from_utf8_lossy(&test.stderr)
            );
        }
        _ => eprintln!("SKIPPED: promtool is not installed; the alert rules were not loaded"),
    }
}
