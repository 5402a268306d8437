//! systemd integration without a library: `sd_notify` datagrams to `$NOTIFY_SOCKET`
//! (READY, STATUS, STOPPING, WATCHDOG) for a `Type=notify` unit. Outside systemd every
//! call is a no-op. It never decides when to notify; the daemon does.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`).
/// Errors are ignored: a lost notification must not stop the daemon, and systemd
/// reports a missing READY on its own.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (systemd uses these in containers).
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The interval at which to send `WATCHDOG=1`: half of `WatchdogSec`, when systemd set
/// one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    /// Setting the environment is unsafe in edition 2024 and the crate forbids unsafe
    /// code, so the test runs itself again as a child process with NOTIFY_SOCKET set.
    #[test]
    fn notifications_reach_the_socket() {
        if std::env::var_os("CHOM_NOTIFY_CHILD").is_some() {
            super::notify("READY=1\nSTATUS=watching 3 servers");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "systemd::tests::notifications_reach_the_socket"])
            .env("CHOM_NOTIFY_CHILD", "1")
            .env("NOTIFY_SOCKET", &path)
            .status()
            .unwrap();
        assert!(status.success());
        let mut buf = [0u8; 128];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=watching 3 servers");
    }

    #[test]
    fn no_watchdog_without_systemd() {
        if std::env::var_os("WATCHDOG_USEC").is_none() {
            assert!(super::watchdog_interval().is_none());
        }
    }
}
