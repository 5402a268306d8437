//! Prometheus metrics (prometheus-client, OpenMetrics text) and the small HTTP endpoint
//! that serves them with `/healthz` and `/readyz`. Names follow controller-runtime's
//! (`reconcile_total{result}`, `reconcile_time_seconds`, `workqueue_depth`, …) under a
//! `chom_` prefix, in base units (bytes, seconds), with a per-server condition gauge like
//! Flux's `gotk_reconcile_condition`. It only counts and serves; it decides nothing.
//!
//! Cardinality: the per-server series are gauges rebuilt from the daemon's state at every
//! scrape, so a removed server's series go with it; counters carry no `server` label
//! (they would keep a series per server forever), only `result` and `component`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

/// The statuses a condition can have; `chom_server_condition` has a series for each, 1 for
/// the current one and 0 for the others (as Flux does), so `== 1` and `== 0` both query.
pub const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// Every metric chom exports.
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<Labels, Counter>,
    reconcile_time: Histogram,
    component_applies: Family<Labels, Counter>,
    drift_found: Family<Labels, Counter>,
    drift_corrected: Family<Labels, Counter>,
    /// Gauges refreshed at each scrape from the daemon's state.
    queue_depth: Gauge,
    active_workers: Gauge,
    open_connections: Gauge,
    servers: Family<Labels, Gauge>,
    server_condition: Family<Labels, Gauge>,
    server_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    server_cpu: Family<Labels, Gauge>,
    server_memory: Family<Labels, Gauge>,
    server_disk: Family<Labels, Gauge>,
    status_write_failures: Counter,
    status_writes_pending: Gauge,
    ready_gauge: Gauge,
    /// The end of each server's last successful pass seen by this process (Unix seconds);
    /// a status file keeps only the last few runs, so a long failing streak would lose it.
    last_success: Mutex<HashMap<String, f64>>,
    /// The last status write error, for `/readyz` while writes are pending.
    status_write_error: Mutex<String>,
    ready: AtomicBool,
    source_ready: Family<Labels, Gauge>,
    source_last_fetch: Gauge,
    source_revision: Family<Labels, Gauge>,
}

/// The git source's gauges in a scrape.
#[derive(Debug, Default, Clone)]
pub struct SourceGauges {
    /// `SourceReady` is True.
    pub ready: bool,
    /// When the last fetch ended (Unix seconds; 0 before the first).
    pub last_fetch: i64,
    /// The applied revision (`main@sha1:…`).
    pub revision: Option<String>,
    /// `SourceReady`'s reason.
    pub reason: String,
}

/// The push webhook: its shared secret and what a verified push wakes.
pub struct Hook {
    /// The HMAC key of `X-Hub-Signature-256`.
    pub secret: Vec<u8>,
    /// Notified on each verified push.
    pub trigger: Arc<tokio::sync::Notify>,
}

/// What a scrape reads from the daemon at that moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Keys waiting in the work queue.
    pub queue_depth: i64,
    /// Reconciles in progress.
    pub active_workers: i64,
    /// Pooled SSH connections.
    pub open_connections: i64,
    /// Per server: its conditions, hardware and last success.
    pub servers: Vec<ServerGauges>,
    /// The git source, when the daemon has one.
    pub source: Option<SourceGauges>,
}

/// One server's part of a scrape.
#[derive(Debug, Default, Clone)]
pub struct ServerGauges {
    /// The server's name.
    pub name: String,
    /// Its conditions as (type, status): `("Ready", "True")`.
    pub conditions: Vec<(String, String)>,
    /// Detected vCPUs, memory and root disk in bytes, when known.
    pub hardware: Option<(u32, u64, u64)>,
    /// When its last successful pass ended (Unix seconds), per its status.
    pub last_success: Option<f64>,
}

