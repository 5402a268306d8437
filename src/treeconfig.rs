//! The tree configuration `chom.yaml` (`kind: Config`): its model, its discovery by walking
//! up from the working directory as git finds `.git`, the paths it names resolved against
//! its own folder, and the state-directory precedence. Pure data and path arithmetic: it
//! never reads the command line (`cli/` maps it onto arguments), never writes a file, and
//! the file is read and checked only by `validate`, the one road from files to types.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{ApiVersion, DurationSpec};

/// The file name looked for in the working directory and each of its ancestors.
pub const FILE_NAME: &str = "chom.yaml";

/// The published schema's file name.
pub const SCHEMA_FILE: &str = "config.schema.json";

/// The `kind` of the tree configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConfigKind {
    /// `Config`.
    Config,
}

/// `chom.yaml` at the root of a chom tree: where its folders are, and the settings every
/// command would otherwise need as flags. Command-line flags and `CHOM_*` environment
/// variables override each setting; an absent setting keeps chom's built-in default.
/// Relative paths are taken from the folder holding this file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "chom Config", extend("$id" = "https://chom.dev/schemas/config.schema.json"))]
pub struct TreeConfig {
    /// Always `chom.dev/v1`.
    pub api_version: ApiVersion,
    /// Always `Config`.
    pub kind: ConfigKind,
    /// The folder of Server and Role files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf", extend("default" = "inventory.d"))]
    pub inventory: Option<PathBuf>,
    /// Component scripts [default: `scripts/` beside the inventory].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf")]
    pub scripts: Option<PathBuf>,
    /// Encrypted secrets [default: `secrets.d/` beside the inventory].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf")]
    pub secrets: Option<PathBuf>,
    /// chom's own state: history, audit trail, pins and the daemon's lock [default:
    /// systemd's `$STATE_DIRECTORY`, else `.chom/` beside the inventory].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf")]
    pub state_dir: Option<PathBuf>,
    /// OpenSSH known_hosts files consulted after `~/.ssh/known_hosts`; `chom trust`
    /// records keys in the first one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_hosts: Vec<PathBuf>,
    /// The age identity that decrypts `secrets.d/` [default: `$CHOM_AGE_IDENTITY`, else
    /// the systemd credential `age-identity`]. Must not be readable by group or others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf")]
    pub age_identity: Option<PathBuf>,
    /// SSH transport settings.
    #[serde(default)]
    pub ssh: SshConfig,
    /// Settings of `chom daemon`.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// GitOps: the git repository `chom daemon` pulls the tree from. With it, the daemon
    /// fetches, verifies and validates each new commit in its state directory and swaps
    /// it in whole; `inventory`, `scripts` and `secrets` above are then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
}

/// A git repository that holds the chom tree (`chom daemon` pulls it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceSpec {
    /// The repository: `ssh://git@host/repo.git`, `git@host:repo.git`, `https://host/repo.git`
    /// or a local path.
    #[schemars(length(min = 1))]
    pub url: String,
    /// What to follow [default: the branch `main`].
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<SourceRef>,
    /// How often the repository is fetched (a webhook or SIGHUP fetches at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "1m"))]
    pub interval: Option<DurationSpec>,
    /// The folder of the chom tree inside the repository (holding `inventory.d/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf", extend("default" = "."))]
    pub path: Option<PathBuf>,
    /// The SSH private key for an ssh URL (relative to this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf")]
    pub ssh_key: Option<PathBuf>,
    /// The known_hosts file holding the git host's key [default: ~/.ssh/known_hosts]; an
    /// unknown or changed host key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PathBuf")]
    pub known_hosts: Option<PathBuf>,
    /// Apply only commits signed by a key of this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// Commits fetched at most (a shallow fetch bounds a huge repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1), extend("default" = 50))]
    pub depth: Option<u32>,
    /// Checkouts kept in the state directory (the one applied included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "usize", range(min = 1), extend("default" = 5))]
    pub keep: Option<usize>,
    /// The longest one git command may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "2m"))]
    pub timeout: Option<DurationSpec>,
    /// Apply a commit that removes every server (refused otherwise, as a guard against an
    /// accidental empty commit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_mass_deletion: bool,
    /// The push webhook `POST /hooks/git` on the metrics listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// The ref a source follows: exactly one of `branch`, `tag` or `semver`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceRef {
    /// A branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The highest tag matching a semver range (`>=1.2.0, <2`, `^1.4`); a `v` prefix is
    /// allowed on tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
}

