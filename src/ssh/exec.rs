//! Running one command on one channel: stdin feeding, capped output capture, exit status,
//! deadline enforcement and sudo wrapping. Must not open or pool connections.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use russh::client::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::time::Instant;

use super::error::SshError;
use super::host_key::Checker;

/// One command to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Shell command line, run by the login user's shell (`$SHELL -c`). Usually `sh -s` with
    /// the script on stdin, which avoids quoting problems entirely.
    pub command: String,
    /// Bytes written to the command's stdin, followed by EOF.
    pub stdin: Vec<u8>,
    /// Wall-clock budget for the command, counted from when its channel is requested (time
    /// spent connecting is bounded by `connect_timeout` instead). When it passes the client
    /// gives up and signals the command; the server-side watchdog (see [`remote_command`])
    /// kills it at the latest one second later, rounded up to whole seconds.
    pub deadline: Duration,
    /// Run through `sudo -n` unless the login user is already root.
    pub sudo: bool,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The command exited with this status.
    Status(u32),
    /// The command was killed by this signal (`TERM`, `KILL`, …).
    Signal(String),
    /// The channel closed without reporting how: treat as failure, never as success.
    Closed,
}

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Captured stdout, at most `output_cap` bytes.
    pub stdout: Vec<u8>,
    /// Captured stderr, its last `output_cap` bytes.
    pub stderr: Vec<u8>,
    /// True when stdout went past the cap and the rest was dropped.
    pub stdout_truncated: bool,
    /// True when stderr went past the cap and the rest was dropped.
    pub stderr_truncated: bool,
    /// Bytes of stdout dropped past the cap.
    pub stdout_dropped: u64,
    /// Bytes of stderr dropped past the cap.
    pub stderr_dropped: u64,
    /// How the command ended.
    pub exit: Exit,
    /// From requesting the channel until it closed.
    pub duration: Duration,
}

impl ExecOutput {
    /// True only for exit status 0.
    pub fn success(&self) -> bool {
        self.exit == Exit::Status(0)
    }

    /// stdout as text (lossy UTF-8) with a truncation marker when bytes were dropped.
    pub fn stdout_text(&self) -> String {
        with_truncation_marker(&self.stdout, self.stdout_dropped)
    }

    /// stderr as text (lossy UTF-8): its last `output_cap` bytes, after a marker saying how
    /// many came before them when bytes were dropped.
    pub fn stderr_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        if self.stderr_dropped > 0 {
            format!("[{} earlier bytes dropped]…{text}", self.stderr_dropped)
        } else {
            text.into_owned()
        }
    }
}

/// Renders captured bytes as text, appending `…[truncated N bytes]` when `dropped > 0`, so a
/// status file or log shows that output is missing rather than silently ending.
pub fn with_truncation_marker(bytes: &[u8], dropped: u64) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if dropped > 0 {
        text.push_str(&format!("…[truncated {dropped} bytes]"));
    }
    text
}

/// Runs the program and arguments after `$0` under a server-side deadline of `$0` seconds when
/// coreutils/busybox `timeout` is there, else plainly. `timeout` ends up as the session's process
/// group leader (everything is `exec`ed), and on expiry it KILLs that whole group, children
/// included.
const WATCHDOG: &str = r#"if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL "$0" "$@"; fi; exec "$@""#;

/// The command every script chom sends runs as: `sh` reading the script from stdin. The watchdog
/// starts it directly; any other command line goes through `sh -c`, one more program start on
/// the server for every command.
pub const SCRIPT_ON_STDIN: &str = "sh -s";

/// The command line sent to sshd for `command`.
///
/// Why a server-side watchdog: sshd leaves a no-pty command running when its channel or even
/// its connection closes, and it ignores the SSH `signal` request for root logins (it then runs
/// the session without privilege separation and logs "session signalling requires privilege
/// separation"). Under sudo the signal would also come from the unprivileged user and could not
/// reach the root command. So the server enforces the deadline itself, one second after the
/// client gives up, which also covers a client that crashed or lost the network.
///
/// With `sudo`, the watchdog runs inside `sudo -n` (never prompt: a prompt would hang until the
/// deadline) so it has the rights to kill what it started.
pub fn remote_command(command: &str, sudo: bool, deadline: Duration) -> String {
    let seconds = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0) + 1;
    let program = if command == SCRIPT_ON_STDIN {
        SCRIPT_ON_STDIN.to_owned()
    } else {
        format!("sh -c {}", shell_quote(command))
    };
    let watched = format!("sh -c {} {seconds} {program}", shell_quote(WATCHDOG));
    if sudo {
        format!("exec sudo -n -- {watched}")
    } else {
        format!("exec {watched}")
    }
}

