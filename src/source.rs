//! GitOps: the git source `chom daemon` pulls its tree from. Each new commit of the
//! followed ref is fetched into the state directory (`source/repo.git`, a bare shallow
//! repository), checked out into its own folder (`source/checkouts/<commit>/tree`), its
//! signature verified when `verify` is set, and the whole tree validated on the same road
//! as `chom validate`. Only then is `source/current` swapped to it with one rename(2), so
//! the daemon's informer (which follows the symlink) sees one change set per commit. A
//! refused commit never reaches the live tree; `source/status.yaml` and `/metrics` say why.

pub mod git;
pub mod hook;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::status::{Condition, ConditionStatus, Timestamp};
use git::{GitError, Remote};

/// The condition type of the source status.
pub const SOURCE_READY: &str = "SourceReady";

/// Reasons of `SourceReady`.
pub mod reasons {
    /// True: the fetched commit is applied.
    pub const APPLIED: &str = "Applied";
    /// False: the fetch failed (remote unreachable, timeout).
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// False: the git host's key is unknown or changed.
    pub const HOST_KEY: &str = "HostKeyVerificationFailed";
    /// False: the followed ref does not exist on the remote.
    pub const REF_NOT_FOUND: &str = "RefNotFound";
    /// False: the commit is unsigned or signed by a key not allowed.
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
    /// False: the commit's tree does not validate.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// False: the commit removes every server and `allowMassDeletion` is not set.
    pub const MASS_DELETION: &str = "MassDeletionRefused";
    /// False: the checkout could not be made or swapped in.
    pub const CHECKOUT_FAILED: &str = "CheckoutFailed";
    /// Unknown: nothing fetched yet.
    pub const PROGRESSING: &str = "Progressing";
}

/// A commit of the source and the ref it was reached through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Revision {
    /// The full commit hash.
    pub commit: String,
    /// The branch or tag followed.
    #[serde(rename = "ref")]
    pub reference: String,
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@sha1:{}", self.reference, self.commit)
    }
}

impl Revision {
    /// The commit's first 12 characters.
    pub fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }
}

/// What a source follows.
#[derive(Debug, Clone, PartialEq)]
pub enum Ref {
    /// A branch.
    Branch(String),
    /// A tag.
    Tag(String),
    /// The highest tag matching a range.
    Semver(semver::VersionReq, String),
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ref::Branch(b) => write!(f, "branch {b}"),
            Ref::Tag(t) => write!(f, "tag {t}"),
            Ref::Semver(_, r) => write!(f, "semver {r}"),
        }
    }
}

/// The resolved settings of a source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The repository.
    pub url: String,
    /// What it follows.
    pub reference: Ref,
    /// Fetch period.
    pub interval: Duration,
    /// The tree's folder inside the repository.
    pub path: PathBuf,
    /// SSH key, known_hosts, timeout.
    pub remote: Remote,
    /// `verify.allowedSigners`.
    pub allowed_signers: Option<PathBuf>,
    /// Shallow fetch depth.
    pub depth: u32,
    /// Checkouts kept.
    pub keep: usize,
    /// Apply a commit that removes every server.
    pub allow_mass_deletion: bool,
    /// The webhook's shared secret, when it is on.
    pub webhook_secret: Option<Vec<u8>>,
}

