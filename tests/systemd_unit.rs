//! The shipped systemd unit: hardened as documented, and accepted by `systemd-analyze
//! verify` where that tool exists.

use std::process::Command;

const UNIT: &str = include_str!("../contrib/chom.service");

#[test]
fn the_unit_is_a_hardened_notify_service() {
    for directive in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=chom",
        "LoadCredential=age-identity:",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WorkingDirectory=/srv/fleet",
    ] {
        assert!(UNIT.lines().any(|l| l.starts_with(directive)), "{directive} missing");
    }
}

/// The unit leaves the tree's settings to /srv/fleet/chom.yaml, so the service and a
/// command run by hand in /srv/fleet cannot disagree on the state directory.
#[test]
fn the_unit_takes_its_settings_from_chom_yaml() {
    let exec = UNIT.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    for flag in ["--state-dir", "--known-hosts", "--inventory"] {
        assert!(!exec.contains(flag), "{flag} on ExecStart would override chom.yaml");
    }
    assert!(UNIT.contains("#   stateDir: /var/lib/chom"));
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("chom.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/chom", env!("CARGO_BIN_EXE_chom"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("Unknown key") && !text.contains("Failed to parse"),
        "{text}"
    );
}
