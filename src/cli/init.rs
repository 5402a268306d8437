//! `chom init [DIR]`: scaffold a chom tree with one example Server and its Role, the
//! example component script, `secrets.d/` and a `.gitignore`. Never overwrites a file.

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
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InitArgs {
    /// Where to create the tree.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

const SERVER: &str = "\
# yaml-language-server: $schema=https://chom.dev/schemas/server.schema.json
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
# yaml-language-server: $schema=https://chom.dev/schemas/role.schema.json
apiVersion: chom.dev/v1
kind: Role
metadata:
  name: web
spec:
  requirements: {minCpu: 1, minMemoryMb: 1024, minDiskGb: 10}
  config:
    role: web
";

const GITIGNORE: &str = "\
# Written by the chom daemon beside each server file; never commit them.
*.status.yaml
# chom's state directory (history, audit trail) when not run under systemd.
.chom/
";

const SECRETS_README: &str = "\
Encrypted secret values live here (`chom secrets set NAME` reads a value from stdin).
Names are referenced from a server's `spec.secrets`; values never go into inventory.d/.
";

/// Writes every missing file and reports each one.
pub fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let root = &args.dir;
    let files: [(PathBuf, &str, u32); 5] = [
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
    println!("next: edit inventory.d/web-1.yaml, then run `chom validate`");
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
