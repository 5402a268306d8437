//! The connection pool: one live connection per target, leases that mark it busy, and the idle
//! reaper, which closes connections unused for the idle timeout and the least recently used
//! ones beyond the idle cap. Owns connection lifetimes and must not know how connections are
//! opened or used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use russh::client::Handle;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Target;
use super::host_key::Checker;

/// What identifies "the same server" for reuse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    name: String,
    host: String,
    port: u16,
    user: String,
}

impl Key {
    pub(crate) fn of(target: &Target) -> Key {
        Key {
            name: target.name.clone(),
            host: target.host.clone(),
            port: target.port,
            user: target.user.clone(),
        }
    }
}

/// One authenticated connection.
pub(crate) struct Conn {
    pub(crate) handle: Handle<Checker>,
    /// Caps concurrent channels below sshd's MaxSessions (10), past which opens fail.
    pub(crate) channels: Arc<Semaphore>,
    /// The target as it was when connecting: a changed identity file or pin list must not keep
    /// using a connection authenticated or verified under the old settings.
    target: Target,
    last_used: Mutex<Instant>,
    busy: AtomicUsize,
    census: Arc<Census>,
}

/// What the reaper needs to hear from connections without holding the pool.
#[derive(Default)]
pub(crate) struct Census {
    /// Connections alive (installed and not yet dropped).
    live: AtomicUsize,
    /// Signalled when a connection's last lease ends.
    turned_idle: Notify,
}

impl Conn {
    pub(crate) fn new(handle: Handle<Checker>, target: Target, max_channels: usize, census: Arc<Census>) -> Conn {
        census.live.fetch_add(1, Ordering::SeqCst);
        Conn {
            handle,
            channels: Arc::new(Semaphore::new(max_channels.max(1))),
            target,
            last_used: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
            census,
        }
    }