/// Commit signature verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifySpec {
    /// An OpenSSH allowed-signers file (`ssh-keygen -Y verify`, git's
    /// `gpg.ssh.allowedSignersFile`): a commit not signed by one of its keys is refused.
    #[schemars(with = "PathBuf")]
    pub allowed_signers: PathBuf,
}

/// The push webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSpec {
    /// A file holding the shared secret of `X-Hub-Signature-256` (GitHub, Gitea, Forgejo).
    /// Without it the webhook is off. Must not be readable by group or others.
    #[schemars(with = "PathBuf")]
    pub secret_file: PathBuf,
}

/// SSH transport settings, as the `--connect-timeout`, `--max-handshakes`,
/// `--handshake-rate`, `--ssh-idle-timeout` and `--ssh-max-idle` flags.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshConfig {
    /// Time allowed for TCP connect, key exchange and login (rounded up to whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "10s"))]
    pub connect_timeout: Option<DurationSpec>,
    /// SSH handshakes in flight at once across the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "usize", range(min = 1), extend("default" = 10))]
    pub max_handshakes: Option<usize>,
    /// New SSH handshakes started per second across the fleet (0: unpaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", extend("default" = 200))]
    pub handshake_rate: Option<u32>,
    /// Close a pooled connection after it has been idle this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "90s"))]
    pub idle_timeout: Option<DurationSpec>,
    /// Idle connections kept open at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "usize", extend("default" = 64))]
    pub max_idle: Option<usize>,
}

/// Settings of `chom daemon`, as its flags of the same names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DaemonConfig {
    /// Where to serve /metrics, /healthz and /readyz (`host:port`), or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(min = 1), extend("default" = "127.0.0.1:9477"))]
    pub metrics_addr: Option<String>,
    /// Reconcile only shard K of N (`K/N`, 0-based), so N daemons can share one checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", regex(pattern = r"^[0-9]+/[0-9]+$"), extend("default" = "0/1"))]
    pub shard: Option<String>,
    /// Servers reconciled at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "usize", range(min = 1), extend("default" = 32))]
    pub workers: Option<usize>,
    /// Reconcile starts per second across the fleet (token bucket rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "f64", range(min = 0.0), extend("default" = 10.0))]
    pub rate: Option<f64>,
    /// Reconcile starts allowed in a burst (token bucket size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", extend("default" = 100))]
    pub burst: Option<u32>,
    /// First retry delay after a failure; doubles per failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "5s"))]
    pub backoff_base: Option<DurationSpec>,
    /// Longest retry delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "10m"))]
    pub backoff_max: Option<DurationSpec>,
    /// Full re-list of the tree as a safety net against lost file events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "5m"))]
    pub relist_interval: Option<DurationSpec>,
    /// How long file events are gathered into one change set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "150ms"))]
    pub debounce: Option<DurationSpec>,
    /// How long reconciles in flight may run after SIGTERM before they are cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSpec", extend("default" = "30s"))]
    pub shutdown_timeout: Option<DurationSpec>,
}

/// The `chom.yaml` a command runs under, as the CLI's parsed arguments carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Located {
    /// The file.
    pub file: PathBuf,
    /// Its `stateDir`, resolved against its folder.
    pub state_dir: Option<PathBuf>,
}

/// The nearest `chom.yaml` in `start` or one of its ancestors.
pub fn discover(start: &Path) -> Option<PathBuf> {
    discover_with(start, |path| path.is_file())
}

/// [`discover`] over any notion of "a file exists", for tests. Bounded: `ancestors`
/// ends at the filesystem root, so the walk stops there.
pub fn discover_with(start: &Path, is_file: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| is_file(candidate))
}

/// The folder relative paths of the config at `file` are taken from, as the CLI passes
/// them on: empty (relative to the working directory) when the file is in `cwd`, so
/// diagnostics keep the short paths printed without a config, else the file's folder.
pub fn base(file: &Path, cwd: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if dir == cwd => PathBuf::new(),
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::new(),
    }
}

/// `path` taken relative to `base` (an absolute `path` stays as it is).
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    base.join(path)
}

impl TreeConfig {
    /// The inventory folder, resolved; `inventory.d` when the file names none.
    pub fn inventory_dir(&self, base: &Path) -> PathBuf {
        resolve(base, self.inventory.as_deref().unwrap_or(Path::new("inventory.d")))
    }
}

