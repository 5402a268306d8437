//! The control host, for real: a Debian 12 container made a control host with
//! `contrib/install.sh`, running `chom daemon` under systemd with `contrib/chom.service` as
//! shipped (Type=notify, watchdog, StateDirectory, the age identity through LoadCredential,
//! all of its hardening), and reconciling a second container beside it. Every check is made
//! on the two servers themselves. Needs root; `CHOM_SKIP_REALHOST=1` skips (and says so).

#[path = "support/realhost.rs"]
mod realhost;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use realhost::{RealHost, copy_dir, eventually};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// A secret the managed server's component receives; it must never show up in a log or a
/// file chom writes.
const TOKEN: &str = "control-token-e2e-5f3a9c81";
/// The managed server's name in the inventory.
const SERVER: &str = "web-1";

/// A component of this test's fleet: writes the SHA-256 of `$CONTROL_TOKEN` on the server,
/// which proves the daemon decrypted the secret with the identity systemd handed it.
const PROBE: &str = r#"#!/bin/sh
# chom component: probe. Keeps the SHA-256 of $CONTROL_TOKEN in /var/lib/chom-probe.
set -eu
target=/var/lib/chom-probe/token.sha256
wanted=$(printf '%s' "$CONTROL_TOKEN" | sha256sum | cut -d' ' -f1)
current=$(cat "$target" 2>/dev/null || true)
echo "::chom:: resource file $target"
if [ "$current" = "$wanted" ]; then exit 0; fi
if [ "${CHOM_MODE:-apply}" = check ]; then exit 100; fi
mkdir -p /var/lib/chom-probe
printf '%s\n' "$wanted" > "$target"
echo "::chom:: changed"
"#;

/// Every file under `dir`, read as text where it is text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return text;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            text.push_str(&all_text(&p));
        } else if let Ok(t) = std::fs::read(&p) {
            text.push_str(&String::from_utf8_lossy(&t));
        }
    }
    text
}

/// The control host: the container, and its paths seen from this machine.
struct Control {
    host: RealHost,
}

impl Control {
    fn path(&self, inside: &str) -> PathBuf {
        self.host.root.join(inside.trim_start_matches('/'))
    }

    /// `systemctl show -p …` for the chom unit, as a map.
    fn show(&self, props: &[&str]) -> HashMap<String, String> {
        self.host
            .sh(&format!("systemctl show chom -p {}", props.join(",")))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn is_active(&self) -> String {
        // Exit status 3 for inactive: `run`, not `sh`.
        String::from_utf8_lossy(&self.host.run("systemctl is-active chom").stdout)
            .trim()
            .to_owned()
    }

    /// The journal entries of the unit (`journalctl -u chom -o json`), oldest first.
    fn journal(&self) -> Vec<Value> {
        self.host
            .sh("journalctl -u chom -o json --no-pager")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journalctl -o json gave {l}: {e}")))
            .collect()
    }

    /// What chom itself logged (`journalctl -u chom -o cat` without systemd's own lines
    /// about the unit), each line parsed as the JSON object it must be.
    fn logs(&self) -> Vec<Value> {
        self.journal()
            .iter()
            .filter(|e| e["SYSLOG_IDENTIFIER"] == "chom")
            .map(|e| {
                let line = e["MESSAGE"].as_str().unwrap_or_else(|| panic!("not text: {e}"));
                let v: Value =
                    serde_json::from_str(line).unwrap_or_else(|err| panic!("a log line is not JSON ({err}): {line}"));
                assert!(
                    v.is_object() && v["timestamp"].is_string() && v["level"].is_string(),
                    "{line}"
                );
                v
            })
            .collect()
    }

    fn status(&self) -> Option<Value> {
        let path = self.path(&format!("/srv/fleet/inventory.d/{SERVER}.status.yaml"));
        let text = std::fs::read_to_string(path).ok()?;
        Some(
            chom::validate::parse_document(Path::new("s.yaml"), &text)
                .unwrap()
                .value,
        )
    }

    fn condition(&self, type_: &str) -> Value {
        self.status()
            .and_then(|s| s["status"]["conditions"].as_array().cloned())
            .and_then(|c| c.into_iter().find(|c| c["type"] == type_))
            .unwrap_or(Value::Null)
    }
}

fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}