/// Single-quotes a string for POSIX sh (`'` becomes `'\''`).
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Single-quotes bytes for POSIX sh, byte for byte: whatever their encoding, they reach the
/// shell unchanged.
pub(super) fn shell_quote_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(br"'\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// True when `sudo -n` refused because it would need a password (or a terminal to ask for one).
pub(crate) fn sudo_wants_password(exit: &Exit, stderr: &[u8]) -> bool {
    if *exit != Exit::Status(1) {
        return false;
    }
    String::from_utf8_lossy(stderr).lines().any(|line| {
        line.starts_with("sudo:")
            && (line.contains("a password is required") || line.contains("a terminal is required"))
    })
}

/// Output buffer that keeps the first `cap` bytes (stdout, where `::chom::` lines are read) or
/// the last `cap` bytes (stderr, whose end says why a script failed), and counts the rest.
pub(super) struct Capped {
    bytes: Vec<u8>,
    cap: usize,
    keep_tail: bool,
    dropped: u64,
}

impl Capped {
    /// Keeps the head.
    pub(super) fn new(cap: usize) -> Capped {
        Capped {
            bytes: Vec::new(),
            cap,
            keep_tail: false,
            dropped: 0,
        }
    }

    /// Keeps the tail.
    pub(super) fn tail(cap: usize) -> Capped {
        Capped {
            keep_tail: true,
            ..Capped::new(cap)
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        if self.keep_tail {
            self.bytes.extend_from_slice(data);
            // Trimmed in batches: at most twice the cap is held, and each byte moves once.
            if self.bytes.len() > self.cap.saturating_mul(2).max(64 * 1024) {
                self.trim();
            }
            return;
        }
        let room = self.cap.saturating_sub(self.bytes.len());
        let (keep, rest) = data.split_at(room.min(data.len()));
        self.bytes.extend_from_slice(keep);
        self.dropped += rest.len() as u64;
    }

    fn trim(&mut self) {
        let cut = self.bytes.len().saturating_sub(self.cap);
        if cut > 0 {
            self.bytes.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// The kept bytes and how many were dropped; leaves the buffer empty.
    pub(super) fn take(&mut self) -> (Vec<u8>, u64) {
        self.trim();
        (std::mem::take(&mut self.bytes), self.dropped)
    }
}

/// Why `run` failed: opening the channel failing means the command never started, so the caller
/// may safely retry it on a fresh connection.
pub(crate) enum RunError {
    Open(russh::Error),
    Other(SshError),
}

/// One command ready to go onto a channel.
pub(crate) struct Job<'a> {
    /// Server address, for errors.
    pub(crate) host: &'a str,
    /// Server port, for errors.
    pub(crate) port: u16,
    /// The final command line (already wrapped for sudo).
    pub(crate) command: &'a str,
    /// Shared so a retry on a fresh connection does not copy it again.
    pub(crate) stdin: Arc<[u8]>,
    /// When the channel was requested; the deadline counts from here.
    pub(crate) started: Instant,
    pub(crate) deadline: Duration,
    /// Per-stream output cap in bytes.
    pub(crate) cap: usize,
    /// How long TERM gets before KILL when the deadline passes.
    pub(crate) kill_grace: Duration,
    /// Cancelled: the command is killed as if its deadline had passed.
    pub(crate) interrupt: &'a CancellationToken,
}

/// Why a bounded wait ended early.
pub(crate) enum Stop {
    /// The deadline passed.
    Deadline,
    /// The transport's interrupt was cancelled.
    Interrupted,
}

/// Awaits `fut` until `until` or until `interrupt` is cancelled, whichever comes first.
pub(crate) async fn bounded<F: std::future::Future>(
    until: Instant,
    interrupt: &CancellationToken,
    fut: F,
) -> Result<F::Output, Stop> {
    tokio::select! {
        biased;
        () = interrupt.cancelled() => Err(Stop::Interrupted),
        out = tokio::time::timeout_at(until, fut) => out.map_err(|_| Stop::Deadline),
    }
}

/// Runs the job on a new channel of `handle` and collects its output until the channel closes.
pub(crate) async fn run(handle: &Handle<Checker>, job: Job<'_>) -> Result<ExecOutput, RunError> {
    let Job {
        host,
        port,
        command,
        stdin,
        started,
        deadline,
        cap,
        kill_grace,
        interrupt,
    } = job;
    let until = started + deadline;
    let stopped = |stop| {
        RunError::Other(match stop {
            Stop::Deadline => SshError::Timeout {
                host: host.to_string(),
                port,
                deadline,
            },
            Stop::Interrupted => SshError::Interrupted {
                host: host.to_string(),
                port,
            },
        })
    };
    let channel = match bounded(until, interrupt, handle.channel_open_session()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(RunError::Open(e)),
        Err(stop) => return Err(stopped(stop)),
    };
    let (mut reader, writer) = channel.split();
    let session_error = |source| {
        RunError::Other(SshError::Session {
            host: host.to_string(),
            port,
            source,
        })
    };
    writer.exec(true, command).await.map_err(session_error)?;

    // stdin is fed from its own task: a command that writes a lot before reading its input
    // would otherwise fill our receive window while we wait for its send window.
    let writer = Arc::new(writer);
    let feeder = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            if !stdin.is_empty() {
                writer.data(Cursor::new(stdin)).await?;
            }
            writer.eof().await
        })
    };

    let mut stdout = Capped::new(cap);
    let mut stderr = Capped::tail(cap);
    let mut exit: Option<Exit> = None;
    let mut confirmed = false;
    loop {
        let msg = match bounded(until, interrupt, reader.wait()).await {
            Ok(msg) => msg,
            Err(stop) => {
                feeder.abort();
                kill(&writer, &mut reader, kill_grace).await;
                return Err(stopped(stop));
            }
        };
        // ExitStatus, Eof and Close arrive in no guaranteed order: only Close (or the
        // channel going away) ends the command.
        match msg {
            None | Some(ChannelMsg::Close) => break,
            Some(ChannelMsg::Data { data }) => stdout.push(&data),
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => stderr.push(&data),
            Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(Exit::Status(exit_status)),
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                exit = Some(Exit::Signal(signal_text(&signal_name)));
            }
            Some(ChannelMsg::Success) => confirmed = true,
            Some(ChannelMsg::Failure) if !confirmed => {
                feeder.abort();
                let _ = writer.close().await;
                return Err(RunError::Other(SshError::ExecRefused {
                    host: host.to_string(),
                    port,
                }));
            }
            Some(_) => {}
        }
    }
    // The command is done; a still-running feeder only means it did not read all of stdin.
    feeder.abort();
    let (stdout, stdout_dropped) = stdout.take();
    let (stderr, stderr_dropped) = stderr.take();
    Ok(ExecOutput {
        stdout_truncated: stdout_dropped > 0,
        stderr_truncated: stderr_dropped > 0,
        stdout_dropped,
        stderr_dropped,
        stdout,
        stderr,
        exit: exit.unwrap_or(Exit::Closed),
        duration: started.elapsed(),
    })
}

