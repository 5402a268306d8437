//! The operator's command line through the real binary: completions and man pages,
//! per-command help, label selectors, output documents, `get -w`, "did you mean",
//! duration messages, the pre-commit hook over the whole tree, and the smaller fixes
//! (schema secretset, secrets --server, orphaned status files, a dirty commit in history,
//! init and import-legacy agreeing on schemas/).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROLE: &str = "apiVersion: chom.dev/v1
kind: Role
metadata:
  name: web
spec:
  requirements: {minCpu: 1}
";

/// A server at an address nothing listens on: every pass fails at once, without sshd.
fn server(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: chom.dev/v1
kind: Server
metadata:
  name: {name}
  labels: {labels}
spec:
  address: 127.0.0.1
  ssh: {{port: 1}}
  role: web
  components:
    - name: motd
"
    )
}

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    /// web-1 (env=prod, tier=web), web-2 (env=staging), db-1 (env=prod, tier=db, gpu).
    fn new() -> Self {
        let tree = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        tree.write("inventory.d/web.yaml", ROLE);
        tree.write("inventory.d/web-1.yaml", &server("web-1", "{env: prod, tier: web}"));
        tree.write("inventory.d/web-2.yaml", &server("web-2", "{env: staging}"));
        tree.write(
            "inventory.d/db-1.yaml",
            &server("db-1", "{env: prod, tier: db, example.com/gpu: \"\"}"),
        );
        tree.write("scripts/motd.sh", "#!/bin/sh\ntrue\n");
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn chom(&self, args: &[&str]) -> Output {
        chom_in(self.dir.path(), args)
    }
}

