//! `chom trust NAME…`: fetch each server's SSH host key, show its fingerprint and how it
//! compares with what is already known, and append it to a known_hosts file only after
//! the operator confirms (or passes `--yes`). Never trusts a key silently.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{ConnectArgs, InventoryArgs};
use crate::ssh::known_hosts::{HostKeyStatus, KnownHosts};
use crate::ssh::{fetch_host_key, fingerprint};

/// Record servers' SSH host keys after checking their fingerprints.
///
/// Compare each fingerprint with the one the server shows on its console
/// (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) before confirming.
///
/// Examples:
///   chom trust web-1
///   chom trust --yes --known-hosts fleet_known_hosts web-1 web-2
///
/// Exit codes: 0 every key recorded or already trusted, 1 a key not recorded (declined,
/// no terminal without --yes, revoked, unreachable), 2 usage or environment errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TrustArgs {
    /// Where the inventory is.
    #[command(flatten)]
    pub tree: InventoryArgs,
    /// SSH settings; keys are recorded in the first --known-hosts file, else in
    /// ~/.ssh/known_hosts.
    #[command(flatten)]
    pub ssh: ConnectArgs,
    /// Record without asking (for scripts that verified the fingerprints another way).
    #[arg(long)]
    pub yes: bool,
    /// Servers whose keys to fetch.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// Fetches, shows, asks and records.
pub fn run(args: &TrustArgs) -> anyhow::Result<ExitCode> {
    let tree = args.tree.tree();
    let (inventory, names) = super::load_servers(&tree, &args.names, &super::SelectorArgs::default())?;
    let files = args.ssh.known_hosts_files();
    let Some(record_to) = args.ssh.known_hosts.first().cloned().or_else(|| files.first().cloned()) else {
        anyhow::bail!("no known_hosts file to record keys in: HOME is not set; pass --known-hosts FILE");
    };
    let runtime = super::runtime()?;
    let timeout = Duration::from_secs(args.ssh.connect_timeout.max(1));
    let state_dir = super::state_dir(&tree, None);
    let audit = crate::audit::Audit::open(&state_dir, &args.tree.inventory)
        .with_context(|| format!("opening the audit trail in {}", state_dir.display()))?;
    let mut failed = false;
    let board = crate::progress::Board::new("trusting", names.len());
    for name in names {
        let Some(entry) = inventory.servers.get(&name) else {
            continue;
        };
        let spec = &entry.server.spec;
        let (host, port) = (spec.address.as_str(), spec.ssh.port);
        board.update(
            &name,
            crate::progress::Event::Doing(format!("fetching the host key of {host}:{port}")),
        );
        let fetched = runtime.block_on(fetch_host_key(host, port, timeout));
        // Shown and asked with the board off the screen.
        let trusted = board.suspend(|| -> anyhow::Result<bool> {
            let key = match fetched {
                Ok(key) => key,
                Err(e) => {
                    println!("{name}: {e:#}");
                    return Ok(false);
                }
            };
            let pinned = !spec.ssh.host_keys.is_empty();
            show_and_record(args, &name, host, port, &key, &files, &record_to, &audit, pinned)
        })?;
        board.finish(&name, trusted, if trusted { "trusted" } else { "not trusted" });
        failed |= !trusted;
    }
    board.clear();
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Shows `key` of server `name`, how it compares with what is known, and records it once
/// confirmed. True when it is trusted (already, or now).
#[allow(clippy::too_many_arguments)]
fn show_and_record(
    args: &TrustArgs,
    name: &str,
    host: &str,
    port: u16,
    key: &crate::ssh::PublicKey,
    files: &[PathBuf],
    record_to: &std::path::Path,
    audit: &crate::audit::Audit,
    pinned: bool,
) -> anyhow::Result<bool> {
    let shown = fingerprint(key);
    println!("{name} ({host}:{port}) presents {} {shown}", key.algorithm());
    if pinned {
        println!("  {name} pins its host keys in the inventory (spec.ssh.hostKeys); known_hosts is not used for it");
        return Ok(true);
    }
    let known = load(files);
    match known.check(host, port, key) {
        HostKeyStatus::Known => {
            println!("  already trusted");
            return Ok(true);
        }
        HostKeyStatus::Revoked { location } => {
            println!("  this key is REVOKED ({location}); refusing to trust it");
            return Ok(false);
        }
        HostKeyStatus::Changed { expected } => {
            println!("  WARNING: this is NOT the key recorded before. The server was reinstalled, or someone is");
            println!("  intercepting the connection. Recorded:");
            for e in &expected {
                println!("    {} ({})", e.fingerprint, e.location);
            }
            println!("  If you record the new key, remove the old line afterwards (ssh-keygen -R '{host}' -f FILE).");
        }
        HostKeyStatus::Unknown => {}
    }
    if !confirm(args.yes, name)? {
        println!("  not recorded");
        return Ok(false);
    }
    crate::ssh::known_hosts::append_entry(record_to, host, port, key)
        .with_context(|| format!("recording the key in {}", record_to.display()))?;
    println!("  recorded in {}", record_to.display());
    audit.record(
        "hostkey.trusted",
        serde_json::json!({"server": name, "address": format!("{host}:{port}"), "fingerprint": shown, "file": record_to}),
    );
    Ok(true)
}

fn load(files: &[PathBuf]) -> KnownHosts {
    let mut known = KnownHosts::new();
    for file in files {
        if let Ok(text) = crate::fsread::read_to_string(file, crate::fsread::cap::KNOWN_HOSTS) {
            known.add_text(&text, file);
        }
    }
    known
}

/// Asks on the terminal. Without one (a pipe, CI) and without `--yes`, the answer is
/// no: a key must never be accepted because nobody was there to say otherwise.
fn confirm(yes: bool, name: &str) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        println!("  no terminal to ask on; pass --yes to record without asking");
        return Ok(false);
    }
    print!("  trust this key for {name}? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