impl Settings {
    /// From `chom.yaml`'s `source:`, its relative paths taken from `base`.
    pub fn from_spec(spec: &crate::treeconfig::SourceSpec, base: &Path) -> anyhow::Result<Settings> {
        let resolve = |p: &Path| crate::treeconfig::resolve(base, p);
        let url = if looks_local(&spec.url) {
            resolve(Path::new(&spec.url)).display().to_string()
        } else {
            spec.url.clone()
        };
        anyhow::ensure!(
            !url.is_empty() && !url.starts_with('-'),
            "source.url {:?} is not a repository",
            spec.url
        );
        let r = spec.reference.clone().unwrap_or_default();
        let reference = match (r.branch, r.tag, r.semver) {
            (None, None, None) => Ref::Branch("main".into()),
            (Some(b), None, None) => Ref::Branch(checked_ref_name(b)?),
            (None, Some(t), None) => Ref::Tag(checked_ref_name(t)?),
            (None, None, Some(s)) => Ref::Semver(
                semver::VersionReq::parse(&s).map_err(|e| anyhow::anyhow!("source.ref.semver {s:?}: {e}"))?,
                s,
            ),
            _ => anyhow::bail!("source.ref: give one of branch, tag or semver"),
        };
        let path = spec.path.clone().unwrap_or_default();
        anyhow::ensure!(
            path.components()
                .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)),
            "source.path {} must stay inside the repository",
            path.display()
        );
        let webhook_secret = match &spec.webhook {
            Some(w) => {
                let file = resolve(&w.secret_file);
                let bytes = crate::fsread::read(&file, 64 * 1024)
                    .map_err(|e| anyhow::anyhow!("source.webhook.secretFile: {e}"))?;
                let text = String::from_utf8_lossy(&bytes).trim().to_owned();
                anyhow::ensure!(
                    !text.is_empty(),
                    "source.webhook.secretFile {} is empty",
                    file.display()
                );
                Some(text.into_bytes())
            }
            None => None,
        };
        Ok(Settings {
            url,
            reference,
            interval: spec.interval.map_or(Duration::from_secs(60), |d| d.0),
            path,
            remote: Remote {
                ssh_key: spec.ssh_key.as_deref().map(resolve),
                known_hosts: spec.known_hosts.as_deref().map(resolve),
                timeout: spec.timeout.map_or(Duration::from_secs(120), |d| d.0),
            },
            allowed_signers: spec.verify.as_ref().map(|v| resolve(&v.allowed_signers)),
            depth: spec.depth.unwrap_or(50).max(1),
            keep: spec.keep.unwrap_or(5).max(1),
            allow_mass_deletion: spec.allow_mass_deletion,
            webhook_secret,
        })
    }
}

fn looks_local(url: &str) -> bool {
    !url.contains("://") && !url.contains(':')
}

fn checked_ref_name(name: String) -> anyhow::Result<String> {
    anyhow::ensure!(
        !name.is_empty()
            && !name.starts_with('-')
            && !name.contains("..")
            && name.bytes().all(|b| b.is_ascii_graphic() && !b"~^:?*[\\".contains(&b)),
        "source.ref {name:?} is not a valid ref name"
    );
    Ok(name)
}

/// Where a source keeps its things inside the state directory.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `<state>/source`.
    pub root: PathBuf,
}

impl Dirs {
    /// The source folders of a state directory.
    pub fn new(state_dir: &Path) -> Dirs {
        Dirs {
            root: state_dir.join("source"),
        }
    }
    fn repo(&self) -> PathBuf {
        self.root.join("repo.git")
    }
    fn checkouts(&self) -> PathBuf {
        self.root.join("checkouts")
    }
    /// The symlink to the applied checkout.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    /// `source/status.yaml`.
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.yaml")
    }
    /// `source/sync.lock`: held exclusively for each sync, so daemons sharing a state
    /// directory (shards on one host) take turns instead of racing on the checkouts and
    /// the swap of `current`.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("sync.lock")
    }

    /// Takes `sync.lock`, waiting while another process holds it; released on drop.
    fn lock(&self) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(self.lock_file())?;
        file.lock()?;
        Ok(file)
    }
}

/// The live tree root of a git-sourced daemon: `<state>/source/current/tree/<path>`.
pub fn tree_root(state_dir: &Path, path: &Path) -> PathBuf {
    Dirs::new(state_dir).current().join("tree").join(path)
}

/// Where server statuses go for a git-sourced tree (checkouts are replaced per commit).
pub fn status_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("status")
}

/// The layout of a git-sourced tree.
pub fn layout(state_dir: &Path, path: &Path) -> crate::inventory::Layout {
    let mut layout = crate::inventory::Layout::beside(&tree_root(state_dir, path).join("inventory.d"));
    layout.status = Some(status_dir(state_dir));
    layout
}

