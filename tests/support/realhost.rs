//! Real Debian 12 servers for the end-to-end suite: `tests/realhost/up.sh K` boots one in a
//! systemd-nspawn container (systemd as PID 1, OpenSSH, apt through a proxy) in its own
//! network namespace at 10.253.K.2; dropping the handle runs `down.sh K`, which stops it by
//! PID. Tests that need one call [`RealHost::up`]; set `CHOM_SKIP_REALHOST=1` to skip them
//! on a machine that cannot boot containers (the skip is printed, never silent).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One booted server.
pub struct RealHost {
    /// Its number (10.253.K.2).
    pub k: u32,
    /// Its address.
    pub addr: String,
    /// The root login key.
    pub key: PathBuf,
    /// A known_hosts file with its host key.
    pub known_hosts: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/realhost").join(name)
}

impl RealHost {
    /// Boots server `k`, or returns `None` (saying so) when `CHOM_SKIP_REALHOST` is set.
    pub fn up(k: u32) -> Option<RealHost> {
        if std::env::var_os("CHOM_SKIP_REALHOST").is_some() {
            eprintln!("SKIPPED: CHOM_SKIP_REALHOST is set; this real-server test did not run");
            return None;
        }
        // A leftover from an interrupted run of this same test.
        let _ = Command::new(script("down.sh"))
            .arg(k.to_string())
            .stderr(Stdio::null())
            .status();
        let out = Command::new(script("up.sh"))
            .arg(k.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/realhost/up.sh");
        assert!(
            out.status.success(),
            "tests/realhost/up.sh {k} failed (needs root and systemd-nspawn; CHOM_SKIP_REALHOST=1 skips)"
        );
        let env_file = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let env = std::fs::read_to_string(&env_file).expect("read the server's env file");
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} missing in {env_file}"))
                .to_owned()
        };
        Some(RealHost {
            k,
            addr: get("ADDR"),
            key: PathBuf::from(get("KEY")),
            known_hosts: PathBuf::from(get("KNOWN_HOSTS")),
        })
    }

    /// Runs `command` on the server as root with OpenSSH's client.
    pub fn run(&self, command: &str) -> Output {
        Command::new("ssh")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-i")
            .arg(&self.key)
            .arg(format!("root@{}", self.addr))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Runs `command` and returns its stdout, failing the test if it fails.
    #[track_caller]
    pub fn sh(&self, command: &str) -> String {
        let out = self.run(command);
        assert!(
            out.status.success(),
            "on {}: `{command}` failed ({}):\n{}{}",
            self.addr,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Asserts that systemd `service` is active and enabled on the server.
    #[track_caller]
    pub fn assert_running(&self, service: &str) {
        assert_eq!(
            self.sh(&format!("systemctl is-active {service}")).trim(),
            "active",
            "{service}"
        );
        assert_eq!(
            self.sh(&format!("systemctl is-enabled {service}")).trim(),
            "enabled",
            "{service}"
        );
    }

    /// True when `command` succeeds on the server.
    pub fn ok(&self, command: &str) -> bool {
        self.run(command).status.success()
    }
}

impl Drop for RealHost {
    fn drop(&mut self) {
        let _ = Command::new(script("down.sh"))
            .arg(self.k.to_string())
            .stderr(Stdio::null())
            .status();
    }
}
