//! Live progress on a terminal, checked the way a person sees it: `chom reconcile` over 50
//! servers (50 loopback addresses of one test sshd) runs in a detached tmux session, and
//! the pane is captured while it works. Lines naming servers and their step and a bar
//! with done / failed / remaining appear while it runs; log lines (the WARN of failing
//! components, logged while the board is up) never share a screen line with the board;
//! the final screen holds the summary. Colour codes reach a terminal unless `NO_COLOR` is
//! set. Skipped, saying so, when tmux is not installed. `CHOM_TEST_SCREENS=FILE` keeps
//! the captured screens of the 50-server run in FILE, to look at.

#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    /// The pane with its history: lines that scrolled off the top stay checkable.
    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-S", "-", "-t", "chom"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own server on our own socket: its session's shell and chom go with it.
        let _ = self.run(&["kill-server"]);
    }
}

fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `'text'` for sh.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn write_fleet(dir: &Path, sshd: &sshd::Sshd, failing: &[usize]) {
    std::fs::create_dir_all(dir.join("inventory.d")).unwrap();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(
        dir.join("scripts/slow.sh"),
        "sleep 3\n[ \"$CHOM_MODE\" = check ] && exit 100\necho '::chom:: changed'\n",
    )
    .unwrap();
    std::fs::write(dir.join("scripts/fail.sh"), "echo 'no space left' >&2\nexit 3\n").unwrap();
    for (i, address) in sshd.addresses.iter().enumerate() {
        let name = format!("server-{:02}", i + 1);
        let component = if failing.contains(&(i + 1)) { "fail" } else { "slow" };
        std::fs::write(
            dir.join(format!("inventory.d/{name}.yaml")),
            format!(
                "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  address: {address}\n  ssh:\n    user: {user}\n    port: {port}\n    identityFile: {key}\n  components:\n    - name: {component}\n",
                user = sshd::current_user(),
                port = sshd.port,
                key = sshd.client_key.display()
            ),
        )
        .unwrap();
    }
}

fn is_bar(line: &str) -> bool {
    line.starts_with("reconciling [") && line.contains(" done, ") && line.contains(" remaining")
}

/// A line of the board: a server in flight and its step.
fn is_server_line(line: &str) -> bool {
    let t = line.trim_start();
    line.starts_with("  server-")
        && [
            "connecting",
            "detecting hardware",
            "component 1/1 slow (apply)",
            "component 1/1 fail (apply)",
        ]
        .iter()
        .any(|step| t.ends_with(step))
}

