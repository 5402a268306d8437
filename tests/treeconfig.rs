//! chom.yaml end to end with the real binary: found from anywhere inside the tree, its
//! stateDir and knownHosts used against a real OpenSSH sshd on 127.0.0.1, overridden by
//! flags and variables, and checked by `chom validate` with file, line and column.

#[path = "support/sshd.rs"]
mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sshd::Sshd;

const CONFIG_HEAD: &str = "apiVersion: chom.dev/v1\nkind: Config\n";

const SCRIPT: &str = "#!/bin/sh\nset -eu\n[ \"$CHOM_MODE\" = check ] && [ -f \"$CHOM_CFG_PATH\" ] && exit 0\n[ \"$CHOM_MODE\" = check ] && exit 100\necho hi > \"$CHOM_CFG_PATH\"\necho '::chom:: changed'\n";

/// A tree with one Role and, when given, one Server reachable through `sshd`.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["inventory.d", "scripts", "secrets.d"] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        }
        std::fs::write(dir.path().join("scripts/touch.sh"), SCRIPT).unwrap();
        std::fs::write(
            dir.path().join("inventory.d/web.yaml"),
            "apiVersion: chom.dev/v1\nkind: Role\nmetadata:\n  name: web\nspec: {}\n",
        )
        .unwrap();
        if let Some(text) = config {
            std::fs::write(dir.path().join("chom.yaml"), text).unwrap();
        }
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn inventory(&self) -> PathBuf {
        self.root().join("inventory.d")
    }

    fn server(&self, name: &str, sshd: &Sshd) {
        let text = format!(
            "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  address: 127.0.0.1\n  ssh:\n    user: {user}\n    port: {port}\n    identityFile: {key}\n  role: web\n  components:\n    - name: touch\n  config:\n    path: {out}\n",
            user = sshd::current_user(),
            port = sshd.port,
            key = sshd.client_key.display(),
            out = self.root().join(format!("{name}.out")).display(),
        );
        std::fs::write(self.inventory().join(format!("{name}.yaml")), text).unwrap();
    }

    /// Runs chom in `cwd` with no CHOM_* variable but those in `env`.
    fn chom_in(&self, cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chom"));
        command
            .current_dir(cwd)
            .env("HOME", self.root())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("STATE_DIRECTORY");
        for key in [
            "CHOM_STATE_DIR",
            "CHOM_INVENTORY",
            "CHOM_KNOWN_HOSTS",
            "CHOM_AGE_IDENTITY",
            "CHOM_SECRETS",
        ] {
            command.env_remove(key);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        command.args(args).output().unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn validate_and_get_work_from_inside_inventory_d_when_chom_yaml_is_at_the_root() {
    let tree = Tree::new(Some(CONFIG_HEAD));
    let inside = tree.inventory();
    let validate = tree.chom_in(&inside, &["validate"], &[]);
    assert_eq!(validate.status.code(), Some(0), "{}", text(&validate));
    assert!(String::from_utf8_lossy(&validate.stdout).contains("1 role(s) valid"));
    let get = tree.chom_in(&inside, &["get", "-o", "json"], &[]);
    assert_eq!(get.status.code(), Some(0), "{}", text(&get));

    // Deeper still, and without chom.yaml the old behaviour: no inventory.d here, exit 2.
    let deeper = inside.join("nested");
    std::fs::create_dir_all(&deeper).unwrap();
    assert_eq!(tree.chom_in(&deeper, &["validate"], &[]).status.code(), Some(0));
    let bare = Tree::new(None);
    let out = bare.chom_in(&bare.inventory(), &["validate"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn an_unknown_field_in_chom_yaml_fails_validate_at_its_line_and_column() {
    let tree = Tree::new(Some(&format!("{CONFIG_HEAD}stateDir: state\nknownHost: [kh]\n")));
    for (cwd, args) in [
        (tree.root().to_path_buf(), &["validate"][..]),
        (tree.inventory(), &["validate"]),
        // As pre-commit passes changed files: chom.yaml is checked as the config.
        (tree.root().to_path_buf(), &["validate", "chom.yaml"]),
    ] {
        let out = tree.chom_in(&cwd, args, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            stdout.contains("chom.yaml:4:1: error[unknown-field]: unknown field `knownHost`"),
            "{stdout}"
        );
        assert!(stdout.contains("= help: check the spelling"), "{stdout}");
    }
    // Other commands refuse to run on a config with errors rather than ignore it.
    let get = tree.chom_in(tree.root(), &["get"], &[]);
    assert_eq!(get.status.code(), Some(2), "{}", text(&get));
    assert!(String::from_utf8_lossy(&get.stderr).contains("chom.yaml has errors"));
}

#[test]
fn detect_uses_the_known_hosts_named_only_in_chom_yaml_and_a_flag_overrides_it() {
    let sshd = Sshd::start();
    let tree = Tree::new(Some(&format!("{CONFIG_HEAD}knownHosts: [known_hosts]\n")));
    std::fs::copy(&sshd.known_hosts, tree.root().join("known_hosts")).unwrap();
    tree.server("web-1", &sshd);

    let out = tree.chom_in(&tree.inventory(), &["detect", "-o", "json"], &[]);
    let rows = json(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(rows[0]["status"], "OK", "{rows}");
    assert!(rows[0]["hardware"]["cpu"].as_u64().unwrap() >= 1, "{rows}");

    // A flag wins over the config: this known_hosts does not know the server.
    let empty = tree.root().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let flagged = tree.chom_in(
        &tree.inventory(),
        &["detect", "-o", "json", "--known-hosts", empty.to_str().unwrap()],
        &[],
    );
    assert_ne!(flagged.status.code(), Some(0), "{}", text(&flagged));
    let rows = json(&flagged);
    assert_ne!(rows[0]["status"], "OK", "{rows}");
    assert!(rows.to_string().to_lowercase().contains("host key"), "{rows}");
}

#[test]
fn reconcile_records_history_in_the_state_dir_of_chom_yaml_and_flags_or_variables_override_it() {
    let sshd = Sshd::start();
    let tree = Tree::new(Some(&format!(
        "{CONFIG_HEAD}stateDir: state\nknownHosts:\n  - {}\n",
        sshd.known_hosts.display()
    )));
    tree.server("web-1", &sshd);

    let out = tree.chom_in(&tree.inventory(), &["reconcile"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(tree.root().join("web-1.out").is_file(), "the component ran");
    assert!(
        tree.root().join("state").is_dir(),
        "state dir from chom.yaml, relative to its folder"
    );
    assert!(
        !tree.root().join(".chom").exists(),
        "not the default beside the inventory"
    );

    let history = tree.chom_in(&tree.inventory(), &["history", "-o", "json"], &[]);
    assert_eq!(json(&history).as_array().map(Vec::len), Some(1), "{}", text(&history));

    // --state-dir, then $CHOM_STATE_DIR, outrank chom.yaml: both point at an empty folder.
    let elsewhere = tree.root().join("elsewhere");
    let flag = tree.chom_in(
        tree.root(),
        &["history", "-o", "json", "--state-dir", elsewhere.to_str().unwrap()],
        &[],
    );
    assert_eq!(json(&flag), Value::Array(Vec::new()), "{}", text(&flag));
    let variable = tree.chom_in(
        tree.root(),
        &["history", "-o", "json"],
        &[("CHOM_STATE_DIR", &elsewhere)],
    );
    assert_eq!(json(&variable), Value::Array(Vec::new()), "{}", text(&variable));
    // systemd's $STATE_DIRECTORY ranks below chom.yaml.
    let systemd = tree.chom_in(
        tree.root(),
        &["history", "-o", "json"],
        &[("STATE_DIRECTORY", &elsewhere)],
    );
    assert_eq!(json(&systemd).as_array().map(Vec::len), Some(1), "{}", text(&systemd));
}

/// Stops the daemon by its PID when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_takes_its_state_dir_shard_and_metrics_address_from_chom_yaml() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tree = Tree::new(Some(&format!(
        "{CONFIG_HEAD}stateDir: state\ndaemon:\n  metricsAddr: 127.0.0.1:{port}\n  shard: 0/2\n  workers: 2\n"
    )));
    let log = std::fs::File::create(tree.root().join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(tree.inventory())
        .env("HOME", tree.root())
        .env_remove("CHOM_STATE_DIR")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CHOM_INVENTORY")
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Running(child);
    // The shard's lock is the inventory's; the audit trail is in the configured state dir.
    let lock = tree.inventory().join(".chom.shard-0-of-2.lock");
    let audit = tree.root().join("state/audit.jsonl");
    let started = std::time::Instant::now();
    while !(lock.is_file() && audit.is_file() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        let log = std::fs::read_to_string(tree.root().join("daemon.log")).unwrap_or_default();
        assert!(daemon.0.try_wait().unwrap().is_none(), "daemon exited: {log}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no lock or metrics: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!tree.root().join(".chom").exists());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.0.id().to_string())
        .status();
    let started = std::time::Instant::now();
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "daemon did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
