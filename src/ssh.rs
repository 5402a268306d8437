//! The SSH transport: pooled, paced, host-key-checked connections and command execution on
//! russh. Owns every byte chom sends over SSH; must not know about resources, reconcile logic
//! or status files, and must never accept an unverified host key.
//!
//! Layout: `known_hosts` (file format), `host_key` (trust policy), `auth` (keys and agent),
//! `connect` (one handshake, pacing, retries), `pool` (reuse and idle reaping), `exec` (one
//! command on one channel), `shell` (several scripts in turn on one channel), `error` (what
//! users read).

mod auth;
mod connect;
mod error;
mod exec;
mod host_key;
pub mod known_hosts;
mod pool;
mod shell;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use error::SshError;
pub use exec::{ExecOutput, ExecRequest, Exit, SCRIPT_ON_STDIN, remote_command, with_truncation_marker};
pub use host_key::fingerprint;
/// The host key type returned by [`fetch_host_key`] and accepted by [`fingerprint`].
pub use russh::keys::ssh_key::PublicKey;
pub use shell::Shell;

use auth::Login;
use connect::{Dial, Gate};
use exec::{Job, RunError, sudo_wants_password};
use host_key::{KnownHostsCache, Policy, parse_pins};
use pool::{Conn, Lease, Pool};

/// Transport-wide settings. `Default` gives values that stay inside OpenSSH's default limits.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// known_hosts files consulted for targets without pins (default `~/.ssh/known_hosts`).
    /// Missing files count as empty.
    pub known_hosts_files: Vec<PathBuf>,
    /// ssh-agent socket (default: `SSH_AUTH_SOCK` when set). `None` disables the agent.
    pub agent_socket: Option<PathBuf>,
    /// Budget for TCP connect + key exchange + authentication, per attempt (default 10 s).
    pub connect_timeout: Duration,
    /// SSH keepalive interval; three missed replies drop the connection (default 15 s).
    pub keepalive_interval: Duration,
    /// Pooled connections unused this long are closed (default 5 min).
    pub idle_timeout: Duration,
    /// Idle pooled connections kept open at most (default 64); beyond it the least recently
    /// used are closed once idle for `idle_cap_grace`. Each open connection holds ~85 KiB.
    pub max_idle_connections: usize,
    /// A connection idle for less than this is never closed for the cap (default 1 s), so a
    /// server between two steps of one reconcile keeps its connection.
    pub idle_cap_grace: Duration,
    /// Fleet-wide cap on handshakes in progress (default 10, OpenSSH's MaxStartups start).
    pub max_handshakes_in_flight: usize,
    /// New handshakes started per second, fleet-wide (default 200; 0 = unpaced).
    pub handshake_rate: u32,
    /// Concurrent channels per connection (default 8, under OpenSSH's MaxSessions 10).
    pub max_channels_per_connection: usize,
    /// Bytes kept per output stream per command (default 1 MiB); the rest is counted, not kept.
    pub output_cap: usize,
    /// After a deadline, how long TERM gets before KILL (default 2 s).
    pub kill_grace: Duration,
    /// Cancelled to cut every running command short: each is killed on its server the way
    /// a passed deadline kills it, and ends with [`SshError::Interrupted`] (a second Ctrl-C,
    /// or a daemon's shutdown past its bound). Never cancelled by default.
    pub interrupt: CancellationToken,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        TransportConfig {
            known_hosts_files: home.map(|h| h.join(".ssh/known_hosts")).into_iter().collect(),
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
            max_idle_connections: 64,
            idle_cap_grace: Duration::from_secs(1),
            max_handshakes_in_flight: 10,
            handshake_rate: 200,
            max_channels_per_connection: 8,
            output_cap: 1024 * 1024,
            kill_grace: Duration::from_secs(2),
            interrupt: CancellationToken::new(),
        }
    }
}

/// Where and as whom to run commands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Inventory name, used in hints such as `chom trust NAME`.
    pub name: String,
    /// Address or DNS name.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key tried before the agent.
    pub identity_file: Option<PathBuf>,
    /// Accepted host keys: OpenSSH public key lines or `SHA256:` fingerprints. When present
    /// they are authoritative and known_hosts is not consulted.
    pub host_key_pins: Vec<String>,
}

