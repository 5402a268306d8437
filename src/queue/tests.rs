//! Behaviour of the public [`Queue`] on paused tokio time: no test sleeps for real.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use super::{Queue, QueueConfig};

const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

/// No start-rate limit and no jitter, for tests about ordering and dedup.
fn unlimited() -> QueueConfig {
    QueueConfig {
        rate_per_sec: f64::INFINITY,
        jitter: 0.0,
        ..QueueConfig::default()
    }
}

fn wakeups<K>(queue: &Queue<K>) -> u64 {
    queue.shared.wakeups.load(Ordering::Relaxed)
}

/// Spawns `n` tasks that each wait for one key, and lets them park.
async fn parked_workers(queue: &Queue<&'static str>, n: usize) -> Vec<JoinHandle<Option<&'static str>>> {
    let workers = (0..n)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get().await })
        })
        .collect();
    sleep(MS).await;
    workers
}

fn assert_near(actual: Duration, expected: Duration) {
    let slack = Duration::from_millis(5);
    assert!(
        actual + slack >= expected && actual <= expected + slack,
        "expected about {expected:?}, got {actual:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_added_twice_is_handed_out_once() {
    let queue = Queue::new(unlimited());
    queue.add("web-1");
    queue.add("web-1");
    assert_eq!(queue.len(), 1);
    assert_eq!(queue.get().await, Some("web-1"));
    assert!(timeout(HOUR, queue.get()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_key_re_added_while_processing_comes_back_after_done() {
    let queue = Queue::new(unlimited());
    queue.add("web-1");
    let key = queue.get().await;
    assert_eq!(key, Some("web-1"));
    queue.add("web-1");
    queue.add("web-1");
    assert_eq!(
        (queue.len(), queue.processing()),
        (0, 1),
        "a processing key is only marked dirty"
    );
    assert!(
        timeout(HOUR, queue.get()).await.is_err(),
        "never handed to a second worker"
    );
    queue.done(&"web-1");
    assert_eq!((queue.len(), queue.processing()), (1, 0));
    assert_eq!(queue.get().await, Some("web-1"));
    queue.done(&"web-1");
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn queue_never_runs_one_server_twice_at_once() {
    let queue: Queue<u32> = Queue::new(unlimited());
    let in_flight: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    let worst = Arc::new(AtomicUsize::new(0));
    let runs_of_zero = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (queue, in_flight, worst, runs_of_zero) =
                (queue.clone(), in_flight.clone(), worst.clone(), runs_of_zero.clone());
            tokio::spawn(async move {
                while let Some(key) = queue.get().await {
                    {
                        let mut in_flight = in_flight.lock().unwrap();
                        let count = in_flight.entry(key).or_default();
                        *count += 1;
                        worst.fetch_max(*count, Ordering::SeqCst);
                    }
                    if key == 0 {
                        runs_of_zero.fetch_add(1, Ordering::SeqCst);
                    }
                    sleep(Duration::from_millis(7)).await;
                    *in_flight.lock().unwrap().get_mut(&key).unwrap() -= 1;
                    queue.done(&key);
                }
            })
        })
        .collect();
    for i in 0..500 {
        queue.add(0);
        queue.add(i % 13);
        sleep(MS).await;
    }
    sleep(Duration::from_millis(100)).await;
    queue.shut_down();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(worst.load(Ordering::SeqCst), 1);
    // 500 ms of re-adding a key that takes 7 ms: it must have run back to back, not once.
    assert!(runs_of_zero.load(Ordering::SeqCst) > 50);
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_per_failure_and_caps() {
    let queue = Queue::new(QueueConfig::default());
    for (failure, nominal) in [5, 10, 20, 40, 80, 160, 320, 600, 600, 600].into_iter().enumerate() {
        let delay = queue.add_rate_limited("web-1").as_secs_f64();
        let (low, high) = (nominal as f64 * 0.9, (nominal as f64 * 1.1).min(600.0));
        assert!(
            (low..=high).contains(&delay),
            "failure {}: {delay} s not in {low}..={high}",
            failure + 1
        );
        assert_eq!(queue.failures(&"web-1"), failure as u32 + 1);
    }

    let exact = Queue::new(QueueConfig {
        jitter: 0.0,
        ..QueueConfig::default()
    });
    let delays: Vec<u64> = (0..9).map(|_| exact.add_rate_limited("web-1").as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_key_comes_back_after_the_delay_it_reported() {
    let queue = Queue::new(QueueConfig::default());
    queue.add("web-1");
    let key = queue.get().await.unwrap();
    let start = Instant::now();
    let delay = queue.add_rate_limited(key);
    queue.done(&key);
    assert_eq!((queue.len(), queue.scheduled()), (0, 1));
    assert_eq!(queue.get().await, Some("web-1"));
    assert_near(start.elapsed(), delay);
}

#[tokio::test(start_paused = true)]
async fn forget_resets_backoff() {
    let queue = Queue::new(QueueConfig {
        jitter: 0.0,
        ..QueueConfig::default()
    });
    for _ in 0..3 {
        queue.add_rate_limited("web-1");
    }
    assert_eq!(queue.failures(&"web-1"), 3);
    queue.forget(&"web-1");
    assert_eq!(queue.failures(&"web-1"), 0);
    assert_eq!(queue.add_rate_limited("web-1"), Duration::from_secs(5));
    assert_eq!(queue.failures(&"other"), 0);
}

#[tokio::test(start_paused = true)]
async fn add_after_keeps_the_earliest_time() {
    let queue = Queue::new(unlimited());
    let start = Instant::now();
    queue.add_after("web-1", Duration::from_secs(10));
    queue.add_after("web-1", Duration::from_secs(5));
    queue.add_after("web-1", Duration::from_secs(20));
    assert_eq!(queue.scheduled(), 1);
    assert_eq!(queue.get().await, Some("web-1"));
    assert_near(start.elapsed(), Duration::from_secs(5));
    queue.done(&"web-1");
    assert!(
        timeout(HOUR, queue.get()).await.is_err(),
        "the later deadlines were dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn add_after_jittered_spreads_the_delay_and_honours_it() {
    let queue = Queue::new(unlimited());
    let start = Instant::now();
    let interval = Duration::from_secs(600);
    let delay = queue.add_after_jittered("web-1", interval, 0.1);
    assert!((540.0..=660.0).contains(&delay.as_secs_f64()), "{delay:?}");
    assert_eq!(queue.get().await, Some("web-1"));
    assert_near(start.elapsed(), delay);
}

#[tokio::test(start_paused = true)]
async fn token_bucket_allows_a_burst_then_paces() {
    const WORKERS: usize = 16;
    let queue: Queue<u32> = Queue::new(QueueConfig::default());
    let start = Instant::now();
    for key in 0..150 {
        queue.add(key);
    }
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (queue, started) = (queue.clone(), started.clone());
            tokio::spawn(async move {
                while let Some(key) = queue.get().await {
                    started.send(start.elapsed()).unwrap();
                    queue.done(&key);
                }
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut after_burst = 0;
    while times.len() < 150 {
        times.push(starts.recv().await.unwrap());
        if times.len() == 100 {
            after_burst = wakeups(&queue);
        }
    }
    let paced = wakeups(&queue) - after_burst;
    queue.shut_down();
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(times[..100].iter().all(|t| *t < MS), "the burst starts at once");
    assert_near(times[100], Duration::from_millis(100));
    assert_near(times[149], Duration::from_secs(5));
    // Pacing must not stampede: about one worker wake-up per token, not one per worker.
    // Pacing must not stampede: each token costs a few wake-ups (the taker, its successor on
    // timer duty, the taker coming back), not one per worker (16 × 50).
    assert!(
        paced <= 3 * 50,
        "{paced} wake-ups for 50 paced starts by {WORKERS} workers"
    );
}

#[tokio::test(start_paused = true)]
async fn shut_down_wakes_waiting_workers_with_none() {
    let queue = Queue::new(unlimited());
    queue.add_after("later", HOUR);
    let workers = parked_workers(&queue, 3).await;
    let start = Instant::now();
    queue.shut_down();
    for worker in workers {
        assert_eq!(worker.await.unwrap(), None);
    }
    assert!(start.elapsed() < MS, "workers did not wait for the scheduled key");
    assert!(queue.is_shut_down());
    assert_eq!((queue.len(), queue.scheduled()), (0, 0), "pending keys are dropped");
    queue.add("web-1");
    assert_eq!(queue.len(), 0, "adds after shut-down are ignored");
    assert_eq!(queue.get().await, None);
}

#[tokio::test(start_paused = true)]
async fn shut_down_lets_in_flight_keys_finish() {
    let queue = Queue::new(unlimited());
    queue.add("web-1");
    let key = queue.get().await.unwrap();
    queue.add("web-1");
    queue.shut_down();
    assert_eq!(queue.processing(), 1);
    queue.done(&key);
    assert_eq!(
        (queue.processing(), queue.len()),
        (0, 0),
        "a dirty key is not re-queued after shut-down"
    );
}

#[tokio::test(start_paused = true)]
async fn removed_keys_are_not_requeued() {
    let queue = Queue::new(unlimited());
    queue.add("queued");
    queue.add_after("scheduled", Duration::from_secs(10));
    queue.add_rate_limited("scheduled");
    queue.remove(&"queued");
    queue.remove(&"scheduled");
    assert_eq!((queue.len(), queue.scheduled()), (0, 0));
    assert_eq!(queue.failures(&"scheduled"), 0);

    queue.add("busy");
    let key = queue.get().await.unwrap();
    queue.add("busy");
    queue.remove(&"busy");
    // The worker finishing a deleted server's reconcile may still ask for a retry or a check.
    assert_eq!(queue.add_rate_limited("busy"), Duration::ZERO);
    queue.add_after("busy", Duration::from_secs(1));
    assert_eq!(queue.failures(&"busy"), 0);
    queue.done(&key);
    assert_eq!((queue.len(), queue.scheduled(), queue.processing()), (0, 0, 0));
    assert!(timeout(HOUR, queue.get()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_removed_key_added_again_is_handed_out() {
    let queue = Queue::new(unlimited());
    queue.add("web-1");
    let key = queue.get().await.unwrap();
    queue.remove(&key);
    queue.add("web-1");
    queue.done(&key);
    assert_eq!(queue.get().await, Some("web-1"));
}

#[tokio::test(start_paused = true)]
async fn an_idle_queue_does_not_wake() {
    let queue = Queue::new(QueueConfig::default());
    // A key that came and went leaves nothing ticking behind.
    queue.add("web-1");
    let key = queue.get().await.unwrap();
    queue.done(&key);
    let workers = parked_workers(&queue, 4).await;
    let before = wakeups(&queue);
    let start = Instant::now();
    sleep(HOUR).await;
    assert_eq!(start.elapsed(), HOUR);
    assert_eq!(wakeups(&queue), before, "idle workers woke up");
    assert!(workers.iter().all(|worker| !worker.is_finished()));
    queue.shut_down();
    for worker in workers {
        assert_eq!(worker.await.unwrap(), None);
    }
}

#[tokio::test(start_paused = true)]
async fn one_added_key_wakes_one_idle_worker() {
    let queue = Queue::new(unlimited());
    let workers = parked_workers(&queue, 8).await;
    let before = wakeups(&queue);
    queue.add("web-1");
    sleep(MS).await;
    assert_eq!(wakeups(&queue) - before, 1);
    assert_eq!(workers.iter().filter(|worker| worker.is_finished()).count(), 1);
    queue.shut_down();
}

#[tokio::test(start_paused = true)]
async fn fifo_order_for_ready_keys() {
    let queue: Queue<u32> = Queue::new(unlimited());
    for key in 0..50 {
        queue.add(key);
    }
    queue.add(3);
    let mut order = Vec::new();
    for _ in 0..50 {
        let key = queue.get().await.unwrap();
        order.push(key);
        queue.done(&key);
    }
    assert_eq!(order, (0..50).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_key_due_earlier_is_served_before_a_key_added_later() {
    let queue = Queue::new(unlimited());
    queue.add_after("due-first", Duration::from_secs(5));
    queue.add_after("due-second", Duration::from_secs(6));
    // No worker looks while both fall due and another key is added.
    sleep(Duration::from_secs(10)).await;
    queue.add("added-last");
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(queue.get().await.unwrap());
    }
    assert_eq!(order, ["due-first", "due-second", "added-last"]);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_wakes_the_worker_on_timer_duty() {
    let queue = Queue::new(unlimited());
    let start = Instant::now();
    queue.add_after("late", HOUR);
    let worker = parked_workers(&queue, 1).await.remove(0);
    queue.add_after("early", Duration::from_secs(1));
    assert_eq!(worker.await.unwrap(), Some("early"));
    assert_near(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_ready_key_reaches_the_worker_on_timer_duty() {
    let queue = Queue::new(unlimited());
    queue.add_after("late", HOUR);
    let worker = parked_workers(&queue, 1).await.remove(0);
    let start = Instant::now();
    queue.add("now");
    assert_eq!(worker.await.unwrap(), Some("now"));
    assert!(start.elapsed() < MS);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_worker_hands_timer_duty_to_another() {
    let queue = Queue::new(unlimited());
    let start = Instant::now();
    queue.add_after("web-1", Duration::from_secs(10));
    let impatient = {
        let queue = queue.clone();
        tokio::spawn(async move { timeout(Duration::from_secs(1), queue.get()).await })
    };
    sleep(MS).await;
    let patient = parked_workers(&queue, 1).await.remove(0);
    assert!(impatient.await.unwrap().is_err());
    assert_eq!(patient.await.unwrap(), Some("web-1"));
    assert_near(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_key_falling_due_while_processing_waits_for_done() {
    let queue = Queue::new(unlimited());
    queue.add("web-1");
    let key = queue.get().await.unwrap();
    queue.add_after("web-1", Duration::from_secs(1));
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (queue.len(), queue.scheduled()),
        (0, 0),
        "due while processing: marked dirty"
    );
    queue.done(&key);
    assert_eq!(queue.get().await, Some("web-1"));
}

#[tokio::test(start_paused = true)]
async fn odd_calls_do_not_panic() {
    let queue = Queue::new(unlimited());
    queue.done(&"never-handed-out");
    queue.remove(&"unknown");
    queue.add_after("never", Duration::MAX);
    assert_eq!(queue.scheduled(), 0, "a deadline past the clock's range never arrives");
    queue.add_after("century", Duration::from_secs(100 * 365 * 24 * 3600));
    assert_eq!(queue.scheduled(), 1);
    let workers = parked_workers(&queue, 2).await;
    assert!(format!("{queue:?}").contains("scheduled: 1"));
    queue.shut_down();
    for worker in workers {
        assert_eq!(worker.await.unwrap(), None);
    }
}

#[tokio::test(start_paused = true)]
async fn express_keys_start_first_and_spend_no_token() {
    let queue: Queue<&'static str> = Queue::new(QueueConfig {
        rate_per_sec: 1.0,
        burst: 1,
        jitter: 0.0,
        ..QueueConfig::default()
    });
    queue.add("a");
    queue.add("b");
    assert_eq!(queue.get().await, Some("a"), "the burst's one token");
    // Without a token, "b" waits a second; express keys go ahead of it at once.
    queue.add_express("x");
    queue.add_express("b");
    let started = Instant::now();
    let first = queue.get().await;
    let second = queue.get().await;
    assert_eq!((first, second), (Some("b"), Some("x")));
    assert!(started.elapsed() < MS, "express keys waited {:?}", started.elapsed());
    // The bucket is untouched: the next ordinary key still gets its token after a second.
    queue.add("c");
    assert_eq!(queue.get().await, Some("c"));
    assert!(started.elapsed() >= Duration::from_millis(999));
    // Re-added while processing, an express key comes back as one.
    queue.add_express("x");
    queue.done(&"x");
    let again = Instant::now();
    assert_eq!(queue.get().await, Some("x"));
    assert!(again.elapsed() < MS);
}
