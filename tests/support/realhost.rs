//! Real Debian 12 servers for the end-to-end suite: `tests/realhost/up.sh K` boots one in a
//! systemd-nspawn container (systemd as PID 1, OpenSSH, apt through a proxy) in its own
//! network namespace at 10.253.K.2, and `up.sh K J` a further one in that namespace at
//! 10.253.K.J, which the first can reach; dropping the handle runs `down.sh K [J]`, which
//! stops it by PID (the namespace goes with the last server in it). Tests that need one call
//! [`RealHost::up`] (and [`RealHost::up_beside`]); set `CHOM_SKIP_REALHOST=1` to skip them
//! on a machine that cannot boot containers (the skip is printed, never silent).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One booted server.
pub struct RealHost {
    /// Its namespace's number (10.253.K.J).
    pub k: u32,
    /// Its address in that namespace (2 for the namespace's first server).
    pub j: u32,
    /// Its hostname.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// The root login key.
    pub key: PathBuf,
    /// A known_hosts file with its host key.
    pub known_hosts: PathBuf,
    /// Its root filesystem on this machine (the container runs on it directly, so files
    /// written here appear inside).
    pub root: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/realhost").join(name)
}

impl RealHost {
    /// Boots server `k`, or returns `None` (saying so) when `CHOM_SKIP_REALHOST` is set.
    pub fn up(k: u32) -> Option<RealHost> {
        Self::boot(k, 2)
    }

    /// Boots a further server in server `k`'s network namespace, at 10.253.K.J (`j` in
    /// 3..254), where it and the other servers of `k` reach each other; `None` as for
    /// [`RealHost::up`].
    pub fn up_beside(k: u32, j: u32) -> Option<RealHost> {
        assert!(
            (3..=254).contains(&j),
            "j is 3..254 (2 is the namespace's first server)"
        );
        Self::boot(k, j)
    }

    fn args(k: u32, j: u32) -> Vec<String> {
        if j == 2 {
            vec![k.to_string()]
        } else {
            vec![k.to_string(), j.to_string()]
        }
    }

    fn boot(k: u32, j: u32) -> Option<RealHost> {
        if std::env::var_os("CHOM_SKIP_REALHOST").is_some() {
            eprintln!("SKIPPED: CHOM_SKIP_REALHOST is set; this real-server test did not run");
            return None;
        }
        // A leftover from an interrupted run of this same test.
        let _ = Command::new(script("down.sh"))
            .args(Self::args(k, j))
            .stderr(Stdio::null())
            .status();
        let out = Command::new(script("up.sh"))
            .args(Self::args(k, j))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/realhost/up.sh");
        assert!(
            out.status.success(),
            "tests/realhost/up.sh {k} {j} failed (needs root and systemd-nspawn; CHOM_SKIP_REALHOST=1 skips)"
        );
        let env_file = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let env = std::fs::read_to_string(&env_file).expect("read the server's env file");
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} missing in {env_file}"))
                .to_owned()
        };
        Some(RealHost {
            k,
            j,
            name: get("NAME"),
            addr: get("ADDR"),
            key: PathBuf::from(get("KEY")),
            known_hosts: PathBuf::from(get("KNOWN_HOSTS")),
            root: PathBuf::from(get("ROOT")),
        })
    }

    /// Runs `command` on the server as root with OpenSSH's client.
    pub fn run(&self, command: &str) -> Output {
        Command::new("ssh")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-i")
            .arg(&self.key)
            .arg(format!("root@{}", self.addr))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Runs `command` and returns its stdout, failing the test if it fails.
    #[track_caller]
    pub fn sh(&self, command: &str) -> String {
        let out = self.run(command);
        assert!(
            out.status.success(),
            "on {}: `{command}` failed ({}):\n{}{}",
            self.addr,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Asserts that systemd `service` is active and enabled on the server.
    #[track_caller]
    pub fn assert_running(&self, service: &str) {
        assert_eq!(
            self.sh(&format!("systemctl is-active {service}")).trim(),
            "active",
            "{service}"
        );
        assert_eq!(
            self.sh(&format!("systemctl is-enabled {service}")).trim(),
            "enabled",
            "{service}"
        );
    }

    /// True when `command` succeeds on the server.
    pub fn ok(&self, command: &str) -> bool {
        self.run(command).status.success()
    }
}

impl Drop for RealHost {
    fn drop(&mut self) {
        let _ = Command::new(script("down.sh"))
            .args(Self::args(self.k, self.j))
            .stderr(Stdio::null())
            .status();
    }
}

/// A plain-HTTP artifact store on the host side of server `k`'s link (10.253.K.1), serving
/// the files under `dir`: the `config.mirror` of air-gapped fleets, with release-shaped
/// archives the test builds. Records every path asked for; stops when dropped.
pub struct Mirror {
    /// `http://10.253.K.1:PORT`.
    pub url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mirror {
    /// Serves `dir` to server `host`.
    pub fn serve(host: &RealHost, dir: &Path) -> Mirror {
        use std::sync::atomic::Ordering;
        let listener =
            std::net::TcpListener::bind((format!("10.253.{}.1", host.k).as_str(), 0)).expect("bind the mirror");
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, log, flag) = (dir.to_path_buf(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve_one(stream, &dir, &log);
                }
            }
        });
        Mirror {
            url: format!("http://{addr}"),
            requests,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// Every path asked for so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(mut stream: std::net::TcpStream, dir: &Path, log: &std::sync::Mutex<Vec<String>>) -> std::io::Result<()> {
    use std::io::{BufRead as _, Write as _};
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    // The headers, bounded.
    for _ in 0..100 {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    log.lock().unwrap().push(path.clone());
    let file = path
        .trim_start_matches('/')
        .split('/')
        .all(|part| !part.is_empty() && part != "." && part != "..")
        .then(|| dir.join(path.trim_start_matches('/')))
        .and_then(|p| std::fs::read(p).ok());
    match file {
        Some(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)
        }
        None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, std::time::Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `check` every second, at most `secs` times.
#[track_caller]
pub fn eventually(what: &str, secs: u32, mut check: impl FnMut() -> bool) {
    for _ in 0..secs {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// Copies the tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