fn chom_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(dir)
        .args(args)
        .env_remove("CHOM_INVENTORY")
        .env_remove("CHOM_STATE_DIR")
        .env_remove("CHOM_AGE_IDENTITY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Names in the first column of a table, header left out.
fn first_column(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

// ---- completions, man pages, help ----

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    let bash = chom_in(dir.path(), &["completion", "bash"]);
    assert_eq!(code(&bash), 0, "{}", stderr(&bash));
    let text = stdout(&bash);
    assert!(text.contains("_chom"), "{text}");
    for sub in [
        "validate",
        "reconcile",
        "plan",
        "get",
        "history",
        "completion",
        "secrets",
    ] {
        assert!(text.contains(sub), "bash completion lacks {sub}");
    }
    assert!(text.contains("--selector"), "options complete too");
    for shell in ["zsh", "fish"] {
        let out = chom_in(dir.path(), &["completion", shell]);
        assert_eq!(code(&out), 0);
        assert!(stdout(&out).contains("reconcile"), "{shell}");
    }
    let bad = chom_in(dir.path(), &["completion", "powershell"]);
    assert_eq!(code(&bad), 2);
}

#[test]
fn man_pages_are_written_for_chom_and_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = chom_in(dir.path(), &["man", "--out", "man"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for page in [
        "chom.1",
        "chom-plan.1",
        "chom-get.1",
        "chom-secrets.1",
        "chom-secrets-set.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join("man").join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let plan = std::fs::read_to_string(dir.path().join("man/chom-plan.1")).unwrap();
    assert!(plan.contains("Exit codes") && plan.contains("selector"), "{plan}");
}

#[test]
fn every_command_help_shows_examples_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    for command in [
        "secrets set",
        "secrets list",
        "secrets check",
        "secrets rotate",
        "secrets keygen",
        "validate",
        "schema",
        "init",
        "detect",
        "trust",
        "reconcile",
        "get",
        "history",
        "rollback",
        "resume",
        "plan",
        "daemon",
        "demo",
        "secrets",
        "import-legacy",
        "completion",
        "man",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = chom_in(dir.path(), &args);
        assert_eq!(code(&out), 0, "{command}");
        let text = stdout(&out);
        assert!(text.contains("Examples:"), "{command} --help has no examples:\n{text}");
        assert!(
            text.contains("Exit codes:"),
            "{command} --help has no exit codes:\n{text}"
        );
    }
    let plan = stdout(&chom_in(dir.path(), &["plan", "--help"]));
    assert!(plan.contains("0 nothing to do, 3 changes pending, 1 errors"), "{plan}");
    let validate = stdout(&chom_in(dir.path(), &["validate", "--help"]));
    assert!(
        validate.contains("0 no errors") && validate.contains("1 errors found"),
        "{validate}"
    );
}

#[test]
fn each_command_lists_only_the_options_it_uses() {
    let dir = tempfile::tempdir().unwrap();
    let help = |c: &str| stdout(&chom_in(dir.path(), &[c, "--help"]));
    let trust = help("trust");
    for absent in [
        "--scripts",
        "--secrets",
        "--age-identity",
        "--ssh-max-idle",
        "--ssh-idle-timeout",
        "--max-handshakes",
    ] {
        assert!(!trust.contains(absent), "trust --help lists {absent}");
    }
    for present in ["--known-hosts", "--connect-timeout", "--inventory", "--yes"] {
        assert!(trust.contains(present), "trust --help lacks {present}");
    }
    let detect = help("detect");
    assert!(
        !detect.contains("--age-identity") && !detect.contains("--scripts"),
        "{detect}"
    );
    let get = help("get");
    assert!(!get.contains("--known-hosts") && !get.contains("--scripts"), "{get}");
    for c in ["reconcile", "plan", "daemon", "rollback"] {
        let text = help(c);
        assert!(text.contains("--age-identity") && text.contains("--scripts"), "{c}");
    }
    // An option a command does not take is a usage error, not silently accepted.
    let out = chom_in(dir.path(), &["trust", "--scripts", "x", "web-1"]);
    assert_eq!(code(&out), 2);
}

// ---- selectors and output documents ----

#[test]
fn get_selects_servers_by_label() {
    let tree = Tree::new();
    let names = |sel: &str| {
        let out = tree.chom(&["get", "-l", sel]);
        assert_eq!(code(&out), 0, "{sel}: {}", stderr(&out));
        first_column(&stdout(&out))
    };
    assert_eq!(names("env=prod"), ["db-1", "web-1"]);
    assert_eq!(names("env==prod,tier!=db"), ["web-1"]);
    assert_eq!(names("tier"), ["db-1", "web-1"]);
    assert_eq!(names("!tier"), ["web-2"]);
    assert_eq!(names("example.com/gpu"), ["db-1"]);
    assert_eq!(names("env!=prod"), ["web-2"]);
    // Names and a selector: both must hold.
    let out = tree.chom(&["get", "web-1", "web-2", "-l", "env=prod", "-o", "json"]);
    let docs: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: Vec<&str> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["web-1"]);
    let none = tree.chom(&["get", "-l", "env=nowhere"]);
    assert_eq!(code(&none), 0);
    assert!(
        stderr(&none).contains("no server matches the selector `env=nowhere`"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn a_bad_selector_is_a_usage_error_that_says_the_syntax() {
    let tree = Tree::new();
    for bad in ["env in (a,b)", "env=prod,", "-x=1", "env=a b"] {
        for command in ["get", "plan", "reconcile", "detect", "history"] {
            let out = tree.chom(&[command, &format!("--selector={bad}")]);
            assert_eq!(code(&out), 2, "{command} -l {bad:?}");
            let err = stderr(&out);
            assert!(err.contains("invalid selector"), "{command} -l {bad:?}: {err}");
        }
    }
    let out = tree.chom(&["get", "-l", "env in (a,b)"]);
    assert!(stderr(&out).contains("expected key=value, key==value, key!=value, key or !key"));
}

#[test]
fn plan_and_reconcile_pick_servers_by_label_and_print_documents() {
    let tree = Tree::new();
    let timeout = ["--connect-timeout", "2"];
    // plan -o json: the documented shape.
    let mut args = vec!["plan", "-l", "env=prod,tier=web", "-o", "json"];
    args.extend(timeout);
    let out = tree.chom(&args);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(doc["apiVersion"], "chom.dev/v1");
    assert_eq!(doc["kind"], "Plan");
    let items = doc["items"].as_array().unwrap();
    assert!(
        !items.is_empty() && items.iter().all(|i| i["server"] == "web-1"),
        "{doc:#}"
    );
    assert_eq!(items[0]["verdict"], "error", "nothing listens there: {doc:#}");
    assert!(items[0]["component"].is_string() && items[0]["plan"].is_string() && items[0]["detail"].is_string());
    assert_eq!(doc["summary"]["errors"], 1);
    assert_eq!(doc["summary"]["exitCode"], 1);
    assert_eq!(code(&out), 1);
    // plan -o yaml is the same document.
    let mut args = vec!["plan", "web-2", "-o", "yaml"];
    args.extend(timeout);
    let out = tree.chom(&args);
    let text = stdout(&out);
    assert!(
        text.contains("kind: Plan") && text.contains("server: web-2") && text.contains("exitCode: 1"),
        "{text}"
    );

    // reconcile -o json, selected by label.
    let mut args = vec!["reconcile", "-l", "env=prod", "-o", "json"];
    args.extend(timeout);
    let out = tree.chom(&args);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(doc["kind"], "ReconcileSummary");
    assert!(doc["deploymentId"].as_str().is_some_and(|d| !d.is_empty()));
    let names: Vec<&str> = doc["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-1", "web-1"]);
    let s = &doc["servers"][0];
    assert_eq!(s["result"], "Failed");
    assert_eq!(s["ok"], false);
    assert!(s["tookMs"].is_u64() && s["changed"] == 0 && s["reason"].is_string() && s["message"].is_string());
    assert_eq!(doc["summary"]["servers"], 2);
    assert_eq!(doc["summary"]["failed"], 2);
    assert_eq!(doc["summary"]["exitCode"], 1);
    assert_eq!(code(&out), 1);
    assert!(
        !tree.path("inventory.d/web-2.status.yaml").exists(),
        "web-2 was not selected"
    );
    assert!(tree.path("inventory.d/web-1.status.yaml").exists());

    // A selector that matches nothing does nothing (never "all servers").
    let out = tree.chom(&["reconcile", "-l", "env=nowhere"]);
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("no server matches"));
    assert!(!tree.path("inventory.d/web-2.status.yaml").exists());
}

#[test]
fn history_selects_by_label_and_marks_a_dirty_tree() {
    let tree = Tree::new();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .current_dir(tree.dir.path())
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(tree.path(".gitignore"), "*.status.yaml\n.chom/\n.chom.*\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "fleet"]);
    // Clean: the commit alone.
    let out = tree.chom(&["reconcile", "web-2", "--connect-timeout", "2"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let json: Value = serde_json::from_str(&stdout(&tree.chom(&["history", "-o", "json"]))).unwrap();
    let commit = json[0]["commit"].as_str().unwrap().to_owned();
    assert!(!commit.contains("dirty"), "{commit}");
    // A change not committed: the record says so.
    tree.write(
        "inventory.d/web-1.yaml",
        &server("web-1", "{env: prod, tier: web, changed: \"yes\"}"),
    );
    let out = tree.chom(&["reconcile", "web-1", "--connect-timeout", "2"]);
    assert_eq!(code(&out), 1);
    let table = stdout(&tree.chom(&["history"]));
    let row = table
        .lines()
        .find(|l| l.contains(" web-1 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&format!("{}+dirty", &commit[..8])), "{table}");
    // -l: only the selected servers' rows.
    let selected = stdout(&tree.chom(&["history", "-l", "env=staging"]));
    assert!(
        selected.contains(" web-2 ") && !selected.contains(" web-1 "),
        "{selected}"
    );
}

#[test]
fn get_watch_prints_again_when_a_status_changes() {
    let tree = Tree::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(tree.dir.path())
        .args(["get", "-w", "--watch-interval", "100ms", "web-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout_pipe = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout_pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_for = |lines: &mut Vec<String>, what: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !what(lines) && Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                lines.push(line);
            }
        }
        what(lines)
    };
    let first = wait_for(&mut lines, &|l| l.iter().any(|x| x.contains("NotReconciled")));
    // A pass writes web-1's status; the watch prints the new view.
    let pass = tree.chom(&["reconcile", "web-1", "--connect-timeout", "2"]);
    let second = wait_for(&mut lines, &|l| {
        let headers: Vec<usize> = (0..l.len()).filter(|&i| l[i].starts_with("NAME")).collect();
        headers.len() >= 2 && l.len() > headers[headers.len() - 1] + 1
    });
    // Stopped by its PID whatever happened above.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let _ = reader.join();
    assert!(first, "no first view: {lines:?}");
    assert_eq!(code(&pass), 1);
    assert!(second, "no second view after the status changed: {lines:?}");
    let last_header = lines.iter().rposition(|l| l.starts_with("NAME")).unwrap();
    assert!(
        lines[last_header + 1].starts_with("web-1") && !lines[last_header + 1].contains("NotReconciled"),
        "{lines:?}"
    );
}

// ---- did you mean, durations ----

#[test]
fn unknown_names_suggest_the_closest_known_one() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-3.yaml",
        "apiVersion: chom.dev/v1
kind: Server
metadata:
  name: web-3
spec:
  address: 192.0.2.30
  role: wbe
  dependOn: [web-1]
",
    );
    tree.write(
        "inventory.d/web-4.yaml",
        "apiVersion: chom.dev/v1
kind: Server
metadata:
  name: web-4
spec:
  address: 192.0.2.40
  role: web
  dependsOn: [web-11]
",
    );
    let out = tree.chom(&["validate", "--format", "json"]);
    assert_eq!(code(&out), 1);
    let findings: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let message = |code: &str| {
        findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == code)
            .map(|f| f["message"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {code} in {findings:#}"))
    };
    assert_eq!(
        message("unknown-field"),
        "unknown field `dependOn`; did you mean `dependsOn`?"
    );
    assert_eq!(
        message("unknown-dependency"),
        "server `web-11` is not defined; did you mean `web-1`?"
    );
    let unknown_field = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "unknown-field")
        .unwrap();
    assert!(
        unknown_field["help"].as_str().unwrap().contains("driftPolicy"),
        "the help lists the schema's fields"
    );
    // The role is reported once the field is fixed (the file is checked by the schema first).
    tree.write(
        "inventory.d/web-3.yaml",
        "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: web-3\nspec:\n  address: 192.0.2.30\n  role: wbe\n",
    );
    let out = tree.chom(&["validate"]);
    assert!(
        stdout(&out).contains("role `wbe` is not defined; did you mean `web`?"),
        "{}",
        stdout(&out)
    );
    // Server names on the command line.
    let out = tree.chom(&["plan", "web-11"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("did you mean `web-1`?"), "{}", stderr(&out));
    let out = tree.chom(&["get", "db1"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("did you mean `db-1`?"), "{}", stderr(&out));
}

#[test]
fn an_invalid_duration_names_the_form_never_the_regex() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        &server("web-1", "{}").replace("  components:", "  interval: 10x\n  components:"),
    );
    let out = tree.chom(&["validate"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.contains("expected a duration such as 30s, 10m, 1h30m"), "{text}");
    assert!(!text.contains("^(") && !text.contains("ms|s|m"), "{text}");
    let out = tree.chom(&["daemon", "--debounce", "soon"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("expected a duration such as 30s, 10m, 1h30m"),
        "{}",
        stderr(&out)
    );
    tree.write(
        "chom.yaml",
        "apiVersion: chom.dev/v1\nkind: Config\nssh: {idleTimeout: 5 minutes}\n",
    );
    let out = tree.chom(&["validate"]);
    assert!(
        stdout(&out).contains("expected a duration such as 30s, 10m, 1h30m"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_label_keys_and_values_are_findings() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", &server("web-1", "{-bad: x}"));
    tree.write("inventory.d/web-2.yaml", &server("web-2", "{env: \"not ok\"}"));
    let out = tree.chom(&["validate"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.contains("a label key is not valid"), "{text}");
    assert!(text.contains("is not a label value"), "{text}");
}

#[test]
fn a_dependency_cycle_is_reported_beside_a_schema_error_in_the_same_file() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        &server("web-1", "{}").replace("  components:", "  dependsOn: [web-2]\n  colour: blue\n  components:"),
    );
    tree.write(
        "inventory.d/web-2.yaml",
        &server("web-2", "{}").replace("  components:", "  dependsOn: [web-1]\n  components:"),
    );
    let out = tree.chom(&["validate"]);
    let text = stdout(&out);
    assert!(text.contains("unknown-field"), "{text}");
    assert!(
        text.contains("dependsOn forms a cycle: web-1 → web-2 → web-1"),
        "{text}"
    );
}

// ---- pre-commit ----

#[test]
fn the_pre_commit_hook_checks_the_whole_tree_and_deletions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(".pre-commit-hooks.yaml")).unwrap();
    let hooks = chom::validate::parse_document(Path::new(".pre-commit-hooks.yaml"), &text).unwrap();
    let hook = &hooks.value[0];
    assert_eq!(hook["id"], "chom-validate");
    // pre-commit passes no deleted file, so only always_run makes a deletion run it, and
    // the whole tree is checked rather than the files named.
    assert_eq!(hook["always_run"], true, "{text}");
    assert_eq!(hook["pass_filenames"], false, "{text}");
    let files = hook["files"].as_str().unwrap();
    for part in ["inventory\\.d/", "scripts/", "secrets\\.d/", "chom\\.ya?ml"] {
        assert!(files.contains(part), "files: {files}");
    }
    let entry = hook["entry"].as_str().unwrap();
    let mut words = entry.split_whitespace();
    assert_eq!(words.next(), Some("chom"));
    let args: Vec<&str> = words.collect();

    // The entry, run as pre-commit runs it, on a tree where a script was deleted.
    let tree = Tree::new();
    assert_eq!(code(&tree.chom(&args)), 0, "a clean tree passes");
    std::fs::remove_file(tree.path("scripts/motd.sh")).unwrap();
    let out = tree.chom(&args);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(
        text.contains("error[missing-script]") && text.contains("scripts/motd.sh"),
        "{text}"
    );
}

#[test]
fn the_pre_commit_hook_catches_a_deleted_secrets_file() {
    let tree = Tree::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A server that references the example fleet's secrets, with their files copied.
    std::fs::create_dir_all(tree.path("secrets.d")).unwrap();
    for f in std::fs::read_dir(root.join("secrets.d")).unwrap().flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), tree.path("secrets.d").join(f.file_name())).unwrap();
        }
    }
    tree.write(
        "inventory.d/web-1.yaml",
        &server("web-1", "{}").replace("  components:", "  secrets: [SMTP_PASSWORD]\n  components:"),
    );
    assert_eq!(
        code(&tree.chom(&["validate"])),
        0,
        "{}",
        stdout(&tree.chom(&["validate"]))
    );
    std::fs::remove_file(tree.path("secrets.d/common.yaml")).unwrap();
    let out = tree.chom(&["validate"]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("undefined-secret"), "{}", stdout(&out));
}

// ---- smaller fixes ----

#[test]
fn schema_prints_every_schema_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = chom_in(dir.path(), &["schema", "--write", "s"]);
    assert_eq!(code(&out), 0);
    for (which, file) in [
        ("server", "server.schema.json"),
        ("role", "role.schema.json"),
        ("status", "status.schema.json"),
        ("secretset", "secretset.schema.json"),
        ("config", "config.schema.json"),
    ] {
        let printed = chom_in(dir.path(), &["schema", which]);
        assert_eq!(code(&printed), 0, "chom schema {which}: {}", stderr(&printed));
        let written = std::fs::read_to_string(dir.path().join("s").join(file)).unwrap();
        assert_eq!(stdout(&printed), written, "{which}");
    }
}

#[test]
fn secrets_set_refuses_a_server_that_is_not_in_the_inventory() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("secrets.d")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(tree.dir.path())
        .args(["secrets", "set", "FOO", "--server", "web-11"])
        .env_remove("CHOM_INVENTORY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("server `web-11` is not in the inventory") && err.contains("did you mean `web-1`?"),
        "{err}"
    );
    assert!(!tree.path("secrets.d/web-11.yaml").exists());
}

