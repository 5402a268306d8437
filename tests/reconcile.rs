//! `chom reconcile` end to end against a real OpenSSH sshd on 127.0.0.1: components are
//! applied, checked, re-applied on drift, skipped after a failure, and status files
//! record it all.

#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sshd::Sshd;

const FILE_SCRIPT: &str = r#"#!/bin/sh
# Writes CHOM_CFG_CONTENT to CHOM_CFG_PATH, only when it differs; counts its runs.
set -eu
echo "$CHOM_MODE" >> "$CHOM_CFG_PATH.runs"
if [ "$CHOM_MODE" = remove ]; then rm -f "$CHOM_CFG_PATH"; exit 0; fi
if [ -f "$CHOM_CFG_PATH" ] && [ "$(cat "$CHOM_CFG_PATH")" = "$CHOM_CFG_CONTENT" ]; then
    echo "::chom:: resource file $CHOM_CFG_PATH"
    exit 0
fi
[ "$CHOM_MODE" = check ] && exit 100
printf '%s' "$CHOM_CFG_CONTENT" > "$CHOM_CFG_PATH"
echo "::chom:: changed"
echo "::chom:: resource file $CHOM_CFG_PATH"
"#;

struct Fleet {
    sshd: Sshd,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let sshd = Sshd::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("inventory.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/file.sh"), FILE_SCRIPT).unwrap();
        std::fs::write(
            dir.path().join("scripts/fail.sh"),
            "echo 'about to fail' >&2\necho 'no space left' >&2\nexit 3\n",
        )
        .unwrap();
        Self { sshd, dir }
    }

    fn server(&self, name: &str, extra: &str) {
        let text = format!(
            "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  address: 127.0.0.1\n  ssh:\n    user: {user}\n    port: {port}\n    identityFile: {key}\n{extra}",
            user = sshd::current_user(),
            port = self.sshd.port,
            key = self.sshd.client_key.display()
        );
        std::fs::write(self.dir.path().join(format!("inventory.d/{name}.yaml")), text).unwrap();
    }

    /// `chom reconcile` with JSON trace logs and the age identity `key`.
    fn reconcile_traced(&self, key: &Path) -> Output {
        self.chom(
            &[
                "--log-format",
                "json",
                "-vv",
                "reconcile",
                "--known-hosts",
                self.sshd.known_hosts.to_str().unwrap(),
                "--age-identity",
                key.to_str().unwrap(),
            ],
            "",
        )
    }

    /// Writes `scripts/<path>`.
    fn script(&self, path: &str, body: impl AsRef<[u8]>) {
        let path = self.dir.path().join("scripts").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    fn out(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{name}.out"))
    }

    fn reconcile(&self, names: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .args(["reconcile", "--known-hosts", self.sshd.known_hosts.to_str().unwrap()])
            .args(names)
            .output()
            .unwrap()
    }

    fn status(&self, name: &str) -> Value {
        let path = self.dir.path().join(format!("inventory.d/{name}.status.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc = chom::validate::parse_document(Path::new("s.yaml"), &text).unwrap();
        doc.value
    }
}

fn condition(status: &Value, type_: &str) -> Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

fn component(status: &Value, name: &str) -> Value {
    status["status"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap()
}

fn runs(out: &Path) -> Vec<String> {
    let path = format!("{}.runs", out.display());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_explicit_pass_checks_every_component_and_reapplies_only_what_changed() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    let spec = |content: &str| {
        format!(
            "  components:\n    - name: file\n      config: {{path: {}, content: {content}}}\n",
            out.display()
        )
    };
    fleet.server("web-1", &spec("hello"));
    assert!(fleet.reconcile(&[]).status.success());
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(
        runs(&out),
        ["apply", "check"],
        "the second pass checked it (the default interval is 10m) and applied nothing"
    );
    let s = fleet.status("web-1");
    assert_eq!(
        condition(&s, "Ready")["message"],
        "every component is applied and was checked in sync in this pass"
    );
    assert_eq!(component(&s, "file")["lastCheckResult"], "InSync");
    assert!(component(&s, "file")["lastCheckTime"].is_string());
    fleet.script("file.sh", format!("{FILE_SCRIPT}\n# edited\n"));
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(runs(&out), ["apply", "check", "apply"], "a changed script is applied");
    fleet.server("web-1", &spec("bye"));
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(
        runs(&out),
        ["apply", "check", "apply", "apply"],
        "a changed config is applied"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "bye");
    fleet.server("web-1", &spec("hello"));
    assert!(fleet.reconcile(&[]).status.success());
    std::fs::write(&out, "tampered").unwrap();
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "hello",
        "drift corrected at once"
    );
    let s = fleet.status("web-1");
    assert_eq!(component(&s, "file")["changed"], true);
    assert_eq!(component(&s, "file")["lastCheckResult"], "DriftCorrected");
    assert_eq!(condition(&s, "Drifted")["status"], "False");
    assert_eq!(condition(&s, "Drifted")["reason"], "DriftCorrected");
    assert!(
        condition(&s, "Ready")["message"]
            .as_str()
            .unwrap()
            .ends_with("; drift in file corrected"),
        "{s}"
    );

    // A config change is a new generation and is applied.
    fleet.server(
        "web-1",
        &format!(
            "  interval: 1s\n  components:\n    - name: file\n      config: {{path: {}, content: bye}}\n",
            out.display()
        ),
    );
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "bye");
    // hello, the edited script, bye, hello again, and now the interval: five generations.
    assert_eq!(fleet.status("web-1")["metadata"]["generation"], 5);
}

#[test]
fn drift_is_only_reported_under_the_report_policy() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    fleet.server(
        "web-1",
        &format!(
            "  interval: 1s\n  driftPolicy: report\n  components:\n    - name: file\n      config: {{path: {}, content: hello}}\n",
            out.display()
        ),
    );
    assert!(fleet.reconcile(&[]).status.success());
    std::fs::write(&out, "tampered").unwrap();
    fleet.reconcile(&[]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "tampered", "not corrected");
    let s = fleet.status("web-1");
    assert_eq!(condition(&s, "Drifted")["status"], "True");
    assert_eq!(condition(&s, "Ready")["reason"], "DriftFound");
    assert_eq!(component(&s, "file")["lastCheckResult"], "DriftFound");
    assert_eq!(component(&s, "file")["state"], "Drifted");
}