/// Shared SSH transport: one pooled connection per target, reused across calls and tasks.
/// Create one per process and share it through an `Arc`.
pub struct Transport {
    config: TransportConfig,
    gate: Gate,
    pool: Arc<Pool>,
    known_hosts: KnownHostsCache,
    reaper_started: AtomicBool,
    reaper_stop: CancellationToken,
    _reaper_guard: DropGuard,
}

impl Transport {
    /// Builds a transport. No connection is made until the first call.
    pub fn new(config: TransportConfig) -> Transport {
        let stop = CancellationToken::new();
        Transport {
            gate: Gate::new(config.max_handshakes_in_flight, config.handshake_rate),
            pool: Arc::new(Pool::new(config.max_idle_connections, config.idle_cap_grace)),
            config,
            known_hosts: KnownHostsCache::default(),
            reaper_started: AtomicBool::new(false),
            _reaper_guard: stop.clone().drop_guard(),
            reaper_stop: stop,
        }
    }

    /// Runs one command on `target`, connecting (or reconnecting) as needed. The deadline
    /// counts from when the command's channel is requested; waiting for a connection is bounded
    /// by `connect_timeout` per attempt instead, so a queue of handshakes does not eat into it.
    pub async fn exec(&self, target: &Target, req: ExecRequest) -> Result<ExecOutput, SshError> {
        let wrapped = req.sudo && target.user != "root";
        let command = remote_command(&req.command, wrapped, req.deadline);
        let stdin: Arc<[u8]> = req.stdin.into();
        let mut retried = false;
        loop {
            let lease = self.lease(target).await?;
            crate::progress::emit(crate::progress::Event::Connected);
            let Lease { conn } = &lease;
            let _channel = conn.channels.acquire().await.ok();
            let job = Job {
                host: &target.host,
                port: target.port,
                command: &command,
                stdin: Arc::clone(&stdin),
                started: Instant::now(),
                deadline: req.deadline,
                cap: self.config.output_cap,
                kill_grace: self.config.kill_grace,
                interrupt: &self.config.interrupt,
            };
            match exec::run(&conn.handle, job).await {
                Ok(out) if wrapped && sudo_wants_password(&out.exit, &out.stderr) => {
                    return Err(SshError::SudoNeedsPassword {
                        user: target.user.clone(),
                        host: target.host.clone(),
                    });
                }
                Ok(out) => return Ok(out),
                Err(RunError::Open(source)) => {
                    self.open_failed(target, conn, source, retried)?;
                    retried = true;
                }
                Err(RunError::Other(e)) => return Err(e),
            }
        }
    }

    /// Starts a shell session on `target` for several scripts in turn (see [`Shell`]), as the
    /// login user: no sudo, so callers use it for root logins. `budget` is the session's
    /// budget, the sum of the deadlines of the scripts it will run; the server-side watchdog
    /// ends the session when it passes. Opening the channel must take less than
    /// `open_within`, the first script's deadline.
    pub async fn shell(&self, target: &Target, budget: Duration, open_within: Duration) -> Result<Shell, SshError> {
        let command = remote_command(SCRIPT_ON_STDIN, false, budget);
        let mut retried = false;
        loop {
            let lease = self.lease(target).await?;
            crate::progress::emit(crate::progress::Event::Connected);
            let permit = Arc::clone(&lease.conn.channels).acquire_owned().await.ok();
            let now = Instant::now();
            let until = now + budget;
            match shell::open(&lease.conn.handle, &command, now + open_within.min(budget)).await {
                Ok((reader, writer)) => {
                    let opened = shell::Opened {
                        lease,
                        permit,
                        host: target.host.clone(),
                        port: target.port,
                        until,
                        cap: self.config.output_cap,
                        kill_grace: self.config.kill_grace,
                        interrupt: self.config.interrupt.clone(),
                    };
                    return Ok(Shell::new(opened, reader, writer));
                }
                Err(None) => {
                    return Err(SshError::Timeout {
                        host: target.host.clone(),
                        port: target.port,
                        deadline: open_within,
                    });
                }
                Err(Some(source)) => {
                    self.open_failed(target, &lease.conn, source, retried)?;
                    retried = true;
                }
            }
        }
    }

