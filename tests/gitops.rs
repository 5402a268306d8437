//! GitOps end to end: a real `chom daemon` pulling its tree from a real git repository (a
//! bare repository on a local path, and one served by the loopback test sshd) into which
//! the test pushes commits, with servers that are a real OpenSSH sshd on 127.0.0.1.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet::*;
use serde_json::Value;

const SECRET: &str = "s3cret-hook-key";
const EMAIL: &str = "ops@example.com";

/// A working clone and the bare repository it pushes to.
struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "ops")
        .env("GIT_AUTHOR_EMAIL", EMAIL)
        .env("GIT_COMMITTER_NAME", "ops")
        .env("GIT_COMMITTER_EMAIL", EMAIL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repo {
    fn new(root: &Path) -> Repo {
        let bare = root.join("remote.git");
        let work = root.join("work");
        git(root, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(root, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        std::fs::create_dir_all(work.join("inventory.d")).unwrap();
        std::fs::create_dir_all(work.join("scripts")).unwrap();
        std::fs::write(work.join("scripts/file.sh"), FILE_SCRIPT).unwrap();
        Repo { work, bare }
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.work.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Commits everything (signed with `key` when given) and pushes; the new commit.
    fn commit(&self, message: &str, key: Option<&Path>) -> String {
        git(&self.work, &["add", "-A"]);
        let mut args = vec!["commit", "-q", "--allow-empty", "-m", message];
        let signing;
        if let Some(key) = key {
            signing = format!("user.signingkey={}", key.display());
            args = [
                &["-c", "gpg.format=ssh", "-c", signing.as_str()][..],
                &args[..],
                &["-S"][..],
            ]
            .concat();
        }
        git(&self.work, &args);
        git(
            &self.work,
            &["push", "-q", "--force", self.bare.to_str().unwrap(), "main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A control host: its chom.yaml (with `source:`) and its state directory.
struct Control {
    dir: PathBuf,
}

impl Control {
    fn new(root: &Path, source: &str) -> Control {
        Control::at(root.join("control"), source)
    }

    /// A control host in `dir` (several may pull one repository, each its own state).
    fn at(dir: PathBuf, source: &str) -> Control {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hook.secret"), SECRET).unwrap();
        std::fs::write(
            dir.join("chom.yaml"),
            format!("apiVersion: chom.dev/v1\nkind: Config\nstateDir: state\nsource:\n{source}  interval: 1h\n  webhook: {{secretFile: hook.secret}}\n"),
        )
        .unwrap();
        Control { dir }
    }

    fn daemon(&self, fleet: &Fleet) -> Daemon {
        self.daemon_with(fleet, &[])
    }

    /// A daemon with `extra` arguments (e.g. `--shard K/N`).
    fn daemon_with(&self, fleet: &Fleet, extra: &[&str]) -> Daemon {
        let log = self.dir.join(format!("daemon-{}.log", rand_suffix()));
        let child = Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("CHOM_STATE_DIR")
            .env("CHOM_LOG", "chom=info")
            .args(["--log-format", "json", "daemon", "--known-hosts"])
            .arg(&fleet.sshd.known_hosts)
            .args(["--rate", "1000", "--burst", "1000", "--debounce", "50ms"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn status(&self, name: &str) -> Option<Value> {
        read_yaml(&self.dir.join(format!("state/status/{name}.status.yaml")))
    }

    fn source(&self) -> Value {
        read_yaml(&self.dir.join("state/source/status.yaml")).unwrap_or(Value::Null)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("state/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn chom(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env_remove("CHOM_STATE_DIR")
            .args(args)
            .output()
            .unwrap()
    }
}

fn read_yaml(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    chom::validate::parse_document(Path::new("s.yaml"), &text)
        .ok()
        .map(|d| d.value)
}

/// POSTs a push event to the webhook, signed with `secret`; the HTTP status line.
fn push_hook(addr: &str, secret: &str) -> String {
    use std::io::{Read as _, Write as _};
    let body = br#"{"ref":"refs/heads/main"}"#;
    let signature = chom::source::hook::sign(secret.as_bytes(), body);
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_owned()
}

fn applied_commit(status: &Value) -> Option<String> {
    status["status"]["lastAppliedRevision"]["commit"]
        .as_str()
        .map(str::to_owned)
}

fn server_yaml(fleet: &Fleet, name: &str, content: &str) -> String {
    fleet.server_text(name, &fleet.file_component(name, content))
}

#[test]
fn commits_are_applied_refused_and_followed_through_force_pushes() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "one"));
    let first = repo.commit("web-1 one", None);
    let control = Control::new(
        root,
        &format!("  url: {}\n  ref: {{branch: main}}\n", repo.bare.display()),
    );
    let mut daemon = control.daemon(&fleet);
    let out = root.join("web-1.out");

    // A good commit is applied and its hash appears in the status.
    wait_for("the first commit applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(first.clone())
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "one");
    let source = control.source();
    assert_eq!(condition(&source, "SourceReady")["status"], "True");
    assert_eq!(source["status"]["lastAppliedRevision"]["commit"], first.as_str());
    assert_eq!(source["status"]["lastAppliedRevision"]["ref"], "main");
    let addr = daemon.metrics_addr();
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metrics.contains(&format!(
            "chom_source_revision_info{{revision=\"main@sha1:{first}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("chom_source_ready{reason=\"Applied\"} 1"), "{metrics}");
    let get = control.chom(&["get", "-o", "wide"]);
    let table = String::from_utf8_lossy(&get.stdout);
    assert!(table.contains(&format!("main@{}", &first[..12])), "{table}");

    // A webhook with a bad signature is refused and fetches nothing.
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "two"));
    let second = repo.commit("web-1 two", None);
    assert!(push_hook(&addr, "wrong-secret").starts_with("HTTP/1.1 401"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        control.source()["status"]["lastFetchedRevision"]["commit"],
        first.as_str(),
        "a refused webhook must not fetch"
    );
    // A good one fetches at once.
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the second commit applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(second.clone())
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "two");
    let history = control.chom(&["history", "web-1", "-o", "json"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains(&second), "history records carry the commit: {history}");

    // A commit with a schema error is refused; the previous one stays applied.
    repo.write(
        "inventory.d/web-1.yaml",
        &server_yaml(&fleet, "web-1", "three").replace("  address:", "  adress:"),
    );
    let broken = repo.commit("typo", None);
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the broken commit refused", &daemon, || {
        condition(&control.source(), "SourceReady")["reason"] == "ValidationFailed"
    });
    let source = control.source();
    let message = condition(&source, "SourceReady")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&broken[..12]) && message.contains(&second[..12]),
        "{message}"
    );
    let findings = source["status"]["findings"].to_string();
    assert!(
        findings.contains("inventory.d/web-1.yaml:"),
        "findings name file:line:col: {findings}"
    );
    assert_eq!(source["status"]["lastAppliedRevision"]["commit"], second.as_str());
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("chom_source_ready{reason=\"ValidationFailed\"} 0"),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "two");
    assert_eq!(
        control.status("web-1").and_then(|s| applied_commit(&s)),
        Some(second.clone())
    );

    // A force-push that rewrites history is followed, logged and audited.
    git(&repo.work, &["reset", "-q", "--hard", &first]);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "four"));
    let rewritten = repo.commit("rewritten", None);
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the rewritten commit applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(rewritten.clone())
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "four");
    let audit = control.audit();
    assert!(
        audit
            .iter()
            .any(|l| l["action"] == "source.history-rewritten" && l["to"] == rewritten.as_str()),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l["action"] == "source.refused" && l["commit"] == broken.as_str())
    );
    assert!(
        audit
            .iter()
            .any(|l| l["action"] == "component.applied" && l["commit"] == rewritten.as_str()),
        "audit lines carry the revision: {audit:?}"
    );

    // A commit that deletes every server is refused without allowMassDeletion.
    std::fs::remove_file(repo.work.join("inventory.d/web-1.yaml")).unwrap();
    let empty = repo.commit("oops", None);
    daemon_hup(&daemon);
    wait_for("the empty commit refused", &daemon, || {
        condition(&control.source(), "SourceReady")["reason"] == "MassDeletionRefused"
    });
    assert!(
        condition(&control.source(), "SourceReady")["message"]
            .as_str()
            .unwrap()
            .contains(&empty[..12])
    );
    assert!(control.status("web-1").is_some(), "the server's status is kept");

    // Old checkouts are collected: at most `keep` (5) remain.
    let checkouts = std::fs::read_dir(control.dir.join("state/source/checkouts"))
        .unwrap()
        .count();
    assert!(checkouts <= 5, "{checkouts} checkouts kept");
    assert!(daemon.terminate().success());
}

