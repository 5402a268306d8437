//! Deployment history in the state directory: one JSON record per deployment
//! (`history/<id>.json`, the last [`KEEP`] kept) and dated hardware snapshots per server
//! (`hardware/<server>.jsonl`, a line only when the hardware changed). Records name
//! config keys, never values, and never hold a secret.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::desired::DesiredState;
use crate::hardware::Hardware;
use crate::status::{ObservedStatus, ReconcileResult, Timestamp};

/// How many deployment records are kept.
pub const KEEP: usize = 100;

/// One deployment: a `chom reconcile` pass, or a daemon pass that changed or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Deployment id.
    pub id: String,
    /// `user@host` that ran it.
    pub deployer: String,
    /// The inventory's git commit, when it is a checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The branch or tag of a git source the commit was reached through.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// For a `chom rollback`: the deployment it returned to (whose commit and ref this
    /// record carries, as that is what was applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// Hash over the desired states of the servers in this record.
    pub desired_hash: String,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// Per server.
    pub servers: Vec<ServerRecord>,
}

/// What happened to one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRecord {
    /// Server name.
    pub name: String,
    /// Generation reconciled.
    pub generation: u64,
    /// Its desired-state hash.
    pub desired_hash: String,
    /// Outcome.
    pub result: ReconcileResult,
    /// The reason of `Ready`.
    pub reason: String,
    /// Milliseconds.
    pub duration_ms: u64,
    /// Per component: state, digest, version, changed, duration.
    pub components: Vec<ComponentRecord>,
    /// Names of the config keys in force (dotted), never values.
    pub config_keys: BTreeSet<String>,
    /// What changed since the previous record of this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Hardware seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Hardware>,
    /// Warnings (hardware changes, spec mismatches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One component in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRecord {
    /// Name.
    pub name: String,
    /// Version asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// State after the pass.
    pub state: String,
    /// Applied digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether the pass changed it.
    pub changed: bool,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Object id (SHA-256) of the script applied, kept in `objects/` for rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Object id of the merged config applied (never holds secret values: secrets are
    /// not part of config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// Dotted names of every leaf of a config.
fn config_keys(config: &serde_json::Map<String, Value>) -> BTreeSet<String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    for (k, v) in config {
        walk(k, v, &mut out);
    }
    out
}

/// The record of one server after a pass.
pub fn server_record(
    desired: &DesiredState,
    generation: u64,
    status: &ObservedStatus,
    result: ReconcileResult,
    duration_ms: u64,
    warnings: Vec<String>,
) -> ServerRecord {
    let base = config_keys(&desired.config);
    let mut keys = base.clone();
    // Component configs contain the server's; only their own keys are listed apart.
    for c in &desired.components {
        keys.extend(
            config_keys(&c.config)
                .difference(&base)
                .map(|k| format!("{}:{k}", c.name)),
        );
    }
    let components = status
        .components
        .iter()
        .map(|c| ComponentRecord {
            name: c.name.clone(),
            version: desired
                .components
                .iter()
                .find(|d| d.name == c.name)
                .and_then(|d| d.version.clone()),
            state: format!("{:?}", c.state),
            digest: c.applied_digest.clone(),
            changed: c.changed,
            duration_ms: c.duration_ms,
            script: None,
            config: None,
        })
        .collect();
    ServerRecord {
        name: desired.name.clone(),
        generation,
        desired_hash: desired.hash(),
        result,
        reason: status
            .condition(crate::status::types::READY)
            .map(|c| c.reason.clone())
            .unwrap_or_default(),
        duration_ms,
        components,
        config_keys: keys,
        changes: Vec::new(),
        hardware: status.hardware.clone(),
        warnings,
    }
}