impl ServerGauges {
    /// A server's gauges from its observed status.
    pub fn from_status(name: &str, status: &crate::status::ObservedStatus) -> ServerGauges {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        let seconds =
            |t: crate::status::Timestamp| t.0.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).ok();
        let last_success = status
            .last_reconcile
            .iter()
            .chain(status.recent_runs.iter())
            .filter(|r| r.result == crate::status::ReconcileResult::Succeeded)
            .filter_map(|r| seconds(r.finished_at))
            .fold(None, |max: Option<f64>, t| Some(max.map_or(t, |m| m.max(t))));
        ServerGauges {
            name: name.to_owned(),
            conditions: status
                .conditions
                .iter()
                .map(|c| (c.type_.clone(), format!("{:?}", c.status)))
                .collect(),
            hardware: status
                .hardware
                .as_ref()
                .map(|h| (h.cpu, h.memory_mb.saturating_mul(MIB), h.disk_gb.saturating_mul(GIB))),
            last_success,
        }
    }

    /// The status of its Ready condition (`Unknown` when it has none yet).
    pub fn ready(&self) -> &str {
        self.conditions
            .iter()
            .find(|(t, _)| t == crate::status::types::READY)
            .map_or("Unknown", |(_, s)| s.as_str())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chom");
        let reconcile_total = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile",
            "Reconcile passes by result (success, error, blocked)",
            reconcile_total.clone(),
        );
        // From 50 ms (a pass with nothing to run) to ~7 min (a slow package install).
        let reconcile_time = Histogram::new([
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]);
        registry.register(
            "reconcile_time_seconds",
            "Duration of reconcile passes",
            reconcile_time.clone(),
        );
        let component_applies = Family::<Labels, Counter>::default();
        registry.register(
            "component_applies",
            "Component runs that applied or failed, by component and result",
            component_applies.clone(),
        );
        let drift_found = Family::<Labels, Counter>::default();
        registry.register(
            "drift_found",
            "Check runs that found a component drifted from what it applied, by component",
            drift_found.clone(),
        );
        let drift_corrected = Family::<Labels, Counter>::default();
        registry.register(
            "drift_corrected",
            "Drift corrected by an apply run, by component (driftPolicy: correct)",
            drift_corrected.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "workqueue_depth",
            "Servers waiting in the work queue",
            queue_depth.clone(),
        );
        let active_workers = Gauge::default();
        registry.register("active_workers", "Reconciles in progress", active_workers.clone());
        let open_connections = Gauge::default();
        registry.register(
            "ssh_open_connections",
            "Pooled SSH connections",
            open_connections.clone(),
        );
        let servers = Family::<Labels, Gauge>::default();
        registry.register(
            "servers",
            "Servers by the status of their Ready condition",
            servers.clone(),
        );
        let server_condition = Family::<Labels, Gauge>::default();
        registry.register(
            "server_condition",
            "A server's conditions: 1 for the status each type has, 0 for the others",
            server_condition.clone(),
        );
        let server_last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "server_last_success_timestamp_seconds",
            "When the server's last successful reconcile ended (Unix time)",
            server_last_success.clone(),
        );
        let server_cpu = Family::<Labels, Gauge>::default();
        registry.register("server_detected_cpu", "Detected vCPUs per server", server_cpu.clone());
        let server_memory = Family::<Labels, Gauge>::default();
        registry.register(
            "server_detected_memory_bytes",
            "Detected memory per server (MemTotal or the cgroup limit)",
            server_memory.clone(),
        );
        let server_disk = Family::<Labels, Gauge>::default();
        registry.register(
            "server_detected_disk_bytes",
            "Detected size of the root filesystem per server (whole GiB, rounded up)",
            server_disk.clone(),
        );
        let status_write_failures = Counter::default();
        registry.register(
            "status_write_failures",
            "Status file writes that failed (each retry counts)",
            status_write_failures.clone(),
        );
        let status_writes_pending = Gauge::default();
        registry.register(
            "status_writes_pending",
            "Status files whose latest content could not be written yet",
            status_writes_pending.clone(),
        );
        let ready_gauge = Gauge::default();
        registry.register(
            "ready",
            "1 while /readyz answers 200 (first listing done, every status file written)",
            ready_gauge.clone(),
        );
        let source_ready = Family::<Labels, Gauge>::default();
        registry.register(
            "source_ready",
            "1 when the git source's fetched commit is applied (SourceReady True), by reason",
            source_ready.clone(),
        );
        let source_last_fetch = Gauge::default();
        registry.register(
            "source_last_fetch_timestamp_seconds",
            "When the git source was last fetched (Unix time)",
            source_last_fetch.clone(),
        );
        let source_revision = Family::<Labels, Gauge>::default();
        registry.register(
            "source_revision_info",
            "The git revision the live tree is (always 1)",
            source_revision.clone(),
        );
        Self {
            source_ready,
            source_last_fetch,
            source_revision,
            registry,
            reconcile_total,
            reconcile_time,
            component_applies,
            drift_found,
            drift_corrected,
            queue_depth,
            active_workers,
            open_connections,
            servers,
            server_condition,
            server_last_success,
            server_cpu,
            server_memory,
            server_disk,
            status_write_failures,
            status_writes_pending,
            ready_gauge,
            last_success: Mutex::default(),
            status_write_error: Mutex::default(),
            ready: AtomicBool::new(false),
        }
    }

    /// Counts one finished pass of `server`.
    pub fn observe_reconcile(&self, server: &str, result: crate::status::ReconcileResult, seconds: f64) {
        let label = match result {
            crate::status::ReconcileResult::Succeeded => "success",
            crate::status::ReconcileResult::Failed => "error",
            crate::status::ReconcileResult::Blocked => "blocked",
        };
        self.reconcile_total
            .get_or_create(&vec![("result".to_owned(), label.to_owned())])
            .inc();
        self.reconcile_time.observe(seconds);
        if result == crate::status::ReconcileResult::Succeeded
            && let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
        {
            self.last_success
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(server.to_owned(), now.as_secs_f64());
        }
    }

    /// Counts one component run that changed something or failed.
    pub fn observe_component(&self, component: &str, result: &str) {
        let labels = vec![
            ("component".to_owned(), component.to_owned()),
            ("result".to_owned(), result.to_owned()),
        ];
        self.component_applies.get_or_create(&labels).inc();
    }

    /// Counts drift a check run found in `component`, and whether it was corrected.
    pub fn observe_drift(&self, component: &str, corrected: bool) {
        let labels = vec![("component".to_owned(), component.to_owned())];
        self.drift_found.get_or_create(&labels).inc();
        if corrected {
            self.drift_corrected.get_or_create(&labels).inc();
        }
    }

    /// Marks the daemon ready (after its first full listing) for `/readyz`.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Counts one failed status write and keeps its error for `/readyz`.
    pub fn status_write_failed(&self, error: &str) {
        self.status_write_failures.inc();
        error.clone_into(&mut self.status_write_error.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// How many status files wait for a successful write; `/readyz` fails while any do.
    pub fn set_status_writes_pending(&self, pending: usize) {
        self.status_writes_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// `/readyz`: ready after the first full listing, and while every status file holds
    /// the latest status; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err("the first listing is not done yet".to_owned());
        }
        match self.status_writes_pending.get() {
            0 => Ok(()),
            pending => {
                let error = self
                    .status_write_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                Err(format!(
                    "{pending} status file{} could not be written (retrying); last error: {error}",
                    if pending == 1 { "" } else { "s" }
                ))
            }
        }
    }

    /// The exposition text for a scrape, after refreshing the gauges from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.queue_depth.set(snapshot.queue_depth);
        self.active_workers.set(snapshot.active_workers);
        self.open_connections.set(snapshot.open_connections);
        self.ready_gauge.set(i64::from(self.readiness().is_ok()));
        self.servers.clear();
        self.server_condition.clear();
        self.server_last_success.clear();
        self.server_cpu.clear();
        self.server_memory.clear();
        self.server_disk.clear();
        let seen = self.last_success.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for s in &snapshot.servers {
            let by_status = vec![
                ("condition".to_owned(), "Ready".to_owned()),
                ("status".to_owned(), s.ready().to_owned()),
            ];
            self.servers.get_or_create(&by_status).inc();
            let mut conditions = s.conditions.clone();
            if !conditions.iter().any(|(t, _)| t == crate::status::types::READY) {
                conditions.push((crate::status::types::READY.to_owned(), "Unknown".to_owned()));
            }
            for (type_, current) in &conditions {
                for status in CONDITION_STATUSES {
                    let labels = vec![
                        ("server".to_owned(), s.name.clone()),
                        ("type".to_owned(), type_.clone()),
                        ("status".to_owned(), status.to_owned()),
                    ];
                    self.server_condition
                        .get_or_create(&labels)
                        .set(i64::from(current == status));
                }
            }
            let server = vec![("server".to_owned(), s.name.clone())];
            let last = match (s.last_success, seen.get(&s.name)) {
                (Some(a), Some(b)) => Some(a.max(*b)),
                (a, b) => a.or(b.copied()),
            };
            if let Some(t) = last {
                self.server_last_success.get_or_create(&server).set(t);
            }
            if let Some((cpu, mem, disk)) = s.hardware {
                self.server_cpu.get_or_create(&server).set(i64::from(cpu));
                self.server_memory
                    .get_or_create(&server)
                    .set(i64::try_from(mem).unwrap_or(i64::MAX));
                self.server_disk
                    .get_or_create(&server)
                    .set(i64::try_from(disk).unwrap_or(i64::MAX));
            }
        }
        self.source_ready.clear();
        self.source_revision.clear();
        if let Some(source) = &snapshot.source {
            self.source_ready
                .get_or_create(&vec![("reason".to_owned(), source.reason.clone())])
                .set(i64::from(source.ready));
            self.source_last_fetch.set(source.last_fetch);
            if let Some(revision) = &source.revision {
                self.source_revision
                    .get_or_create(&vec![("revision".to_owned(), revision.clone())])
                    .set(1);
            }
        }
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How long one connection may take, from accept to the answer written (an idle or slow
/// client is closed then).
pub const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The first pause after a failed accept (out of file descriptors, say); it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while accepts keep failing.
const ACCEPT_BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is
/// dropped. `snapshot` is called once per scrape. Plain HTTP/1.1, one request per
/// connection: Prometheus and health checkers need nothing more, and it keeps a web
/// framework out of the dependency tree. At most [`MAX_CONNECTIONS`] are served at once,
/// each for at most [`CONNECTION_TIMEOUT`]; a failed accept (EMFILE while idle connections
/// hold every descriptor) pauses the loop, 10 ms doubling to 1 s, instead of retrying at
/// once: the pending connection keeps the listener readable, so it would spin.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>) {
    serve_with_hook(listener, metrics, snapshot, None).await;
}

/// [`serve`], plus `POST /hooks/git` when `hook` is set.
pub async fn serve_with_hook(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    hook: Option<Arc<Hook>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    let mut failing = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if failing {
                    tracing::info!("metrics connections are accepted again");
                    failing = false;
                }
                backoff = ACCEPT_BACKOFF_FIRST;
                stream
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot accept metrics connections; pausing between attempts");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed now, so idle clients cannot take every descriptor.
            drop(stream);
            continue;
        };
        let (metrics, snapshot, hook) = (metrics.clone(), snapshot.clone(), hook.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(
                CONNECTION_TIMEOUT,
                answer(stream, &metrics, &*snapshot, hook.as_deref()),
            )
            .await;
        });
    }
}