/// Servers whose shard of 2 is 0 and 1, `per` of each, named `app-<i>`.
fn servers_of_both_shards(per: usize) -> Vec<String> {
    let (mut zero, mut one) = (Vec::new(), Vec::new());
    for i in 0.. {
        let name = format!("app-{i}");
        let shard = chom::shard::stable_hash(&name) % 2;
        let side = if shard == 0 { &mut zero } else { &mut one };
        if side.len() < per {
            side.push(name);
        }
        if zero.len() == per && one.len() == per {
            break;
        }
    }
    zero.into_iter().chain(one).collect()
}

/// Server names whose status in `control` names `commit`.
fn applied_in(control: &Control, names: &[String], commit: &str) -> Vec<String> {
    names
        .iter()
        .filter(|n| control.status(n).and_then(|s| applied_commit(&s)).as_deref() == Some(commit))
        .cloned()
        .collect()
}

fn no_errors(daemon: &Daemon) {
    let log = daemon.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"ERROR\"") || l.contains("\"WARN\""))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn two_shards_with_their_own_state_dirs_split_one_repository() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "one"));
    let first = repo.commit("web-1", None);
    let source = format!("  url: {}\n", repo.bare.display());
    let controls = [
        Control::at(root.join("control-0"), &source),
        Control::at(root.join("control-1"), &source),
    ];
    let mut daemons = [
        controls[0].daemon_with(&fleet, &["--shard", "0/2"]),
        controls[1].daemon_with(&fleet, &["--shard", "1/2"]),
    ];
    let web1 = if chom::shard::stable_hash("web-1").is_multiple_of(2) {
        0
    } else {
        1
    };
    wait_for("web-1 applied by its shard", &daemons[web1], || {
        controls[web1].status("web-1").and_then(|s| applied_commit(&s)) == Some(first.clone())
    });

    // A commit adding servers: each is reconciled by exactly one shard, the one its name
    // hashes to, and its status names the commit.
    let names = servers_of_both_shards(3);
    for name in &names {
        repo.write(&format!("inventory.d/{name}.yaml"), &server_yaml(&fleet, name, name));
    }
    let added = repo.commit("six servers", None);
    for (k, daemon) in daemons.iter().enumerate() {
        assert!(push_hook(&daemon.metrics_addr(), SECRET).starts_with("HTTP/1.1 202"));
        let mine: Vec<String> = names
            .iter()
            .filter(|n| chom::shard::stable_hash(n) % 2 == k as u64)
            .cloned()
            .collect();
        wait_for(&format!("shard {k}/2's servers applied"), daemon, || {
            applied_in(&controls[k], &names, &added) == mine
        });
    }
    for name in &names {
        assert_eq!(
            std::fs::read_to_string(root.join(format!("{name}.out"))).unwrap(),
            *name
        );
        let reconciled: usize = daemons
            .iter()
            .map(|d| d.reconciles().get(name).copied().unwrap_or(0))
            .filter(|&n| n > 0)
            .count();
        assert_eq!(reconciled, 1, "{name} is reconciled by exactly one shard");
    }
    for (k, control) in controls.iter().enumerate() {
        let other = &controls[1 - k];
        for name in applied_in(control, &names, &added) {
            assert!(other.status(&name).is_none(), "{name} has a status in both state dirs");
        }
        assert_eq!(
            control.source()["status"]["lastAppliedRevision"]["commit"],
            added.as_str()
        );
    }
    for daemon in &mut daemons {
        no_errors(daemon);
        assert!(daemon.terminate().success());
    }
}

