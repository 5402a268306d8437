//! The work queue (client-go semantics): dedup, dirty set, delayed keys, per-key backoff, a
//! global token bucket on starts. It hands out opaque keys; it knows nothing about servers, SSH
//! or files, and it never spawns a task (the daemon owns the workers that call [`Queue::get`]).
//!
//! Lifecycle of a key: `add` puts it in the ready FIFO once; `get` moves it to *processing*;
//! adding it again while processing marks it *dirty*; `done` ends processing and re-queues a
//! dirty key. `add_after`/`add_rate_limited` park a key in a timer map until its deadline.
//!
//! Waiting is event-driven. Workers sleep on a [`Notify`]; at most one of them — the one on
//! *timer duty* — also sleeps until the earliest deadline (a scheduled key or the next token).
//! So an idle queue has no timer at all, and a deadline wakes one worker instead of all of them.

mod backoff;
mod bucket;
mod state;
#[cfg(test)]
mod tests;

use std::fmt::{self, Debug};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use self::backoff::{Jitter, backoff_delay};
use self::bucket::TokenBucket;
use self::state::{Duty, State, Wanted};

/// Tuning of a [`Queue`]. The defaults match controller-runtime's: 10 reconcile starts per
/// second with a burst of 100, retries from 5 s doubling up to 10 min, ±10 % jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Sustained reconcile starts per second across all keys. A value that is not a positive,
    /// finite number disables the limit.
    pub rate_per_sec: f64,
    /// Starts allowed at once after an idle spell (the bucket's size). 0 is treated as 1.
    pub burst: u32,
    /// Delay before the first retry of a failing key.
    pub backoff_base: Duration,
    /// Ceiling on any retry delay, jitter included.
    pub backoff_max: Duration,
    /// Fraction (0.1 = ±10 %) by which retry delays are randomly spread, so servers that failed
    /// together (a network blip) do not all retry in the same instant. Clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: 10.0,
            burst: 100,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(10 * 60),
            jitter: 0.1,
        }
    }
}

/// A rate-limited work queue of keys, shared between producers and workers by cloning.
///
/// Guarantees: a key is queued at most once; a key is never handed to two workers at once; a
/// key added while processing comes back once after [`done`](Queue::done); ready keys come out
/// in FIFO order.
pub struct Queue<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    /// A std mutex: it is never held across an `.await`, and every critical section is short.
    state: Mutex<State<K>>,
    /// Wakes one waiting worker (`notify_one`) when a key can be handed out or nobody is on
    /// timer duty. Waking one instead of all keeps a pool of 50 idle workers from stampeding
    /// the lock for every key.
    work: Notify,
    /// Wakes the worker on timer duty when a deadline earlier than the one it sleeps until
    /// appears.
    timer: Notify,
    /// Cancelled (under the state lock) by `shut_down`; every waiting worker selects on it.
    shutdown: CancellationToken,
    config: QueueConfig,
    /// Loop iterations of `get`, so tests can prove that idle workers really sleep.
    #[cfg(test)]
    wakeups: std::sync::atomic::AtomicU64,
}

