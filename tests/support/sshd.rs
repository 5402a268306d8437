//! Test support: a throwaway OpenSSH sshd (and ssh-agent) on loopback with keys made by
//! ssh-keygen in a temp dir. Owns only the processes it spawns; must never signal anything else
//! or listen outside 127.0.0.0/8.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running sshd. Dropping it kills the daemon and every session process it forked.
pub struct Sshd {
    children: Vec<Child>,
    dir: TempDir,
    config: PathBuf,
    /// Port sshd listens on (same on every address).
    pub port: u16,
    /// The host public key line (`ssh-ed25519 AAAA…`).
    pub host_key_line: String,
    /// Client private key whose public half is in authorized_keys.
    pub client_key: PathBuf,
    /// known_hosts trusting the host key for every address this sshd listens on.
    pub known_hosts: PathBuf,
    /// Addresses listened on: 127.0.0.1 first, then the extra ones.
    pub addresses: Vec<Ipv4Addr>,
}

/// The user the tests log in as: whoever runs them.
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(out.stdout)
        .expect("user name is UTF-8")
        .trim()
        .to_string()
}

/// Generates an ed25519 key pair without passphrase; returns the private key path and the
/// public key line.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    keygen_with_passphrase(dir, name, "")
}

/// Same as [`keygen`] with a passphrase.
pub fn keygen_with_passphrase(dir: &Path, name: &str, passphrase: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("read .pub");
    (path, public.trim().to_string())
}

impl Sshd {
    /// sshd on 127.0.0.1 only.
    pub fn start() -> Sshd {
        Sshd::start_with(0)
    }

    /// sshd on 127.0.0.1 plus 127.0.0.2 … 127.0.0.(1+extra), all on one port, with OpenSSH's
    /// default limits (MaxStartups 10:30:100, MaxSessions 10). sshd opens at most 16 listen
    /// sockets, so every 16 addresses get their own sshd process; nothing ever listens on
    /// a wildcard address.
    pub fn start_with(extra: u8) -> Sshd {
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let (host_key, host_key_line) = keygen(dir.path(), "host_ed25519");
        let (client_key, client_line) = keygen(dir.path(), "client_ed25519");
        std::fs::write(dir.path().join("authorized_keys"), format!("{client_line}\n")).expect("write authorized_keys");
        let addresses: Vec<Ipv4Addr> = (1..=1 + extra).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();

        // A free port can be taken by someone else between probing and sshd binding it, so a
        // daemon that dies at startup is retried on another port.
        for _ in 0..5 {
            let port = free_port();
            let mut children = Vec::new();
            let mut all_up = true;
            for (group, chunk) in addresses.chunks(MAX_LISTEN_SOCKS).enumerate() {
                let config = dir.path().join(format!("sshd_config.{group}"));
                std::fs::write(&config, config_text(dir.path(), &host_key, port, chunk, group))
                    .expect("write sshd_config");
                let log = File::create(dir.path().join(format!("sshd.{group}.log"))).expect("create log");
                let mut child = Command::new("/usr/sbin/sshd")
                    .arg("-D")
                    .arg("-e")
                    .arg("-f")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .spawn()
                    .expect("spawn /usr/sbin/sshd");
                let up = wait_listening(&mut child, chunk[0], port);
                children.push(child);
                if !up {
                    all_up = false;
                    break;
                }
            }
            if all_up {
                let config = dir.path().join("sshd_config.0");
                let known_hosts = dir.path().join("known_hosts");
                let mut text = format!("[127.0.0.1]:{port} {host_key_line}\n");
                if extra > 0 {
                    text.push_str(&format!("[127.0.0.*]:{port}\t{host_key_line}\n"));
                }
                std::fs::write(&known_hosts, text).expect("write known_hosts");
                return Sshd {
                    children,
                    dir,
                    config,
                    port,
                    host_key_line,
                    client_key,
                    known_hosts,
                    addresses,
                };
            }
            for mut child in children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let log = std::fs::read_to_string(dir.path().join("sshd.0.log")).unwrap_or_default();
        panic!("sshd did not start; its log:\n{log}");
    }

    /// The temp dir holding keys, config and log; tests may put files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        (0..self.children.len())
            .map(|g| std::fs::read_to_string(self.dir.path().join(format!("sshd.{g}.log"))).unwrap_or_default())
            .collect()
    }

    /// Kills every session process (not the listener), dropping all client connections the
    /// way a crashed or restarted server would.
    pub fn kill_sessions(&self) {
        let pids: Vec<u32> = self.children.iter().flat_map(|c| descendants(c.id())).collect();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(pids.iter().map(u32::to_string))
                // Some may already have exited along with their parent.
                .stderr(Stdio::null())
                .status();
        }
        // Bounded wait until they are gone so the test does not race their exit.
        let start = Instant::now();
        while self.children.iter().any(|c| !descendants(c.id()).is_empty()) && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sessions();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// OpenSSH's MAX_LISTEN_SOCKS ("Too many listen sockets. Enlarge MAX_LISTEN_SOCKS").
const MAX_LISTEN_SOCKS: usize = 16;

fn config_text(dir: &Path, host_key: &Path, port: u16, addresses: &[Ipv4Addr], group: usize) -> String {
    let mut text = format!("Port {port}\n");
    for addr in addresses {
        text.push_str(&format!("ListenAddress {addr}\n"));
    }
    text.push_str("AllowUsers *@127.0.0.0/8\n");
    text.push_str(&format!(
        "HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {keys}\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         LogLevel VERBOSE\n",
        host_key = host_key.display(),
        pid = dir.join(format!("sshd.{group}.pid")).display(),
        keys = dir.join("authorized_keys").display(),
    ));
    // Every test server on this machine is a server of its own: each address gets its own
    // script lock (chom's scripts take `$CHOM_SCRIPT_LOCK`, default /run/lock/chom.lock),
    // so tests running at once never wait for each other's scripts.
    text.push_str(&format!("SetEnv CHOM_SCRIPT_LOCK={}/script.lock\n", dir.display()));
    for addr in addresses {
        text.push_str(&format!(
            "Match LocalAddress {addr}\n    SetEnv CHOM_SCRIPT_LOCK={}/script-{addr}.lock\n",
            dir.display()
        ));
    }
    text
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind probe port");
    listener.local_addr().expect("probe addr").port()
}

/// Bounded wait (5 s) until the port accepts; false when sshd exited or never listened.
fn wait_listening(child: &mut Child, address: Ipv4Addr, port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if TcpStream::connect((address, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// PIDs of all processes below `root`, read from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == p && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// Parent PID from /proc/PID/stat; the command name may hold spaces and parentheses, so the
/// fields are read after the last `)`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// True while a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// A throwaway ssh-agent on a socket in its own temp dir.
pub struct Agent {
    child: Child,
    _dir: TempDir,
    /// The agent socket (what SSH_AUTH_SOCK would hold).
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `ssh-agent -D -a SOCKET` and waits (bounded) for the socket.
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh-agent");
        let start = Instant::now();
        while !socket.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(socket.exists(), "ssh-agent did not create its socket");
        Agent {
            child,
            _dir: dir,
            socket,
        }
    }

    /// `ssh-add KEY` into this agent.
    pub fn add(&self, key: &Path) {
        let status = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ssh-add");
        assert!(status.success(), "ssh-add failed");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