#[test]
fn two_shards_sharing_a_state_dir_take_turns_on_the_checkout() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    let names = servers_of_both_shards(2);
    for name in &names {
        repo.write(&format!("inventory.d/{name}.yaml"), &server_yaml(&fleet, name, "v1"));
    }
    let first = repo.commit("v1", None);
    let control = Control::new(root, &format!("  url: {}\n", repo.bare.display()));
    // Both start at once: both open the source and sync it on the same state dir.
    let mut daemons = [
        control.daemon_with(&fleet, &["--shard", "0/2"]),
        control.daemon_with(&fleet, &["--shard", "1/2"]),
    ];
    wait_for("every server at the first commit", &daemons[0], || {
        applied_in(&control, &names, &first) == names
    });
    // Several commits, each announced to both daemons at once.
    let mut last = first;
    for i in 2..=4 {
        for name in &names {
            repo.write(
                &format!("inventory.d/{name}.yaml"),
                &server_yaml(&fleet, name, &format!("v{i}")),
            );
        }
        last = repo.commit(&format!("v{i}"), None);
        let addrs: Vec<String> = daemons.iter().map(Daemon::metrics_addr).collect();
        let hooks: Vec<_> = addrs
            .into_iter()
            .map(|a| std::thread::spawn(move || push_hook(&a, SECRET)))
            .collect();
        for h in hooks {
            assert!(h.join().unwrap().starts_with("HTTP/1.1 202"));
        }
    }
    wait_for("every server at the last commit", &daemons[1], || {
        applied_in(&control, &names, &last) == names
    });
    for name in &names {
        assert_eq!(std::fs::read_to_string(root.join(format!("{name}.out"))).unwrap(), "v4");
    }
    let dir = control.dir.join("state/source");
    let link = std::fs::read_link(dir.join("current")).unwrap();
    assert_eq!(link, Path::new("checkouts").join(&last));
    assert_eq!(
        control.source()["status"]["lastAppliedRevision"]["commit"],
        last.as_str()
    );
    assert_eq!(condition(&control.source(), "SourceReady")["status"], "True");
    let strays: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("checkouts")).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".current-") || n.starts_with(".tmp-"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
    for daemon in &mut daemons {
        no_errors(daemon);
        assert!(daemon.terminate().success());
    }
}

