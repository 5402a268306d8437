//! Several scripts on one channel: one `sh -s` on the server reads them from its stdin one
//! after another, each sent once the one before has answered. A reconcile pass on a root login
//! runs its probe and its components this way, so every script after the first costs the server
//! no session of its own (sshd's session process, the login shell, the watchdog and their
//! `exec`s) and the pass no channel round trips.
//!
//! Each script is sent as one single-quoted word to `eval`, inside a subshell with stdin from
//! /dev/null: its `exit`, variables, `cd` and `set` options stay its own, it cannot read the
//! scripts after it, and a syntax error in it fails that step instead of swallowing the rest
//! of the session. Around it the session shell prints, on stdout, `\n@@chom:step NONCE PID`
//! before and `\n@@chom:done NONCE STATUS` after, and `\n@@chom:done NONCE` on stderr; the
//! step's output is what came between. The nonce is random per session, so no script prints
//! it by chance. PID is the session shell's `$$`.
//!
//! Deadlines: the client holds each step to its own deadline. When one passes, it kills the
//! session shell's process group (field 5 of `/proc/PID/stat`: the watchdog's group, which
//! holds everything the session started) from a second channel, since sshd does not deliver
//! signals to root sessions, then closes the session. The server-side watchdog (see
//! [`super::remote_command`]) covers the session as a whole, the sum of its steps' deadlines,
//! for a client that is gone.

use std::io::Cursor;
use std::time::Duration;

use russh::client::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::error::SshError;
use super::exec::{
    self, Capped, ExecOutput, Exit, Job, Stop, bounded, kill, shell_quote_bytes, signal_text, wait_close,
};
use super::host_key::Checker;
use super::pool::Lease;
use tokio_util::sync::CancellationToken;

/// Starts the line before a step's output, followed by the nonce and the session shell's PID.
const STEP: &str = "@@chom:step";

/// Starts the line that ends a step's output, followed by the nonce (and the exit status).
const DONE: &str = "@@chom:done";

/// Kills the process group of the session shell `$0`, if `$0` still is one (see
/// [`Shell::abort`]): `/proc/PID/stat` gives its command name, parent and group.
const KILL_SESSION: &str = r#"read -r s </proc/"$0"/stat && set -- $s && case $2 in "(sh)" | "(dash)" | "(bash)" | "(ash)" | "(busybox)") ;; *) exit 1 ;; esac && [ "$5" -gt 1 ] && { [ "$4" = "$5" ] || [ "$1" = "$5" ]; } && kill -KILL -"$5""#;

/// How long [`Shell::finish`] waits for the server to close the channel after EOF.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A shell session on one channel of a pooled connection, holding that connection (and one of
/// its channel slots) until [`Shell::finish`] or drop.
pub struct Shell {
    writer: ChannelWriteHalf<Msg>,
    reader: ChannelReadHalf,
    nonce: String,
    host: String,
    port: u16,
    /// The session's deadline, as given to the server-side watchdog.
    until: Instant,
    cap: usize,
    kill_grace: Duration,
    /// Cancelled: the running step is killed as if its deadline had passed.
    interrupt: CancellationToken,
    /// The server accepted the `exec` request.
    confirmed: bool,
    /// The channel closed, failed or was killed: no further step can run on it.
    ended: bool,
    /// How the session shell itself ended, if it did.
    exit: Option<Exit>,
    /// The session shell's PID on the server, once a step has said it.
    pid: Option<u32>,
    _permit: Option<OwnedSemaphorePermit>,
    lease: Lease,
}

/// Where a session runs and how: passed by the transport, which owns the pool.
pub(crate) struct Opened {
    pub(crate) lease: Lease,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) until: Instant,
    pub(crate) cap: usize,
    pub(crate) kill_grace: Duration,
    pub(crate) interrupt: CancellationToken,
}