#[test]
fn reconcile_removes_the_status_files_of_deleted_servers() {
    let tree = Tree::new();
    tree.write("inventory.d/gone.status.yaml", "kind: ServerStatus\n");
    tree.write("inventory.d/sub/moved.status.yaml", "kind: ServerStatus\n");
    // A broken file keeps its status: its server is not gone.
    tree.write(
        "inventory.d/broken.yaml",
        "apiVersion: chom.dev/v1\nkind: Server\nmetadata: {name: broken}\n",
    );
    tree.write("inventory.d/broken.status.yaml", "kind: ServerStatus\n");
    let out = tree.chom(&["reconcile", "web-2", "--connect-timeout", "2"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(!tree.path("inventory.d/gone.status.yaml").exists());
    assert!(!tree.path("inventory.d/sub/moved.status.yaml").exists());
    assert!(tree.path("inventory.d/broken.status.yaml").exists());
    assert!(tree.path("inventory.d/web-2.status.yaml").exists());
    assert!(
        stderr(&out).contains("gone.status.yaml: its server's file is gone"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn init_and_import_legacy_both_point_at_a_schemas_folder_they_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = chom_in(dir.path(), &["init", "fleet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let server = std::fs::read_to_string(dir.path().join("fleet/inventory.d/web-1.yaml")).unwrap();
    assert!(
        server.starts_with("# yaml-language-server: $schema=../schemas/server.schema.json"),
        "{server}"
    );
    let config = std::fs::read_to_string(dir.path().join("fleet/chom.yaml")).unwrap();
    assert!(
        config.starts_with("# yaml-language-server: $schema=schemas/config.schema.json"),
        "{config}"
    );
    for file in [
        "server.schema.json",
        "role.schema.json",
        "config.schema.json",
        "secretset.schema.json",
    ] {
        assert!(dir.path().join("fleet/schemas").join(file).is_file(), "{file}");
    }
    // Each modeline resolves to a file that exists.
    let target = dir
        .path()
        .join("fleet/inventory.d")
        .join("../schemas/server.schema.json");
    assert!(target.is_file());

    let legacy = dir.path().join("legacy.yaml");
    std::fs::write(&legacy, "web1:\n  ip: 192.0.2.5\n  ssh_user: root\n").unwrap();
    let out = chom_in(dir.path(), &["import-legacy", "legacy.yaml", "--out", "imported"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let server = std::fs::read_to_string(dir.path().join("imported/inventory.d/web1.yaml")).unwrap();
    let modeline = server.lines().next().unwrap();
    let relative = modeline.strip_prefix("# yaml-language-server: $schema=").unwrap();
    assert!(
        dir.path().join("imported/inventory.d").join(relative).is_file(),
        "{modeline}"
    );
}

#[test]
fn import_legacy_dry_run_counts_every_problem_once() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.yaml");
    // An unknown key (a warning) and no .recipients for a password (an error line).
    std::fs::write(
        &legacy,
        "web1:\n  ip: 192.0.2.5\n  colour: blue\n  config: {smtp: {password: hunter22}}\n",
    )
    .unwrap();
    let out = chom_in(dir.path(), &["import-legacy", "legacy.yaml", "--dry-run"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let error_line = lines
        .iter()
        .position(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{text}"));
    let count_line = lines
        .iter()
        .position(|l| l.contains("error(s)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(count_line > error_line, "the count comes after every problem:\n{text}");
    assert_eq!(lines.iter().filter(|l| l.contains("error(s)")).count(), 1, "{text}");
    assert!(!text.contains("0 error(s)"), "{text}");
}

// ---- plan --diff, over SSH ----

#[path = "support/sshd.rs"]
mod sshd;

/// A component that manages two files with the example scripts' `ensure_file`: a plain
/// one, whose pending change `plan --diff` shows, and a secret one, only named.
const CONF_SCRIPT: &str = r#"#!/bin/sh
set -eu
COMPONENT=conf
src=$(mktemp)
printf '%s\n' "line one" "line $CHOM_CFG_VALUE" "line three" >"$src"
if is_check; then
    ensure_file "$src" "$CHOM_CFG_PATH" - -
    ensure_file "$src" "$CHOM_CFG_PATH.key" - - secret
    rm -f "$src"
    finish
fi
cp "$src" "$CHOM_CFG_PATH"
cp "$src" "$CHOM_CFG_PATH.key"
rm -f "$src"
echo "::chom:: changed"
"#;

#[test]
fn plan_diff_shows_what_a_check_would_change_in_managed_files() {
    let sshd = sshd::Sshd::start();
    let tree = Tree::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(tree.path("scripts/lib")).unwrap();
    std::fs::copy(root.join("scripts/lib/helpers.sh"), tree.path("scripts/lib/helpers.sh")).unwrap();
    tree.write("scripts/conf.sh", CONF_SCRIPT);
    let target = tree.path("app.conf");
    let server = |value: &str| {
        format!(
            "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: app-1\n  labels: {{env: test}}\nspec:\n  address: 127.0.0.1\n  ssh:\n    user: {user}\n    port: {port}\n    identityFile: {key}\n  components:\n    - name: conf\n      config: {{path: {path}, value: {value}}}\n",
            user = sshd::current_user(),
            port = sshd.port,
            key = sshd.client_key.display(),
            path = target.display(),
        )
    };
    tree.write("inventory.d/app-1.yaml", &server("two"));
    let known_hosts = sshd.known_hosts.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(tree.dir.path())
            .env("HOME", tree.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .args(args)
            .args(["--known-hosts", &known_hosts])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["reconcile", "app-1"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // Edited by hand, with a secret-looking line in the key file.
    std::fs::write(&target, "line one\nline 2 edited by hand\nline three\n").unwrap();
    std::fs::write(tree.path("app.conf.key"), "hunter2-by-hand\n").unwrap();

    let out = run(&["plan", "--diff", "-l", "env=test"]);
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let path = target.display().to_string();
    assert!(
        text.contains(&format!(
            "app-1 conf: {path}\n--- {path}\n+++ {path} (as chom would write it)\n"
        )),
        "{text}"
    );
    assert!(text.contains("\n-line 2 edited by hand\n+line two\n"), "{text}");
    assert!(
        text.contains(&format!("app-1 conf: {path}.key\n(secret file: contents not shown)\n")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "a secret file's contents never show: {text}");

    // The same in the document, under the item.
    let out = run(&["plan", "--diff", "-o", "json"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let diffs = &doc["items"][0]["diffs"];
    assert_eq!(diffs[0]["path"], path.as_str());
    assert!(diffs[0]["diff"].as_str().unwrap().contains("+line two"));
    assert_eq!(diffs[1]["secret"], true);
    assert!(diffs[1].get("diff").is_none());
    // Without --diff, no diff.
    let out = run(&["plan"]);
    assert!(!stdout(&out).contains("+line two"));
}

// ---- install ----

#[test]
fn the_readme_quick_start_and_install_sh_agree_on_how_to_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let install = std::fs::read_to_string(root.join("contrib/install.sh")).unwrap();
    let quick_start =
        &readme[readme.find("## Quick start").unwrap()..readme.find("### The real-server suite").unwrap()];
    // The demo from a fresh clone in one command, built exactly from Cargo.lock; and how to
    // put chom on PATH, reproducibly, before any bare `chom …` command is shown.
    assert!(
        quick_start.contains("\ncargo run --release --locked -- demo "),
        "{quick_start}"
    );
    let installed = quick_start
        .find("cargo install --locked --path .")
        .expect("cargo install in the quick start");
    if let Some(first_chom) = quick_start.find("\nchom ") {
        assert!(installed < first_chom, "install comes before the first chom command");
    }
    // The control host: the same build, the same way, in the README and the script.
    let build = "cargo build --release --locked && sudo contrib/install.sh target/release/chom";
    assert!(quick_start.contains(build), "quick start: {build}");
    assert!(install.contains(build), "contrib/install.sh: {build}");
    let section = &readme[readme.find("**Installing it.**").unwrap()..];
    assert!(
        section.contains("cargo build --release --locked\n"),
        "control host section builds --locked"
    );
}