#[test]
fn rollback_to_a_commit_reapplies_what_that_commit_had() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "alpha"));
    let a = repo.commit("alpha", None);
    let control = Control::new(root, &format!("  url: {}\n", repo.bare.display()));
    let mut daemon = control.daemon(&fleet);
    wait_for("commit A applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(a.clone())
    });
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "bravo"));
    let b = repo.commit("bravo", None);
    assert!(push_hook(&daemon.metrics_addr(), SECRET).starts_with("HTTP/1.1 202"));
    wait_for("commit B applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(b.clone())
    });
    let out = root.join("web-1.out");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "bravo");

    // Refused while the daemon owns the tree; an operator stops it first.
    let known_hosts = fleet.sshd.known_hosts.to_str().unwrap();
    let rollback = ["rollback", "web-1", "--known-hosts", known_hosts, "--to"];
    let refused = control.chom(&[&rollback[..], &[&a[..7]]].concat());
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(daemon.terminate().success());
    let rolled = control.chom(&[&rollback[..], &[&a[..7]]].concat());
    assert!(rolled.status.success(), "{}", String::from_utf8_lossy(&rolled.stderr));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "alpha");
    let history = control.chom(&["history", "web-1", "-o", "json"]);
    assert!(history.status.success());
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let records = history.as_array().unwrap();
    let newest = records.last().unwrap();
    let of_a = records
        .iter()
        .find(|r| r["commit"] == a.as_str() && r["rollbackOf"].is_null())
        .unwrap();
    assert_eq!(newest["rollbackOf"], of_a["id"], "{history}");
    assert_eq!(newest["commit"], a.as_str(), "the rollback carries commit A: {history}");
    let table = control.chom(&["history", "web-1"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!("rollback to {}", of_a["id"].as_str().unwrap())),
        "{table}"
    );
    let unknown = control.chom(&[&rollback[..], &["deadbeef0"]].concat());
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn a_semver_range_follows_the_highest_matching_tag() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    let bare = repo.bare.to_str().unwrap().to_owned();
    let mut tagged = Vec::new();
    for tag in ["v1.0.0", "v1.1.0", "v2.0.0"] {
        repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", tag));
        let commit = repo.commit(tag, None);
        git(&repo.work, &["tag", tag]);
        git(&repo.work, &["push", "-q", &bare, tag]);
        tagged.push(commit);
    }
    let control = Control::new(
        root,
        &format!("  url: {bare}\n  ref: {{semver: \">=1.0.0, <2.0.0\"}}\n"),
    );
    let mut daemon = control.daemon(&fleet);
    wait_for("v1.1.0 applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(tagged[1].clone())
    });
    assert_eq!(std::fs::read_to_string(root.join("web-1.out")).unwrap(), "v1.1.0");
    let source = control.source();
    assert_eq!(source["status"]["lastAppliedRevision"]["ref"], "v1.1.0");
    assert!(daemon.terminate().success());
}