#[test]
fn a_failed_component_stops_the_later_ones_and_fails_the_run() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    fleet.server(
        "web-1",
        &format!(
            "  components:\n    - name: fail\n    - name: file\n      config: {{path: {}, content: x}}\n",
            out.display()
        ),
    );
    let run = fleet.reconcile(&[]);
    assert_eq!(run.status.code(), Some(1));
    assert!(!out.exists(), "the later component never ran");
    let s = fleet.status("web-1");
    let failed = component(&s, "fail");
    assert_eq!(failed["state"], "Failed");
    assert!(failed["message"].as_str().unwrap().contains("exited with status 3"));
    assert!(failed["message"].as_str().unwrap().contains("no space left"));
    let skipped = component(&s, "file");
    assert_eq!(skipped["state"], "Skipped");
    assert!(skipped["message"].as_str().unwrap().contains("fail failed"));
    assert_eq!(condition(&s, "Ready")["reason"], "ComponentFailed");
    assert_eq!(s["status"]["consecutiveFailures"], 1);
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("web-1") && table.contains("Failed"), "{table}");
}

#[test]
fn servers_below_their_role_minimum_are_not_deployed_to() {
    let fleet = Fleet::new();
    std::fs::write(
        fleet.dir.path().join("inventory.d/huge.yaml"),
        "apiVersion: chom.dev/v1\nkind: Role\nmetadata:\n  name: huge\nspec:\n  requirements: {minMemoryMb: 999999999}\n",
    )
    .unwrap();
    let out = fleet.out("big-1");
    fleet.server(
        "big-1",
        &format!(
            "  role: huge\n  components:\n    - name: file\n      config: {{path: {}, content: x}}\n",
            out.display()
        ),
    );
    let run = fleet.reconcile(&[]);
    assert_eq!(run.status.code(), Some(1));
    assert!(!out.exists());
    let s = fleet.status("big-1");
    assert_eq!(condition(&s, "RequirementsMet")["reason"], "InsufficientMemory");
    assert_eq!(condition(&s, "Stalled")["status"], "True");
    assert_eq!(component(&s, "file")["state"], "Skipped");
}