/// The revision of the checkout `dir` lies in, when it is one of a git source: the folder
/// `checkouts/<commit>/tree/…` reached (through `current`) with its `revision.json`.
pub fn revision_at(dir: &Path) -> Option<Revision> {
    let real = std::fs::canonicalize(dir).ok()?;
    let tree = real.ancestors().find(|a| {
        a.file_name() == Some(OsStr::new("tree"))
            && a.parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|n| n == "checkouts")
    })?;
    let meta = tree.parent()?.join("revision.json");
    let bytes = crate::fsread::read(&meta, 64 * 1024).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `source/status.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The repository.
    pub url: String,
    /// What is followed.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The commit last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<Revision>,
    /// When the last fetch ended (failed or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_time: Option<Timestamp>,
    /// The commit the live tree is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<Revision>,
    /// When it was swapped in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_time: Option<Timestamp>,
    /// Servers in the applied tree (for the mass-deletion guard).
    #[serde(default)]
    pub applied_servers: usize,
    /// The last refused commit (so each is logged and audited once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused_revision: Option<Revision>,
    /// The last error, when the source is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The findings that refused the last refused commit (file:line:col).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// Fetches failed in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// `SourceReady`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl SourceStatus {
    /// `SourceReady`, when set.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == SOURCE_READY)
    }

    fn set_ready(&mut self, status: ConditionStatus, reason: &str, message: String) {
        let now = Timestamp::now();
        match self.conditions.iter_mut().find(|c| c.type_ == SOURCE_READY) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                reason.clone_into(&mut c.reason);
                c.message = message;
            }
            None => self.conditions.push(Condition {
                type_: SOURCE_READY.into(),
                status,
                reason: reason.into(),
                message,
                last_transition_time: now,
                observed_generation: 0,
            }),
        }
    }
}

/// The whole file: `kind: SourceStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SourceDocument {
    api_version: String,
    kind: String,
    status: SourceStatus,
}

/// Reads `source/status.yaml` of a state directory.
pub fn read_status(state_dir: &Path) -> Option<SourceStatus> {
    let text = crate::fsread::read_own(&Dirs::new(state_dir).status_file(), crate::fsread::cap::STATUS).ok()?;
    serde_saphyr::from_str::<SourceDocument>(&text).ok().map(|d| d.status)
}

/// Something that happened during a sync, for the log and the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `source.applied`, `source.refused`, `source.history-rewritten`, `source.fetch-failed`.
    pub action: &'static str,
    /// A sentence.
    pub message: String,
    /// Audit fields.
    pub fields: serde_json::Value,
    /// True for what goes to the audit trail (not every failed fetch).
    pub audit: bool,
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new commit is live.
    Applied(Revision),
    /// Nothing new.
    Unchanged,
    /// The fetched commit was refused; the last good one stays.
    Refused,
    /// The remote could not be fetched.
    FetchFailed,
}

/// A git source with its state.
pub struct Source {
    /// Settings.
    pub settings: Settings,
    /// Folders.
    pub dirs: Dirs,
    /// The status (persisted in `source/status.yaml`).
    pub status: SourceStatus,
    /// The state directory (absolute).
    state_dir: PathBuf,
}

