//! Running the `git` binary: a clean environment (no user or system config, no prompts,
//! only the transports chom uses), a bounded run time, and never a secret in argv.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How git reaches the remote.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// The SSH private key for ssh URLs.
    pub ssh_key: Option<PathBuf>,
    /// The known_hosts file for ssh URLs.
    pub known_hosts: Option<PathBuf>,
    /// The longest one command may run.
    pub timeout: Duration,
}

/// A git command that failed.
#[derive(Debug, Clone)]
pub struct GitError {
    /// The command, without its environment (`git fetch …`).
    pub command: String,
    /// What git printed on stderr (its last 2 KiB).
    pub stderr: String,
    /// True when it outlived the timeout and was killed.
    pub timed_out: bool,
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.timed_out {
            write!(f, "`{}` took too long and was killed", self.command)
        } else {
            write!(f, "`{}` failed: {}", self.command, self.stderr.trim())
        }
    }
}

/// A single-quoted word for the shell that reads `GIT_SSH_COMMAND`.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

impl Remote {
    /// `GIT_SSH_COMMAND`: the configured key only, host keys checked strictly against the
    /// configured known_hosts (an unknown or changed key is refused), never a prompt.
    pub fn ssh_command(&self) -> String {
        let mut cmd = String::from(
            "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o ConnectTimeout=15",
        );
        let known_hosts = self
            .known_hosts
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts")));
        if let Some(kh) = known_hosts {
            cmd.push_str(&format!(
                " -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
                quote(&kh)
            ));
        }
        if let Some(key) = &self.ssh_key {
            cmd.push_str(&format!(
                " -o IdentitiesOnly=yes -o IdentityAgent=none -i {}",
                quote(key)
            ));
        }
        cmd
    }

    /// Runs `git args…` in `dir` with a clean environment and the timeout; its stdout.
    pub fn run(&self, dir: &Path, args: &[&std::ffi::OsStr], env: &[(&str, OsString)]) -> Result<Vec<u8>, GitError> {
        let command = format!(
            "git {}",
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let fail = |stderr: String, timed_out| GitError {
            command: command.clone(),
            stderr,
            timed_out,
        };
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("HOME", dir)
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_ALLOW_PROTOCOL", "file:git:ssh:http:https")
            .env("GIT_SSH_COMMAND", self.ssh_command())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| fail(format!("cannot run git: {e}"), false))?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(1));
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(fail(format!("waiting for git: {e}"), false)),
            }
        };
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let tail = stderr
            .char_indices()
            .rev()
            .nth(2047)
            .map_or(&*stderr, |(i, _)| &stderr[i..])
            .to_owned();
        match status {
            None => Err(fail(tail, true)),
            Some(s) if s.success() => Ok(stdout),
            Some(_) => Err(fail(tail, false)),
        }
    }
}