/// Opens a channel on `handle` and starts `command` (the watchdog around `sh -s`) on it. The
/// error is russh's, so that the transport can tell a dead pooled connection (retry on a fresh
/// one) from anything else.
pub(crate) async fn open(
    handle: &Handle<Checker>,
    command: &str,
    until: Instant,
) -> Result<(ChannelReadHalf, ChannelWriteHalf<Msg>), Option<russh::Error>> {
    let channel = match tokio::time::timeout_at(until, handle.channel_open_session()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(Some(e)),
        Err(_) => return Err(None),
    };
    let (reader, writer) = channel.split();
    // The reply (success or failure) is read with the first step's output: no round trip here.
    writer.exec(true, command).await.map_err(Some)?;
    Ok((reader, writer))
}

impl Shell {
    pub(crate) fn new(opened: Opened, reader: ChannelReadHalf, writer: ChannelWriteHalf<Msg>) -> Shell {
        Shell {
            writer,
            reader,
            nonce: nonce(),
            host: opened.host,
            port: opened.port,
            until: opened.until,
            cap: opened.cap,
            kill_grace: opened.kill_grace,
            interrupt: opened.interrupt,
            confirmed: false,
            ended: false,
            exit: None,
            pid: None,
            _permit: opened.permit,
            lease: opened.lease,
        }
    }

    /// False once the channel has closed or a step failed in a way that ended the session;
    /// later scripts must then go on channels of their own.
    pub fn is_open(&self) -> bool {
        !self.ended
    }