/// A refusal: reason, message, findings.
struct Refusal(&'static str, String, Vec<String>);

impl Source {
    /// A source keeping its things in `state_dir/source`, resuming from its status file.
    pub fn open(settings: Settings, state_dir: &Path) -> std::io::Result<Source> {
        // git runs in the source folder: every path handed to it is absolute.
        let state_dir = &std::path::absolute(state_dir)?;
        let dirs = Dirs::new(state_dir);
        std::fs::create_dir_all(dirs.checkouts())?;
        std::fs::create_dir_all(status_dir(state_dir))?;
        let mut source = Source {
            settings,
            dirs,
            status: SourceStatus::default(),
            state_dir: state_dir.clone(),
        };
        let _lock = source.dirs.lock()?;
        source.reload();
        source.ensure_live_tree()?;
        Ok(source)
    }

    /// Reads the status back from `source/status.yaml` and `current`: under the sync lock,
    /// another daemon sharing the state directory may have synced since.
    fn reload(&mut self) {
        let mut status = read_status(&self.state_dir).unwrap_or_default();
        status.url.clone_from(&self.settings.url);
        status.reference = self.settings.reference.to_string();
        // The live tree is what `current` points to, whatever the file says.
        status.last_applied_revision = revision_at(&self.dirs.current().join("tree"));
        if status.ready().is_none() {
            status.set_ready(
                ConditionStatus::Unknown,
                reasons::PROGRESSING,
                "nothing fetched yet".into(),
            );
        }
        self.status = status;
    }

    /// Before the first commit is applied, `current` points at an empty tree (so the
    /// daemon starts, with no servers, and the informer has its folders to watch).
    fn ensure_live_tree(&self) -> std::io::Result<()> {
        if std::fs::symlink_metadata(self.dirs.current()).is_ok() {
            return Ok(());
        }
        let empty = self.dirs.checkouts().join("empty");
        let root = empty.join("tree").join(&self.settings.path);
        for sub in ["inventory.d", "scripts", "secrets.d"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        self.swap_to(&empty)
    }

    fn git(&self, args: &[&OsStr]) -> Result<Vec<u8>, GitError> {
        self.settings.remote.run(&self.dirs.root, args, &[])
    }

    fn git_text(&self, args: &[&str]) -> Result<String, GitError> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.git(&args).map(|o| String::from_utf8_lossy(&o).trim().to_owned())
    }

    /// Fetch → verify → validate → swap → collect, once, holding `source/sync.lock` (a
    /// daemon sharing the state directory waits its turn). Events say what to log and
    /// audit.
    pub fn sync(&mut self) -> (Outcome, Vec<Event>) {
        let mut events = Vec::new();
        let _lock = match self.dirs.lock() {
            Ok(lock) => lock,
            Err(e) => {
                let message = format!("cannot lock {}: {e}", self.dirs.lock_file().display());
                tracing::error!(error = %message, "the git source is not synced");
                self.status.last_error = Some(message.clone());
                self.status
                    .set_ready(ConditionStatus::False, reasons::CHECKOUT_FAILED, message);
                return (Outcome::FetchFailed, events);
            }
        };
        self.reload();
        let outcome = self.sync_inner(&mut events);
        if let Err(e) = self.write_status() {
            tracing::error!(file = %self.dirs.status_file().display(), error = %e, "cannot write the source status");
        }
        (outcome, events)
    }

    fn sync_inner(&mut self, events: &mut Vec<Event>) -> Outcome {
        let fetched = self.fetch();
        self.status.last_fetch_time = Some(Timestamp::now());
        let revision = match fetched {
            Ok(r) => r,
            Err(Refusal(reason, message, _)) => {
                self.status.consecutive_failures += 1;
                let message = format!("{message}; {}", self.keeping());
                if self.status.last_error.as_deref() != Some(message.as_str()) {
                    events.push(Event {
                        action: "source.fetch-failed",
                        message: message.clone(),
                        fields: json!({"url": self.settings.url, "reason": reason, "error": message}),
                        audit: reason == reasons::HOST_KEY || reason == reasons::REF_NOT_FOUND,
                    });
                }
                self.status.last_error = Some(message.clone());
                self.status.set_ready(ConditionStatus::False, reason, message);
                return Outcome::FetchFailed;
            }
        };
        self.status.consecutive_failures = 0;
        let previous = self.status.last_fetched_revision.replace(revision.clone());
        if let Some(prev) = previous.filter(|p| p.commit != revision.commit) {
            let repo = self.dirs.repo();
            let descends = self.git_text(&[
                "--git-dir",
                &repo.to_string_lossy(),
                "merge-base",
                "--is-ancestor",
                &prev.commit,
                &revision.commit,
            ]);
            if descends.is_err() {
                let message = format!(
                    "history rewritten: {} is not a descendant of the previously fetched {} (a force-push, or more than {} commits at once); following it",
                    revision.short(),
                    prev.short(),
                    self.settings.depth
                );
                events.push(Event {
                    action: "source.history-rewritten",
                    message,
                    fields: json!({"ref": revision.reference, "from": prev.commit, "to": revision.commit}),
                    audit: true,
                });
            }
        }
        if self.status.last_applied_revision.as_ref().map(|r| &r.commit) == Some(&revision.commit) {
            self.status.last_applied_revision = Some(revision.clone());
            self.status.last_error = None;
            self.status.findings.clear();
            self.status.set_ready(
                ConditionStatus::True,
                reasons::APPLIED,
                format!("applied revision {revision}"),
            );
            return Outcome::Unchanged;
        }
        match self.apply(&revision) {
            Ok(servers) => {
                let from = self.status.last_applied_revision.replace(revision.clone());
                self.status.last_applied_time = Some(Timestamp::now());
                self.status.applied_servers = servers;
                self.status.last_error = None;
                self.status.findings.clear();
                self.status.last_refused_revision = None;
                self.status.set_ready(
                    ConditionStatus::True,
                    reasons::APPLIED,
                    format!("applied revision {revision}"),
                );
                events.push(Event {
                    action: "source.applied",
                    message: format!("applied revision {revision} ({servers} servers)"),
                    fields: json!({
                        "ref": revision.reference, "commit": revision.commit,
                        "from": from.map(|f| f.commit), "servers": servers,
                    }),
                    audit: true,
                });
                self.collect_garbage();
                Outcome::Applied(revision)
            }
            Err(Refusal(reason, message, findings)) => {
                let message = format!(
                    "commit {} ({}) refused: {message}; {}",
                    revision.short(),
                    revision.reference,
                    self.keeping()
                );
                if self.status.last_refused_revision.as_ref() != Some(&revision) {
                    events.push(Event {
                        action: "source.refused",
                        message: message.clone(),
                        fields: json!({"ref": revision.reference, "commit": revision.commit, "reason": reason, "findings": findings}),
                        audit: true,
                    });
                }
                self.status.last_refused_revision = Some(revision);
                self.status.last_error = Some(message.clone());
                self.status.findings = findings;
                self.status.set_ready(ConditionStatus::False, reason, message);
                self.collect_garbage();
                Outcome::Refused
            }
        }
    }

    fn keeping(&self) -> String {
        match &self.status.last_applied_revision {
            Some(r) => format!("the last good commit {} stays applied", r.short()),
            None => "no commit is applied yet".into(),
        }
    }

    /// Fetches the followed ref into `refs/chom/fetched`; the commit it names.
    fn fetch(&mut self) -> Result<Revision, Refusal> {
        let repo = self.dirs.repo();
        if !repo.join("HEAD").exists() {
            self.git(&[
                OsStr::new("init"),
                OsStr::new("--bare"),
                OsStr::new("-q"),
                repo.as_os_str(),
            ])
            .map_err(|e| Refusal(reasons::FETCH_FAILED, e.to_string(), vec![]))?;
        }
        let (remote_ref, name) = match &self.settings.reference {
            Ref::Branch(b) => (format!("refs/heads/{b}"), b.clone()),
            Ref::Tag(t) => (format!("refs/tags/{t}"), t.clone()),
            Ref::Semver(req, range) => {
                let tag = self.highest_tag(req, range)?;
                (format!("refs/tags/{tag}"), tag)
            }
        };
        let depth = format!("--depth={}", self.settings.depth);
        let refspec = format!("+{remote_ref}:refs/chom/fetched");
        let args: Vec<&OsStr> = [
            OsStr::new("--git-dir"),
            repo.as_os_str(),
            OsStr::new("fetch"),
            OsStr::new("--quiet"),
            OsStr::new("--no-tags"),
            OsStr::new("--no-write-fetch-head"),
            OsStr::new("--force"),
            OsStr::new(&depth),
            OsStr::new("--"),
            OsStr::new(&self.settings.url),
            OsStr::new(&refspec),
        ]
        .to_vec();
        self.git(&args).map_err(|e| classify(&e, &self.settings.url, &name))?;
        let commit = self
            .git_text(&[
                "--git-dir",
                &repo.to_string_lossy(),
                "rev-parse",
                "--verify",
                "refs/chom/fetched^{commit}",
            ])
            .map_err(|e| Refusal(reasons::FETCH_FAILED, e.to_string(), vec![]))?;
        Ok(Revision {
            commit,
            reference: name,
        })
    }

    fn highest_tag(&self, req: &semver::VersionReq, range: &str) -> Result<String, Refusal> {
        let out = self
            .git(&[
                OsStr::new("ls-remote"),
                OsStr::new("--tags"),
                OsStr::new("--refs"),
                OsStr::new("--"),
                OsStr::new(&self.settings.url),
            ])
            .map_err(|e| classify(&e, &self.settings.url, range))?;
        let text = String::from_utf8_lossy(&out);
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.strip_prefix("refs/tags/"))
            .filter_map(|tag| {
                let v = semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()?;
                req.matches(&v).then(|| (v, tag.to_owned()))
            })
            .max()
            .map(|(_, tag)| tag)
            .ok_or_else(|| {
                Refusal(
                    reasons::REF_NOT_FOUND,
                    format!("no tag of {} matches semver {range}", self.settings.url),
                    vec![],
                )
            })
    }

    /// Checkout, verification, validation and swap of `revision`; the servers it has.
    fn apply(&self, revision: &Revision) -> Result<usize, Refusal> {
        let repo = self.dirs.repo();
        if let Some(signers) = &self.settings.allowed_signers {
            let setting = format!("gpg.ssh.allowedSignersFile={}", signers.display());
            self.git_text(&[
                "--git-dir",
                &repo.to_string_lossy(),
                "-c",
                "gpg.format=ssh",
                "-c",
                &setting,
                "verify-commit",
                &revision.commit,
            ])
            .map_err(|e| {
                let why = if e.stderr.trim().is_empty() {
                    "no signature".to_owned()
                } else {
                    e.stderr.trim().lines().last().unwrap_or_default().to_owned()
                };
                Refusal(
                    reasons::VERIFICATION_FAILED,
                    format!("its signature is not by a key of {}: {why}", signers.display()),
                    vec![],
                )
            })?;
        }
        let checkout = self.checkout(revision)?;
        let root = checkout.join("tree").join(&self.settings.path);
        let servers = validate_tree(&root, &self.settings.path)?;
        if servers == 0 && self.status.applied_servers > 0 && !self.settings.allow_mass_deletion {
            return Err(Refusal(
                reasons::MASS_DELETION,
                format!(
                    "it removes every server ({} applied now); set source.allowMassDeletion to apply such a commit",
                    self.status.applied_servers
                ),
                vec![],
            ));
        }
        self.swap_to(&checkout)
            .map_err(|e| Refusal(reasons::CHECKOUT_FAILED, format!("cannot swap it in: {e}"), vec![]))?;
        Ok(servers)
    }

    /// `checkouts/<commit>` (made once: a temp folder renamed into place).
    fn checkout(&self, revision: &Revision) -> Result<PathBuf, Refusal> {
        let failed = |e: String| Refusal(reasons::CHECKOUT_FAILED, e, vec![]);
        let target = self.dirs.checkouts().join(&revision.commit);
        if target.join("revision.json").is_file() {
            return Ok(target);
        }
        let _ = std::fs::remove_dir_all(&target);
        let tmp = self
            .dirs
            .checkouts()
            .join(format!(".tmp-{}-{}", revision.commit, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("tree")).map_err(|e| failed(e.to_string()))?;
        let index = tmp.join("index");
        let repo = self.dirs.repo();
        let work_tree = tmp.join("tree").display().to_string();
        let env = [("GIT_INDEX_FILE", index.clone().into_os_string())];
        let run = |args: &[&str]| {
            let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
            self.settings.remote.run(&self.dirs.root, &args, &env)
        };
        let repo_s = repo.to_string_lossy();
        run(&["--git-dir", &repo_s, "read-tree", &revision.commit]).map_err(|e| failed(e.to_string()))?;
        run(&[
            "--git-dir",
            &repo_s,
            "--work-tree",
            &work_tree,
            "checkout-index",
            "--all",
            "--force",
        ])
        .map_err(|e| failed(e.to_string()))?;
        let _ = std::fs::remove_file(&index);
        // git keeps no empty folders: a tree whose last server is gone has no inventory.d.
        let root = tmp.join("tree").join(&self.settings.path);
        if root.is_dir() {
            for sub in ["inventory.d", "scripts", "secrets.d"] {
                let _ = std::fs::create_dir_all(root.join(sub));
            }
        }
        let meta = serde_json::to_vec(revision).unwrap_or_default();
        crate::atomic::write(&tmp.join("revision.json"), &meta, 0o644).map_err(|e| failed(e.to_string()))?;
        std::fs::rename(&tmp, &target).map_err(|e| failed(e.to_string()))?;
        Ok(target)
    }

    /// Points `current` at `checkout` with one rename(2) of a fresh symlink.
    fn swap_to(&self, checkout: &Path) -> std::io::Result<()> {
        let name = checkout.file_name().unwrap_or_default();
        let relative = Path::new("checkouts").join(name);
        let tmp = self.dirs.root.join(format!(".current-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&relative, &tmp)?;
        std::fs::rename(&tmp, self.dirs.current())?;
        std::fs::File::open(&self.dirs.root)?.sync_all()
    }

    /// Removes checkouts beyond the `keep` newest (never the live one) and stale temps.
    fn collect_garbage(&self) {
        let live = std::fs::read_link(self.dirs.current())
            .ok()
            .and_then(|l| l.file_name().map(ToOwned::to_owned));
        let Ok(entries) = std::fs::read_dir(self.dirs.checkouts()) else {
            return;
        };
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = entry.path();
            if name.to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            if Some(&name) == live.as_ref() {
                continue;
            }
            let made = std::fs::metadata(path.join("revision.json"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            kept.push((made, path));
        }
        kept.sort_by_key(|k| std::cmp::Reverse(k.0));
        for (_, path) in kept.into_iter().skip(self.settings.keep.saturating_sub(1)) {
            tracing::debug!(checkout = %path.display(), "removing an old checkout");
            let _ = std::fs::remove_dir_all(&path);
        }
    }

    fn write_status(&self) -> std::io::Result<()> {
        let doc = SourceDocument {
            api_version: "chom.dev/v1".into(),
            kind: "SourceStatus".into(),
            status: self.status.clone(),
        };
        let text = serde_saphyr::to_string(&doc).map_err(std::io::Error::other)?;
        crate::atomic::write(&self.dirs.status_file(), text.as_bytes(), 0o640)
    }

    /// The gauges of `/metrics`.
    pub fn gauges(&self) -> crate::metrics::SourceGauges {
        crate::metrics::SourceGauges {
            ready: self.status.ready().is_some_and(|c| c.status == ConditionStatus::True),
            last_fetch: self.status.last_fetch_time.map_or(0, |t| {
                t.0.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
            }),
            revision: self.status.last_applied_revision.as_ref().map(ToString::to_string),
            reason: self.status.ready().map(|c| c.reason.clone()).unwrap_or_default(),
        }
    }
}

/// Validates the tree at `root` on the road of `chom validate`: every resource file and
/// the tree's own `chom.yaml`. The number of servers, or the findings (file:line:col, the
/// file relative to the repository).
fn validate_tree(root: &Path, sub: &Path) -> Result<usize, Refusal> {
    if !root.is_dir() {
        return Err(Refusal(
            reasons::VALIDATION_FAILED,
            format!("it has no folder {}", sub.display()),
            vec![],
        ));
    }
    let layout = crate::inventory::Layout::beside(&root.join("inventory.d"));
    let mut report = crate::validate::load(&layout, &[]).map_err(|e| {
        Refusal(
            reasons::VALIDATION_FAILED,
            format!("its tree cannot be read: {e}"),
            vec![],
        )
    })?;
    let config = root.join(crate::treeconfig::FILE_NAME);
    if config.is_file() {
        report.diagnostics.extend(crate::validate::load_config(&config).1);
    }
    if !report.has_errors() {
        return Ok(report.inventory.servers.len());
    }
    crate::diag::sort(&mut report.diagnostics);
    let findings: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            let file = d.file.strip_prefix(root).map_or(d.file.clone(), |f| sub.join(f));
            format!(
                "{}:{}:{}: error[{}]: {}",
                file.display(),
                d.line,
                d.column,
                d.code,
                d.message
            )
        })
        .collect();
    Err(Refusal(
        reasons::VALIDATION_FAILED,
        format!(
            "its tree does not validate ({} error{}; first: {})",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" },
            findings.first().map_or("", String::as_str)
        ),
        findings,
    ))
}

/// The reason and message of a failed fetch.
fn classify(e: &GitError, url: &str, name: &str) -> Refusal {
    let text = e.stderr.to_ascii_lowercase();
    let (reason, what) = if text.contains("host key verification failed")
        || text.contains("remote host identification has changed")
        || text.contains("no matching host key")
    {
        (
            reasons::HOST_KEY,
            format!("the host key of {url} is unknown or changed; refused"),
        )
    } else if text.contains("couldn't find remote ref") || text.contains("could not find remote ref") {
        (reasons::REF_NOT_FOUND, format!("{name} does not exist in {url}"))
    } else if e.timed_out {
        (reasons::FETCH_FAILED, format!("fetching {url} timed out"))
    } else {
        (reasons::FETCH_FAILED, format!("cannot fetch {url}"))
    };
    let detail = e.stderr.trim().lines().last().unwrap_or_default().to_owned();
    Refusal(
        reason,
        if detail.is_empty() {
            what
        } else {
            format!("{what}: {detail}")
        },
        vec![],
    )
}
