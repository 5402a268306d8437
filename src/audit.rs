//! The audit trail: `audit.jsonl` in the state directory, append-only, one JSON object
//! a line, fsynced, for every action that changed something or was refused (component
//! applied, host key trusted, secret set or rotated, daemon started or stopped, second
//! daemon refused). Who, when, what, which commit. Never holds a secret value.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::status::Timestamp;

/// The file name inside the state directory.
pub const FILE: &str = "audit.jsonl";

/// An open audit trail. Lines are appended under a lock so concurrent workers never
/// interleave bytes.
pub struct Audit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    who: String,
    commit: Option<String>,
    inventory: PathBuf,
}

impl Audit {
    /// Opens (creating) `state_dir/audit.jsonl` for appending. `inventory` is used to
    /// find the git commit of the checkout, when it is one.
    pub fn open(state_dir: &Path, inventory: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(FILE);
        let file = crate::fsread::open_append(&path, 0o640)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            who: who(),
            commit: git_commit(inventory),
            inventory: inventory.to_path_buf(),
        })
    }

    /// Where the trail is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event. `fields` are merged into the line (server, component, …).
    /// A failure to write is logged, not fatal: the action already happened.
    pub fn record(&self, action: &str, fields: Value) {
        let mut line = json!({
            "time": Timestamp::now().to_string(),
            "who": self.who,
            "action": action,
        });
        // A git-sourced tree is at the revision `current` points to now.
        if let Some(revision) = crate::source::revision_at(&self.inventory) {
            line["commit"] = Value::from(revision.commit);
            line["ref"] = Value::from(revision.reference);
        } else if let Some(commit) = &self.commit {
            line["commit"] = Value::from(commit.as_str());
        }
        if let (Value::Object(line), Value::Object(extra)) = (&mut line, fields) {
            line.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.sync_data()) {
            tracing::error!(file = %self.path.display(), error = %e, "cannot append to the audit trail");
        }
    }
}

/// `user@host` of this process.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}@{}", if user.is_empty() { "unknown" } else { &user }, host.trim())
}

/// The commit checked out where `dir` lives, when it is a git checkout, with `+dirty`
/// appended when the checkout has changes not committed (chom's own status files,
/// lock files and state folder aside), so a record never claims a commit it did not run.
pub fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let commit = git(&["rev-parse", "HEAD"])?.trim().to_owned();
    if commit.is_empty() {
        return None;
    }
    let status = git(&["status", "--porcelain"]).unwrap_or_default();
    Some(if is_dirty(&status) {
        format!("{commit}+dirty")
    } else {
        commit
    })
}

/// True when `git status --porcelain` lists a change other than chom's own files.
fn is_dirty(porcelain: &str) -> bool {
    porcelain.lines().any(|line| {
        let path = line.get(3..).unwrap_or_default().trim_matches('"');
        let file = path.rsplit('/').next().unwrap_or(path);
        !(path.is_empty()
            || file.ends_with(".status.yaml")
            || file.starts_with(".chom.")
            || path.starts_with(".chom/")
            || path.contains("/.chom/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_to_the_tree_make_it_dirty() {
        assert!(!is_dirty(""));
        assert!(!is_dirty(
            "?? inventory.d/web-1.status.yaml\n?? inventory.d/.chom.lock\n?? .chom/history/x.json\n"
        ));
        assert!(is_dirty(" M inventory.d/web-1.yaml\n"));
        assert!(is_dirty(" D scripts/motd.sh\n"));
    }

    #[test]
    fn events_are_appended_one_json_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path(), dir.path()).unwrap();
        audit.record("daemon.started", json!({"servers": 3}));
        audit.record("component.applied", json!({"server": "web-1", "component": "nginx"}));
        drop(audit);
        let again = Audit::open(dir.path(), dir.path()).unwrap();
        again.record("daemon.stopped", json!({}));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["action"], "component.applied");
        assert_eq!(lines[1]["server"], "web-1");
        assert!(lines[0]["who"].as_str().unwrap().contains('@'));
        assert!(Timestamp::parse(lines[2]["time"].as_str().unwrap()).is_some());
    }
}
