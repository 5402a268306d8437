//! Pins: a server rolled back to an earlier deployment stays there until `chom resume`
//! or until its desired state changes. A pin is a small JSON file in the state
//! directory (`pins/<server>.json`) that the daemon and `chom reconcile` consult before
//! a pass. This module only stores and reads pins; rolling back is `cli/rollback.rs`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::status::Timestamp;

/// One pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The deployment whose component versions were re-applied.
    pub deployment: String,
    /// The server's desired-state hash when it was pinned; a different hash means the
    /// operator changed the server since, which releases the pin.
    pub desired_hash: String,
    /// When.
    pub pinned_at: Timestamp,
    /// Who (`user@host`).
    pub by: String,
}

/// Where a server's pin lives. The name becomes a file name, so anything that is not a
/// server name (`../x`, `a/b`) is refused here, whoever passed it.
pub fn path(state_dir: &Path, server: &str) -> std::io::Result<PathBuf> {
    if !crate::resource::ServerName::is_valid(server) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{server:?} is not a server name (lower-case letters, digits and `-`)"),
        ));
    }
    Ok(state_dir.join("pins").join(format!("{server}.json")))
}

/// The pin of a server, if any.
pub fn read(state_dir: &Path, server: &str) -> Option<Pin> {
    let bytes = crate::fsread::read(&path(state_dir, server).ok()?, crate::fsread::cap::PIN).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Pins a server.
pub fn write(state_dir: &Path, server: &str, pin: &Pin) -> std::io::Result<()> {
    let file = path(state_dir, server)?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(pin).map_err(std::io::Error::other)?;
    crate::atomic::write(&file, &bytes, 0o640)
}

/// Removes a pin; true when there was one.
pub fn remove(state_dir: &Path, server: &str) -> std::io::Result<bool> {
    match std::fs::remove_file(path(state_dir, server)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a pass over `server` with `desired_hash` must leave it alone. A pin whose
/// hash no longer matches is released (removed) here, and `Released` says so.
pub fn check(state_dir: &Path, server: &str, desired_hash: &str) -> PinState {
    match read(state_dir, server) {
        None => PinState::None,
        Some(pin) if pin.desired_hash == desired_hash => PinState::Pinned(pin),
        Some(pin) => {
            let _ = remove(state_dir, server);
            PinState::Released(pin)
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinState {
    /// No pin.
    None,
    /// Pinned: leave the server alone.
    Pinned(Pin),
    /// There was a pin, but the desired state changed since: it is gone now.
    Released(Pin),
}

/// Sets the `Pinned` condition (and Ready False, reason Pinned) on a status.
pub fn mark(status: &mut crate::status::ObservedStatus, pin: &Pin, generation: u64) {
    use crate::status::{ConditionStatus, reasons, types};
    let message = format!(
        "rolled back to deployment {} by {}; run `chom resume` to release, or change the server's desired state",
        pin.deployment, pin.by
    );
    let now = Timestamp::now();
    status.set_condition(
        types::PINNED,
        ConditionStatus::True,
        reasons::ROLLED_BACK,
        &message,
        generation,
        now,
    );
    status.set_condition(
        types::READY,
        ConditionStatus::False,
        reasons::PINNED,
        &message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_holds_until_the_desired_state_changes() {
        let dir = tempfile::tempdir().unwrap();
        let pin = Pin {
            deployment: "d-1".into(),
            desired_hash: "h1".into(),
            pinned_at: Timestamp::parse("2026-11-26T12:00:00Z").unwrap(),
            by: "me@x".into(),
        };
        write(dir.path(), "web-1", &pin).unwrap();
        assert_eq!(check(dir.path(), "web-1", "h1"), PinState::Pinned(pin.clone()));
        assert_eq!(check(dir.path(), "web-1", "h2"), PinState::Released(pin));
        assert_eq!(
            check(dir.path(), "web-1", "h1"),
            PinState::None,
            "released pins are removed"
        );
        assert!(!remove(dir.path(), "web-1").unwrap());
    }

    #[test]
    fn a_name_that_is_not_a_server_name_never_becomes_a_path() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir_all(state.join("pins")).unwrap();
        let victim = root.path().join("victim.json");
        std::fs::write(&victim, "{}").unwrap();
        for name in ["../../victim", "../victim", "a/b", "", "Web"] {
            let e = remove(&state, name).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{name}");
            assert!(read(&state, name).is_none());
        }
        assert!(victim.exists(), "a file outside the state dir was removed");
    }
}
