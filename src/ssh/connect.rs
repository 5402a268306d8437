//! Opening one authenticated SSH connection: handshake pacing, TCP connect, key exchange with
//! host key checks, retries of reset handshakes, then authentication. Owns nothing long-lived
//! and must not pool or reuse connections (that is `pool.rs`).

use std::sync::Arc;
use std::time::Duration;

use russh::client::Handle;
use russh::keys::ssh_key::PublicKey;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::auth::{Login, authenticate};
use super::error::{SshError, is_handshake_reset};
use super::host_key::{Checker, Policy, Seen, refusal};
use super::known_hosts::same_family;

/// How many times a reset handshake is tried before giving up.
const MAX_ATTEMPTS: u32 = 4;
/// First backoff after a reset; doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// Fleet-wide handshake throttle. OpenSSH's default `MaxStartups 10:30:100` silently resets
/// connections once ten are unauthenticated, so a burst against one sshd (or a fleet behind one
/// bastion) must stay under that, and spread out in time.
pub(crate) struct Gate {
    in_flight: Semaphore,
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl Gate {
    pub(crate) fn new(max_in_flight: usize, rate_per_second: u32) -> Gate {
        let interval = if rate_per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / rate_per_second
        };
        Gate {
            in_flight: Semaphore::new(max_in_flight.max(1)),
            interval,
            next_slot: Mutex::new(Instant::now()),
        }
    }

    /// Waits for a free handshake slot and for this handshake's turn in the rate schedule. The
    /// permit must be held until authentication finishes, since sshd counts a connection as
    /// "starting up" until then.
    pub(crate) async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        let permit = self.in_flight.acquire().await.ok()?;
        let slot = {
            let mut next = self.next_slot.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
        Some(permit)
    }
}

/// Everything one connection attempt needs.
pub(crate) struct Dial<'a> {
    pub(crate) name: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) policy: Arc<Policy>,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) gate: &'a Gate,
}

enum Failure {
    Reset(russh::Error),
    Fatal(SshError),
}

/// Opens a connection, authenticating when `login` is given. Returns the handle and the host
/// key the server proved it holds.
pub(crate) async fn open(dial: &Dial<'_>, login: Option<&Login<'_>>) -> Result<(Handle<Checker>, PublicKey), SshError> {
    let config = Arc::new(client_config(dial));
    let mut attempt = 1;
    loop {
        let permit = dial.gate.enter().await;
        let result = tokio::time::timeout(dial.connect_timeout, attempt_once(dial, Arc::clone(&config), login)).await;
        drop(permit);
        match result {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(Failure::Fatal(e))) => return Err(e),
            Ok(Err(Failure::Reset(source))) if attempt >= MAX_ATTEMPTS => {
                return Err(SshError::HandshakeReset {
                    host: dial.host.to_string(),
                    port: dial.port,
                    attempts: attempt,
                    source,
                });
            }
            Ok(Err(Failure::Reset(source))) => {
                let delay = backoff(attempt);
                tracing::debug!(host = dial.host, port = dial.port, attempt, error = %source,
                    delay_ms = delay.as_millis() as u64, "ssh handshake reset, retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(_elapsed) => {
                return Err(SshError::ConnectTimeout {
                    host: dial.host.to_string(),
                    port: dial.port,
                    timeout: dial.connect_timeout,
                });
            }
        }
    }
}