fn daemon_hup(daemon: &Daemon) {
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(daemon.child.id().to_string())
        .status();
}

#[test]
fn under_verify_only_commits_signed_by_an_allowed_key_are_applied() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (allowed, allowed_pub) = sshd::keygen(&keys, "allowed");
    let (stranger, _) = sshd::keygen(&keys, "stranger");
    std::fs::write(root.join("allowed_signers"), format!("{EMAIL} {allowed_pub}\n")).unwrap();
    let repo = Repo::new(root);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "signed"));
    let good = repo.commit("signed", Some(&allowed));
    let control = Control::new(
        root,
        &format!(
            "  url: {}\n  verify: {{allowedSigners: {}}}\n",
            repo.bare.display(),
            root.join("allowed_signers").display()
        ),
    );
    let mut daemon = control.daemon(&fleet);
    wait_for("the signed commit applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(good.clone())
    });
    let addr = daemon.metrics_addr();

    // Unsigned: refused.
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "unsigned"));
    let unsigned = repo.commit("unsigned", None);
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the unsigned commit refused", &daemon, || {
        control.source()["status"]["lastRefusedRevision"]["commit"] == unsigned.as_str()
    });
    assert_eq!(
        condition(&control.source(), "SourceReady")["reason"],
        "VerificationFailed"
    );

    // Signed by a key not in allowed signers: refused.
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "stranger"));
    let strange = repo.commit("stranger", Some(&stranger));
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the stranger's commit refused", &daemon, || {
        control.source()["status"]["lastRefusedRevision"]["commit"] == strange.as_str()
    });
    assert_eq!(
        condition(&control.source(), "SourceReady")["reason"],
        "VerificationFailed"
    );
    assert_eq!(std::fs::read_to_string(root.join("web-1.out")).unwrap(), "signed");
    assert_eq!(
        control.status("web-1").and_then(|s| applied_commit(&s)),
        Some(good.clone())
    );

    // Signed by the allowed key again: applied.
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "signed-again"));
    let again = repo.commit("signed again", Some(&allowed));
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the allowed commit applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(again.clone())
    });
    assert!(daemon.terminate().success());
}

#[test]
fn a_repository_over_ssh_is_pulled_and_a_changed_host_key_is_refused() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "over-ssh"));
    let first = repo.commit("first", None);
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd::current_user(),
        fleet.sshd.port,
        repo.bare.display()
    );
    let known_hosts = root.join("git_known_hosts");
    std::fs::copy(&fleet.sshd.known_hosts, &known_hosts).unwrap();
    let control = Control::new(
        root,
        &format!(
            "  url: {url}\n  sshKey: {}\n  knownHosts: {}\n  depth: 5\n",
            fleet.sshd.client_key.display(),
            known_hosts.display()
        ),
    );
    let mut daemon = control.daemon(&fleet);
    wait_for("the commit fetched over ssh applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(first.clone())
    });
    let addr = daemon.metrics_addr();

    // The git host's key changes: refused, the last good commit stays.
    let (_, other_key) = sshd::keygen(root, "other_host");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{} {other_key}\n", fleet.sshd.port)).unwrap();
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "unseen"));
    repo.commit("second", None);
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the changed host key refused", &daemon, || {
        condition(&control.source(), "SourceReady")["reason"] == "HostKeyVerificationFailed"
    });
    assert_eq!(
        control.source()["status"]["lastAppliedRevision"]["commit"],
        first.as_str()
    );
    assert_eq!(std::fs::read_to_string(root.join("web-1.out")).unwrap(), "over-ssh");
    assert!(daemon.terminate().success());
}