#[test]
fn suspended_servers_are_left_alone_and_say_so() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    fleet.server(
        "web-1",
        &format!(
            "  suspend: true\n  components:\n    - name: file\n      config: {{path: {}, content: x}}\n",
            out.display()
        ),
    );
    assert!(fleet.reconcile(&[]).status.success());
    assert!(!out.exists());
    assert_eq!(condition(&fleet.status("web-1"), "Ready")["reason"], "Suspended");
}

impl Fleet {
    fn plan(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .args(["plan", "--known-hosts", self.sshd.known_hosts.to_str().unwrap()])
            .output()
            .unwrap()
    }
}

#[test]
fn plan_shows_pending_changes_and_changes_nothing() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    let spec = |content: &str| {
        format!(
            "  components:\n    - name: file\n      config: {{path: {}, content: {content}}}\n",
            out.display()
        )
    };
    fleet.server("web-1", &spec("hello"));
    let plan = fleet.plan();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(3), "{text}");
    assert!(text.contains("never applied"), "{text}");
    assert!(!out.exists() && runs(&out).is_empty(), "plan ran nothing");

    assert!(fleet.reconcile(&[]).status.success());
    let plan = fleet.plan();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{text}");
    assert!(text.contains("in sync"), "{text}");

    std::fs::write(&out, "tampered").unwrap();
    let plan = fleet.plan();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(3), "{text}");
    assert!(text.contains("would change") && text.contains("drift"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "tampered",
        "plan corrected nothing"
    );
    // `chom reconcile` agrees with the plan: it corrects the drift the plan found, and the
    // plan after it finds nothing.
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello");
    assert_eq!(fleet.plan().status.code(), Some(0));

    fleet.server("web-1", &spec("bye"));
    let text = String::from_utf8_lossy(&fleet.plan().stdout).into_owned();
    assert!(text.contains("config changed"), "{text}");
    fleet.script("file.sh", format!("{FILE_SCRIPT}# v2\n"));
    let text = String::from_utf8_lossy(&fleet.plan().stdout).into_owned();
    assert!(text.contains("script changed"), "{text}");
    assert_eq!(
        runs(&out).iter().filter(|m| *m == "apply").count(),
        2,
        "only the two reconciles applied"
    );
}