    fn idle_since(&self) -> Instant {
        *lock(&self.last_used)
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    async fn close(&self, why: &str) {
        if let Err(e) = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, why, "en")
            .await
        {
            tracing::debug!(error = %e, "ssh disconnect failed (connection already gone)");
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.census.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection in use. While any lease exists the reaper leaves the connection alone; dropping
/// the last one restarts its idle clock.
pub(crate) struct Lease {
    pub(crate) conn: Arc<Conn>,
}

impl Lease {
    fn new(conn: Arc<Conn>) -> Lease {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Lease { conn }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *lock(&self.conn.last_used) = Instant::now();
        if self.conn.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.conn.census.turned_idle.notify_one();
        }
    }
}

#[derive(Default)]
pub(crate) struct Slot {
    /// Serialises opening, so a burst of calls for one target makes one handshake.
    pub(crate) opening: tokio::sync::Mutex<()>,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Slot {
    /// Leases the current connection if it is alive, fresh and made for this exact target;
    /// otherwise removes it and returns it for closing.
    pub(crate) fn lease(&self, target: &Target, idle_timeout: Duration) -> Result<Lease, Option<Arc<Conn>>> {
        let mut guard = lock(&self.conn);
        let Some(conn) = guard.as_ref() else {
            return Err(None);
        };
        let idle = !conn.is_busy() && conn.idle_since().elapsed() >= idle_timeout;
        if conn.handle.is_closed() || idle || conn.target != *target {
            return Err(guard.take());
        }
        Ok(Lease::new(Arc::clone(conn)))
    }

    /// Stores a fresh connection and leases it in one step, so the reaper never sees it unused.
    pub(crate) fn install(&self, conn: Conn) -> Lease {
        let conn = Arc::new(conn);
        let lease = Lease::new(Arc::clone(&conn));
        *lock(&self.conn) = Some(conn);
        lease
    }

    /// Forgets `conn` if it is still the current one (a call found it broken).
    pub(crate) fn discard(&self, conn: &Arc<Conn>) {
        let mut guard = lock(&self.conn);
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            guard.take();
        }
    }
}

/// All slots. Slots are never removed: a caller may hold one while another removes it, and the
/// connection it then installs would escape the reaper and the metrics.
pub(crate) struct Pool {
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    /// Idle connections kept open at most; the least recently used beyond it are closed.
    max_idle: usize,
    /// Connections idle for less than this stay open whatever the cap: a server between two
    /// steps of one reconcile (detect, then its components) must not lose its connection.
    grace: Duration,
    pub(crate) census: Arc<Census>,
}

impl Pool {
    pub(crate) fn new(max_idle: usize, grace: Duration) -> Pool {
        Pool {
            slots: Mutex::default(),
            max_idle,
            grace,
            census: Arc::default(),
        }
    }

    fn over_idle_cap(&self) -> bool {
        self.census.live.load(Ordering::SeqCst) > self.max_idle
    }

    pub(crate) fn slot(&self, target: &Target) -> Arc<Slot> {
        Arc::clone(lock(&self.slots).entry(Key::of(target)).or_default())
    }

    fn all(&self) -> Vec<Arc<Slot>> {
        lock(&self.slots).values().cloned().collect()
    }

    pub(crate) fn open_connections(&self) -> usize {
        self.all()
            .iter()
            .filter(|slot| lock(&slot.conn).as_ref().is_some_and(|c| !c.handle.is_closed()))
            .count()
    }

    /// True when `target` has a live pooled connection (the next call makes no handshake,
    /// unless the connection turns out dead or idles out first).
    pub(crate) fn is_open(&self, target: &Target) -> bool {
        lock(&self.slots).get(&Key::of(target)).is_some_and(|slot| {
            lock(&slot.conn)
                .as_ref()
                .is_some_and(|c| !c.handle.is_closed() && c.target == *target)
        })
    }

    /// Closes the connection of one target, if there is one (a server removed from the
    /// inventory must not keep a session open until the idle timeout).
    pub(crate) async fn close(&self, target: &Target) {
        let taken = lock(&self.slots)
            .get(&Key::of(target))
            .and_then(|slot| lock(&slot.conn).take());
        if let Some(conn) = taken {
            conn.close("server removed").await;
        }
    }

    pub(crate) async fn close_all(&self) {
        let taken: Vec<Arc<Conn>> = self.all().iter().filter_map(|slot| lock(&slot.conn).take()).collect();
        for conn in taken {
            conn.close("closing").await;
        }
    }

    /// Closes dead connections, those idle for `idle_timeout`, and the least recently used idle
    /// ones beyond the idle cap once their grace has passed; returns when the next one could
    /// expire.
    async fn reap(&self, idle_timeout: Duration) -> Instant {
        let now = Instant::now();
        let mut next = now + idle_timeout;
        let mut expired = Vec::new();
        let mut idle = Vec::new();
        for slot in self.all() {
            let mut guard = lock(&slot.conn);
            let Some(conn) = guard.as_ref() else { continue };
            if conn.handle.is_closed() {
                guard.take();
            } else if !conn.is_busy() {
                let since = conn.idle_since();
                let expiry = since + idle_timeout;
                if expiry <= now {
                    expired.extend(guard.take());
                } else {
                    next = next.min(expiry);
                    drop(guard);
                    idle.push((since, slot));
                }
            }
        }
        let excess = idle.len().saturating_sub(self.max_idle);
        let mut evicted = Vec::new();
        if excess > 0 {
            idle.sort_by_key(|(since, _)| *since);
            for (since, slot) in idle.into_iter().take(excess) {
                if since + self.grace > now {
                    // The rest are younger still; look again when this one's grace ends.
                    next = next.min(since + self.grace);
                    break;
                }
                let mut guard = lock(&slot.conn);
                // Leased or used again since the scan: it is not the least recently used any more.
                if guard.as_ref().is_some_and(|c| !c.is_busy() && c.idle_since() == since) {
                    evicted.extend(guard.take());
                }
            }
        }
        for conn in expired {
            tracing::debug!(host = %conn.target.host, "closing idle ssh connection");
            conn.close("idle").await;
        }
        if !evicted.is_empty() {
            tracing::debug!(
                closed = evicted.len(),
                max_idle = self.max_idle,
                "closing least recently used idle ssh connections beyond the idle cap"
            );
        }
        for conn in evicted {
            conn.close("idle").await;
        }
        next
    }
}

/// Disconnects a connection taken out of its slot, unless a command still runs on it; then the
/// last lease to finish drops the handle, which ends the session.
pub(crate) async fn retire(conn: Option<Arc<Conn>>) {
    if let Some(conn) = conn
        && !conn.is_busy()
    {
        conn.close("replaced").await;
    }
}

/// Spawns the single reaper task. It holds only a weak reference, so dropping the transport
/// frees the pool; the token stops the task at once instead of at its next wake-up. It wakes
/// when the next connection could expire, and when a connection turns idle while more are
/// alive than the idle cap allows.
pub(crate) fn spawn_reaper(pool: Weak<Pool>, idle_timeout: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut wake = Instant::now();
        loop {
            let Some(strong) = pool.upgrade() else { return };
            if wake <= Instant::now() || strong.over_idle_cap() {
                wake = strong.reap(idle_timeout).await;
            }
            let census = Arc::clone(&strong.census);
            drop(strong);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
                () = census.turned_idle.notified() => {}
            }
        }
    });
}

/// A poisoned lock only means another task panicked mid-update of plain bookkeeping data, which
/// stays consistent enough to keep serving; refusing all SSH work would be worse.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