/// What differs between two records of one server, in words.
fn describe_changes(before: &ServerRecord, after: &ServerRecord) -> Vec<String> {
    let mut out = Vec::new();
    let by_name = |r: &ServerRecord| -> BTreeMap<String, ComponentRecord> {
        r.components.iter().map(|c| (c.name.clone(), c.clone())).collect()
    };
    let (old, new) = (by_name(before), by_name(after));
    for (name, c) in &new {
        match old.get(name) {
            None => out.push(format!("component {name} added")),
            Some(o) if o.version != c.version => out.push(format!(
                "component {name} version {} → {}",
                o.version.as_deref().unwrap_or("-"),
                c.version.as_deref().unwrap_or("-")
            )),
            Some(o) if o.digest != c.digest && c.digest.is_some() => {
                out.push(format!("component {name} re-applied (script or config changed)"));
            }
            _ => {}
        }
    }
    out.extend(
        old.keys()
            .filter(|n| !new.contains_key(*n))
            .map(|n| format!("component {n} removed")),
    );
    let added: Vec<&String> = after.config_keys.difference(&before.config_keys).collect();
    let removed: Vec<&String> = before.config_keys.difference(&after.config_keys).collect();
    if !added.is_empty() {
        out.push(format!("config keys added: {}", join(&added)));
    }
    if !removed.is_empty() {
        out.push(format!("config keys removed: {}", join(&removed)));
    }
    if before.desired_hash != after.desired_hash && out.is_empty() {
        out.push("desired state changed (config values, secrets or dependencies)".to_owned());
    }
    out
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The history folder of a state directory.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
    hardware_dir: PathBuf,
    objects_dir: PathBuf,
}

impl History {
    /// Opens (creating) `state_dir/history` and `state_dir/hardware`.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("history");
        let hardware_dir = state_dir.join("hardware");
        let objects_dir = state_dir.join("objects");
        for d in [&dir, &hardware_dir, &objects_dir] {
            std::fs::create_dir_all(d)?;
        }
        Ok(Self {
            dir,
            hardware_dir,
            objects_dir,
        })
    }

    /// Keeps `bytes` content-addressed and returns its id (hex SHA-256). Writing the
    /// same content twice costs one stat.
    pub fn put_object(&self, bytes: &[u8]) -> std::io::Result<String> {
        use sha2::{Digest as _, Sha256};
        let id = crate::desired::hex(&Sha256::digest(bytes));
        let path = self.objects_dir.join(&id);
        if !path.exists() {
            crate::atomic::write(&path, bytes, 0o640)?;
        }
        Ok(id)
    }

    /// The content of an object.
    pub fn object(&self, id: &str) -> std::io::Result<Vec<u8>> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad object id {id:?}"),
            ));
        }
        Ok(crate::fsread::read(
            &self.objects_dir.join(id),
            crate::fsread::cap::OBJECT,
        )?)
    }

    /// Stores the scripts and merged configs of a server's applied components as
    /// objects and notes their ids in the record, so `chom rollback` can re-apply them.
    pub fn keep_objects(
        &self,
        record: &mut ServerRecord,
        desired: &DesiredState,
        scripts: &BTreeMap<String, std::sync::Arc<[u8]>>,
    ) {
        for c in &mut record.components {
            if c.state != "Applied" {
                continue;
            }
            let (Some(d), Some(script)) = (
                desired.components.iter().find(|d| d.name == c.name),
                scripts.get(&c.name),
            ) else {
                continue;
            };
            c.script = self.put_object(script).ok();
            let config = Value::Object(d.config.clone()).to_string();
            c.config = self.put_object(config.as_bytes()).ok();
        }
    }

    /// All records, oldest first.
    pub fn records(&self) -> Vec<Record> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|p| crate::fsread::read(p, crate::fsread::cap::HISTORY_RECORD).ok())
            .filter_map(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
            .collect()
    }

    /// Stores a record: fills in each server's changes since its previous record, writes
    /// it atomically, and drops the oldest beyond [`KEEP`].
    pub fn store(&self, mut record: Record) -> std::io::Result<PathBuf> {
        let previous = self.records();
        for server in &mut record.servers {
            if let Some(before) = previous
                .iter()
                .rev()
                .flat_map(|r| r.servers.iter())
                .find(|s| s.name == server.name)
            {
                server.changes = describe_changes(before, server);
            } else {
                server.changes = vec!["first deployment recorded".to_owned()];
            }
        }
        // Ids start with a UTC timestamp, so names sort by time.
        let path = self.dir.join(format!("{}.json", record.id));
        let bytes = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        crate::atomic::write(&path, &bytes, 0o640)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for old in files.iter().take(files.len().saturating_sub(KEEP)) {
            let _ = std::fs::remove_file(old);
        }
        Ok(path)
    }

    /// Appends a dated hardware snapshot for `server` when it differs from the last one.
    /// Returns whether it appended.
    pub fn snapshot_hardware(&self, server: &str, hardware: &Hardware) -> std::io::Result<bool> {
        use std::io::Write as _;
        let path = self.hardware_path(server)?;
        let last = crate::fsread::read_to_string(&path, crate::fsread::cap::HARDWARE_LOG)
            .ok()
            .and_then(|t| {
                t.lines()
                    .last()
                    .and_then(|l| serde_json::from_str::<Value>(l).ok())
                    .and_then(|v| serde_json::from_value::<Hardware>(v.get("hardware")?.clone()).ok())
            });
        let same = last.is_some_and(|l| crate::judge::changes(&l, hardware).is_empty());
        if same {
            return Ok(false);
        }
        let line = serde_json::json!({"time": Timestamp::now().to_string(), "hardware": hardware});
        let mut file = crate::fsread::open_append(&path, 0o644)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()?;
        Ok(true)
    }

    /// Where a server's hardware snapshots live; a name that is not a server name is
    /// refused, so it never becomes a path outside the folder.
    fn hardware_path(&self, server: &str) -> std::io::Result<PathBuf> {
        if !crate::resource::ServerName::is_valid(server) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{server:?} is not a server name"),
            ));
        }
        Ok(self.hardware_dir.join(format!("{server}.jsonl")))
    }

    /// The dated snapshots of one server, oldest first.
    pub fn hardware(&self, server: &str) -> Vec<(String, Hardware)> {
        let text = self
            .hardware_path(server)
            .ok()
            .and_then(|path| crate::fsread::read_to_string(&path, crate::fsread::cap::HARDWARE_LOG).ok())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                let time = v.get("time")?.as_str()?.to_owned();
                Some((time, serde_json::from_value(v.get("hardware")?.clone()).ok()?))
            })
            .collect()
    }
}