#[test]
fn a_hanging_component_is_killed_at_its_deadline() {
    let fleet = Fleet::new();
    let pidfile = fleet.dir.path().join("hang.pid");
    fleet.script("hang.sh", format!("echo $$ > {}\nexec sleep 300\n", pidfile.display()));
    fleet.server("web-1", "  components:\n    - name: hang\n      timeout: 2s\n");
    let started = std::time::Instant::now();
    let run = fleet.reconcile(&[]);
    assert_eq!(run.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let c = component(&fleet.status("web-1"), "hang");
    assert_eq!(c["state"], "Failed");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(gone, "the remote process {pid} is still running");
}

#[test]
fn depends_on_orders_servers_within_one_pass() {
    let fleet = Fleet::new();
    let log = fleet.dir.path().join("order.log");
    fleet.script("order.sh", format!("echo \"$CHOM_SERVER\" >> {}\n", log.display()));
    fleet.server("db-1", "  components:\n    - name: order\n");
    fleet.server("app-1", "  dependsOn: [db-1]\n  components:\n    - name: order\n");
    fleet.server("web-1", "  dependsOn: [app-1]\n  components:\n    - name: order\n");
    let run = fleet.reconcile(&[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(order.lines().collect::<Vec<_>>(), ["db-1", "app-1", "web-1"]);

    // A dependency that fails holds its dependents back.
    fleet.server("db-1", "  components:\n    - name: fail\n");
    let run = fleet.reconcile(&[]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        condition(&fleet.status("app-1"), "Ready")["reason"],
        "DependencyNotReady"
    );
}

impl Fleet {
    fn chom(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("CHOM_AGE_IDENTITY")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// Every file under `dir`, recursively, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&all_text(&path));
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push_str(&text);
        }
    }
    out
}

#[test]
fn secrets_reach_scripts_only_through_stdin_and_are_redacted_everywhere() {
    const VALUE: &str = "s3cr3t-Value-'quoted'-42";
    let fleet = Fleet::new();
    let key = fleet.dir.path().join("age.key");
    let keygen = fleet.chom(&["secrets", "keygen", "--out", key.to_str().unwrap()], "");
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let set = fleet.chom(&["secrets", "set", "DB_PASSWORD"], VALUE);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));

    let got = fleet.dir.path().join("got.txt");
    fleet.script("use-secret.sh", format!(
            "sleep 1\nprintf '%s' \"$DB_PASSWORD\" > {got}\necho \"::chom:: warning connecting with $DB_PASSWORD\"\necho \"password was $DB_PASSWORD\" >&2\nexit 4\n",
            got = got.display()
        ));
    fleet.server(
        "web-1",
        "  secrets: [DB_PASSWORD]\n  components:\n    - name: use-secret\n",
    );

    // Without the identity nothing is deployed, and the status says why.
    let run = fleet.reconcile(&[]);
    assert_eq!(run.status.code(), Some(1));
    let s = fleet.status("web-1");
    assert_eq!(condition(&s, "SecretsResolved")["reason"], "NoIdentity");
    assert!(!got.exists());

    // Sample every process's argv while the (slow) script runs: the value must never be
    // in one, local or remote (the server is this machine).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = 0usize;
            let mut samples = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && samples < 2000 {
                samples += 1;
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
                        && String::from_utf8_lossy(&cmdline).contains(VALUE)
                    {
                        seen += 1;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (seen, samples)
        })
    };
    let run = fleet.reconcile_traced(&key);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen, samples) = sampler.join().unwrap();
    assert!(samples > 3, "the sampler ran during the script");
    assert_eq!(seen, 0, "the secret appeared in a process's argv");
    assert_eq!(run.status.code(), Some(1), "the script exits 4");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        VALUE,
        "delivered intact through stdin"
    );
    let s = fleet.status("web-1");
    assert_eq!(condition(&s, "SecretsResolved")["status"], "True");
    let failed = component(&s, "use-secret");
    assert!(
        failed["message"].as_str().unwrap().contains("password was [REDACTED]"),
        "{failed}"
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!printed.contains(VALUE), "printed: {printed}");
    std::fs::remove_file(&got).unwrap();
    let everything = all_text(fleet.dir.path());
    assert!(
        !everything.contains(VALUE),
        "a file under the tree holds the secret in plaintext"
    );
}

#[test]
fn every_pass_is_recorded_in_history_with_what_changed() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    let spec = |version: &str, extra: &str| {
        format!(
            "  config: {{{extra}}}\n  components:\n    - name: file\n      version: \"{version}\"\n      config: {{path: {}, content: x}}\n",
            out.display()
        )
    };
    fleet.server("web-1", &spec("1", ""));
    assert!(fleet.reconcile(&[]).status.success());
    fleet.server("web-1", &spec("2", "smtp: {host: mail}"));
    assert!(fleet.reconcile(&[]).status.success());
    let history = fleet.chom(&["history", "-o", "json"], "");
    let records: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    let last = &records[1]["servers"][0];
    let changes: Vec<&str> = last["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(changes.contains(&"component file version 1 → 2"), "{changes:?}");
    assert!(
        changes.iter().any(|c| c.starts_with("config keys added: smtp.host")),
        "{changes:?}"
    );
    assert!(records[1]["deployer"].as_str().unwrap().contains('@'));
    let hardware = fleet.chom(&["history", "web-1", "--hardware", "-o", "json"], "");
    let snapshots: Vec<Value> = serde_json::from_slice(&hardware.stdout).unwrap();
    assert_eq!(snapshots.len(), 1, "unchanged hardware is snapshotted once");
    let table = fleet.chom(&["history"], "");
    assert!(String::from_utf8_lossy(&table.stdout).contains("web-1"));
}