    /// What is left of the session's budget.
    pub fn time_left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// Runs one script (the text `sh -s` would read) and returns what it printed and its exit
    /// status. Output is capped per stream like [`super::Transport::exec`]'s. A session that
    /// has ended runs nothing and reports [`Exit::Closed`].
    pub async fn run(&mut self, script: &[u8], deadline: Duration) -> Result<ExecOutput, SshError> {
        let started = Instant::now();
        let until = (started + deadline).min(self.until);
        let mut head = Framed::new(self.marker(STEP), Capped::new(self.cap));
        let mut out = Framed::new(self.marker(DONE), Capped::new(self.cap));
        let mut err = Framed::new(self.marker(DONE), Capped::tail(self.cap));
        if self.ended {
            return Ok(output(out, err, Exit::Closed, started));
        }
        let text = self.frame(script);
        match bounded(until, &self.interrupt, self.writer.data(Cursor::new(text))).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                self.ended = true;
                return Err(SshError::Session {
                    host: self.host.clone(),
                    port: self.port,
                    source,
                });
            }
            Err(stop) => return Err(self.abort(deadline, stop).await),
        }
        while !(out.done() && err.done()) {
            let msg = match bounded(until, &self.interrupt, self.reader.wait()).await {
                Ok(msg) => msg,
                Err(stop) => return Err(self.abort(deadline, stop).await),
            };
            match msg {
                None | Some(ChannelMsg::Close) => {
                    self.ended = true;
                    break;
                }
                Some(ChannelMsg::Data { data }) if head.done() => out.push(&data),
                Some(ChannelMsg::Data { data }) => {
                    // Whatever came before the step line (a login shell's chatter) belongs to
                    // the output too.
                    head.push(&data);
                    if head.done() {
                        self.pid = self.pid.or(head.number());
                        let (before, rest) = head.split();
                        out.push(&before);
                        out.push(&rest);
                    }
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => err.push(&data),
                Some(ChannelMsg::ExitStatus { exit_status }) => self.exit = Some(Exit::Status(exit_status)),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    self.exit = Some(Exit::Signal(signal_text(&signal_name)));
                }
                Some(ChannelMsg::Success) => self.confirmed = true,
                Some(ChannelMsg::Failure) if !self.confirmed => {
                    self.ended = true;
                    let _ = self.writer.close().await;
                    return Err(SshError::ExecRefused {
                        host: self.host.clone(),
                        port: self.port,
                    });
                }
                Some(_) => {}
            }
        }
        if !head.done() {
            out.push(&head.split().0);
        }
        let exit = match out.number() {
            Some(code) => Exit::Status(code),
            // The session shell died during the step: its own end is the step's.
            None => self.exit.clone().unwrap_or(Exit::Closed),
        };
        Ok(output(out, err, exit, started))
    }

    /// Ends the session: EOF makes the shell exit, then the channel closes (waited for, within
    /// a bound, so that the server has freed the session before the connection is reused).
    pub async fn finish(mut self) {
        if self.ended {
            return;
        }
        let _ = self.writer.eof().await;
        if !wait_close(&mut self.reader, CLOSE_WAIT).await {
            let _ = self.writer.close().await;
        }
    }

    /// A step ran past its deadline (or was interrupted): its process group is killed from a
    /// second channel on the same connection, then the session is closed the way a timed-out
    /// command is.
    async fn abort(&mut self, deadline: Duration, stop: Stop) -> SshError {
        self.ended = true;
        // The group is looked up only now, on this rare path. The process must still be the
        // session shell (a shell whose group is led by its parent, the watchdog, or by itself
        // without one), not another that took its PID, and the group never 0 or 1: `kill -1`
        // would signal every process the user may signal. Without a PID yet (the step line
        // never came) only the watchdog, at the session's budget, ends what runs.
        if let Some(pid) = self.pid {
            let command = format!("sh -c '{}' {pid}", KILL_SESSION);
            let job = Job {
                host: &self.host,
                port: self.port,
                command: &command,
                stdin: Vec::new().into(),
                started: Instant::now(),
                deadline: CLOSE_WAIT,
                cap: 4096,
                kill_grace: self.kill_grace,
                interrupt: &CancellationToken::new(),
            };
            if exec::run(&self.lease.conn.handle, job).await.is_err() {
                tracing::debug!(host = %self.host, "could not kill a timed-out session's processes");
            }
        }
        kill(&self.writer, &mut self.reader, self.kill_grace).await;
        match stop {
            Stop::Deadline => SshError::Timeout {
                host: self.host.clone(),
                port: self.port,
                deadline,
            },
            Stop::Interrupted => SshError::Interrupted {
                host: self.host.clone(),
                port: self.port,
            },
        }
    }

    fn marker(&self, word: &str) -> Vec<u8> {
        format!("\n{word} {}", self.nonce).into_bytes()
    }

    /// The bytes sent for one step (see the module documentation): the script's own bytes,
    /// quoted, never re-encoded.
    fn frame(&self, script: &[u8]) -> Vec<u8> {
        let nonce = &self.nonce;
        let mut out = format!("printf '\\n{STEP} %s %s\\n' {nonce} \"$$\"\n( eval ").into_bytes();
        out.extend_from_slice(&shell_quote_bytes(script));
        out.extend_from_slice(
            format!(
                "\n) </dev/null\n\
                 printf '\\n{DONE} %s %s\\n' {nonce} \"$?\"\n\
                 printf '\\n{DONE} %s\\n' {nonce} >&2\n"
            )
            .as_bytes(),
        );
        out
    }
}

fn output(out: Framed, err: Framed, exit: Exit, started: Instant) -> ExecOutput {
    let (stdout, stdout_dropped) = out.into_parts();
    let (stderr, stderr_dropped) = err.into_parts();
    ExecOutput {
        stdout,
        stderr,
        stdout_truncated: stdout_dropped > 0,
        stderr_truncated: stderr_dropped > 0,
        stdout_dropped,
        stderr_dropped,
        exit,
        duration: started.elapsed(),
    }
}

/// 16 hex digits, random per session (fastrand's per-thread generator, seeded randomly).
fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// One stream of one step: output up to a marker line, capped, the rest of that line, and
/// what came after it.
struct Framed {
    marker: Vec<u8>,
    /// Received bytes that may still be the start of the marker.
    pending: Vec<u8>,
    kept: Capped,
    /// What followed the marker on its line, once the whole line has arrived.
    tail: Option<Vec<u8>>,
    /// Bytes after the marker's line.
    rest: Vec<u8>,
}

