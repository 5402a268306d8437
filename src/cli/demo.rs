//! `chom demo`: a first look without a fleet. Starts a throwaway OpenSSH sshd on
//! 127.0.0.2–127.0.0.4 with generated keys, writes a demo tree (the example Roles, three
//! servers, one component), runs the daemon in the foreground and prints the fleet
//! table as it fills in. Ctrl-C stops sshd (by its PID) and removes every file.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use super::daemon::Tuning;
use super::{SshArgs, TreeArgs};

/// How to run this chom from a shell: `chom` when that is what PATH finds, else the
/// binary's own path (after `cargo run`, chom is not on PATH).
fn self_command() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "chom".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chom"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| p == me)
    });
    if on_path {
        "chom".to_owned()
    } else {
        me.display().to_string()
    }
}

/// Try chom on this machine: a loopback sshd, a demo inventory and the daemon.
///
/// Needs OpenSSH's server binary (Debian/Ubuntu: apt-get install openssh-server); it is
/// started on 127.0.0.2-4 only, with keys made for the demo, and stopped on Ctrl-C.
///
/// Examples:
///   chom demo
///   chom demo --duration 60
///
/// Exit codes: 0 stopped (Ctrl-C or --duration), 2 sshd could not be started, or usage errors.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// Keep the demo tree in DIR (created) instead of a temporary folder removed at exit.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Stop after this long instead of waiting for Ctrl-C (for scripted runs).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    #[command(flatten)]
    pub tuning: Tuning,
}

const SSHD: &str = "/usr/sbin/sshd";
const ADDRESSES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

const COMPONENT: &str = r#"#!/bin/sh
# demo component: writes CHOM_CFG_CONTENT to CHOM_CFG_PATH when it differs.
set -eu
if [ -f "$CHOM_CFG_PATH" ] && [ "$(cat "$CHOM_CFG_PATH")" = "$CHOM_CFG_CONTENT" ]; then
    echo "::chom:: resource file $CHOM_CFG_PATH"
    exit 0
fi
[ "$CHOM_MODE" = check ] && exit 100
printf '%s\n' "$CHOM_CFG_CONTENT" > "$CHOM_CFG_PATH"
echo "::chom:: changed"
echo "::chom:: resource file $CHOM_CFG_PATH"
"#;

/// The sshd child, killed by PID when dropped.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !Path::new(SSHD).exists() {
        bail!("chom demo needs OpenSSH's server at {SSHD}; install it (Debian/Ubuntu: apt-get install openssh-server)");
    }
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("chom-demo-").tempdir()?),
    };
    let root = match (&args.dir, &temp) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)?;
            std::path::absolute(dir)?
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temp dir exists when no --dir is given"),
    };
    let sshd_dir = root.join("sshd");
    std::fs::create_dir_all(&sshd_dir)?;
    let host_key = keygen(&sshd_dir, "host_ed25519")?;
    let client_key = keygen(&sshd_dir, "client_ed25519")?;
    std::fs::copy(client_key.with_extension("pub"), sshd_dir.join("authorized_keys"))?;
    let (sshd, port) = start_sshd(&sshd_dir, &host_key)?;
    let host_line = std::fs::read_to_string(host_key.with_extension("pub"))?;
    let host_line: Vec<&str> = host_line.split_whitespace().take(2).collect();
    let known_hosts = sshd_dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.*]:{port} {}\n", host_line.join(" ")))?;

    write_tree(&root, port, &client_key)?;
    let tree = TreeArgs {
        inventory: root.join("inventory.d"),
        scripts: None,
        secrets: None,
        config: None,
        status_dir: None,
    };
    println!(
        "chom demo: sshd (pid {}) on 127.0.0.2-4 port {port}; demo tree in {}",
        sshd.0.id(),
        root.display()
    );
    println!("  watch:  {}/inventory.d/*.status.yaml appear", root.display());
    println!(
        "  try:    {} get --inventory {}/inventory.d -o wide",
        self_command(),
        root.display()
    );
    println!(
        "          edit or add a file in {}/inventory.d and see it reconciled",
        root.display()
    );
    println!("  stop:   Ctrl-C (stops sshd and removes the demo files)\n");

    let ssh = SshArgs {
        connect: super::ConnectArgs {
            known_hosts: vec![known_hosts],
            connect_timeout: 10,
        },
        max_handshakes: 10,
        handshake_rate: 200,
        ssh_idle_timeout: std::time::Duration::from_secs(90),
        ssh_max_idle: 64,
    };
    let config = args.tuning.config(&tree, root.join(".chom"));
    let transport = Arc::new(ssh.transport_with(config.interrupt.clone()));
    let runtime = super::daemon_runtime()?;
    let duration = args.duration.map(Duration::from_secs);
    let result = runtime.block_on(async {
        let printer = tokio::spawn(print_fleet(tree.clone()));
        let daemon = crate::daemon::run(config, transport);
        let outcome = match duration {
            Some(d) => {
                let stopper = async {
                    tokio::time::sleep(d).await;
                    // The daemon stops on SIGTERM like under systemd.
                    let _ = Command::new("kill")
                        .arg("-TERM")
                        .arg(std::process::id().to_string())
                        .status();
                    std::future::pending::<()>().await;
                };
                tokio::select! { r = daemon => r, _ = stopper => Ok(()) }
            }
            None => daemon.await,
        };
        printer.abort();
        outcome
    });
    drop(sshd);
    println!(
        "\nchom demo: sshd stopped{}",
        if temp.is_some() { ", demo files removed" } else { "" }
    );
    result?;
    Ok(ExitCode::SUCCESS)
}