#[test]
fn rollback_reapplies_the_previous_script_and_pins_until_resume() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    let script = |v: &str| format!("printf '{v}' > \"$CHOM_CFG_PATH\"\necho '::chom:: changed'\n");
    fleet.script("app.sh", script("v1"));
    fleet.server(
        "web-1",
        &format!(
            "  components:\n    - name: app\n      config: {{path: {}}}\n",
            out.display()
        ),
    );
    assert!(fleet.reconcile(&[]).status.success());
    fleet.script("app.sh", script("v2"));
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v2");

    let kh = fleet.sshd.known_hosts.to_str().unwrap().to_owned();
    let rollback = fleet.chom(&["rollback", "--known-hosts", &kh, "web-1"], "");
    assert!(
        rollback.status.success(),
        "{}{}",
        String::from_utf8_lossy(&rollback.stdout),
        String::from_utf8_lossy(&rollback.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "v1",
        "the previous script ran on the server"
    );
    let s = fleet.status("web-1");
    assert_eq!(condition(&s, "Pinned")["status"], "True");
    assert_eq!(condition(&s, "Ready")["reason"], "Pinned");

    let pinned = fleet.reconcile(&[]);
    assert!(pinned.status.success(), "a pinned server is not a failure");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v1", "the pin holds");

    assert!(fleet.chom(&["resume", "web-1"], "").status.success());
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "v2",
        "released: the current script is applied again"
    );
    assert!(condition(&fleet.status("web-1"), "Pinned").is_null());
    // The rollback is a deployment in the history, between the two passes and the last.
    let history = fleet.chom(&["history", "web-1", "-o", "json"], "");
    let records: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records.len(), 4, "{records:#?}");
    let audit = std::fs::read_to_string(fleet.dir.path().join(".chom/audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"action\":\"rollback\"") && audit.contains("\"action\":\"resume\""),
        "{audit}"
    );
}

#[test]
fn shared_helpers_in_scripts_lib_are_sent_before_each_script() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    fleet.script("lib/helpers.sh", "greet() { printf 'hello %s' \"$1\"; }\n");
    fleet.script("greet.sh", "greet \"$CHOM_SERVER\" > \"$CHOM_CFG_PATH\"\n");
    fleet.server(
        "web-1",
        &format!(
            "  components:\n    - name: greet\n      config: {{path: {}}}\n",
            out.display()
        ),
    );
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello web-1");
    // A changed helper changes the digest: the component is applied again.
    let digest = component(&fleet.status("web-1"), "greet")["appliedDigest"].clone();
    fleet.script("lib/helpers.sh", "greet() { printf 'hi %s' \"$1\"; }\n");
    assert!(fleet.reconcile(&[]).status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hi web-1");
    assert_ne!(component(&fleet.status("web-1"), "greet")["appliedDigest"], digest);
}

/// On a root login one pass runs its components in one shell session: both scripts see the
/// same session shell (`$$`), each in a subshell of its own (an `exit` ends only the first,
/// a variable set there is gone in the second). The next pass with a changed component opens
/// a new session.
#[test]
fn a_pass_on_a_root_login_runs_its_components_in_one_session() {
    if sshd::current_user() != "root" {
        return;
    }
    let fleet = Fleet::new();
    let log = fleet.dir.path().join("pids.log");
    for (name, tail) in [("first", "leaked=yes\nexit 0"), ("second", "true")] {
        std::fs::write(
            fleet.dir.path().join(format!("scripts/{name}.sh")),
            format!(
                "echo \"{name} $$ ${{leaked:-no}} $CHOM_CFG_ROUND\" >> {}\n{tail}\n",
                log.display()
            ),
        )
        .unwrap();
    }
    let spec = |round: u32| {
        format!(
            "  components:\n    - name: first\n      config: {{round: {round}}}\n    - name: second\n      config: {{round: {round}}}\n"
        )
    };
    fleet.server("web-1", &spec(1));
    assert!(fleet.reconcile(&[]).status.success());
    fleet.server("web-1", &spec(2));
    assert!(fleet.reconcile(&[]).status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0][0], "first");
    assert_eq!(lines[1][0], "second");
    assert_eq!(lines[0][1], lines[1][1], "one session shell for the pass:\n{text}");
    assert_eq!(lines[1][2], "no", "variables stay in their own script:\n{text}");
    assert_eq!(lines[2][1], lines[3][1], "{text}");
    assert_ne!(lines[0][1], lines[2][1], "a session per pass:\n{text}");
    assert_eq!((lines[0][3], lines[2][3]), ("1", "2"), "{text}");
}