    /// Opening a channel failed with `source`. A pooled connection can die unnoticed (server
    /// restarted, NAT dropped it); then nothing has started, so one retry on a fresh connection
    /// is safe: `Ok` means retry. Anything else, or a second failure, is the error.
    fn open_failed(
        &self,
        target: &Target,
        conn: &Arc<Conn>,
        source: russh::Error,
        retried: bool,
    ) -> Result<(), SshError> {
        let stale = conn.handle.is_closed() || is_gone(&source);
        if stale {
            self.pool.slot(target).discard(conn);
        }
        if !stale || retried {
            return Err(SshError::Session {
                host: target.host.clone(),
                port: target.port,
                source,
            });
        }
        tracing::debug!(server = %target.name, error = %source,
            "pooled ssh connection was dead, reconnecting");
        Ok(())
    }

    /// Number of live pooled connections, for metrics.
    pub fn open_connections(&self) -> usize {
        self.pool.open_connections()
    }

    /// True when `target` has a live pooled connection: a call now needs no handshake.
    pub fn is_connected(&self, target: &Target) -> bool {
        self.pool.is_open(target)
    }

    /// Disconnects the pooled connection of one target, if any.
    pub async fn disconnect(&self, target: &Target) {
        self.pool.close(target).await;
    }

    /// Disconnects every pooled connection (commands still running on them are cut off).
    pub async fn close_all(&self) {
        self.pool.close_all().await;
    }

    async fn lease(&self, target: &Target) -> Result<Lease, SshError> {
        self.start_reaper();
        let slot = self.pool.slot(target);
        let idle = self.config.idle_timeout;
        match slot.lease(target, idle) {
            Ok(lease) => return Ok(lease),
            Err(old) => pool::retire(old).await,
        }
        let _opening = slot.opening.lock().await;
        // Someone else may have connected while we waited for the lock.
        match slot.lease(target, idle) {
            Ok(lease) => return Ok(lease),
            Err(old) => pool::retire(old).await,
        }
        let conn = self.connect(target).await?;
        Ok(slot.install(conn))
    }

    async fn connect(&self, target: &Target) -> Result<Conn, SshError> {
        let policy = if target.host_key_pins.is_empty() {
            Policy::KnownHosts(self.known_hosts.get(&self.config.known_hosts_files).await?)
        } else {
            Policy::Pins(parse_pins(&target.name, &target.host_key_pins)?)
        };
        let dial = Dial {
            name: &target.name,
            host: &target.host,
            port: target.port,
            policy: Arc::new(policy),
            connect_timeout: self.config.connect_timeout,
            keepalive_interval: self.config.keepalive_interval,
            gate: &self.gate,
        };
        let login = Login {
            user: &target.user,
            host: &target.host,
            port: target.port,
            identity_file: target.identity_file.as_deref(),
            agent_socket: self.config.agent_socket.as_deref(),
        };
        let (handle, _key) = connect::open(&dial, Some(&login)).await?;
        tracing::debug!(server = %target.name, host = %target.host, port = target.port,
            "ssh connection established");
        Ok(Conn::new(
            handle,
            target.clone(),
            self.config.max_channels_per_connection,
            Arc::clone(&self.pool.census),
        ))
    }

    /// The reaper starts with the first connection, so `new` works outside a tokio runtime.
    fn start_reaper(&self) {
        if !self.reaper_started.swap(true, Ordering::SeqCst) {
            pool::spawn_reaper(
                Arc::downgrade(&self.pool),
                self.config.idle_timeout,
                self.reaper_stop.clone(),
            );
        }
    }
}

/// Handshakes with `host:port` without authenticating and returns the host key it proved to
/// hold, for `chom trust` to show and record. The key is not checked against anything: the
/// caller must have a person confirm the fingerprint.
pub async fn fetch_host_key(host: &str, port: u16, timeout: Duration) -> Result<PublicKey, SshError> {
    connect::fetch_host_key(host, port, timeout).await
}

/// Errors that mean the connection under a channel is gone rather than the channel refused.
fn is_gone(err: &russh::Error) -> bool {
    matches!(
        err,
        russh::Error::SendError
            | russh::Error::Disconnect
            | russh::Error::HUP
            | russh::Error::IO(_)
            | russh::Error::KeepaliveTimeout
    )
}
