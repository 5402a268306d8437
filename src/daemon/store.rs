//! The daemon's view of the fleet: per server the desired state in force, its hash and
//! generation, the last observed status, and whether its file currently validates.
//! `refresh` turns a fresh validation of the tree into the set of servers to reconcile
//! and the ones removed. It performs no I/O: the status files of servers it has not seen
//! yet are read by the caller, outside the store's lock, and passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::desired::{self, DesiredState};
use crate::diag::Diagnostic;
use crate::inventory::ServerEntry;
use crate::status::{self, ConditionStatus, ObservedStatus, ServerStatus, Timestamp, reasons, types};
use crate::validate::Report;

/// Everything the daemon knows about one server.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The last valid resource and its file.
    pub entry: ServerEntry,
    /// The desired state in force (the last valid one, while the file is broken).
    pub desired: DesiredState,
    /// Its hash.
    pub hash: String,
    /// Its generation.
    pub generation: u64,
    /// The last observed status.
    pub observed: ObservedStatus,
    /// Findings that keep the file from validating now (empty when it validates).
    pub spec_errors: Vec<String>,
    /// Whether a pass has checked every component since the daemon started (or since the
    /// last SIGHUP): until then the server's passes check every component now, whatever
    /// its interval.
    pub checked: bool,
    /// The git source's revision the desired state in force was read from.
    pub revision: Option<crate::source::Revision>,
}

impl Tracked {
    /// The server as the controller sees it.
    pub fn server(&self) -> crate::controller::Server {
        crate::controller::Server {
            entry: self.entry.clone(),
            desired: self.desired.clone(),
            hash: self.hash.clone(),
            generation: self.generation,
            previous: Some(self.observed.clone()),
            revision: self.revision.clone(),
        }
    }
}

impl Tracked {
    /// The status document to write. `SpecValid` is kept in the observed status too, so
    /// its `lastTransitionTime` moves only when the file's validity does (the next pass
    /// starts from the observed status; built on a copy, every write stamped it anew).
    pub fn document(&mut self) -> ServerStatus {
        let observed = &mut self.observed;
        let now = Timestamp::now();
        if self.spec_errors.is_empty() {
            observed.set_condition(
                types::SPEC_VALID,
                ConditionStatus::True,
                reasons::VALID,
                "the server's file validates",
                self.generation,
                now,
            );
        } else {
            observed.set_condition(
                types::SPEC_VALID,
                ConditionStatus::False,
                reasons::INVALID,
                format!(
                    "{} is invalid; the last valid desired state (generation {}) stays in force",
                    self.entry.path.display(),
                    self.generation
                ),
                self.generation,
                now,
            );
        }
        let mut observed = self.observed.clone();
        observed.spec_errors.clone_from(&self.spec_errors);
        status::document(&self.desired.name, self.generation, &self.hash, observed)
    }
}

/// What a refresh found.
#[derive(Debug, Default)]
pub struct Changes {
    /// New servers and servers whose desired state changed: reconcile them.
    pub changed: BTreeSet<String>,
    /// Servers whose file disappeared: stop, disconnect, remove their status.
    pub removed: Vec<Tracked>,
    /// Servers whose file validity changed: rewrite their status.
    pub validity: BTreeSet<String>,
    /// Inventory files with errors that are not a tracked server's, with their findings:
    /// those that would be a server (`validate::invalid_server_name`) get a status saying
    /// why beside them.
    pub never_valid: Vec<(PathBuf, Vec<String>)>,
}

/// All tracked servers.
#[derive(Debug, Default)]
pub struct Store {
    /// By name.
    pub servers: BTreeMap<String, Tracked>,
}

/// kstatus: `Reconciling` is True from the moment a new generation exists until a pass
/// has acted on it (the pass removes it).
fn mark_reconciling(observed: &mut ObservedStatus, generation: u64) {
    observed.set_condition(
        types::RECONCILING,
        ConditionStatus::True,
        reasons::NEW_GENERATION,
        format!("generation {generation} is waiting to be reconciled"),
        generation,
        Timestamp::now(),
    );
}