#[test]
fn get_lists_every_server_with_a_file_or_a_status_and_shows_validity_and_drift() {
    let fleet = Fleet::new();
    let out = fleet.out("web-1");
    let component = format!(
        "  components:\n    - name: file\n      config: {{path: {}, content: hello}}\n",
        out.display()
    );
    fleet.server("web-1", &component);
    fleet.server("web-2", "");
    assert!(fleet.reconcile(&[]).status.success());
    // web-2's file breaks after its pass; web-3 is new and never reconciled.
    fleet.server("web-2", "  colour: blue\n");
    fleet.server("web-3", "");
    let get = fleet.chom(&["get"], "");
    let text = String::from_utf8_lossy(&get.stdout).into_owned();
    assert!(get.status.success(), "{text}{}", String::from_utf8_lossy(&get.stderr));
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} is listed: {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("web-1")[..6],
        ["web-1", "True", "Reconciled", "True", "True", "False"]
    );
    assert_eq!(line("web-2")[3], "False", "web-2's file is invalid: {text}");
    assert!(line("web-2").join(" ").contains("spec invalid"), "{text}");
    assert_eq!(line("web-3")[1..3], ["Unknown", "NotReconciled"]);

    let one = fleet.chom(&["get", "web-2"], "");
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let json = fleet.chom(&["get", "-o", "json"], "");
    let docs: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    let names: Vec<&str> = docs.iter().map(|d| d["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"], "the same servers as the table");
    assert_eq!(condition(&docs[1], "SpecValid")["status"], "False");
    assert_eq!(fleet.chom(&["get", "web-9"], "").status.code(), Some(2));
}

/// `chom reconcile` in the background, its stdout and stderr in files.
fn spawn_reconcile(fleet: &Fleet, extra: &[&str]) -> (std::process::Child, std::path::PathBuf) {
    let log = fleet.dir.path().join("reconcile.stdout");
    let child = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(fleet.dir.path())
        .env("HOME", fleet.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .args(["reconcile", "--known-hosts", fleet.sshd.known_hosts.to_str().unwrap()])
        .args(extra)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(fleet.dir.path().join("reconcile.stderr")).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// Waits (bounded) until `path` exists.
fn wait_file(path: &Path, limit: std::time::Duration) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < limit, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut std::process::Child, limit: std::time::Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("chom reconcile did not exit within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn interrupt(child: &std::process::Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
}

/// Writes its PID, sleeps, then says it finished.
const SLOW_SCRIPT: &str =
    "echo $$ > \"$CHOM_CFG_PIDFILE\"\nsleep \"$CHOM_CFG_SECONDS\"\necho done > \"$CHOM_CFG_PIDFILE.done\"\n";

fn slow_server(fleet: &Fleet, name: &str, seconds: u32) -> std::path::PathBuf {
    fleet.script("slow.sh", SLOW_SCRIPT);
    let pidfile = fleet.dir.path().join(format!("{name}.pid"));
    fleet.server(
        name,
        &format!(
            "  components:\n    - name: slow\n      config: {{pidfile: {}, seconds: {seconds}}}\n",
            pidfile.display()
        ),
    );
    pidfile
}

#[test]
fn a_first_ctrl_c_lets_running_servers_finish_and_starts_no_new_one() {
    let fleet = Fleet::new();
    let pid_1 = slow_server(&fleet, "web-1", 2);
    let pid_2 = slow_server(&fleet, "web-2", 2);
    let (mut child, log) = spawn_reconcile(&fleet, &["--workers", "1"]);
    let limit = std::time::Duration::from_secs(20);
    let started = std::time::Instant::now();
    while !pid_1.exists() && !pid_2.exists() {
        assert!(started.elapsed() < limit, "no script started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (first, second) = if pid_1.exists() {
        ("web-1", "web-2")
    } else {
        ("web-2", "web-1")
    };
    interrupt(&child);
    let status = wait_exit(&mut child, limit);
    let stdout = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("interrupted, 1 not started"),
        "the summary is printed: {stdout}"
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line(first).contains("Succeeded"), "{stdout}");
    assert!(line(second).contains("NotStarted"), "{stdout}");
    let first_pid = fleet.dir.path().join(format!("{first}.pid.done"));
    assert!(first_pid.exists(), "the running script was let finish");
    assert!(
        !fleet.dir.path().join(format!("{second}.pid")).exists(),
        "no new server started"
    );
    assert_eq!(condition(&fleet.status(first), "Ready")["status"], "True");
    // Its pass is in the history.
    let history = fleet.chom(&["history", first, "-o", "json"], "");
    let records: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records.len(), 1, "{records:#?}");
}

#[test]
fn a_second_ctrl_c_kills_the_remote_scripts_and_records_them_as_interrupted() {
    let fleet = Fleet::new();
    let pidfile = slow_server(&fleet, "web-1", 60);
    let (mut child, log) = spawn_reconcile(&fleet, &[]);
    wait_file(&pidfile, std::time::Duration::from_secs(20));
    let remote: String = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    interrupt(&child);
    std::thread::sleep(std::time::Duration::from_millis(300));
    interrupt(&child);
    let status = wait_exit(&mut child, std::time::Duration::from_secs(20));
    let stdout = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("Interrupted"), "{stdout}");
    // The remote script is gone (bounded wait: the kill goes over SSH).
    let started = std::time::Instant::now();
    while Command::new("kill")
        .args(["-0", &remote])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the remote script {remote} still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!fleet.dir.path().join("web-1.pid.done").exists());
    let s = fleet.status("web-1");
    assert_eq!(condition(&s, "Ready")["reason"], "Interrupted", "{s}");
    let message = component(&s, "slow")["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("interrupted"), "{message}");
}