/// The largest request head read.
const HEAD_MAX: usize = 16 * 1024;
/// The largest webhook body accepted (push payloads are a few KiB to a few hundred).
pub const HOOK_BODY_MAX: usize = 1024 * 1024;

/// Reads one request (its head, and the body a webhook POST announces) and writes its answer.
async fn answer(
    mut stream: tokio::net::TcpStream,
    metrics: &Metrics,
    snapshot: &(dyn Fn() -> Snapshot + Send + Sync),
    hook: Option<&Hook>,
) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_MAX {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) => break buf.len(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or("GET").to_owned();
    let path = words.next().unwrap_or("/").to_owned();
    let (status, content_type, body) = match path.as_str() {
        "/hooks/git" if hook.is_some() => {
            let hook = hook.expect("checked");
            let answer = webhook(&mut stream, &head, buf.split_off(head_end), &method, hook).await;
            (answer.0, "text/plain", answer.1)
        }
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(&snapshot()),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" => match metrics.readiness() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
            Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
        },
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    };
    respond(&mut stream, status, content_type, &body).await;
}

/// A header's value (case-insensitive name) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `POST /hooks/git`: the body is read (at most [`HOOK_BODY_MAX`]), its
/// `X-Hub-Signature-256` checked, and a verified push triggers a fetch at once.
async fn webhook(
    stream: &mut tokio::net::TcpStream,
    head: &str,
    mut body: Vec<u8>,
    method: &str,
    hook: &Hook,
) -> (&'static str, String) {
    if method != "POST" {
        return ("405 Method Not Allowed", "POST only\n".into());
    }
    let Some(length) = header(head, "content-length").and_then(|v| v.parse::<usize>().ok()) else {
        return ("411 Length Required", "Content-Length required\n".into());
    };
    if length > HOOK_BODY_MAX {
        return ("413 Payload Too Large", "body too large\n".into());
    }
    let mut chunk = vec![0u8; 8192];
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return ("400 Bad Request", "body shorter than Content-Length\n".into()),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    let signature = header(head, "x-hub-signature-256").unwrap_or_default();
    if !crate::source::hook::verify(&hook.secret, &body, signature) {
        tracing::warn!("webhook refused: missing or wrong X-Hub-Signature-256");
        return ("401 Unauthorized", "bad signature\n".into());
    }
    tracing::info!("webhook: fetching the git source now");
    hook.trigger.notify_one();
    ("202 Accepted", "fetching\n".into())
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_the_controller_runtime_style_names() {
        let m = Metrics::new();
        m.observe_reconcile("web-1", crate::status::ReconcileResult::Succeeded, 0.3);
        m.observe_component("nginx", "applied");
        m.observe_drift("nginx", true);
        m.observe_drift("redis", false);
        let text = m.render(&Snapshot {
            queue_depth: 3,
            active_workers: 1,
            open_connections: 2,
            servers: vec![
                ServerGauges {
                    name: "web-1".into(),
                    conditions: vec![("Ready".into(), "True".into()), ("Drifted".into(), "False".into())],
                    hardware: Some((2, 3931 << 20, 39 << 30)),
                    last_success: Some(1_700_000_000.0),
                },
                ServerGauges {
                    name: "web-2".into(),
                    ..ServerGauges::default()
                },
            ],
            source: Some(SourceGauges {
                ready: false,
                last_fetch: 1_700_000_000,
                revision: Some("main@sha1:abc".into()),
                reason: "ValidationFailed".into(),
            }),
        });
        for needle in [
            "chom_reconcile_total{result=\"success\"} 1",
            "chom_reconcile_time_seconds_count 1",
            "chom_component_applies_total{component=\"nginx\",result=\"applied\"} 1",
            "chom_drift_found_total{component=\"nginx\"} 1",
            "chom_drift_found_total{component=\"redis\"} 1",
            "chom_drift_corrected_total{component=\"nginx\"} 1",
            "chom_workqueue_depth 3",
            "chom_ready 0",
            "chom_active_workers 1",
            "chom_ssh_open_connections 2",
            "chom_servers{condition=\"Ready\",status=\"True\"} 1",
            "chom_servers{condition=\"Ready\",status=\"Unknown\"} 1",
            "chom_server_condition{server=\"web-1\",type=\"Ready\",status=\"True\"} 1",
            "chom_server_condition{server=\"web-1\",type=\"Ready\",status=\"False\"} 0",
            "chom_server_condition{server=\"web-1\",type=\"Drifted\",status=\"False\"} 1",
            "chom_server_condition{server=\"web-2\",type=\"Ready\",status=\"Unknown\"} 1",
            "chom_server_detected_memory_bytes{server=\"web-1\"} 4121952256",
            "chom_server_detected_disk_bytes{server=\"web-1\"} 41875931136",
            "chom_source_ready{reason=\"ValidationFailed\"} 0",
            "chom_source_last_fetch_timestamp_seconds 1700000000",
            "chom_source_revision_info{revision=\"main@sha1:abc\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(!text.contains("drift_corrected_total{component=\"redis\"}"), "{text}");
        // The pass seen by this process is newer than the status's.
        let last = text
            .lines()
            .find(|l| l.starts_with("chom_server_last_success_timestamp_seconds{server=\"web-1\"}"))
            .unwrap_or_else(|| panic!("{text}"));
        let value: f64 = last.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 1_700_000_000.0, "{last}");
        assert!(
            !text.contains("last_success_timestamp_seconds{server=\"web-2\"}"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_health_and_readiness() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let server = tokio::spawn(serve(listener, metrics.clone(), Arc::new(Snapshot::default)));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        metrics.set_ready();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").await.contains("chom_workqueue_depth 0"));
        server.abort();
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_served_again_once_others_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), Arc::new(Snapshot::default)));
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the server accept them all.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
        over.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), over.read_to_string(&mut out)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed unanswered: {read:?} {out:?}"
        );
        drop(idle);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        server.abort();
    }
}