impl<K> Clone for Queue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord + Send + Sync + Debug + 'static> Debug for Queue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("ready", &self.len())
            .field("processing", &self.processing())
            .field("scheduled", &self.scheduled())
            .field("shut_down", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash + Ord + Send + Sync + Debug + 'static> Queue<K> {
    /// An empty queue with a full token bucket.
    pub fn new(config: QueueConfig) -> Self {
        let bucket = TokenBucket::new(config.rate_per_sec, config.burst, Instant::now());
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(bucket, Jitter::seeded())),
                work: Notify::new(),
                timer: Notify::new(),
                shutdown: CancellationToken::new(),
                config,
                #[cfg(test)]
                wakeups: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Queues `key` for the next free worker. A key already queued stays where it is; a key
    /// being processed is re-queued when its worker calls [`done`](Queue::done). Ignored after
    /// [`shut_down`](Queue::shut_down).
    pub fn add(&self, key: K) {
        let (mut state, now) = self.shared.lock();
        state.add(key);
        self.shared.wake_if_needed(&mut state, now);
    }

    /// Like [`add`](Queue::add), but `key` goes ahead of the queued keys and starts without a
    /// token from the start-rate bucket: for a pass someone asked for on a server whose
    /// connection is open already, which costs the fleet no handshake.
    pub fn add_express(&self, key: K) {
        let (mut state, now) = self.shared.lock();
        state.add_express(key);
        self.shared.wake_if_needed(&mut state, now);
    }

    /// Queues `key` once `delay` has passed. If the key is already scheduled, the earlier of the
    /// two deadlines wins. A zero delay is [`add`](Queue::add). The deadline is kept even if the
    /// key is queued or processing meanwhile: when it comes, the key is added as by `add`
    /// (deduplicated, or marked dirty), so a drift check is never lost to a coincidental run.
    pub fn add_after(&self, key: K, delay: Duration) {
        let (mut state, now) = self.shared.lock();
        self.shared.schedule(&mut state, key, delay, now);
    }

    /// Like [`add_after`](Queue::add_after) with `delay` spread by a random factor in
    /// `[1 - fraction, 1 + fraction]` (for the periodic drift check, so a fleet added at once
    /// does not re-check in lockstep forever). Returns the delay chosen.
    pub fn add_after_jittered(&self, key: K, delay: Duration, fraction: f64) -> Duration {
        let (mut state, now) = self.shared.lock();
        let delay = state.jitter.spread(delay, fraction);
        self.shared.schedule(&mut state, key, delay, now);
        delay
    }

    /// Records a failure of `key` and schedules a retry after its backoff: `backoff_base`
    /// doubled per consecutive failure, capped at `backoff_max`, jittered. Returns the delay
    /// chosen, so the caller can report when the retry will happen.
    ///
    /// Returns zero and schedules nothing if the key was [`remove`](Queue::remove)d while
    /// being processed, or after [`shut_down`](Queue::shut_down).
    pub fn add_rate_limited(&self, key: K) -> Duration {
        let config = &self.shared.config;
        let (mut state, now) = self.shared.lock();
        let Some(failures) = state.record_failure(&key) else {
            return Duration::ZERO;
        };
        let nominal = backoff_delay(config.backoff_base, config.backoff_max, failures);
        let delay = state.jitter.spread(nominal, config.jitter).min(config.backoff_max);
        tracing::debug!(?key, failures, delay_ms = delay.as_millis(), "backing off");
        self.shared.schedule(&mut state, key, delay, now);
        delay
    }

    /// Resets the failure count of `key`; call it when a reconcile succeeds.
    pub fn forget(&self, key: &K) {
        let (mut state, now) = self.shared.lock();
        state.forget(key);
        self.shared.wake_if_needed(&mut state, now);
    }

    /// Consecutive failures recorded for `key` since it was last forgotten.
    pub fn failures(&self, key: &K) -> u32 {
        self.shared.inspect(|state| state.failures(key))
    }

    /// Waits for a ready key and a token from the start-rate bucket, marks the key processing
    /// and returns it. Returns `None` once the queue is shut down.
    ///
    /// Cancel-safe: a key is taken and returned without an `.await` in between, so dropping
    /// this future (say, in a `select!` with a shutdown signal) never loses a key.
    pub async fn get(&self) -> Option<K> {
        let shared = &*self.shared;
        let mut on_duty = TimerDuty { shared, held: false };
        loop {
            #[cfg(test)]
            shared.wakeups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let work = shared.work.notified();
            let timer = shared.timer.notified();
            tokio::pin!(work, timer);
            let deadline = {
                let (mut state, now) = shared.lock();
                // Whatever this worker was on duty or recruited for, it is looking now.
                state.duty = match state.duty {
                    Duty::Held(_) if on_duty.held => Duty::Free,
                    Duty::Recruiting => Duty::Free,
                    unchanged => unchanged,
                };
                on_duty.held = false;
                if state.is_closed() {
                    return None;
                }
                if let Some(key) = state.take(now) {
                    // Pass the baton: another ready key, or a deadline nobody watches now.
                    shared.wake_if_needed(&mut state, now);
                    return Some(key);
                }
                // Registered before the lock is released, so a notification sent between the
                // unlock and the `.await` below is not lost.
                work.as_mut().enable();
                match state.wanted(now) {
                    Wanted::Timer(at) if state.duty == Duty::Free => {
                        state.duty = Duty::Held(at);
                        on_duty.held = true;
                        timer.as_mut().enable();
                        Some(at)
                    }
                    _ => None,
                }
            };
            match deadline {
                Some(at) => tokio::select! {
                    () = work.as_mut() => {}
                    () = timer.as_mut() => {}
                    () = sleep_until(at) => {}
                    () = shared.shutdown.cancelled() => {}
                },
                None => tokio::select! {
                    () = work.as_mut() => {}
                    () = shared.shutdown.cancelled() => {}
                },
            }
        }
    }

    /// Gives back the start token the last [`get`](Queue::get) took, for work that costs the
    /// fleet nothing (a suspended server's pass).
    pub fn refund(&self) {
        let (mut state, now) = self.shared.lock();
        state.refund(now);
        self.shared.wake_if_needed(&mut state, now);
    }

    /// Marks `key` as no longer processing. If it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let (mut state, now) = self.shared.lock();
        state.done(key);
        self.shared.wake_if_needed(&mut state, now);
    }

    /// Forgets `key` entirely: queued, scheduled, dirty and failure count (for a deleted
    /// server). If a worker holds it, it is not re-queued by `done`, and retries or checks the
    /// worker schedules for it before `done` are ignored; a later [`add`](Queue::add) revives it.
    pub fn remove(&self, key: &K) {
        let (mut state, now) = self.shared.lock();
        state.remove(key);
        self.shared.wake_if_needed(&mut state, now);
    }

    /// Stops the queue: pending and scheduled keys are dropped, later adds are ignored, and
    /// every current and future [`get`](Queue::get) returns `None`. Keys in flight stay counted
    /// in [`processing`](Queue::processing) until their workers call `done`.
    pub fn shut_down(&self) {
        let (mut state, _) = self.shared.lock();
        state.close();
        // Cancelled under the lock so that no worker can see the token live but the state closed.
        self.shared.shutdown.cancel();
    }

    /// Whether [`shut_down`](Queue::shut_down) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Number of keys ready and waiting for a worker (excluding scheduled and processing ones).
    pub fn len(&self) -> usize {
        self.shared.inspect(State::ready_len)
    }

    /// Whether no key is ready (scheduled and processing keys may still exist).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys currently held by workers.
    pub fn processing(&self) -> usize {
        self.shared.inspect(State::processing_len)
    }

    /// Number of keys waiting for a deadline.
    pub fn scheduled(&self) -> usize {
        self.shared.inspect(State::scheduled_len)
    }
}