fn keygen(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "chom-demo", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .context("running ssh-keygen (install openssh-client)")?;
    if !status.success() {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(path)
}

fn start_sshd(dir: &Path, host_key: &Path) -> anyhow::Result<(Sshd, u16)> {
    // sshd insists on its privilege-separation folder.
    let _ = std::fs::create_dir_all("/run/sshd");
    for _ in 0..5 {
        let port = TcpListener::bind((ADDRESSES[0], 0))?.local_addr()?.port();
        let mut config = format!("Port {port}\n");
        for a in ADDRESSES {
            config.push_str(&format!("ListenAddress {a}\n"));
        }
        config.push_str(&format!(
            "HostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers *@127.0.0.0/8\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display()
        ));
        // The three demo servers are one machine: each address gets a script lock of its
        // own, as three real servers would have.
        for a in ADDRESSES {
            config.push_str(&format!(
                "Match LocalAddress {a}\n    SetEnv CHOM_SCRIPT_LOCK={}\n",
                dir.join(format!("script-{a}.lock")).display()
            ));
        }
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sshd")?;
        let mut sshd = Sshd(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(sshd.0.try_wait(), Ok(Some(_))) {
                break;
            }
            if TcpStream::connect((ADDRESSES[0], port)).is_ok() {
                return Ok((sshd, port));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = sshd.0.kill();
    }
    let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
    bail!("sshd did not start; its log:\n{log}")
}

fn write_tree(root: &Path, port: u16, client_key: &Path) -> anyhow::Result<()> {
    let inventory = root.join("inventory.d");
    std::fs::create_dir_all(inventory.join("roles"))?;
    std::fs::create_dir_all(root.join("scripts"))?;
    std::fs::create_dir_all(root.join("secrets.d"))?;
    std::fs::create_dir_all(root.join("out"))?;
    std::fs::write(root.join("scripts/demo-file.sh"), COMPONENT)?;
    std::fs::write(root.join("scripts/motd.sh"), include_str!("../../scripts/motd.sh"))?;
    // The example Roles' minimums, with only the components that need no internet and
    // write only inside the demo folder: the service scripts (nginx, prometheus, …)
    // install packages and would change this machine.
    for (role, cpu, mem, disk) in [("observability", 1, 2048, 20), ("vpsmanager", 2, 4096, 40)] {
        std::fs::write(
            inventory.join(format!("roles/{role}.yaml")),
            format!(
                "apiVersion: chom.dev/v1\nkind: Role\nmetadata:\n  name: {role}\nspec:\n  requirements: {{minCpu: {cpu}, minMemoryMb: {mem}, minDiskGb: {disk}}}\n  components:\n    - name: motd\n  config:\n    role: {role}\n"
            ),
        )?;
    }
    let user = Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?;
    let servers = [
        ("demo-1", ADDRESSES[0], "observability", ""),
        ("demo-2", ADDRESSES[1], "vpsmanager", "  dependsOn: [demo-1]\n"),
        ("demo-3", ADDRESSES[2], "observability", "  expectedSpecs: {cpu: 64}\n"),
    ];
    for (name, address, role, extra) in servers {
        let out = root.join("out").join(format!("{name}.txt"));
        std::fs::write(
            inventory.join(format!("{name}.yaml")),
            format!(
                "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {name}\n  labels: {{env: demo}}\nspec:\n  address: {address}\n  ssh:\n    user: {user}\n    port: {port}\n    identityFile: {key}\n  role: {role}\n  config:\n    motd_path: {motd}\n  components:\n    - name: demo-file\n      config: {{path: {out}, content: \"hello from {name}\"}}\n  interval: 1m\n{extra}",
                key = client_key.display(),
                out = out.display(),
                motd = root.join("out").join(format!("{name}.motd")).display()
            ),
        )?;
    }
    Ok(())
}

/// Shows the fleet table as `chom get` would, only when it changed: redrawn in place
/// below the log lines on a terminal, printed anew otherwise.
async fn print_fleet(tree: TreeArgs) {
    let mut shown = crate::progress::Pinned::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let table = super::get::table(&tree).unwrap_or_default();
        shown.show(&table);
    }
}