fn finding_line(d: &Diagnostic) -> String {
    format!(
        "{}:{}:{}: {}[{}]: {}",
        d.file.display(),
        d.line,
        d.column,
        if d.is_error() { "error" } else { "warning" },
        d.code,
        d.message
    )
}

impl Store {
    /// The servers of `report` not tracked yet: their status files are to be read (by
    /// the caller, without the store's lock) and passed to [`Store::refresh`].
    pub fn untracked(&self, report: &Report) -> Vec<ServerEntry> {
        report
            .inventory
            .servers
            .iter()
            .filter(|(name, _)| !self.servers.contains_key(*name))
            .map(|(_, entry)| entry.clone())
            .collect()
    }

    /// Applies a fresh validation report. `digests` are its scripts' digests and secret
    /// versions ([`desired::sources`]) and `previous` the status files of the
    /// [`Store::untracked`] servers, by name: both read by the caller, without the lock.
    pub fn refresh(
        &mut self,
        report: &Report,
        layout: &crate::inventory::Layout,
        digests: &desired::Sources,
        previous: &BTreeMap<String, ServerStatus>,
    ) -> Changes {
        let mut changes = Changes::default();
        let inventory = &report.inventory;
        let mut errors_by_file: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for d in report.diagnostics.iter().filter(|d| d.is_error()) {
            errors_by_file.entry(d.file.clone()).or_default().push(finding_line(d));
        }

        for (name, entry) in &inventory.servers {
            let desired = desired::desired_state(inventory, entry, digests);
            let hash = desired.hash();
            match self.servers.get_mut(name) {
                Some(t) => {
                    if !t.spec_errors.is_empty() {
                        t.spec_errors.clear();
                        changes.validity.insert(name.clone());
                    }
                    if t.hash != hash || t.entry.path != entry.path {
                        if t.hash != hash {
                            t.generation += 1;
                            mark_reconciling(&mut t.observed, t.generation);
                            changes.validity.insert(name.clone());
                        }
                        t.entry = entry.clone();
                        t.desired = desired;
                        t.hash = hash;
                        changes.changed.insert(name.clone());
                    }
                }
                None => {
                    // A restart keeps the generation recorded in the status file.
                    let previous = previous.get(name).cloned();
                    let generation = status::generation_for(previous.as_ref(), &hash);
                    let mut observed = previous.map(|p| p.status).unwrap_or_default();
                    if observed.observed_generation != generation {
                        mark_reconciling(&mut observed, generation);
                    }
                    self.servers.insert(
                        name.clone(),
                        Tracked {
                            entry: entry.clone(),
                            desired,
                            hash,
                            generation,
                            observed,
                            spec_errors: Vec::new(),
                            checked: false,
                            revision: None,
                        },
                    );
                    changes.changed.insert(name.clone());
                }
            }
        }

        let gone: Vec<String> = self
            .servers
            .keys()
            .filter(|n| !inventory.servers.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let Some(t) = self.servers.get_mut(&name) else { continue };
            let errors = errors_by_file.get(&t.entry.path);
            // The file is still there but broken (or references something broken):
            // keep the last valid desired state in force and say why in its status.
            if t.entry.path.exists() {
                let errors = errors.cloned().unwrap_or_else(|| {
                    vec![format!(
                        "{} depends on a resource that does not validate (see `chom validate`)",
                        t.entry.path.display()
                    )]
                });
                if t.spec_errors != errors {
                    t.spec_errors = errors;
                    changes.validity.insert(name.clone());
                }
            } else if let Some(t) = self.servers.remove(&name) {
                changes.removed.push(t);
            }
        }

        let tracked_paths: BTreeSet<&PathBuf> = self.servers.values().map(|t| &t.entry.path).collect();
        for (file, errors) in &errors_by_file {
            if tracked_paths.contains(file) || !file.starts_with(&layout.inventory) {
                continue;
            }
            changes.never_valid.push((file.clone(), errors.clone()));
        }
        changes
    }
}