impl<K: Clone + Eq + Hash + Ord + Debug> Shared<K> {
    /// Locks the state and promotes keys whose deadline has passed, so every operation sees
    /// the queue as of `now`.
    /// Every mutating caller ends with [`wake_if_needed`](Shared::wake_if_needed), which also
    /// covers keys promoted here.
    fn lock(&self) -> (MutexGuard<'_, State<K>>, Instant) {
        // The state is consistent between statements (nothing under the lock awaits, and only
        // a panicking `Hash`/`Eq` on a key could interrupt it), so a poisoned lock is still usable;
        // refusing it would turn one bad key into a dead daemon.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        state.promote(now);
        (state, now)
    }

    /// Runs a read-only look at the state. Promotion may still have moved keys, and then a
    /// worker is nudged as after any other change.
    fn inspect<R>(&self, look: impl FnOnce(&State<K>) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if state.promote(now) {
            self.wake_if_needed(&mut state, now);
        }
        look(&state)
    }

    fn schedule(&self, state: &mut State<K>, key: K, delay: Duration, now: Instant) {
        match now.checked_add(delay) {
            Some(at) => state.schedule(key, at, now),
            // Such a deadline would never arrive anyway; say so rather than panic on overflow.
            None => tracing::warn!(?key, ?delay, "delay beyond the clock's range, not scheduling"),
        }
        self.wake_if_needed(state, now);
    }

    /// Makes sure some worker will act on the queue's next event: a ready key, or a deadline
    /// that nobody (or only someone sleeping until later) is watching.
    fn wake_if_needed(&self, state: &mut State<K>, now: Instant) {
        match state.wanted(now) {
            Wanted::Worker => self.work.notify_one(),
            Wanted::Timer(at) => match state.duty {
                Duty::Free => {
                    state.duty = Duty::Recruiting;
                    self.work.notify_one();
                }
                Duty::Held(watched) if at < watched => self.timer.notify_one(),
                Duty::Held(_) | Duty::Recruiting => {}
            },
            Wanted::Nothing => {}
        }
    }
}

/// Marks the worker on timer duty. If its `get` future is dropped while asleep, the duty is
/// handed to another worker; otherwise scheduled keys would wait for an unrelated event.
struct TimerDuty<'a, K: Clone + Eq + Hash + Ord + Debug> {
    shared: &'a Shared<K>,
    held: bool,
}

impl<K: Clone + Eq + Hash + Ord + Debug> Drop for TimerDuty<'_, K> {
    fn drop(&mut self) {
        if self.held {
            let (mut state, now) = self.shared.lock();
            state.duty = Duty::Free;
            self.shared.wake_if_needed(&mut state, now);
        }
    }
}