#[test]
fn an_unreachable_remote_or_a_missing_ref_keeps_the_last_good_commit() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "kept"));
    let first = repo.commit("first", None);
    let control = Control::new(root, &format!("  url: {}\n", repo.bare.display()));
    let mut daemon = control.daemon(&fleet);
    wait_for("the commit applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(first.clone())
    });
    let addr = daemon.metrics_addr();
    // The branch disappears.
    git(&repo.bare, &["branch", "-m", "main", "renamed"]);
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    wait_for("the missing ref reported", &daemon, || {
        condition(&control.source(), "SourceReady")["reason"] == "RefNotFound"
    });
    // The repository disappears.
    std::fs::rename(&repo.bare, root.join("moved.git")).unwrap();
    assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
    let started = Instant::now();
    wait_for("the unreachable remote reported", &daemon, || {
        condition(&control.source(), "SourceReady")["reason"] == "FetchFailed"
    });
    assert!(started.elapsed() < Duration::from_secs(30));
    let source = control.source();
    assert_eq!(source["status"]["lastAppliedRevision"]["commit"], first.as_str());
    assert!(
        condition(&source, "SourceReady")["message"]
            .as_str()
            .unwrap()
            .contains("stays applied")
    );
    assert_eq!(
        control.status("web-1").and_then(|s| applied_commit(&s)),
        Some(first.clone())
    );
    assert!(daemon.terminate().success());
}

/// Every push announced by the webhook is applied (fetch, validate, swap, informer, reconcile
/// over SSH, status write), and the push → applied latency is printed. In the suite, 5
/// pushes and no timing assertion; as the benchmark of BENCHMARKS.md, 30:
/// `CHOM_BENCH_PUSHES=30 cargo test --test gitops push_to_applied -- --nocapture`.
#[test]
fn push_to_applied_latency_with_the_webhook() {
    let fleet = Fleet::new();
    let root = fleet.dir.path();
    let repo = Repo::new(root);
    repo.write("inventory.d/web-1.yaml", &server_yaml(&fleet, "web-1", "v0"));
    let first = repo.commit("v0", None);
    let control = Control::new(root, &format!("  url: {}\n", repo.bare.display()));
    let mut daemon = control.daemon(&fleet);
    wait_for("the first commit applied", &daemon, || {
        control.status("web-1").and_then(|s| applied_commit(&s)) == Some(first.clone())
    });
    let addr = daemon.metrics_addr();
    let mut took = Vec::new();
    let pushes: u32 = std::env::var("CHOM_BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 1000);
    for i in 1..=pushes {
        repo.write(
            "inventory.d/web-1.yaml",
            &server_yaml(&fleet, "web-1", &format!("v{i}")),
        );
        let commit = repo.commit(&format!("v{i}"), None);
        let started = Instant::now();
        assert!(push_hook(&addr, SECRET).starts_with("HTTP/1.1 202"));
        while control.status("web-1").and_then(|s| applied_commit(&s)) != Some(commit.clone()) {
            assert!(started.elapsed() < Duration::from_secs(30), "{}", daemon.log());
            std::thread::sleep(Duration::from_millis(5));
        }
        took.push(started.elapsed());
    }
    took.sort();
    let pick = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    println!(
        "push→applied over {} pushes: p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        pick(0.5),
        pick(0.99),
        took.last().unwrap()
    );
    for line in daemon.log().lines().filter(|l| !l.contains("\"INFO\"")) {
        println!("{line}");
    }
    assert!(daemon.terminate().success());
}