/// A hash over the desired states of a set of servers (for the record header).
pub fn combined_hash<'a>(hashes: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    for h in hashes {
        hasher.update(h.as_bytes());
        hasher.update([0]);
    }
    crate::desired::hex(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, version: &str, keys: &[&str]) -> Record {
        let now = Timestamp::now();
        Record {
            id: id.into(),
            deployer: "me@host".into(),
            commit: None,
            reference: None,
            rollback_of: None,
            desired_hash: "h".into(),
            started_at: now,
            finished_at: now,
            servers: vec![ServerRecord {
                name: "web-1".into(),
                generation: 1,
                desired_hash: format!("h-{version}"),
                result: ReconcileResult::Succeeded,
                reason: "Reconciled".into(),
                duration_ms: 5,
                components: vec![ComponentRecord {
                    name: "nginx".into(),
                    version: Some(version.into()),
                    state: "Applied".into(),
                    digest: Some(format!("d-{version}")),
                    changed: true,
                    duration_ms: Some(3),
                    script: None,
                    config: None,
                }],
                config_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                changes: Vec::new(),
                hardware: None,
                warnings: Vec::new(),
            }],
        }
    }

    #[test]
    fn a_resized_server_shows_up_as_a_dated_hardware_change() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path()).unwrap();
        let text = include_str!("../tests/fixtures/facts/debian-12-kvm.txt");
        let mut hw = crate::facts::parse_probe(text).unwrap();
        assert!(history.snapshot_hardware("web-1", &hw).unwrap());
        hw.disk_free_gb += 1;
        assert!(
            !history.snapshot_hardware("web-1", &hw).unwrap(),
            "free space is not hardware"
        );
        hw.memory_mb *= 2;
        assert!(history.snapshot_hardware("web-1", &hw).unwrap(), "a resize is recorded");
        let snapshots = history.hardware("web-1");
        assert_eq!(snapshots.len(), 2);
        assert_eq!(snapshots[1].1.memory_mb, snapshots[0].1.memory_mb * 2);
        assert!(Timestamp::parse(&snapshots[1].0).is_some());
    }

    #[test]
    fn records_say_what_changed_and_only_the_last_ones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path()).unwrap();
        history.store(record("d-001", "1.24", &["smtp.host"])).unwrap();
        history
            .store(record("d-002", "1.25", &["smtp.host", "smtp.port"]))
            .unwrap();
        let records = history.records();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].servers[0].changes, ["first deployment recorded"]);
        assert_eq!(
            records[1].servers[0].changes,
            ["component nginx version 1.24 → 1.25", "config keys added: smtp.port"]
        );
        for i in 3..(KEEP + 10) {
            history.store(record(&format!("d-{i:03}"), "1.25", &[])).unwrap();
        }
        assert_eq!(history.records().len(), KEEP);
    }
}