#[test]
fn reconcile_on_a_terminal_shows_each_server_and_a_bar_and_never_mixes_in_log_lines() {
    if !tmux_installed() {
        eprintln!("SKIPPED: tmux is not installed (.ci/run installs it)");
        return;
    }
    let sshd = sshd::Sshd::start_with(49);
    assert_eq!(sshd.addresses.len(), 50);
    let dir = tempfile::tempdir().unwrap();
    let failing = [7, 19, 33, 41, 48];
    write_fleet(dir.path(), &sshd, &failing);
    let tmux = Tmux {
        socket: format!("chom-progress-{}", std::process::id()),
    };
    let command = format!(
        "cd {dir} && env -u SSH_AUTH_SOCK -u NO_COLOR -u CHOM_LOG HOME={dir} {chom} reconcile --known-hosts {kh}; echo chom-exit=$?; sleep 120",
        dir = quote(&dir.path().display().to_string()),
        chom = quote(env!("CARGO_BIN_EXE_chom")),
        kh = quote(&sshd.known_hosts.display().to_string()),
    );
    let started = tmux.run(&["new-session", "-d", "-s", "chom", "-x", "160", "-y", "40", &command]);
    assert!(
        started.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&started.stderr)
    );

    let mut screens = Vec::new();
    let begun = Instant::now();
    let last = loop {
        let screen = tmux.capture();
        if screen.contains("chom-exit=") {
            break screen;
        }
        screens.push(screen);
        assert!(
            begun.elapsed() < Duration::from_secs(90),
            "chom reconcile did not finish; last screen:\n{}",
            screens.last().unwrap()
        );
        std::thread::sleep(Duration::from_millis(150));
    };

    if let Ok(path) = std::env::var("CHOM_TEST_SCREENS") {
        std::fs::write(path, screens.join("\n=====\n") + "\n=====\n" + &last).unwrap();
    }
    // While it ran: a line per server in flight with its step, and the bar.
    let busiest = screens
        .iter()
        .max_by_key(|s| s.lines().filter(|l| is_server_line(l)).count())
        .expect("at least one screen while running");
    assert!(
        busiest.lines().filter(|l| is_server_line(l)).count() >= 10,
        "servers in flight with their step:\n{busiest}"
    );
    assert!(
        screens
            .iter()
            .any(|s| s.lines().any(|l| l.contains("component 1/1 slow (apply)"))),
        "a component step is shown:\n{busiest}"
    );
    let bar = screens
        .iter()
        .flat_map(|s| s.lines())
        .find(|l| is_bar(l) && !l.contains(" 0/50 done"))
        .unwrap_or_else(|| panic!("a bar with done / failed / remaining:\n{busiest}"));
    assert!(bar.contains("/50 done, "), "{bar}");
    // More servers than the screen has room for: the rest are counted.
    assert!(
        screens.iter().any(|s| s.contains(" more in flight")),
        "hidden servers are counted:\n{busiest}"
    );

    // Log lines were written while the board was up, and never on a line of it.
    let during: Vec<&str> = screens
        .iter()
        .filter(|s| s.lines().any(is_bar))
        .flat_map(|s| s.lines())
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert!(
        !during.is_empty(),
        "a failing component logs a WARN line while the board is shown (nothing to check otherwise)"
    );
    for screen in screens.iter().chain([&last]) {
        for line in screen.lines() {
            let log = line.contains(" WARN ") || line.contains("chom::");
            let board = is_bar(line)
                || line.contains(" done, ")
                || line.contains(" remaining")
                || line.contains("[####")
                || line.contains("more in flight")
                || (line.starts_with("  server-") && !line.contains("exited with status"));
            assert!(!(log && board), "a log line mixed with the board: {line:?}\n{screen}");
            if log {
                assert!(
                    line.chars().take(4).all(|c| c.is_ascii_digit()),
                    "a log line starts at the start of its line: {line:?}\n{screen}"
                );
            }
            if line.contains(" remaining") {
                assert!(is_bar(line), "the bar is a line of its own: {line:?}\n{screen}");
            }
        }
    }
    for n in failing {
        let name = format!("server-{n:02}");
        assert!(
            screens
                .iter()
                .chain([&last])
                .flat_map(|s| s.lines())
                .any(|l| l.contains(" WARN ") && l.contains(&format!("server={name}"))),
            "the WARN line names {name}"
        );
    }

    // The final screen: the board is gone, the summary is there.
    assert!(
        last.lines().any(|l| l.starts_with("deployment d-")
            && l.contains(": 50 server(s) in ")
            && l.contains("45 ok, 5 failed")),
        "{last}"
    );
    assert!(last.contains("chom-exit=1"), "{last}");
    assert!(!last.lines().any(is_bar), "the bar is cleared at the end:\n{last}");
}

/// The WARN line of a failing component as tmux shows it, with its colour codes
/// (`capture-pane -e`), from a run with `no_color` as NO_COLOR (unset when `None`).
fn warn_line_on_a_terminal(no_color: Option<&str>) -> String {
    let sshd = sshd::Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), &sshd, &[1]);
    let tmux = Tmux {
        socket: format!("chom-colour-{}-{}", std::process::id(), no_color.is_some()),
    };
    let colour = match no_color {
        Some(v) => format!("NO_COLOR={}", quote(v)),
        None => "-u NO_COLOR".to_owned(),
    };
    let command = format!(
        "cd {dir} && env -u SSH_AUTH_SOCK -u CHOM_LOG {colour} HOME={dir} {chom} reconcile --known-hosts {kh}; echo chom-exit=$?; sleep 120",
        dir = quote(&dir.path().display().to_string()),
        chom = quote(env!("CARGO_BIN_EXE_chom")),
        kh = quote(&sshd.known_hosts.display().to_string()),
    );
    let started = tmux.run(&["new-session", "-d", "-s", "chom", "-x", "160", "-y", "20", &command]);
    assert!(started.status.success());
    let begun = Instant::now();
    loop {
        let out = tmux.run(&["capture-pane", "-p", "-e", "-S", "-", "-t", "chom"]);
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if screen.contains("chom-exit=") {
            return screen
                .lines()
                .find(|l| l.contains("WARN"))
                .unwrap_or_else(|| panic!("no WARN line:\n{screen}"))
                .to_owned();
        }
        assert!(begun.elapsed() < Duration::from_secs(60), "no end:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn log_lines_are_coloured_on_a_terminal_unless_no_color_is_set() {
    if !tmux_installed() {
        eprintln!("SKIPPED: tmux is not installed (.ci/run installs it)");
        return;
    }
    let coloured = warn_line_on_a_terminal(None);
    assert!(coloured.contains('\x1b'), "colour on a terminal: {coloured:?}");
    let plain = warn_line_on_a_terminal(Some("1"));
    assert!(!plain.contains('\x1b'), "no colour under NO_COLOR: {plain:?}");
    assert!(plain.contains("server=server-01"), "{plain}");
}
