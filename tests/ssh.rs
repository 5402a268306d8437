//! Integration tests of the SSH transport against a real OpenSSH sshd on 127.0.0.0/8; owns no
//! production logic and must never reach beyond loopback.

#[path = "support/sshd.rs"]
mod sshd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chom::ssh::{
    ExecRequest, Exit, PublicKey, SshError, Target, Transport, TransportConfig, fetch_host_key, fingerprint,
};
use sshd::{Agent, Sshd, current_user, keygen, keygen_with_passphrase, process_alive};

fn config(sshd: &Sshd) -> TransportConfig {
    TransportConfig {
        known_hosts_files: vec![sshd.known_hosts.clone()],
        // Tests must not depend on whatever agent the developer has running.
        agent_socket: None,
        ..TransportConfig::default()
    }
}

fn target(sshd: &Sshd, name: &str, host: &str) -> Target {
    Target {
        name: name.to_string(),
        host: host.to_string(),
        port: sshd.port,
        user: current_user(),
        identity_file: Some(sshd.client_key.clone()),
        host_key_pins: Vec::new(),
    }
}

fn request(command: &str) -> ExecRequest {
    ExecRequest {
        command: command.to_string(),
        stdin: Vec::new(),
        deadline: Duration::from_secs(20),
        sudo: false,
    }
}

/// Waits up to `within` for the process whose PID a remote command wrote to `pid_file` to end:
/// the PID, and whether it ended.
async fn wait_for_exit(pid_file: &std::path::Path, within: Duration) -> (u32, bool) {
    let pid: u32 = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
    let waited = Instant::now();
    while process_alive(pid) && waited.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (pid, !process_alive(pid))
}

fn host_fingerprint(sshd: &Sshd) -> String {
    fingerprint(&PublicKey::from_openssh(&sshd.host_key_line).unwrap())
}

#[tokio::test]
async fn exec_returns_stdout_stderr_and_exit_status() {
    let sshd = Sshd::start();
    let transport = Transport::new(config(&sshd));
    let out = transport
        .exec(
            &target(&sshd, "web1", "127.0.0.1"),
            request("echo out; echo err >&2; exit 3"),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit, Exit::Status(3));
    assert!(!out.success());
    assert!(!out.stdout_truncated && !out.stderr_truncated);
}

#[tokio::test]
async fn unknown_host_key_is_refused_with_a_trust_hint() {
    let sshd = Sshd::start();
    let transport = Transport::new(TransportConfig {
        known_hosts_files: vec![sshd.dir().join("missing_known_hosts")],
        ..config(&sshd)
    });
    let err = transport
        .exec(&target(&sshd, "web1", "127.0.0.1"), request("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{}", sshd.port)), "{msg}");
    assert!(msg.contains(&host_fingerprint(&sshd)), "{msg}");
    assert!(msg.contains("chom trust web1"), "{msg}");
    assert_eq!(transport.open_connections(), 0);
}

