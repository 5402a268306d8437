//! `chom init [DIR]`: scaffold a chom tree with its `chom.yaml`, one example Server and
//! its Role, the example component script, `secrets.d/` and a `.gitignore`. Never overwrites a file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

/// Scaffold a new chom tree.
///
/// Existing files are kept as they are; only missing ones are written.
///
/// Examples:
///   chom init
///   chom init ~/fleet
///
/// Exit codes: 0 written (or already there), 2 a file could not be written, or usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InitArgs {
    /// Where to create the tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

const SERVER: &str = "\
# yaml-language-server: $schema=../schemas/server.schema.json
apiVersion: chom.dev/v1
kind: Server
metadata:
  name: web-1
  labels: {env: staging}
spec:
  address: 192.0.2.10        # IP or DNS name reachable over SSH
  ssh: {user: root, port: 22}
  role: web
  # Optional: what you believe the hardware is. chom detects it and only compares.
  expectedSpecs: {cpu: 2, memoryMb: 4096, diskGb: 40}
  components:
    - name: motd
  config: {}
  interval: 10m
";

const ROLE: &str = "\
# yaml-language-server: $schema=../schemas/role.schema.json
apiVersion: chom.dev/v1
kind: Role
metadata:
  name: web
spec:
  requirements: {minCpu: 1, minMemoryMb: 1024, minDiskGb: 10}
  config:
    role: web
";

const CONFIG: &str = "\
# yaml-language-server: $schema=schemas/config.schema.json
# The tree configuration. chom finds it by walking up from the working directory, so
# every command works from anywhere inside this tree. Command-line flags and CHOM_*
# environment variables override each setting; a commented-out one keeps the default
# shown. Relative paths are taken from this file's folder.
apiVersion: chom.dev/v1
kind: Config
# Server and Role files (--inventory, $CHOM_INVENTORY).
inventory: inventory.d
# Component scripts and encrypted secrets (--scripts, --secrets).
scripts: scripts
secrets: secrets.d
# History, audit trail, pins and the daemon's lock (--state-dir, $CHOM_STATE_DIR).
# Default: systemd's $STATE_DIRECTORY, else .chom/ beside the inventory.
# stateDir: /var/lib/chom
# known_hosts files consulted after ~/.ssh/known_hosts; `chom trust` records keys in
# the first one (--known-hosts, $CHOM_KNOWN_HOSTS).
# knownHosts: [known_hosts]
# The age identity that decrypts secrets.d/ (--age-identity, $CHOM_AGE_IDENTITY).
# Default: the systemd credential age-identity. Keep it out of the repository.
# ageIdentity: /etc/chom/age-identity
# SSH transport settings; uncomment `ssh:` with the ones you set.
# ssh:
#   # Time allowed for TCP connect, key exchange and login (--connect-timeout).
#   connectTimeout: 10s
#   # SSH handshakes in flight at once; OpenSSH's MaxStartups drops bursts above 10.
#   maxHandshakes: 10
#   # New handshakes started per second across the fleet, 0 for unpaced.
#   handshakeRate: 200
#   # Close a pooled connection after it has been idle this long (--ssh-idle-timeout).
#   idleTimeout: 90s
#   # Idle connections kept open at most (--ssh-max-idle).
#   maxIdle: 64
# `chom daemon` settings; uncomment `daemon:` with the ones you set.
# daemon:
#   # Where to serve /metrics, /healthz and /readyz, or off (--metrics-addr).
#   metricsAddr: 127.0.0.1:9477
#   # Reconcile only shard K of N when N daemons share this checkout (--shard).
#   shard: 0/1
#   # Servers reconciled at once (--workers).
#   workers: 32
#   # Reconcile starts per second, and in a burst (--rate, --burst).
#   rate: 10
#   burst: 100
#   # First and longest retry delay after failures (--backoff-base, --backoff-max).
#   backoffBase: 5s
#   backoffMax: 10m
#   # Full re-list of the tree against lost file events (--relist-interval).
#   relistInterval: 5m
#   # How long file events are gathered into one change set (--debounce).
#   debounce: 150ms
#   # How long reconciles in flight may run after SIGTERM (--shutdown-timeout).
#   shutdownTimeout: 30s
";

const GITIGNORE: &str = "\
# Written by the chom daemon beside each server file; never commit them.
*.status.yaml
# chom's state directory (history, audit trail) when not run under systemd.
.chom/
# The lock that gives each inventory one owner (a daemon, or a one-shot command).
.chom.lock
.chom.shard-*.lock
";

const SECRETS_README: &str = "\
Encrypted secret values live here (`chom secrets set NAME` reads a value from stdin).
Names are referenced from a server's `spec.secrets`; values never go into inventory.d/.
";

/// Writes every missing file and reports each one.
pub fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let root = &args.dir;
    let files: [(PathBuf, &str, u32); 6] = [
        (root.join(crate::treeconfig::FILE_NAME), CONFIG, 0o644),
        (root.join("inventory.d/web-1.yaml"), SERVER, 0o644),
        (root.join("inventory.d/web.yaml"), ROLE, 0o644),
        (
            root.join("scripts/motd.sh"),
            include_str!("../../scripts/motd.sh"),
            0o755,
        ),
        (root.join("secrets.d/.keep"), SECRETS_README, 0o644),
        (root.join(".gitignore"), GITIGNORE, 0o644),
    ];
    for (path, content, mode) in files {
        if write_new(&path, content, mode)? {
            println!("created {}", path.display());
        } else {
            println!("kept    {} (exists)", path.display());
        }
    }
    // The modelines above point at these, as `chom import-legacy`'s do.
    let schemas = root.join("schemas");
    let written = crate::schema::write_missing(&schemas).with_context(|| format!("writing {}", schemas.display()))?;
    for path in &written {
        println!("created {}", path.display());
    }
    println!("next: edit inventory.d/web-1.yaml, then run `chom validate` (anywhere in the tree)");
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with `content` unless it exists; `create_new` makes the check and the
/// creation one step, so a file appearing meanwhile is never overwritten.
fn write_new(path: &Path, content: &str, mode: u32) -> anyhow::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    match file {
        Ok(mut f) => {
            f.write_all(content.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffolded_config_is_valid_and_sets_only_the_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::treeconfig::FILE_NAME);
        std::fs::write(&path, CONFIG).unwrap();
        let (config, findings) = crate::validate::load_config(&path);
        assert!(findings.is_empty(), "{findings:?}");
        let config = config.unwrap();
        // A state dir here would outrank systemd's $STATE_DIRECTORY for every user of the tree.
        assert_eq!(config.state_dir, None);
        assert!(config.known_hosts.is_empty() && config.age_identity.is_none());
        assert_eq!(config.inventory.as_deref(), Some(Path::new("inventory.d")));
        // Uncommenting a setting and its section yields a valid file too.
        let uncommented = CONFIG
            .replace("# ssh:", "ssh:")
            .replace("#   connectTimeout", "  connectTimeout");
        std::fs::write(&path, uncommented).unwrap();
        let (config, findings) = crate::validate::load_config(&path);
        assert!(findings.is_empty(), "{findings:?}");
        assert!(config.unwrap().ssh.connect_timeout.is_some());
    }
}