/// The server a log line was logged for (the `reconcile` span's field).
fn server_of(line: &Value) -> Option<&str> {
    line["span"]["server"].as_str().or_else(|| line["server"].as_str())
}

#[test]
fn the_daemon_under_systemd_on_a_control_host() {
    let started = Instant::now();
    let Some(host) = RealHost::up(5) else { return };
    let control = Control { host };
    // The managed server, in the control host's network namespace.
    let Some(server) = RealHost::up_beside(5, 3) else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    // The install method, with this build of chom, run twice: the second run changes nothing.
    let src = control.path("/opt/chom-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_chom"), src.join("chom")).unwrap();
    copy_dir(&repo.join("contrib"), &src.join("contrib"));
    std::fs::copy(repo.join("README.md"), src.join("README.md")).unwrap();
    let install = "sh /opt/chom-src/contrib/install.sh /opt/chom-src/chom";
    let first = control.host.sh(install);
    assert!(
        first.contains("created user chom") && first.contains("made the SSH key"),
        "{first}"
    );
    let key = std::fs::read_to_string(control.path("/etc/chom/id_ed25519.pub")).unwrap();
    let again = control.host.sh(install);
    assert!(
        !again.contains("created") && !again.contains("made the SSH key"),
        "{again}"
    );
    assert_eq!(
        std::fs::read_to_string(control.path("/etc/chom/id_ed25519.pub")).unwrap(),
        key,
        "the key is kept"
    );
    assert_eq!(
        control
            .host
            .sh("stat -c '%a %U:%G' /etc/chom /etc/chom/id_ed25519 /usr/local/bin/chom"),
        "750 root:chom\n600 chom:chom\n755 root:root\n"
    );
    assert_eq!(
        std::fs::read_to_string(control.path("/etc/systemd/system/chom.service")).unwrap(),
        include_str!("../contrib/chom.service"),
        "the unit is installed as shipped, hardening and all"
    );
    assert!(again.contains("TODO  the fleet checkout in /srv/fleet"), "{again}");

    // The fleet checkout: chom.yaml, the repo's scripts and Roles, a probe component, the
    // example recipients, the managed server's host key; the identity for LoadCredential.
    let fleet = control.path("/srv/fleet");
    std::fs::create_dir_all(fleet.join("inventory.d")).unwrap();
    std::fs::write(
        fleet.join("chom.yaml"),
        "apiVersion: chom.dev/v1\nkind: Config\nstateDir: /var/lib/chom\nknownHosts: [known_hosts]\n",
    )
    .unwrap();
    copy_dir(&repo.join("scripts"), &fleet.join("scripts"));
    std::fs::write(fleet.join("scripts/probe.sh"), PROBE).unwrap();
    copy_dir(&repo.join("inventory.d/roles"), &fleet.join("inventory.d/roles"));
    std::fs::create_dir_all(fleet.join("secrets.d")).unwrap();
    std::fs::copy(repo.join("secrets.d/.recipients"), fleet.join("secrets.d/.recipients")).unwrap();
    std::fs::copy(&server.known_hosts, fleet.join("known_hosts")).unwrap();
    std::fs::copy(
        repo.join("examples/example-age-identity.txt"),
        control.path("/etc/chom/age-identity"),
    )
    .unwrap();
    control.host.sh(&format!(
        "chmod 600 /etc/chom/age-identity && chown chom:chom /srv/fleet/inventory.d \
         && cd /srv/fleet && printf %s '{TOKEN}' | chom secrets set CONTROL_TOKEN --server {SERVER}"
    ));
    // The managed server accepts the chom user's key for root.
    {
        use std::io::Write as _;
        let mut keys = std::fs::OpenOptions::new()
            .append(true)
            .open(server.root.join("root/.ssh/authorized_keys"))
            .unwrap();
        keys.write_all(key.as_bytes()).unwrap();
    }
    let checklist = control.host.sh(install);
    assert!(!checklist.contains("not done yet"), "{checklist}");

    // Start: systemctl returns once READY=1 arrived (its STATUS= came with it), and the
    // unit is active, not activating.
    control.host.sh("systemctl start chom");
    assert_eq!(control.is_active(), "active");
    let props = control.show(&[
        "StatusText",
        "NRestarts",
        "WatchdogUSec",
        "MainPID",
        "User",
        "ProtectSystem",
        "NoNewPrivileges",
    ]);
    assert_eq!(props["StatusText"], "0/0 servers ready", "{props:?}");
    assert_eq!(props["NRestarts"], "0", "{props:?}");
    assert_eq!(props["WatchdogUSec"], "1min", "the watchdog is on: {props:?}");
    assert_eq!(
        (
            props["User"].as_str(),
            props["ProtectSystem"].as_str(),
            props["NoNewPrivileges"].as_str()
        ),
        ("chom", "strict", "yes")
    );
    let main_pid = props["MainPID"].clone();
    let logs = control.logs();
    assert!(logs.iter().any(|l| message(l) == "daemon started"), "{logs:?}");

    // A server file dropped into the inventory (renamed in, as a checkout does) is
    // reconciled: Ready, and the components really ran on the server.
    let spec = format!(
        "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {SERVER}\nspec:\n  address: {addr}\n  ssh: {{user: root, identityFile: /etc/chom/id_ed25519}}\n  components:\n    - name: motd\n    - name: probe\n  config: {{role: web}}\n  secrets: [CONTROL_TOKEN]\n",
        addr = server.addr
    );
    std::fs::write(fleet.join(format!("{SERVER}.yaml.new")), spec).unwrap();
    std::fs::rename(
        fleet.join(format!("{SERVER}.yaml.new")),
        fleet.join(format!("inventory.d/{SERVER}.yaml")),
    )
    .unwrap();
    eventually("the dropped server Ready", 90, || {
        control.condition("Ready")["status"] == "True"
    });
    assert_eq!(
        server.sh("cat /etc/motd"),
        format!("This server ({SERVER}, role web) is managed by chom. Local changes may be overwritten.\n")
    );
    assert_eq!(
        server.sh("cat /var/lib/chom-probe/token.sha256").trim(),
        chom::desired::hex(&Sha256::digest(TOKEN.as_bytes())),
        "the secret reached the server"
    );
    eventually("STATUS= with the server ready", 10, || {
        control.show(&["StatusText"])["StatusText"] == "1/1 servers ready"
    });
    let logs = control.logs();
    assert!(
        logs.iter()
            .any(|l| message(l) == "reconcile finished" && server_of(l) == Some(SERVER)),
        "a log line names the server: {logs:?}"
    );

    // Reload: SIGHUP, a full resync with every component checked now; same process.
    let transitions = |c: &Control| -> Vec<(String, String)> {
        c.status().unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].to_string(), c["lastTransitionTime"].to_string()))
            .collect()
    };
    let before_reload = transitions(&control);
    let last_pass = |c: &Control| c.status().unwrap()["status"]["lastReconcile"].clone();
    let pass_before_reload = last_pass(&control);
    std::thread::sleep(Duration::from_secs(1));
    let before = control.logs().len();
    control.host.sh("systemctl reload chom");
    eventually("a check pass after the reload", 60, || {
        let logs = control.logs();
        let after = &logs[before.min(logs.len())..];
        let Some(hup) = after.iter().position(|l| message(l).starts_with("SIGHUP")) else {
            return false;
        };
        let pass = |m: &str| {
            after[hup..]
                .iter()
                .position(|l| message(l) == m && server_of(l) == Some(SERVER))
        };
        matches!((pass("reconcile started"), pass("reconcile finished")), (Some(s), Some(f)) if s < f
            && after[hup + s]["mode"] == "CheckNow")
    });
    assert_eq!(control.is_active(), "active");
    let props = control.show(&["MainPID", "NRestarts"]);
    assert_eq!(
        (props["MainPID"].as_str(), props["NRestarts"].as_str()),
        (main_pid.as_str(), "0")
    );
    assert_eq!(control.condition("Ready")["status"], "True");
    eventually("the resync's status written", 10, || {
        last_pass(&control) != pass_before_reload
    });
    assert_eq!(
        transitions(&control),
        before_reload,
        "no condition changed, so none moved"
    );

    // The secret is nowhere: not in either journal, the status, or the state directory.
    let journal = control.host.sh("journalctl -o cat --no-pager");
    assert!(!journal.contains(TOKEN), "the secret is in the control host's journal");
    assert!(
        !server.sh("journalctl -o cat --no-pager").contains(TOKEN),
        "the secret is in the server's journal"
    );
    assert!(
        !all_text(&fleet.join("inventory.d")).contains(TOKEN),
        "in a status file"
    );
    assert!(
        !all_text(&control.path("/var/lib/chom")).contains(TOKEN),
        "in the state dir"
    );
    assert!(control.path("/var/lib/chom/audit.jsonl").exists());

    // Stop drains: inactive (not failed), and the daemon says it stopped.
    control.host.sh("systemctl stop chom");
    assert_eq!(control.is_active(), "inactive");
    let props = control.show(&["Result", "ExecMainStatus", "NRestarts"]);
    assert_eq!(props["Result"], "success", "{props:?}");
    assert_eq!(props["ExecMainStatus"], "0", "{props:?}");
    eventually("the daemon's last line in the journal", 10, || {
        control.logs().last().map(message) == Some("daemon stopped")
    });
    let audit = std::fs::read_to_string(control.path("/var/lib/chom/audit.jsonl")).unwrap();
    let stopped: Value = serde_json::from_str(
        audit
            .lines()
            .rfind(|l| l.contains("daemon.stopped"))
            .expect("daemon.stopped in the audit trail"),
    )
    .unwrap();
    assert!(stopped.to_string().contains("\"drained\":true"), "{stopped}");

    // The watchdog is fed: with WatchdogSec shortened to 2 s (a runtime drop-in; the rest of
    // the unit unchanged), the daemon stays up well past it without a restart.
    control.host.sh("mkdir -p /run/systemd/system/chom.service.d \
         && printf '[Service]\\nWatchdogSec=2s\\n' > /run/systemd/system/chom.service.d/watchdog.conf \
         && systemctl daemon-reload && systemctl start chom");
    let fed_at = |c: &Control| c.show(&["WatchdogTimestampMonotonic"])["WatchdogTimestampMonotonic"].clone();
    let first_ping = fed_at(&control);
    std::thread::sleep(Duration::from_secs(7));
    let props = control.show(&["ActiveState", "NRestarts", "WatchdogUSec"]);
    assert_eq!(
        (
            props["ActiveState"].as_str(),
            props["NRestarts"].as_str(),
            props["WatchdogUSec"].as_str()
        ),
        ("active", "0", "2s"),
        "{props:?}"
    );
    assert_ne!(fed_at(&control), first_ping, "WATCHDOG=1 arrives");
    control
        .host
        .sh("systemctl stop chom && rm -r /run/systemd/system/chom.service.d && systemctl daemon-reload");
    assert_eq!(control.is_active(), "inactive");
    eprintln!("control host test: {:.0?}", started.elapsed());
}