#[tokio::test]
async fn changed_host_key_is_refused_naming_both_fingerprints() {
    let sshd = Sshd::start();
    let (_, other_line) = keygen(sshd.dir(), "impostor");
    let known_hosts = sshd.dir().join("changed_known_hosts");
    std::fs::write(
        &known_hosts,
        format!("# old key\n[127.0.0.1]:{}  {other_line}\n", sshd.port),
    )
    .unwrap();
    let transport = Transport::new(TransportConfig {
        known_hosts_files: vec![known_hosts.clone()],
        ..config(&sshd)
    });
    let err = transport
        .exec(&target(&sshd, "web1", "127.0.0.1"), request("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err:?}");
    let msg = err.to_string();
    let old = fingerprint(&PublicKey::from_openssh(&other_line).unwrap());
    assert!(msg.contains(&old), "{msg}");
    assert!(msg.contains(&host_fingerprint(&sshd)), "{msg}");
    assert!(msg.contains(&format!("{}:2", known_hosts.display())), "{msg}");
}

#[tokio::test]
async fn pinned_host_key_is_accepted_without_known_hosts() {
    let sshd = Sshd::start();
    let transport = Transport::new(TransportConfig {
        known_hosts_files: Vec::new(),
        ..config(&sshd)
    });
    let mut by_line = target(&sshd, "web1", "127.0.0.1");
    by_line.host_key_pins = vec![format!("{} root@somewhere", sshd.host_key_line)];
    let out = transport.exec(&by_line, request("echo pinned")).await.unwrap();
    assert_eq!(out.stdout, b"pinned\n");

    let mut by_fingerprint = target(&sshd, "web2", "127.0.0.1");
    by_fingerprint.host_key_pins = vec![host_fingerprint(&sshd)];
    let out = transport.exec(&by_fingerprint, request("echo pinned")).await.unwrap();
    assert!(out.success());

    let (_, other_line) = keygen(sshd.dir(), "other");
    let mut wrong = target(&sshd, "web3", "127.0.0.1");
    wrong.host_key_pins = vec![other_line];
    let err = transport.exec(&wrong, request("true")).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyNotPinned { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_client_key_is_refused_naming_the_user() {
    let sshd = Sshd::start();
    let (stranger, _) = keygen(sshd.dir(), "stranger");
    let transport = Transport::new(config(&sshd));
    let mut t = target(&sshd, "web1", "127.0.0.1");
    t.identity_file = Some(stranger.clone());
    let err = transport.exec(&t, request("true")).await.unwrap_err();
    assert!(matches!(err, SshError::AuthRefused { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&current_user()), "{msg}");
    assert!(msg.contains(&stranger.display().to_string()), "{msg}");
}

#[tokio::test]
async fn no_identity_and_no_agent_is_a_clear_error() {
    let sshd = Sshd::start();
    let transport = Transport::new(config(&sshd));
    let mut t = target(&sshd, "web1", "127.0.0.1");
    t.identity_file = None;
    let err = transport.exec(&t, request("true")).await.unwrap_err();
    assert!(matches!(err, SshError::NoAuthMethod { .. }), "{err:?}");
}

#[tokio::test]
async fn encrypted_key_needs_an_agent_and_the_agent_is_used() {
    let sshd = Sshd::start();
    let (locked, _) = keygen_with_passphrase(sshd.dir(), "locked", "secret passphrase");
    let mut t = target(&sshd, "web1", "127.0.0.1");
    t.identity_file = Some(locked);

    let without_agent = Transport::new(config(&sshd));
    let err = without_agent.exec(&t, request("true")).await.unwrap_err();
    assert!(matches!(err, SshError::EncryptedKey { .. }), "{err:?}");

    let agent = Agent::start();
    agent.add(&sshd.client_key);
    let with_agent = Transport::new(TransportConfig {
        agent_socket: Some(agent.socket.clone()),
        ..config(&sshd)
    });
    let out = with_agent.exec(&t, request("echo agent")).await.unwrap();
    assert_eq!(out.stdout, b"agent\n");
}

#[tokio::test]
async fn closed_port_is_reported_as_refused() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let transport = Transport::new(TransportConfig {
        known_hosts_files: Vec::new(),
        agent_socket: None,
        ..TransportConfig::default()
    });
    let t = Target {
        name: "gone".into(),
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        identity_file: None,
        host_key_pins: Vec::new(),
    };
    let err = transport.exec(&t, request("true")).await.unwrap_err();
    assert!(matches!(err, SshError::ConnectRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("was refused"), "{err}");
}

#[tokio::test]
async fn command_past_its_deadline_is_killed_on_the_server() {
    let sshd = Sshd::start();
    let transport = Transport::new(TransportConfig {
        kill_grace: Duration::from_millis(300),
        ..config(&sshd)
    });
    let pid_file = sshd.dir().join("pid");
    // The command ignores TERM (an ignored signal survives exec), so only KILL ends it.
    let command = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {}; exec sleep 300'",
        pid_file.display()
    );
    let started = Instant::now();
    let err = transport
        .exec(
            &target(&sshd, "web1", "127.0.0.1"),
            ExecRequest {
                deadline: Duration::from_secs(1),
                ..request(&command)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let (pid, ended) = wait_for_exit(&pid_file, Duration::from_secs(5)).await;
    assert!(ended, "remote process {pid} still runs; sshd log:\n{}", sshd.log());

    // The connection stays usable after a killed command.
    let out = transport
        .exec(&target(&sshd, "web1", "127.0.0.1"), request("echo alive"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"alive\n");
}

#[tokio::test]
async fn large_output_is_capped_and_flagged() {
    let sshd = Sshd::start();
    let cap = 64 * 1024;
    let transport = Transport::new(TransportConfig {
        output_cap: cap,
        ..config(&sshd)
    });
    let out = transport
        .exec(
            &target(&sshd, "web1", "127.0.0.1"),
            request("head -c 1000000 /dev/zero; echo tail >&2"),
        )
        .await
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), cap);
    assert!(out.stdout_truncated);
    assert_eq!(out.stdout_dropped, 1_000_000 - cap as u64);
    assert!(!out.stderr_truncated);
    assert!(
        out.stdout_text()
            .ends_with(&format!("…[truncated {} bytes]", 1_000_000 - cap))
    );
}

#[tokio::test]
async fn stdin_reaches_the_command() {
    let sshd = Sshd::start();
    let transport = Transport::new(TransportConfig {
        output_cap: 8 * 1024 * 1024,
        ..config(&sshd)
    });
    let t = target(&sshd, "web1", "127.0.0.1");

    let out = transport
        .exec(
            &t,
            ExecRequest {
                stdin: vec![b'x'; 1024 * 1024],
                ..request("wc -c")
            },
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1048576");

    let script = b"echo facts\necho oops >&2\nexit 4\n".to_vec();
    let out = transport
        .exec(
            &t,
            ExecRequest {
                stdin: script,
                ..request("sh -s")
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, b"facts\n");
    assert_eq!(out.stderr, b"oops\n");
    assert_eq!(out.exit, Exit::Status(4));

    // Large stdin and large stdout at once: must not deadlock on flow-control windows.
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let out = transport
        .exec(
            &t,
            ExecRequest {
                stdin: payload.clone(),
                ..request("cat")
            },
        )
        .await
        .unwrap();
    assert!(out.stdout == payload, "cat echoed {} bytes", out.stdout.len());
}

#[tokio::test]
async fn five_concurrent_channels_share_one_connection() {
    let sshd = Sshd::start();
    let transport = Arc::new(Transport::new(config(&sshd)));
    let t = target(&sshd, "web1", "127.0.0.1");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..5 {
        let (transport, t) = (Arc::clone(&transport), t.clone());
        tasks.spawn(async move { transport.exec(&t, request(&format!("sleep 0.3; echo {i}"))).await });
    }
    let mut seen = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let out = done.unwrap().unwrap();
        seen.push(String::from_utf8(out.stdout).unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["0\n", "1\n", "2\n", "3\n", "4\n"]);
    assert_eq!(transport.open_connections(), 1);
}

#[tokio::test]
async fn connection_is_reopened_after_the_server_drops_it() {
    let sshd = Sshd::start();
    let transport = Transport::new(config(&sshd));
    let t = target(&sshd, "web1", "127.0.0.1");
    let first = transport.exec(&t, request("echo $PPID")).await.unwrap();
    sshd.kill_sessions();
    let second = transport.exec(&t, request("echo $PPID")).await.unwrap();
    assert!(second.success());
    // A different session process on the server proves it is a new connection.
    assert_ne!(first.stdout, second.stdout);
    assert_eq!(transport.open_connections(), 1);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let sshd = Sshd::start();
    let transport = Transport::new(TransportConfig {
        idle_timeout: Duration::from_millis(500),
        ..config(&sshd)
    });
    let t = target(&sshd, "web1", "127.0.0.1");
    transport.exec(&t, request("true")).await.unwrap();
    assert_eq!(transport.open_connections(), 1);
    let waited = Instant::now();
    while transport.open_connections() > 0 && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(transport.open_connections(), 0);
    // And the next call simply connects again.
    transport.exec(&t, request("true")).await.unwrap();
    transport.close_all().await;
    assert_eq!(transport.open_connections(), 0);
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_close_least_recently_used_first() {
    let sshd = Sshd::start_with(5);
    let transport = Transport::new(TransportConfig {
        max_idle_connections: 2,
        idle_cap_grace: Duration::ZERO,
        ..config(&sshd)
    });
    let targets: Vec<_> = sshd
        .addresses
        .iter()
        .skip(1)
        .map(|addr| target(&sshd, &format!("srv-{addr}"), &addr.to_string()))
        .collect();
    assert_eq!(targets.len(), 5);
    let mut sessions = Vec::new();
    for t in &targets {
        let out = transport.exec(t, request("echo $SSH_CONNECTION")).await.unwrap();
        sessions.push(out.stdout);
    }
    let waited = Instant::now();
    while transport.open_connections() > 2 && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(transport.open_connections(), 2);
    // The two used last kept their connections (same client port); the first one connects again.
    for (i, t) in targets.iter().enumerate().skip(3) {
        let again = transport.exec(t, request("echo $SSH_CONNECTION")).await.unwrap();
        assert_eq!(again.stdout, sessions[i], "{} was closed", t.name);
    }
    let first = transport
        .exec(&targets[0], request("echo $SSH_CONNECTION"))
        .await
        .unwrap();
    assert_ne!(first.stdout, sessions[0]);
    transport.close_all().await;
}

#[tokio::test]
async fn a_connection_just_used_outlives_the_idle_cap_until_its_grace_ends() {
    let sshd = Sshd::start();
    let transport = Transport::new(TransportConfig {
        max_idle_connections: 0,
        idle_cap_grace: Duration::from_secs(1),
        ..config(&sshd)
    });
    let t = target(&sshd, "web1", "127.0.0.1");
    let used = Instant::now();
    let first = transport.exec(&t, request("echo $SSH_CONNECTION")).await.unwrap();
    // The next step of the same reconcile comes within the grace: same connection.
    let second = transport.exec(&t, request("echo $SSH_CONNECTION")).await.unwrap();
    assert_eq!(first.stdout, second.stdout);
    let waited = Instant::now();
    while transport.open_connections() > 0 && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(transport.open_connections(), 0, "closed once the grace ended");
    assert!(
        used.elapsed() >= Duration::from_secs(1),
        "closed before its grace ended"
    );
}

#[tokio::test]
async fn fifty_targets_on_one_sshd_all_succeed_thanks_to_pacing() {
    let sshd = Sshd::start_with(50);
    let transport = Arc::new(Transport::new(config(&sshd)));
    let mut tasks = tokio::task::JoinSet::new();
    for addr in sshd.addresses.iter().skip(1) {
        let t = target(&sshd, &format!("srv-{addr}"), &addr.to_string());
        let transport = Arc::clone(&transport);
        tasks.spawn(async move { transport.exec(&t, request("echo ok")).await });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        let out = done.unwrap().unwrap_or_else(|e| panic!("{e}: {e:?}"));
        assert_eq!(out.stdout, b"ok\n");
        ok += 1;
    }
    assert_eq!(ok, 50);
    assert_eq!(transport.open_connections(), 50);
    transport.close_all().await;
}

#[tokio::test]
async fn fetch_host_key_returns_the_server_key() {
    let sshd = Sshd::start();
    let key = fetch_host_key("127.0.0.1", sshd.port, Duration::from_secs(5))
        .await
        .unwrap();
    let expected = PublicKey::from_openssh(&sshd.host_key_line).unwrap();
    assert_eq!(key.key_data(), expected.key_data());
    assert!(fingerprint(&key).starts_with("SHA256:"));
}

#[tokio::test]
async fn silent_server_times_out_with_a_clear_error() {
    // The kernel completes the TCP handshake from the backlog, but nobody ever speaks SSH.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let transport = Transport::new(TransportConfig {
        known_hosts_files: Vec::new(),
        agent_socket: None,
        connect_timeout: Duration::from_millis(500),
        ..TransportConfig::default()
    });
    let t = Target {
        name: "mute".into(),
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        identity_file: None,
        host_key_pins: Vec::new(),
    };
    let started = Instant::now();
    let err = transport.exec(&t, request("true")).await.unwrap_err();
    assert!(matches!(err, SshError::ConnectTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out after 500ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn reset_handshakes_are_retried_a_bounded_number_of_times() {
    // Accepts and hangs up at once, like sshd past MaxStartups.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let server = {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok(Ok((socket, _))) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await {
                drop(socket);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let transport = Transport::new(TransportConfig {
        known_hosts_files: Vec::new(),
        agent_socket: None,
        ..TransportConfig::default()
    });
    let t = Target {
        name: "flaky".into(),
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        identity_file: None,
        host_key_pins: Vec::new(),
    };
    let err = transport.exec(&t, request("true")).await.unwrap_err();
    assert!(matches!(err, SshError::HandshakeReset { attempts: 4, .. }), "{err:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    server.abort();
}

/// A probe-then-components pass on one session: each script gets its own output and exit
/// status, and nothing of one leaks into the next.
#[tokio::test]
async fn a_shell_session_runs_scripts_in_turn_on_one_channel() {
    let sshd = Sshd::start();
    let transport = Transport::new(config(&sshd));
    let t = target(&sshd, "web1", "127.0.0.1");
    let mut shell = transport
        .shell(&t, Duration::from_secs(60), Duration::from_secs(20))
        .await
        .unwrap();
    let step = Duration::from_secs(20);

    let first = shell
        .run(
            b"secret='s3cr'\\''et'; cd /; echo \"one $$\"; echo warn >&2; exit 3\n",
            step,
        )
        .await
        .unwrap();
    let session_pid = String::from_utf8(first.stdout.clone()).unwrap();
    assert!(session_pid.starts_with("one "), "{session_pid}");
    assert_eq!(first.stderr, b"warn\n");
    assert_eq!(first.exit, Exit::Status(3), "exit ends the step, not the session");

    // Same session shell ($$ is the session's in a subshell), none of the first step's
    // variables or working directory; stdin is empty, not the scripts that follow; no final
    // newline is kept as it was.
    let second = shell
        .run(
            b"printf 'one %s\\n' \"$$\"; echo \"[${secret:-}]\"; pwd; cat; printf end\n",
            step,
        )
        .await
        .unwrap();
    let text = String::from_utf8(second.stdout.clone()).unwrap();
    let home = std::env::var("HOME").unwrap_or_default();
    assert_eq!(text, format!("{session_pid}[]\n{home}\nend"));
    assert!(second.success());

    // A syntax error fails its own step only, quoting included.
    let broken = shell.run(b"echo 'unterminated\n", step).await.unwrap();
    assert!(!broken.success());
    assert!(!broken.stderr.is_empty());
    assert!(shell.is_open());
    let third = shell.run(b"echo \"it's fine\"\n", step).await.unwrap();
    assert_eq!(third.stdout, b"it's fine\n");
    shell.finish().await;

    // The connection is back in the pool and takes plain commands again.
    let after = transport.exec(&t, request("echo alive")).await.unwrap();
    assert_eq!(after.stdout, b"alive\n");
    assert_eq!(transport.open_connections(), 1);
}

/// A step past its deadline ends the session, the client says so, and what it left running
/// is killed at once, long before the session's budget would have the watchdog do it.
#[tokio::test]
async fn a_shell_step_past_its_deadline_ends_the_session() {
    let sshd = Sshd::start();
    let transport = Transport::new(TransportConfig {
        kill_grace: Duration::from_millis(300),
        ..config(&sshd)
    });
    let t = target(&sshd, "web1", "127.0.0.1");
    let pid_file = sshd.dir().join("pid");
    let mut shell = transport
        .shell(&t, Duration::from_secs(120), Duration::from_secs(20))
        .await
        .unwrap();
    let script = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {}; exec sleep 300'\n",
        pid_file.display()
    );
    let started = Instant::now();
    let err = shell.run(script.as_bytes(), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert!(!shell.is_open());
    let refused = shell.run(b"echo never\n", Duration::from_secs(5)).await.unwrap();
    assert_eq!(refused.exit, Exit::Closed);
    assert!(refused.stdout.is_empty());
    shell.finish().await;
    let (pid, ended) = wait_for_exit(&pid_file, Duration::from_secs(10)).await;
    assert!(ended, "remote process {pid} still runs");
    assert!(started.elapsed() < Duration::from_secs(15));
}