/// Ends a command that ran past its deadline. Closing the channel alone is not enough: sshd
/// leaves a no-pty command running when its channel closes. A `signal` request makes sshd
/// `killpg()` the session's process group (OpenSSH ≥ 7.8). TERM goes first because sudo relays
/// it to a command running as another user, which sshd's KILL (sent with the login user's
/// rights) cannot reach; KILL follows for anything that ignores TERM. sshd ignores both for
/// root logins, where the watchdog from [`remote_command`] does the killing instead.
pub(super) async fn kill(writer: &ChannelWriteHalf<Msg>, reader: &mut ChannelReadHalf, grace: Duration) {
    let _ = writer.signal(Sig::TERM).await;
    if !wait_close(reader, grace).await {
        let _ = writer.signal(Sig::KILL).await;
    }
    let _ = writer.close().await;
    // Let the close handshake finish so the server frees the session (MaxSessions) before
    // the slot is reused; bounded because a dead connection would never answer.
    wait_close(reader, Duration::from_secs(2)).await;
}

/// True when the channel closed within `limit`.
pub(super) async fn wait_close(reader: &mut ChannelReadHalf, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            match reader.wait().await {
                None | Some(ChannelMsg::Close) => return,
                Some(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

pub(super) fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the wrapped command line through a real local `sh`, as sshd would.
    fn run_locally(line: &str) -> std::process::Output {
        std::process::Command::new("sh").arg("-c").arg(line).output().unwrap()
    }

    #[test]
    fn wrapping_keeps_the_command_intact_and_its_exit_status() {
        let line = remote_command(
            r#"printf '%s|' "a b" 'it'"'"'s' $((1+2)); exit 7"#,
            false,
            Duration::from_secs(5),
        );
        let out = run_locally(&line);
        assert_eq!(out.stdout, b"a b|it's|3|");
        assert_eq!(out.status.code(), Some(7));
    }

    #[test]
    fn wrapping_rounds_the_server_deadline_up_and_adds_a_second() {
        let line = remote_command("true", false, Duration::from_millis(1500));
        assert!(line.starts_with("exec sh -c 'if command -v timeout"), "{line}");
        assert!(line.ends_with(" 3 sh -c 'true'"), "{line}");
    }

    #[test]
    fn sudo_wraps_the_watchdog_so_it_runs_with_root_rights() {
        let line = remote_command("id -u", true, Duration::from_secs(10));
        assert!(line.starts_with("exec sudo -n -- sh -c 'if command"), "{line}");
        assert!(line.ends_with(" 11 sh -c 'id -u'"), "{line}");
    }

    #[test]
    fn a_script_on_stdin_runs_under_the_watchdog_without_another_shell() {
        let line = remote_command(SCRIPT_ON_STDIN, false, Duration::from_secs(5));
        assert!(line.ends_with(" 6 sh -s"), "{line}");
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"printf '%s|' \"$0\" \"$#\"; exit 3\n").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.stdout, b"sh|0|");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn the_server_side_watchdog_kills_the_whole_process_group() {
        // `sleep 30` is a grandchild behind a shell that ignores TERM; only the group KILL
        // from `timeout` ends it within the test's bound.
        let started = std::time::Instant::now();
        let line = remote_command("trap '' TERM; sleep 30; echo late", false, Duration::ZERO);
        let out = std::process::Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(out.stdout.is_empty());
        assert!(!out.status.success());
    }

    #[test]
    fn sudo_password_prompts_are_recognised() {
        let fails = Exit::Status(1);
        assert!(sudo_wants_password(&fails, b"sudo: a password is required\n"));
        assert!(sudo_wants_password(
            &fails,
            b"sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper\n"
        ));
        assert!(!sudo_wants_password(
            &Exit::Status(2),
            b"sudo: a password is required\n"
        ));
        assert!(!sudo_wants_password(&fails, b"grep: a password is required\n"));
        assert!(!sudo_wants_password(&fails, b""));
    }

    #[test]
    fn capped_keeps_the_head_and_counts_the_rest() {
        let mut c = Capped::new(5);
        c.push(b"abc");
        c.push(b"defg");
        c.push(b"hij");
        assert_eq!(c.take(), (b"abcde".to_vec(), 5));
    }

    #[test]
    fn capped_tail_keeps_the_last_bytes_however_much_came() {
        let mut c = Capped::tail(5);
        for _ in 0..100_000 {
            c.push(b"0123456789");
        }
        c.push(b"the end");
        assert_eq!(c.take(), (b"e end".to_vec(), 1_000_002));
        assert!(c.bytes.capacity() < 1024 * 1024, "held at most twice the batch");
    }

    #[test]
    fn truncation_marker_reports_dropped_bytes() {
        assert_eq!(with_truncation_marker(b"abc", 0), "abc");
        assert_eq!(with_truncation_marker(b"abc", 1024), "abc…[truncated 1024 bytes]");
    }
}
