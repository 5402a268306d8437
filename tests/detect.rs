//! `chom detect` and `chom trust` end to end against a real OpenSSH sshd on 127.0.0.x,
//! started by the test with throwaway keys.

#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sshd::Sshd;

fn server(name: &str, address: &str, port: u16, key: &Path, extra: &str) -> String {
    format!(
        "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  address: {address}\n  ssh:\n    user: {user}\n    port: {port}\n    identityFile: {key}\n{extra}",
        user = sshd::current_user(),
        key = key.display()
    )
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inventory.d")).unwrap();
    std::fs::write(
        dir.path().join("inventory.d/small.yaml"),
        "apiVersion: chom.dev/v1\nkind: Role\nmetadata:\n  name: small\nspec:\n  requirements: {minCpu: 1, minMemoryMb: 64}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("inventory.d/huge.yaml"),
        "apiVersion: chom.dev/v1\nkind: Role\nmetadata:\n  name: huge\nspec:\n  requirements: {minCpu: 4096, minDiskGb: 1000000}\n",
    )
    .unwrap();
    dir
}

fn chom(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK")
        .args(args)
        .output()
        .unwrap()
}

fn detect_json(dir: &Path, known_hosts: &Path, names: &[&str]) -> (Vec<Value>, i32) {
    let mut args = vec!["detect", "-o", "json", "--known-hosts", known_hosts.to_str().unwrap()];
    args.extend_from_slice(names);
    let out = chom(dir, &args);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (rows, out.status.code().unwrap_or(-1))
}

#[test]
fn detect_reports_hardware_and_judges_it() {
    let sshd = Sshd::start();
    let dir = tree();
    let inv = dir.path().join("inventory.d");
    std::fs::write(
        inv.join("ok-1.yaml"),
        server("ok-1", "127.0.0.1", sshd.port, &sshd.client_key, "  role: small\n"),
    )
    .unwrap();
    std::fs::write(
        inv.join("off-1.yaml"),
        server(
            "off-1",
            "127.0.0.1",
            sshd.port,
            &sshd.client_key,
            "  expectedSpecs: {cpu: 512}\n",
        ),
    )
    .unwrap();
    std::fs::write(
        inv.join("big-1.yaml"),
        server("big-1", "127.0.0.1", sshd.port, &sshd.client_key, "  role: huge\n"),
    )
    .unwrap();
    let (rows, exit) = detect_json(dir.path(), &sshd.known_hosts, &[]);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let by_name = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();

    let ok = by_name("ok-1");
    assert_eq!(ok["status"], "OK", "{ok:#}");
    let local_cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(ok["hardware"]["cpu"].as_u64().unwrap() >= 1);
    assert!(ok["hardware"]["cpu"].as_u64().unwrap() <= local_cpus.max(1));
    assert!(ok["hardware"]["memoryMb"].as_u64().unwrap() > 64);
    assert!(ok["hardware"]["diskGb"].as_u64().unwrap() > 0);
    assert_eq!(ok["hardware"]["arch"], std::env::consts::ARCH);
    assert_eq!(ok["requirementsMet"]["reason"], "MinimumsMet");

    let off = by_name("off-1");
    assert_eq!(off["status"], "WARN");
    assert_eq!(off["specsMatch"]["reason"], "CpuMismatch");
    assert!(
        off["specsMatch"]["message"]
            .as_str()
            .unwrap()
            .starts_with("inventory says 512 vCPU, detected")
    );

    let big = by_name("big-1");
    assert_eq!(big["status"], "FAIL");
    assert_eq!(big["requirementsMet"]["reason"], "InsufficientCpu");
    assert_eq!(exit, 1, "a server below its role's minimums fails the run");

    let table = chom(
        dir.path(),
        &[
            "detect",
            "--known-hosts",
            sshd.known_hosts.to_str().unwrap(),
            "ok-1",
            "off-1",
        ],
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("TARGET"), "{text}");
    assert!(
        text.contains("RAM (MB)") && text.contains("WARN") && text.contains("inventory says 512 vCPU"),
        "{text}"
    );
    assert_eq!(table.status.code(), Some(0), "WARN alone does not fail: {text}");
}

