//! A fleet for daemon tests: a tree in a temp dir whose servers are a real OpenSSH sshd on
//! 127.0.0.1, and a real `chom daemon` process over it, stopped by PID when dropped. Used
//! by tests/daemon.rs and tests/hostile.rs.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sshd::{self, Sshd};

pub const FILE_SCRIPT: &str = r#"#!/bin/sh
set -eu
if [ -f "$CHOM_CFG_PATH" ] && [ "$(cat "$CHOM_CFG_PATH")" = "$CHOM_CFG_CONTENT" ]; then exit 0; fi
[ "$CHOM_MODE" = check ] && exit 100
printf '%s' "$CHOM_CFG_CONTENT" > "$CHOM_CFG_PATH"
echo "::chom:: changed"
"#;

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// The address `/metrics` is served on, as the daemon logged it (waited for, bounded).
    pub fn metrics_addr(&self) -> String {
        let find = || {
            self.log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| {
                    v["message"] == "serving /metrics, /healthz and /readyz"
                        || v["fields"]["message"] == "serving /metrics, /healthz and /readyz"
                })
                .and_then(|v| v["addr"].as_str().or(v["fields"]["addr"].as_str()).map(str::to_owned))
        };
        let mut addr = None;
        wait_for("the metrics address in the log", self, || {
            addr = find();
            addr.is_some()
        });
        addr.unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `reconcile finished` log lines per server.
    pub fn reconciles(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for line in self.log().lines().filter(|l| l.contains("reconcile finished")) {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let server = v["span"]["server"].as_str().unwrap_or("?").to_owned();
            *counts.entry(server).or_insert(0) += 1;
        }
        counts
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "daemon did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Fleet {
    pub sshd: Sshd,
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub fn new() -> Self {
        let sshd = Sshd::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("inventory.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/file.sh"), FILE_SCRIPT).unwrap();
        std::fs::write(dir.path().join("scripts/slow.sh"), "sleep 3\n").unwrap();
        Self { sshd, dir }
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.d")
    }

    pub fn server_text(&self, name: &str, extra: &str) -> String {
        format!(
            "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  address: 127.0.0.1\n  ssh:\n    user: {user}\n    port: {port}\n    identityFile: {key}\n{extra}",
            user = sshd::current_user(),
            port = self.sshd.port,
            key = self.sshd.client_key.display()
        )
    }

    pub fn write(&self, name: &str, text: &str) {
        // Written beside and renamed into place, as editors and git do.
        let tmp = self.inventory().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.inventory().join(format!("{name}.yaml"))).unwrap();
    }

    /// Writes server `name` with the `file` component writing `content`.
    pub fn write_file_server(&self, name: &str, content: &str) {
        self.write(name, &self.server_text(name, &self.file_component(name, content)));
    }

    pub fn file_component(&self, name: &str, content: &str) -> String {
        format!(
            "  components:\n    - name: file\n      config: {{path: {}, content: {content}}}\n",
            self.dir.path().join(format!("{name}.out")).display()
        )
    }

    /// A daemon logging JSON with `CHOM_LOG=chom=info`.
    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        self.daemon_logging(extra, Some("chom=info"))
    }

    /// A daemon logging JSON at `chom_log`, or at its own default level when `None`
    /// (`CHOM_LOG` unset).
    pub fn daemon_logging(&self, extra: &[&str], chom_log: Option<&str>) -> Daemon {
        let log = self
            .dir
            .path()
            .join(format!("daemon-{}.log", std::process::id() ^ rand_suffix()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_chom"));
        match chom_log {
            Some(filter) => command.env("CHOM_LOG", filter),
            None => command.env_remove("CHOM_LOG"),
        };
        let child = command
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .args([
                "--log-format",
                "json",
                "daemon",
                "--known-hosts",
                self.sshd.known_hosts.to_str().unwrap(),
            ])
            // Unpaced unless the test sets its own start rate.
            .args(if extra.contains(&"--rate") {
                &[][..]
            } else {
                &["--rate", "1000", "--burst", "1000"][..]
            })
            .args(["--debounce", "100ms", "--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn status_path(&self, name: &str) -> PathBuf {
        self.inventory().join(format!("{name}.status.yaml"))
    }

    pub fn status(&self, name: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.status_path(name)).ok()?;
        chom::validate::parse_document(Path::new("s.yaml"), &text)
            .ok()
            .map(|d| d.value)
    }
}

pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

pub fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new().build_hasher().finish() as u32
}

pub fn condition(status: &Value, type_: &str) -> Value {
    status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// Polls until `check` holds (bounded).
#[track_caller]
pub fn wait_for(what: &str, daemon: &Daemon, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; daemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until `name`'s status says Ready True.
#[track_caller]
pub fn wait_ready(fleet: &Fleet, daemon: &Daemon, name: &str) {
    wait_for(&format!("{name} Ready"), daemon, || {
        fleet
            .status(name)
            .is_some_and(|s| condition(&s, "Ready")["status"] == "True")
    });
}

pub fn no_temp_files(dir: &Path) {
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".chom-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

pub fn chom(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(fleet.dir.path())
        .env("HOME", fleet.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .args(args)
        .output()
        .unwrap()
}