#[test]
fn scripts_arrive_byte_for_byte_and_status_keeps_the_end_of_long_output() {
    let fleet = Fleet::new();
    let out = fleet.out("latin1");
    // A Latin-1 é (0xE9), which is not UTF-8.
    let mut latin1 = format!(
        "printf '%s' 'caf\u{1}' > '{}'\necho '::chom:: changed'\n",
        out.display()
    )
    .into_bytes();
    let at = latin1.iter().position(|&b| b == 1).unwrap();
    latin1[at] = 0xE9;
    fleet.script("latin1.sh", &latin1);
    fleet.script(
        "many.sh",
        "i=0; while [ $i -lt 20002 ]; do echo \"::chom:: resource file /srv/$i\"; i=$((i + 1)); done\n",
    );
    // 3 MB of stderr, then the line that says what went wrong.
    fleet.script("noisy.sh", "i=0; while [ $i -lt 30000 ]; do printf '%0100d\\n' $i >&2; i=$((i + 1)); done\necho 'the real error: disk full' >&2\nexit 3\n");
    fleet.server(
        "web-1",
        "  components:\n    - name: latin1\n    - name: many\n    - name: noisy\n",
    );
    let run = fleet.reconcile(&[]);
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), b"caf\xe9");
    let status = fleet.status("web-1");
    let many = component(&status, "many");
    assert_eq!(many["resources"].as_array().unwrap().len(), 100);
    assert_eq!(many["resourcesNotListed"], 20_002 - 100);
    let noisy = component(&status, "noisy");
    let message = noisy["message"].as_str().unwrap();
    assert!(message.ends_with("the real error: disk full"), "{message}");
    assert!(message.len() < 9 * 1024, "{} bytes", message.len());
    let size = std::fs::metadata(fleet.dir.path().join("inventory.d/web-1.status.yaml"))
        .unwrap()
        .len();
    assert!(size < 256 * 1024, "{size} bytes");
}

#[test]
fn a_script_left_running_by_a_killed_run_never_runs_twice_at_once() {
    let fleet = Fleet::new();
    let log = fleet.dir.path().join("overlap.log");
    fleet.script(
        "slow.sh",
        format!(
            "echo \"start $$\" >> '{log}'\nsleep 5\necho \"end $$\" >> '{log}'\necho '::chom:: changed'\n",
            log = log.display()
        ),
    );
    fleet.server("web-1", "  components:\n    - name: slow\n      timeout: 60s\n");
    // The first run dies (kill -9) while its script runs on the server, which goes on.
    let (mut first, _) = spawn_reconcile(&fleet, &[]);
    wait_file(&log, std::time::Duration::from_secs(30));
    first.kill().unwrap();
    first.wait().unwrap();
    // The next run waits for the server's script lock instead of starting a second copy.
    let second = fleet.reconcile(&[]);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(lines, ["start", "end", "start", "end"], "the two runs overlapped");
    assert_eq!(component(&fleet.status("web-1"), "slow")["state"], "Applied");
}