#[test]
fn unreachable_and_untrusted_servers_fail_with_the_reason() {
    let sshd = Sshd::start();
    let dir = tree();
    let inv = dir.path().join("inventory.d");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        inv.join("down-1.yaml"),
        server("down-1", "127.0.0.1", closed, &sshd.client_key, ""),
    )
    .unwrap();
    std::fs::write(
        inv.join("new-1.yaml"),
        server("new-1", "127.0.0.1", sshd.port, &sshd.client_key, ""),
    )
    .unwrap();
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let (rows, exit) = detect_json(dir.path(), &empty, &[]);
    assert_eq!(exit, 1);
    let down = rows.iter().find(|r| r["name"] == "down-1").unwrap();
    assert_eq!(down["status"], "FAIL");
    assert_eq!(down["error"]["reason"], "ConnectionRefused", "{down:#}");
    let new = rows.iter().find(|r| r["name"] == "new-1").unwrap();
    assert_eq!(new["error"]["reason"], "HostKeyUnknown", "{new:#}");
    assert!(
        new["error"]["message"].as_str().unwrap().contains("chom trust new-1"),
        "{new:#}"
    );

    // Without a terminal and without --yes nothing is recorded.
    let refused = chom(
        dir.path(),
        &["trust", "--known-hosts", empty.to_str().unwrap(), "new-1"],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");

    let trusted = chom(
        dir.path(),
        &["trust", "--yes", "--known-hosts", empty.to_str().unwrap(), "new-1"],
    );
    let text = String::from_utf8_lossy(&trusted.stdout);
    assert!(trusted.status.success(), "{text}");
    let fp = sshd.host_key_line.split_whitespace().nth(1).unwrap();
    assert!(text.contains("SHA256:") && text.contains("recorded in"), "{text} {fp}");
    assert!(std::fs::read_to_string(&empty).unwrap().contains(fp));

    let (rows, exit) = detect_json(dir.path(), &empty, &["new-1"]);
    assert_eq!(exit, 0, "{rows:#?}");
    assert_eq!(rows[0]["status"], "OK");
    let again = chom(
        dir.path(),
        &["trust", "--known-hosts", empty.to_str().unwrap(), "new-1"],
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("already trusted"));
}

#[test]
fn a_changed_host_key_is_refused_with_both_fingerprints() {
    let sshd = Sshd::start();
    let dir = tree();
    let (_, other_line) = sshd::keygen(dir.path(), "impostor");
    let stale = dir.path().join("stale_known_hosts");
    let other_key = other_line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(&stale, format!("[127.0.0.1]:{} {other_key}\n", sshd.port)).unwrap();
    std::fs::write(
        dir.path().join("inventory.d/web-1.yaml"),
        server("web-1", "127.0.0.1", sshd.port, &sshd.client_key, ""),
    )
    .unwrap();
    let (rows, exit) = detect_json(dir.path(), &stale, &[]);
    assert_eq!(exit, 1);
    assert_eq!(rows[0]["error"]["reason"], "HostKeyChanged");
    let message = rows[0]["error"]["message"].as_str().unwrap();
    assert_eq!(message.matches("SHA256:").count(), 2, "{message}");
}

#[test]
fn many_servers_are_detected_concurrently() {
    let sshd = Sshd::start_with(14);
    let dir = tree();
    for (i, addr) in sshd.addresses.iter().enumerate() {
        let name = format!("web-{i}");
        std::fs::write(
            dir.path().join(format!("inventory.d/{name}.yaml")),
            server(&name, &addr.to_string(), sshd.port, &sshd.client_key, ""),
        )
        .unwrap();
    }
    let (rows, exit) = detect_json(dir.path(), &sshd.known_hosts, &[]);
    assert_eq!(rows.len(), 15);
    assert!(rows.iter().all(|r| r["status"] == "OK"), "{rows:#?}");
    assert_eq!(exit, 0);
}
