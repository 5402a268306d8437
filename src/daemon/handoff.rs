//! `chom reconcile` handed to the daemon that owns the inventory: a Unix socket in the
//! daemon's state directory (named in the inventory's lock file), one JSON line per
//! request and per answer. The daemon queues the servers like any other work (one worker
//! per server, the start-rate bucket), runs each pass as an explicit one (every component
//! checked now), and answers with each server's result as it finishes. Its pooled SSH
//! connections skip the handshakes a one-shot pass pays, and nothing ever races the
//! daemon.
//!
//! The socket is created mode 0600, so only the daemon's user (and root) can hand it
//! work; anyone else gets the one-owner refusal, which names the daemon.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Longest request line read.
const MAX_REQUEST: u64 = 1024 * 1024;

/// What the CLI asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum Request {
    /// An explicit pass over these servers (all the daemon owns when empty).
    Reconcile {
        /// Server names.
        names: Vec<String>,
        /// `user@host` that asked, for the audit trail.
        by: String,
    },
}

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    /// The names the daemon will reconcile (the rest of the request is not its own).
    Accepted {
        /// Server names.
        names: Vec<String>,
    },
    /// One server's pass.
    Server(ServerResult),
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
}

/// One server's pass, as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerResult {
    /// The server.
    pub name: String,
    /// `Succeeded`, `Failed`, `Blocked`.
    pub result: String,
    /// Ready's reason.
    pub reason: String,
    /// Components changed.
    pub changed: usize,
    /// Milliseconds.
    pub took_ms: u64,
    /// Ready's message (first line).
    pub message: String,
    /// The pass's deployment id.
    pub deployment_id: String,
    /// Succeeded, or held back on purpose (suspended, pinned).
    pub ok: bool,
}

/// Where a daemon's socket lives in its state directory.
pub fn socket_path(state_dir: &Path, shard: crate::shard::Shard) -> PathBuf {
    if shard.count > 1 {
        state_dir.join(format!("daemon-{}.sock", shard.tag()))
    } else {
        state_dir.join("daemon.sock")
    }
}

/// Binds the socket (replacing a stale one: the caller owns the inventory, so no other
/// daemon of this shard can be using it), mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What the daemon does with a request: register the servers it owns and queue them;
/// each finished pass is sent on the returned channel, which closes once every one has
/// answered (or the daemon drops them: a server removed, the daemon stopping).
pub trait Handler: Send + Sync + 'static {
    /// Queues `names` (all when empty) for explicit passes; returns the names accepted and
    /// where their results come.
    fn reconcile(&self, names: &[String], by: &str) -> (Vec<String>, mpsc::UnboundedReceiver<ServerResult>);
}

/// Serves requests until the listener fails (the daemon aborts the task at shutdown).
pub async fn serve<H: Handler>(listener: UnixListener, handler: std::sync::Arc<H>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &*handler).await {
                tracing::debug!(error = %e, "a reconcile request ended early");
            }
        });
    }
}

async fn answer<H: Handler>(stream: UnixStream, handler: &H) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let send = |answer: &Answer| {
        let mut text = serde_json::to_string(answer).unwrap_or_default();
        text.push('\n');
        text
    };
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("not a request chom understands: {e}");
            return write.write_all(send(&Answer::Error { message }).as_bytes()).await;
        }
    };
    let Request::Reconcile { names, by } = request;
    let (accepted, mut results) = handler.reconcile(&names, &by);
    write
        .write_all(send(&Answer::Accepted { names: accepted }).as_bytes())
        .await?;
    while let Some(result) = results.recv().await {
        write.write_all(send(&Answer::Server(result)).as_bytes()).await?;
    }
    write.shutdown().await
}

/// The CLI side: sends `names` to the daemon listening on `socket` and calls `on_result`
/// for each server as it finishes. Returns the names the daemon accepted.
pub async fn request(
    socket: &Path,
    names: &[String],
    mut on_result: impl FnMut(ServerResult),
) -> std::io::Result<Vec<String>> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(&Request::Reconcile {
        names: names.to_vec(),
        by: crate::audit::who(),
    })
    .map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let mut accepted = Vec::new();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Answer>(&line).map_err(std::io::Error::other)? {
            Answer::Accepted { names } => accepted = names,
            Answer::Server(result) => on_result(result),
            Answer::Error { message } => return Err(std::io::Error::other(message)),
        }
    }
    Ok(accepted)
}
