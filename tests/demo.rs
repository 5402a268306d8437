//! `chom demo`, the README's "run it" command: a loopback sshd it starts itself, the
//! demo tree, the daemon; components applied end to end; everything stopped after.

use std::process::Command;

#[test]
fn the_demo_reconciles_its_fleet_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_chom"))
        .args(["demo", "--duration", "12", "--dir"])
        .arg(&root)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sshd stopped"), "{text}");
    // The command it suggests runs as printed: this binary is not on PATH (as after
    // `cargo run`), so it is named by its path.
    let try_line = text
        .lines()
        .find(|l| l.contains("try:"))
        .unwrap_or_else(|| panic!("{text}"));
    let program = try_line.split_whitespace().nth(1).unwrap();
    assert!(
        std::path::Path::new(program).is_file() || program == "chom",
        "{try_line}"
    );
    // The example fleet's motd component and the demo component ran over SSH.
    let motd = std::fs::read_to_string(root.join("out/demo-1.motd")).unwrap_or_default();
    assert!(
        motd.contains("demo-1") && motd.contains("managed by chom"),
        "{motd}\n{text}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("out/demo-1.txt")).unwrap().trim(),
        "hello from demo-1"
    );
    let status = std::fs::read_to_string(root.join("inventory.d/demo-1.status.yaml")).unwrap();
    assert!(
        status.contains("type: Ready") && status.contains("reason: Reconciled"),
        "{status}"
    );
    // demo-3 says its expectedSpecs are wrong.
    let status = std::fs::read_to_string(root.join("inventory.d/demo-3.status.yaml")).unwrap();
    assert!(status.contains("CpuMismatch"), "{status}");
    // sshd is gone: its pid file names a process that no longer runs.
    let pid = std::fs::read_to_string(root.join("sshd/sshd.pid")).unwrap_or_default();
    if let Ok(pid) = pid.trim().parse::<u32>() {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sshd {pid} still runs"
        );
    }
}