async fn attempt_once(
    dial: &Dial<'_>,
    config: Arc<russh::client::Config>,
    login: Option<&Login<'_>>,
) -> Result<(Handle<Checker>, PublicKey), Failure> {
    let stream = match TcpStream::connect((dial.host, dial.port)).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Failure::Fatal(SshError::ConnectRefused {
                host: dial.host.to_string(),
                port: dial.port,
            }));
        }
        Err(source) => {
            return Err(Failure::Fatal(SshError::Connect {
                host: dial.host.to_string(),
                port: dial.port,
                source,
            }));
        }
    };
    // Commands are small request/response exchanges; Nagle only adds latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let seen = Seen::default();
    let checker = Checker {
        policy: Arc::clone(&dial.policy),
        host: dial.host.to_string(),
        port: dial.port,
        seen: Arc::clone(&seen),
    };
    let connected = russh::client::connect_stream(config, stream, checker).await;
    let presented = seen.lock().ok().and_then(|mut slot| slot.take());
    let mut handle = match connected {
        Ok(handle) => handle,
        Err(source) => {
            if let Some((key, verdict)) = &presented
                && let Some(err) = refusal(dial.name, dial.host, dial.port, key, verdict)
            {
                return Err(Failure::Fatal(err));
            }
            return Err(if is_handshake_reset(&source) {
                Failure::Reset(source)
            } else {
                Failure::Fatal(SshError::Handshake {
                    host: dial.host.to_string(),
                    port: dial.port,
                    source,
                })
            });
        }
    };
    let Some((key, _)) = presented else {
        // russh always calls check_server_key during the first kex; reaching this means the
        // handshake skipped it, and an unchecked server must never be used.
        return Err(Failure::Fatal(SshError::Handshake {
            host: dial.host.to_string(),
            port: dial.port,
            source: russh::Error::UnknownKey,
        }));
    };
    if let Some(login) = login {
        authenticate(&mut handle, login).await.map_err(Failure::Fatal)?;
    }
    Ok((handle, key))
}

fn client_config(dial: &Dial<'_>) -> russh::client::Config {
    let mut preferred = russh::Preferred::default();
    let known = dial.policy.preferred_algorithms(dial.host, dial.port);
    let mut keys = preferred.key.to_vec();
    // Stable sort: algorithms we can verify first, russh's own order otherwise.
    keys.sort_by_key(|alg| !known.iter().any(|k| same_family(k, alg)));
    preferred.key = keys.into();
    russh::client::Config {
        keepalive_interval: Some(dial.keepalive_interval),
        // Idle connections are closed by the pool, which knows whether a command is running;
        // russh's inactivity timeout would cut a long silent command.
        inactivity_timeout: None,
        nodelay: true,
        preferred,
        ..Default::default()
    }
}

/// Exponential backoff with jitter, so a fleet reset by one overloaded sshd does not come back
/// in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1));
    // fastrand's per-thread generator is seeded randomly, which is all jitter needs.
    base + base.mul_f64(fastrand::f64())
}

/// Handshake only, capturing the key (`chom trust`).
pub(crate) async fn fetch_host_key(host: &str, port: u16, timeout: Duration) -> Result<PublicKey, SshError> {
    let gate = Gate::new(1, 0);
    let dial = Dial {
        name: host,
        host,
        port,
        policy: Arc::new(Policy::Capture),
        connect_timeout: timeout,
        keepalive_interval: Duration::from_secs(15),
        gate: &gate,
    };
    let (handle, key) = open(&dial, None).await?;
    if let Err(e) = handle.disconnect(russh::Disconnect::ByApplication, "", "en").await {
        tracing::debug!(error = %e, "disconnect after host key fetch failed");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_double_the_base() {
        for attempt in 1..=4 {
            let base = BACKOFF_BASE * 2u32.pow(attempt - 1);
            let d = backoff(attempt);
            assert!(d >= base && d < base * 2, "{attempt}: {d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gate_spaces_handshakes_at_the_configured_rate() {
        let gate = Gate::new(10, 50);
        let start = Instant::now();
        for _ in 0..5 {
            let _permit = gate.enter().await;
        }
        // Five slots at 20 ms spacing: the fifth starts 80 ms after the first.
        assert_eq!(start.elapsed(), Duration::from_millis(80));
    }

    #[tokio::test(start_paused = true)]
    async fn gate_caps_handshakes_in_flight() {
        let gate = Arc::new(Gate::new(2, 0));
        let a = gate.enter().await;
        let _b = gate.enter().await;
        let waiting = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.enter().await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        drop(a);
        assert!(waiting.await.unwrap());
    }
}
