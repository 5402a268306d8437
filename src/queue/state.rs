//! The queue's bookkeeping behind its lock: ready FIFO, dirty and processing sets, the timer map,
//! failure counts and the token bucket. Synchronous and clock-free (callers pass `now`); it must
//! not wake, sleep or await anything.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;

use tokio::time::Instant;

use super::backoff::Jitter;
use super::bucket::TokenBucket;

/// What the queue needs from its waiting workers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wanted {
    /// A key can be handed out immediately.
    Worker,
    /// Nothing can be handed out before this instant (a token or a scheduled key).
    Timer(Instant),
    /// Nothing is ready or scheduled: waiters should sleep until something is added.
    Nothing,
}

/// Who watches the next deadline. Exactly one worker sleeps on a timer, so that a deadline wakes
/// one worker rather than the whole pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Duty {
    /// Nobody: the next waiting worker that looks at the state takes the duty.
    Free,
    /// A worker has been notified to take the duty and has not looked yet; notifying another
    /// one meanwhile would only wake it for nothing.
    Recruiting,
    /// A worker sleeps until this instant.
    Held(Instant),
}

#[derive(Debug)]
pub(super) struct State<K> {
    /// Keys waiting for a worker, oldest first. Mirrored by `queued` for O(1) dedup.
    ready: VecDeque<K>,
    queued: HashSet<K>,
    /// Keys handed to a worker and not yet `done`. Disjoint from `queued`, which is what keeps a
    /// server from being reconciled by two workers at once.
    processing: HashSet<K>,
    /// Processing keys that were added again; they go back to `ready` on `done`.
    dirty: HashSet<K>,
    /// Processing keys that were removed: the worker still finishing them must not schedule a
    /// retry or a drift check for a server that no longer exists.
    removed: HashSet<K>,
    /// The timer structure: ordered by deadline, with `deadlines` as the per-key index that makes
    /// "earliest wins" and removal O(log n).
    scheduled: BTreeSet<(Instant, K)>,
    deadlines: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    /// Keys that start without a token, ahead of the rest: passes someone asked for on
    /// servers whose connection is already open (no handshake to pace).
    express: HashSet<K>,
    pub(super) bucket: TokenBucket,
    pub(super) jitter: Jitter,
    pub(super) duty: Duty,
    closed: bool,
}

impl<K: Clone + Eq + Hash + Ord + Debug> State<K> {
    pub(super) fn new(bucket: TokenBucket, jitter: Jitter) -> Self {
        Self {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            processing: HashSet::new(),
            dirty: HashSet::new(),
            removed: HashSet::new(),
            scheduled: BTreeSet::new(),
            deadlines: HashMap::new(),
            failures: HashMap::new(),
            express: HashSet::new(),
            bucket,
            jitter,
            duty: Duty::Free,
            closed: false,
        }
    }

    /// Makes `key` ready, or marks it dirty if a worker holds it.
    pub(super) fn add(&mut self, key: K) {
        if self.closed {
            return;
        }
        // An explicit add after a removal means the server is back: lift the tombstone.
        self.removed.remove(&key);
        if self.processing.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            if self.express.contains(&key) {
                self.ready.push_front(key);
            } else {
                self.ready.push_back(key);
            }
        }
    }

    /// Like [`add`](State::add), but the key starts ahead of the others and spends no token.
    pub(super) fn add_express(&mut self, key: K) {
        if self.closed {
            return;
        }
        self.express.insert(key.clone());
        if self.queued.contains(&key) {
            self.ready.retain(|queued| *queued != key);
            self.ready.push_front(key);
        } else {
            self.add(key);
        }
    }

    /// True when the next ready key starts without a token.
    fn express_next(&self) -> bool {
        self.ready.front().is_some_and(|key| self.express.contains(key))
    }

    /// Schedules `key` for `at`, keeping an earlier existing deadline. Deadlines already past
    /// are an immediate `add`.
    pub(super) fn schedule(&mut self, key: K, at: Instant, now: Instant) {
        if self.closed || self.removed.contains(&key) {
            return;
        }
        if at <= now {
            self.add(key);
            return;
        }
        if let Some(&existing) = self.deadlines.get(&key) {
            if existing <= at {
                return;
            }
            self.scheduled.remove(&(existing, key.clone()));
        }
        self.deadlines.insert(key.clone(), at);
        self.scheduled.insert((at, key));
    }

    /// Moves every key whose deadline has passed into `ready`, in deadline order. Called at the
    /// start of every locked operation, so a key due at 12:00 is never queued behind one added
    /// at 12:01 just because no worker looked in between.
    /// Returns whether any key moved.
    pub(super) fn promote(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while self.scheduled.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, key)) = self.scheduled.pop_first() {
                self.deadlines.remove(&key);
                self.add(key);
                moved = true;
            }
        }
        moved
    }

    /// Hands out the oldest ready key if the token bucket allows a start now.
    pub(super) fn take(&mut self, now: Instant) -> Option<K> {
        if self.ready.is_empty() || !(self.express_next() || self.bucket.try_take(now)) {
            return None;
        }
        let key = self.ready.pop_front()?;
        self.express.remove(&key);
        self.queued.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    pub(super) fn refund(&mut self, now: Instant) {
        self.bucket.refund(now);
    }

    pub(super) fn wanted(&self, now: Instant) -> Wanted {
        if !self.ready.is_empty() {
            if self.express_next() || self.bucket.has_token(now) {
                Wanted::Worker
            } else {
                // Scheduled keys do not matter here: nothing can start before the next token.
                Wanted::Timer(self.bucket.ready_at(now))
            }
        } else if let Some((at, _)) = self.scheduled.first() {
            Wanted::Timer(*at)
        } else {
            Wanted::Nothing
        }
    }

    /// Ends processing of `key`, re-queueing it if it was added meanwhile.
    pub(super) fn done(&mut self, key: &K) {
        if !self.processing.remove(key) {
            tracing::debug!(?key, "done called for a key that was not processing");
            return;
        }
        self.removed.remove(key);
        if let Some(key) = self.dirty.take(key) {
            self.add(key);
        }
    }

    /// Forgets everything about `key`; if a worker holds it, leaves a tombstone until `done`.
    pub(super) fn remove(&mut self, key: &K) {
        if self.queued.remove(key) {
            self.ready.retain(|queued| queued != key);
        }
        if let Some(at) = self.deadlines.remove(key) {
            self.scheduled.remove(&(at, key.clone()));
        }
        self.dirty.remove(key);
        self.failures.remove(key);
        self.express.remove(key);
        if self.processing.contains(key) {
            self.removed.insert(key.clone());
        }
    }

    /// Counts one more consecutive failure; `None` when the key must not be retried (removed
    /// while processing, or the queue is shut down).
    pub(super) fn record_failure(&mut self, key: &K) -> Option<u32> {
        if self.closed || self.removed.contains(key) {
            return None;
        }
        let count = self.failures.entry(key.clone()).or_default();
        *count = count.saturating_add(1);
        Some(*count)
    }

    pub(super) fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    pub(super) fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// Drops all pending work; keys in flight stay counted until their workers call `done`.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.ready.clear();
        self.queued.clear();
        self.dirty.clear();
        self.removed.clear();
        self.scheduled.clear();
        self.deadlines.clear();
        self.failures.clear();
        self.express.clear();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(super) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub(super) fn processing_len(&self) -> usize {
        self.processing.len()
    }

    pub(super) fn scheduled_len(&self) -> usize {
        self.scheduled.len()
    }
}