impl Framed {
    fn new(marker: Vec<u8>, kept: Capped) -> Framed {
        Framed {
            marker,
            pending: Vec::new(),
            kept,
            tail: None,
            rest: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.tail.is_some() {
            self.rest.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        if let Some(at) = find(&self.pending, &self.marker) {
            let after = at + self.marker.len();
            if let Some(len) = self.pending[after..].iter().position(|&b| b == b'\n') {
                self.kept.push(&self.pending[..at]);
                self.tail = Some(self.pending[after..after + len].to_vec());
                self.rest = self.pending[after + len + 1..].to_vec();
                self.pending.clear();
            }
            return;
        }
        // Everything but a possible start of the marker is the step's output.
        let settled = self.pending.len().saturating_sub(self.marker.len() - 1);
        self.kept.push(&self.pending[..settled]);
        self.pending.drain(..settled);
    }

    fn done(&self) -> bool {
        self.tail.is_some()
    }

    /// The number the marker line carries (exit status, process group).
    fn number(&self) -> Option<u32> {
        let tail = self.tail.as_deref()?;
        std::str::from_utf8(tail).ok()?.trim().parse().ok()
    }

    /// What came before the marker (all that came, without one) and what came after its line.
    fn split(&mut self) -> (Vec<u8>, Vec<u8>) {
        if self.tail.is_none() {
            let pending = std::mem::take(&mut self.pending);
            self.kept.push(&pending);
        }
        (self.kept.take().0, std::mem::take(&mut self.rest))
    }

    /// The step's output and the bytes dropped past the cap.
    fn into_parts(mut self) -> (Vec<u8>, u64) {
        if self.tail.is_none() {
            let pending = std::mem::take(&mut self.pending);
            self.kept.push(&pending);
        }
        self.kept.take()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(chunks: &[&[u8]], cap: usize) -> Framed {
        let mut f = Framed::new(b"\n@@chom:done abc".to_vec(), Capped::new(cap));
        for chunk in chunks {
            f.push(chunk);
        }
        f
    }

    #[test]
    fn the_marker_ends_the_output_even_split_across_chunks() {
        let f = framed(&[b"hello\nwor", b"ld\n@@chom:d", b"one abc 7", b"\n"], 1024);
        assert!(f.done());
        assert_eq!(f.number(), Some(7));
        assert_eq!(f.into_parts(), (b"hello\nworld".to_vec(), 0));
    }

    #[test]
    fn output_without_a_final_newline_and_empty_output_are_kept_exactly() {
        let f = framed(&[b"no newline\n@@chom:done abc 0\n"], 1024);
        assert_eq!(f.into_parts().0, b"no newline");
        let f = framed(&[b"\n@@chom:done abc 0\n"], 1024);
        assert_eq!(f.number(), Some(0));
        assert_eq!(f.into_parts().0, b"");
    }

    #[test]
    fn a_marker_line_still_arriving_is_not_done() {
        let mut f = framed(&[b"x\n@@chom:done abc 1"], 1024);
        assert!(!f.done());
        f.push(b"2\n");
        assert_eq!(f.number(), Some(12));
    }

    #[test]
    fn another_nonce_is_output() {
        let f = framed(&[b"a\n@@chom:done xyz 0\nb"], 1024);
        assert!(!f.done());
        assert_eq!(f.into_parts().0, b"a\n@@chom:done xyz 0\nb");
    }

    #[test]
    fn output_past_the_cap_is_counted_and_the_marker_still_found() {
        let big = vec![b'y'; 5000];
        let f = framed(&[&big, b"\n@@chom:done abc 0\n"], 100);
        assert!(f.done());
        assert_eq!(f.into_parts(), (vec![b'y'; 100], 4900));
    }

    #[test]
    fn what_follows_the_marker_line_is_kept_apart() {
        let mut f = framed(&[b"banner\n@@chom:done abc 42\nout", b"put"], 1024);
        assert_eq!(f.number(), Some(42));
        assert_eq!(f.split(), (b"banner".to_vec(), b"output".to_vec()));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 16);
    }
}