#[test]
fn a_secret_printed_with_its_escapes_interpreted_or_in_hex_is_redacted() {
    // dash's `echo` and `printf %b` turn `\t` into a tab and `\\` into one backslash: the
    // printed text is no longer the value, but must not leak.
    const VALUE: &str = r"c4n4ry\tp@ssw0rd\\after-the-escape";
    const TAIL: &str = "p@ssw0rd";
    let fleet = Fleet::new();
    let key = fleet.dir.path().join("age.key");
    let keygen = fleet.chom(&["secrets", "keygen", "--out", key.to_str().unwrap()], "");
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let set = fleet.chom(&["secrets", "set", "DB_PASSWORD"], VALUE);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    fleet.script("use-secret.sh", "printf '%b\\n' \"password was $DB_PASSWORD\" >&2\nprintf '%s' \"$DB_PASSWORD\" | od -An -tx1 | tr -d ' \\n' >&2\nexit 4\n");
    fleet.server(
        "web-1",
        "  secrets: [DB_PASSWORD]\n  components:\n    - name: use-secret\n",
    );
    let run = fleet.reconcile_traced(&key);
    assert_eq!(run.status.code(), Some(1), "the script exits 4");
    let s = fleet.status("web-1");
    let message = component(&s, "use-secret")["message"].as_str().unwrap().to_owned();
    assert!(message.contains("password was [REDACTED]"), "{message}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let everything = all_text(fleet.dir.path());
    for (what, text) in [
        ("status message", &message),
        ("output", &printed),
        ("files", &everything),
    ] {
        assert!(!text.contains(TAIL), "the secret leaked into the {what}: {text}");
        assert!(!text.contains("7373773072"), "its hex leaked into the {what}: {text}");
    }
    let status_file = fleet.dir.path().join("inventory.d/web-1.status.yaml");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&status_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640, "status files are not world-readable");
}

#[test]
fn logs_written_to_a_file_have_no_colour_codes_and_name_the_server() {
    let fleet = Fleet::new();
    fleet.server("web-1", "  components:\n    - name: fail\n");
    fleet.server("web-2", "");
    // `chom reconcile 2>err.log`: stderr is a file, not a terminal.
    let log = fleet.dir.path().join("err.log");
    let run = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(fleet.dir.path())
        .env("HOME", fleet.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("NO_COLOR")
        .env_remove("CHOM_LOG")
        .args(["reconcile", "--known-hosts", fleet.sshd.known_hosts.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!err.contains('\x1b'), "no ANSI escapes in a file:\n{err:?}");
    let failed = err
        .lines()
        .find(|l| l.contains("WARN") && l.contains("component failed"))
        .unwrap_or_else(|| panic!("a WARN line for the failed component:\n{err}"));
    assert!(
        failed.contains("server=web-1") && failed.contains("component=fail"),
        "{failed}"
    );
    // Without a terminal, progress is a plain line per server as it finishes.
    let plain: Vec<&str> = err.lines().filter(|l| l.starts_with("reconciling: ")).collect();
    assert_eq!(plain.len(), 2, "{err}");
    assert!(
        plain
            .iter()
            .any(|l| l.starts_with("reconciling: web-1 Failed ComponentFailed in ")),
        "{err}"
    );
    assert!(
        plain.iter().any(|l| l.starts_with("reconciling: web-2 Succeeded ")),
        "{err}"
    );
    assert!(plain.iter().any(|l| l.ends_with("[2/2]")), "{err}");
}

#[test]
fn a_program_a_script_leaves_in_the_background_never_holds_the_script_lock() {
    let fleet = Fleet::new();
    let pidfile = fleet.dir.path().join("bg.pid");
    fleet.script(
        "bg.sh",
        format!(
            "sleep 60 >/dev/null 2>&1 </dev/null &\necho $! > '{}'\necho '::chom:: changed'\n",
            pidfile.display()
        ),
    );
    let server = |round: u32| {
        fleet.server(
            "web-1",
            &format!("  components:\n    - name: bg\n      timeout: 60s\n      config: {{round: {round}}}\n"),
        );
    };
    server(1);
    assert!(fleet.reconcile(&[]).status.success());
    let first_sleep = std::fs::read_to_string(&pidfile).unwrap();
    // The sleep still runs; the next run must not wait the 30 s the lock allows for it.
    server(2);
    let started = std::time::Instant::now();
    let second = fleet.reconcile(&[]);
    let took = started.elapsed();
    for pid in [first_sleep, std::fs::read_to_string(&pidfile).unwrap()] {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(
        took < std::time::Duration::from_secs(15),
        "the second run waited {took:?}"
    );
}