/// The state directory: `option` (`--state-dir`), `$CHOM_STATE_DIR`, chom.yaml's
/// `stateDir`, systemd's `$STATE_DIRECTORY`, else `beside_inventory` (`.chom/`). The
/// config ranks above systemd's variable so that a unit with `StateDirectory=` and a
/// chom.yaml naming another folder still agree with the CLI run by hand.
pub fn state_dir(
    option: Option<&Path>,
    config: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    beside_inventory: impl FnOnce() -> PathBuf,
) -> PathBuf {
    option
        .map(PathBuf::from)
        .or_else(|| env("CHOM_STATE_DIR").map(PathBuf::from))
        .or_else(|| config.map(PathBuf::from))
        .or_else(|| env("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(beside_inventory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_finds_the_nearest_chom_yaml_walking_up() {
        let present = [Path::new("/srv/fleet/chom.yaml"), Path::new("/srv/chom.yaml")];
        let found = discover_with(Path::new("/srv/fleet/inventory.d/web"), |p| present.contains(&p));
        assert_eq!(found.as_deref(), Some(Path::new("/srv/fleet/chom.yaml")));
    }

    #[test]
    fn discovery_stops_at_the_filesystem_root() {
        let asked = std::cell::RefCell::new(Vec::new());
        let found = discover_with(Path::new("/a/b"), |p| {
            asked.borrow_mut().push(p.to_path_buf());
            false
        });
        assert_eq!(found, None);
        let asked = asked.into_inner();
        assert_eq!(
            asked,
            ["/a/b/chom.yaml", "/a/chom.yaml", "/chom.yaml"].map(PathBuf::from)
        );
    }

    #[test]
    fn discovery_on_the_real_filesystem_finds_the_tree_root_from_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("inventory.d/nested");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "kind: Config\n").unwrap();
        assert_eq!(discover(&inside), Some(dir.path().join(FILE_NAME)));
        // A folder named chom.yaml is not a config.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join(FILE_NAME)).unwrap();
        assert_ne!(discover(other.path()), Some(other.path().join(FILE_NAME)));
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_folder() {
        let cwd = Path::new("/srv/fleet/inventory.d");
        let base = base(Path::new("/srv/fleet/chom.yaml"), cwd);
        assert_eq!(base, Path::new("/srv/fleet"));
        let config: TreeConfig = serde_json::from_str(r#"{"apiVersion":"chom.dev/v1","kind":"Config"}"#).unwrap();
        assert_eq!(config.inventory_dir(&base), Path::new("/srv/fleet/inventory.d"));
        assert_eq!(resolve(&base, Path::new("/etc/kh")), Path::new("/etc/kh"));
        // From the tree root itself, paths stay relative to the working directory.
        let here = super::base(Path::new("/srv/fleet/chom.yaml"), Path::new("/srv/fleet"));
        assert_eq!(resolve(&here, Path::new("known_hosts")), Path::new("known_hosts"));
    }

    #[test]
    fn state_dir_precedence_is_flag_env_config_systemd_then_beside_the_inventory() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |key: &str| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
        };
        let all: &[(&str, &str)] = &[("CHOM_STATE_DIR", "/env"), ("STATE_DIRECTORY", "/systemd")];
        let systemd_only: &[(&str, &str)] = &[("STATE_DIRECTORY", "/systemd")];
        let beside = || PathBuf::from("tree/.chom");
        let flag = Some(Path::new("/flag"));
        let config = Some(Path::new("/config"));
        assert_eq!(state_dir(flag, config, env(all), beside), Path::new("/flag"));
        assert_eq!(state_dir(None, config, env(all), beside), Path::new("/env"));
        assert_eq!(state_dir(None, config, env(systemd_only), beside), Path::new("/config"));
        assert_eq!(state_dir(None, None, env(systemd_only), beside), Path::new("/systemd"));
        assert_eq!(state_dir(None, None, env(&[]), beside), Path::new("tree/.chom"));
    }

    #[test]
    fn a_full_config_round_trips_through_serde() {
        let text = r#"{"apiVersion":"chom.dev/v1","kind":"Config","stateDir":"/var/lib/chom",
            "knownHosts":["known_hosts"],"ssh":{"connectTimeout":"5s","maxIdle":8},
            "daemon":{"workers":4,"shard":"1/2","debounce":"50ms"}}"#;
        let config: TreeConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.state_dir.as_deref(), Some(Path::new("/var/lib/chom")));
        assert_eq!(config.ssh.max_idle, Some(8));
        assert_eq!(config.daemon.workers, Some(4));
        let again: TreeConfig = serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(again, config);
        assert!(
            serde_json::from_str::<TreeConfig>(r#"{"apiVersion":"chom.dev/v1","kind":"Config","stateDirr":"x"}"#)
                .is_err()
        );
    }
}
