//! The example fleet's components on real Debian 12 servers (systemd, OpenSSH, apt), booted by
//! `tests/realhost/up.sh` in systemd-nspawn containers: every check is made on the server
//! itself. Needs root; `CHOM_SKIP_REALHOST=1` skips (and says so).

#[path = "support/realhost.rs"]
mod realhost;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use realhost::{RealHost, copy_dir, eventually};
use serde_json::Value;

const MARIADB_PASSWORD: &str = "db-pass-e2e-7b1c";
const REDIS_PASSWORD: &str = "redis-pass-e2e-91aa";

/// A chom tree in a temp dir (the repo's scripts, roles and secrets, the example age
/// identity) with one server on `host`.
struct Tree {
    dir: tempfile::TempDir,
    host: RealHost,
    name: String,
}

impl Tree {
    fn new(host: RealHost, name: &str) -> Tree {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo.join("scripts"), &dir.path().join("scripts"));
        copy_dir(&repo.join("inventory.d/roles"), &dir.path().join("inventory.d/roles"));
        copy_dir(&repo.join("secrets.d"), &dir.path().join("secrets.d"));
        let identity = dir.path().join("age-identity.txt");
        std::fs::copy(repo.join("examples/example-age-identity.txt"), &identity).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
        Tree {
            dir,
            host,
            name: name.to_owned(),
        }
    }

    /// Writes the server's file: `spec` is the YAML under `spec:` after address and ssh.
    fn server(&self, user: &str, spec: &str) {
        let text = format!(
            "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  address: {addr}\n  ssh: {{user: {user}, identityFile: {key}}}\n{spec}",
            name = self.name,
            addr = self.host.addr,
            key = self.host.key.display()
        );
        std::fs::write(self.dir.path().join(format!("inventory.d/{}.yaml", self.name)), text).unwrap();
    }

    fn chom(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("CHOM_AGE_IDENTITY", self.dir.path().join("age-identity.txt"))
            .env("CHOM_KNOWN_HOSTS", &self.host.known_hosts)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("CHOM_STATE_DIR")
            .env_remove("CHOM_INVENTORY")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `chom reconcile`; returns its exit code and everything it printed.
    fn reconcile(&self) -> (i32, String) {
        let out = self.chom(&["reconcile"], "");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    #[track_caller]
    fn reconcile_ok(&self) -> String {
        let (code, text) = self.reconcile();
        assert_eq!(code, 0, "chom reconcile failed:\n{text}");
        text
    }

    fn status(&self) -> Value {
        let path = self.dir.path().join(format!("inventory.d/{}.status.yaml", self.name));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        chom::validate::parse_document(Path::new("s.yaml"), &text)
            .unwrap()
            .value
    }

    fn component(&self, name: &str) -> Value {
        self.status()["status"]["components"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    fn condition(&self, type_: &str) -> Value {
        self.status()["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or(Value::Null)
    }

    /// Names of the components the last pass changed.
    fn changed(&self) -> Vec<String> {
        self.status()["status"]["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["changed"] == true)
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn set_secret(&self, name: &str, value: &str) {
        let out = self.chom(&["secrets", "set", name, "--server", &self.name], value);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every file chom wrote in the tree and state dir, for secret-leak checks.
    fn all_output(&self) -> String {
        let mut text = String::new();
        for dir in [self.dir.path().join("inventory.d"), self.dir.path().join(".chom")] {
            walk(&dir, &mut |p| {
                if let Ok(t) = std::fs::read_to_string(p) {
                    text.push_str(&t);
                }
            });
        }
        text
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

const VPS_SPEC: &str = "  role: vpsmanager\n  config: {php_version: \"8.2\", domain: site.test}\n  secrets: [MARIADB_ROOT_PASSWORD, REDIS_PASSWORD]\n";

fn vps_spec(extra_components: &str, extra: &str) -> String {
    let components = if extra_components.is_empty() {
        String::new()
    } else {
        format!("  components:\n{extra_components}")
    };
    format!("{VPS_SPEC}{components}{extra}")
}

const SERVICES: [&str; 4] = ["nginx", "php8.2-fpm", "mariadb", "redis-server"];

#[test]
fn the_hosting_stack_on_a_real_server() {
    let Some(host) = RealHost::up(1) else { return };
    let tree = Tree::new(host, "vpsmanager");
    tree.set_secret("MARIADB_ROOT_PASSWORD", MARIADB_PASSWORD);
    tree.set_secret("REDIS_PASSWORD", REDIS_PASSWORD);
    tree.server("root", &vps_spec("", ""));
    let host = &tree.host;

    // First pass: everything installed and running.
    let first = tree.reconcile_ok();
    assert!(
        !first.contains(MARIADB_PASSWORD) && !first.contains(REDIS_PASSWORD),
        "{first}"
    );
    assert_eq!(tree.changed(), ["motd", "nginx", "php-fpm", "mariadb", "redis"]);
    for service in SERVICES {
        host.assert_running(service);
    }

    // nginx serves a PHP page through php-fpm.
    host.sh("printf '<?php echo \"chom-php-\" . (6 * 7);' > /var/www/site.test/public/index.php");
    let page = || host.sh("curl -s -w ' %{http_code}' -H 'Host: site.test' http://127.0.0.1/index.php");
    assert_eq!(page(), "chom-php-42 200");

    // MariaDB takes the root password from secrets.d over TCP and refuses a wrong one.
    let mysql = |password: &str, sql: &str| {
        host.run(&format!(
            "mysql --protocol=tcp -h127.0.0.1 -uroot -p'{password}' -N -e '{sql}'"
        ))
    };
    assert!(mysql(MARIADB_PASSWORD, "select 1").status.success());
    assert!(!mysql("wrong-password", "select 1").status.success());
    // Redis requires its password.
    let redis = |args: &str| {
        host.sh(&format!("redis-cli --no-auth-warning {args} 2>&1"))
            .trim()
            .to_owned()
    };
    assert_eq!(redis(&format!("-a '{REDIS_PASSWORD}' ping")), "PONG");
    assert!(redis("ping").starts_with("NOAUTH"), "{}", redis("ping"));

    // Each service survives a restart.
    for service in SERVICES {
        host.sh(&format!("systemctl restart {service} && systemctl is-active {service}"));
    }
    assert_eq!(page(), "chom-php-42 200");

    // What the container sees, and the virtualization.
    let hw = &tree.status()["status"]["hardware"];
    assert_eq!(hw["virtualization"], "systemd-nspawn", "{hw}");
    let cpus: u64 = host.sh("nproc").trim().parse().unwrap();
    assert_eq!(hw["cpu"].as_u64(), Some(cpus), "{hw}");
    assert!(
        hw["os"]["prettyName"]
            .as_str()
            .unwrap_or_default()
            .contains("Debian GNU/Linux 12"),
        "{hw}"
    );

    // Idempotence: a second pass checks everything and applies nothing.
    let second = tree.reconcile_ok();
    assert!(tree.changed().is_empty(), "{second}");
    for c in ["motd", "nginx", "php-fpm", "mariadb", "redis"] {
        assert_eq!(tree.component(c)["lastCheckResult"], "InSync", "{c}: {second}");
    }

    // Drift, corrected by the next explicit pass: a stopped service, a hand-edited managed
    // config, a deleted managed file.
    host.sh("systemctl stop redis-server");
    let plan = tree.chom(&["plan"], "");
    assert_eq!(plan.status.code(), Some(3), "{}", String::from_utf8_lossy(&plan.stdout));
    tree.reconcile_ok();
    assert_eq!(host.sh("systemctl is-active redis-server").trim(), "active");
    assert_eq!(tree.component("redis")["lastCheckResult"], "DriftCorrected");
    assert_eq!(tree.condition("Drifted")["reason"], "DriftCorrected");
    let site = "/etc/nginx/conf.d/chom-site.conf";
    let pristine = host.sh(&format!("cat {site}"));
    host.sh(&format!("echo '# edited by hand' >> {site}"));
    tree.reconcile_ok();
    assert_eq!(host.sh(&format!("cat {site}")), pristine, "hand edit reverted");
    host.sh(&format!("rm {site}"));
    tree.reconcile_ok();
    assert_eq!(host.sh(&format!("cat {site}")), pristine, "deleted file restored");
    assert_eq!(page(), "chom-php-42 200");

    // A config change re-applies exactly that component and keeps the data.
    let cnf = "/etc/mysql/mariadb.conf.d/99-chom.cnf";
    let cnf_before = host.sh(&format!("cat {cnf}"));
    assert!(mysql(MARIADB_PASSWORD, "create database chom_e2e").status.success());
    assert_eq!(redis(&format!("-a '{REDIS_PASSWORD}' set chom-e2e kept")), "OK");
    tree.server(
        "root",
        &vps_spec("    - name: mariadb\n      config: {mariadb_max_connections: 57}\n", ""),
    );
    tree.reconcile_ok();
    assert_eq!(tree.changed(), ["mariadb"]);
    assert!(
        host.sh(&format!("cat {cnf}")).contains("57"),
        "the new setting is on the server"
    );
    let dbs = String::from_utf8_lossy(&mysql(MARIADB_PASSWORD, "show databases").stdout).into_owned();
    assert!(dbs.contains("chom_e2e"), "{dbs}");
    assert_eq!(redis(&format!("-a '{REDIS_PASSWORD}' get chom-e2e")), "kept");

    // A configuration nginx -t rejects leaves the old one serving, and says so in status.
    tree.server(
        "root",
        &vps_spec(
            "    - name: mariadb\n      config: {mariadb_max_connections: 57}\n    - name: nginx\n      config: {tls_certificate: /etc/ssl/missing.pem, tls_certificate_key: /etc/ssl/missing.key}\n",
            "",
        ),
    );
    let (code, text) = tree.reconcile();
    assert_eq!(code, 1, "{text}");
    let nginx = tree.component("nginx");
    assert_eq!(nginx["state"], "Failed", "{nginx}");
    assert!(
        nginx["message"].as_str().unwrap_or_default().contains("nginx -t"),
        "{nginx}"
    );
    assert_eq!(
        host.sh(&format!("cat {site}")),
        pristine,
        "the previous files were restored"
    );
    assert_eq!(page(), "chom-php-42 200");

    // Rollback to the first deployment puts the earlier MariaDB config back.
    tree.server(
        "root",
        &vps_spec("    - name: mariadb\n      config: {mariadb_max_connections: 57}\n", ""),
    );
    tree.reconcile_ok();
    let history = tree.chom(&["history", "vpsmanager", "-o", "json"], "");
    let records: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    let first_id = records[0]["id"].as_str().unwrap().to_owned();
    let rollback = tree.chom(&["rollback", "vpsmanager", "--to", &first_id], "");
    assert!(
        rollback.status.success(),
        "{}{}",
        String::from_utf8_lossy(&rollback.stdout),
        String::from_utf8_lossy(&rollback.stderr)
    );
    assert_eq!(host.sh(&format!("cat {cnf}")), cnf_before, "the earlier config is back");
    assert_eq!(tree.condition("Ready")["reason"], "Pinned");
    assert!(tree.chom(&["resume", "vpsmanager"], "").status.success());
    tree.reconcile_ok();
    assert!(host.sh(&format!("cat {cnf}")).contains("57"));

    // Under driftPolicy: report, drift is reported and left alone.
    tree.server(
        "root",
        &vps_spec(
            "    - name: mariadb\n      config: {mariadb_max_connections: 57}\n",
            "  driftPolicy: report\n",
        ),
    );
    tree.reconcile_ok();
    host.sh("systemctl stop redis-server");
    tree.reconcile_ok();
    assert_eq!(
        host.run("systemctl is-active redis-server").status.code(),
        Some(3),
        "left stopped"
    );
    assert_eq!(tree.condition("Drifted")["status"], "True");
    assert_eq!(tree.condition("Ready")["reason"], "DriftFound");
    assert_eq!(tree.component("redis")["state"], "Drifted");

    // No secret value anywhere chom wrote.
    let written = tree.all_output();
    assert!(!written.contains(MARIADB_PASSWORD) && !written.contains(REDIS_PASSWORD));
}

const SMTP_PASSWORD: &str = "smtp-pass-e2e-40d2";

/// The release name of this machine's CPU (the containers share it).
fn release_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A stand-in service: answers every HTTP request on 127.0.0.1:PORT with BODY (perl-base is
/// in every Debian).
const FAKE_HTTP: &str = r#"exec perl -MIO::Socket::INET -e 'my ($port, $body) = @ARGV; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 16, ReuseAddr => 1) or die "listen: $!"; while (my $c = $s->accept) { while (my $l = <$c>) { last if $l =~ /^\r?\n$/ } print $c "HTTP/1.0 200 OK\r\nContent-Length: " . length($body) . "\r\n\r\n$body"; close $c }' "$PORT" "$BODY""#;

/// Release-shaped archives for the `mirror` under `dir`, laid out like the upstream release
/// sites: Loki's zip per version (with SHA256SUMS as given) and Grafana's tarball with its
/// `.sha256`. Upstream releases cannot be fetched here, so these stand in for them: each
/// holds a script that answers HTTP like the real service and names its version.
/// `loki` lists (version, SHA256SUMS: Some(true) right, Some(false) wrong, None absent).
/// Returns the SHA-256 of each archive by file name.
fn build_releases(dir: &Path, loki: &[(&str, Option<bool>)]) -> std::collections::HashMap<String, String> {
    let arch = release_arch();
    let mut digests = std::collections::HashMap::new();
    let work = tempfile::tempdir().unwrap();
    let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
    use std::os::unix::fs::PermissionsExt as _;
    for (version, sums) in loki {
        let binary = work.path().join(format!("loki-linux-{arch}"));
        std::fs::write(
            &binary,
            format!(
                "#!/bin/sh\n# Test stand-in for Loki {version}.\nfor a in \"$@\"; do case $a in -verify-config) exit 0 ;; -config.file=*) CFG=${{a#*=}} ;; esac; done\nPORT=$(sed -n 's/^ *http_listen_port: *//p' \"$CFG\")\nBODY='loki {version} ready'\n{FAKE_HTTP}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let vdir = dir.join(format!("v{version}"));
        std::fs::create_dir_all(&vdir).unwrap();
        let zip_name = format!("loki-linux-{arch}.zip");
        run(Command::new("zip").arg("-qj").arg(vdir.join(&zip_name)).arg(&binary));
        let digest = sha256_hex(&std::fs::read(vdir.join(&zip_name)).unwrap());
        if let Some(right) = sums {
            let listed = if *right { digest.clone() } else { "0".repeat(64) };
            std::fs::write(
                vdir.join("SHA256SUMS"),
                format!("{}  logcli-linux-{arch}.zip\n{listed}  {zip_name}\n", "1".repeat(64)),
            )
            .unwrap();
        }
        digests.insert(format!("v{version}/{zip_name}"), digest);
    }
    let top = work.path().join("grafana-v11.5.2");
    std::fs::create_dir_all(top.join("bin")).unwrap();
    std::fs::write(
        top.join("bin/grafana"),
        format!(
            "#!/bin/sh\n# Test stand-in for Grafana 11.5.2.\ncase $1 in\n  cli) cat >/dev/null; exit 0 ;;\n  server) for a in \"$@\"; do case $a in --config=*) INI=${{a#*=}} ;; esac; done ;;\n  *) exit 2 ;;\nesac\nPORT=$(sed -n 's/^http_port = //p' \"$INI\")\nBODY='grafana 11.5.2'\n{FAKE_HTTP}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(top.join("bin/grafana"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tarball = format!("grafana-11.5.2.linux-{arch}.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(dir.join(&tarball))
        .arg("-C")
        .arg(work.path())
        .arg("grafana-v11.5.2"));
    let digest = sha256_hex(&std::fs::read(dir.join(&tarball)).unwrap());
    std::fs::write(dir.join(format!("{tarball}.sha256")), format!("{digest}\n")).unwrap();
    digests.insert(tarball, digest);
    digests
}

fn monitoring_spec(mirror: &str, loki: &str) -> String {
    format!(
        "  components:\n    - name: motd\n    - name: node-exporter\n    - name: prometheus\n    - name: alertmanager\n{loki}    - name: grafana\n    - name: nginx\n  config:\n    role: observability\n    retention_days: 15\n    mirror: {mirror}\n    grafana_domain: grafana.test\n    prometheus: {{scrape_interval: 5s}}\n    smtp: {{host: mail.example.test, port: 587, username: alerts, from: am@example.test}}\n    alert_email: ops@example.test\n  secrets: [SMTP_PASSWORD]\n"
    )
}

#[test]
fn the_monitoring_stack_on_a_real_server() {
    let Some(host) = RealHost::up(2) else { return };
    let tree = Tree::new(host, "observability");
    tree.set_secret("SMTP_PASSWORD", SMTP_PASSWORD);
    // Loki and Grafana come from a mirror on the host side of the link, with the
    // release-shaped archives built above (upstream cannot be reached from here).
    let releases = tempfile::tempdir().unwrap();
    let digests = build_releases(
        releases.path(),
        &[("3.4.2", Some(true)), ("3.9.0", Some(false)), ("3.9.1", None)],
    );
    let mirror = realhost::Mirror::serve(&tree.host, releases.path());
    tree.server("root", &monitoring_spec(&mirror.url, "    - name: loki\n"));
    let host = &tree.host;
    let first = tree.reconcile_ok();
    assert!(!first.contains(SMTP_PASSWORD), "{first}");
    for service in [
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
        "loki",
        "grafana-server",
        "nginx",
    ] {
        host.assert_running(service);
    }
    eventually("Prometheus ready", 60, || {
        host.ok("curl -sf http://127.0.0.1:9090/-/ready")
    });
    eventually("Alertmanager ready", 60, || {
        host.ok("curl -sf http://127.0.0.1:9093/-/ready")
    });
    assert!(
        host.sh("curl -s http://127.0.0.1:9100/metrics")
            .contains("node_cpu_seconds_total")
    );

    // Loki and Grafana: verified against the checksums published beside the archives, the
    // digest recorded in status; nginx proxies grafana_domain to Grafana.
    let arch = release_arch();
    let loki_zip = format!("v3.4.2/loki-linux-{arch}.zip");
    let tarball = format!("grafana-11.5.2.linux-{arch}.tar.gz");
    eventually("Loki answering", 30, || {
        host.run("curl -sf http://127.0.0.1:3100/ready").stdout == b"loki 3.4.2 ready"
    });
    eventually("Grafana through nginx", 30, || {
        host.run("curl -sf -H 'Host: grafana.test' http://127.0.0.1/").stdout == b"grafana 11.5.2"
    });
    let artifact = |component: &str| tree.component(component)["artifacts"][0].clone();
    assert_eq!(artifact("loki")["sha256"], digests[&loki_zip].as_str());
    assert_eq!(artifact("loki")["url"], format!("{}/{loki_zip}", mirror.url));
    assert_eq!(
        artifact("loki")["verifiedBy"],
        format!("published {}/v3.4.2/SHA256SUMS", mirror.url)
    );
    assert_eq!(artifact("grafana")["sha256"], digests[&tarball].as_str());
    assert_eq!(
        artifact("grafana")["verifiedBy"],
        format!("published {}/{tarball}.sha256", mirror.url)
    );

    // Prometheus scrapes node-exporter, itself and Alertmanager, all up.
    eventually("every scrape target up", 90, || {
        let text = host.sh("curl -s 'http://127.0.0.1:9090/api/v1/query?query=up'");
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let up = |job: &str| {
            results
                .iter()
                .any(|r| r["metric"]["job"].as_str().is_some_and(|j| j.contains(job)) && r["value"][1] == "1")
        };
        results.len() >= 3
            && results.iter().all(|r| r["value"][1] == "1")
            && up("node")
            && up("prometheus")
            && up("alertmanager")
    });
    // The SMTP settings and password are rendered into Alertmanager's config, the password
    // in a file of its own, never in anything chom wrote.
    let config = host.sh("cat /etc/prometheus/alertmanager.yml");
    assert!(config.contains("mail.example.test:587"), "{config}");
    assert!(config.contains("smtp_auth_password_file"), "{config}");
    assert!(!config.contains(SMTP_PASSWORD), "{config}");
    assert_eq!(
        host.sh("cat /etc/prometheus/alertmanager-smtp-password").trim(),
        SMTP_PASSWORD
    );
    assert!(host.ok("amtool check-config /etc/prometheus/alertmanager.yml"));
    let written = tree.all_output();
    assert!(!written.contains(SMTP_PASSWORD));

    // Idempotence, and nothing downloaded again: the installed releases carry their digests.
    let asked = mirror.requests().len();
    tree.reconcile_ok();
    assert!(tree.changed().is_empty());
    assert_eq!(mirror.requests()[asked..], [] as [String; 0]);
    assert_eq!(artifact("loki")["sha256"], digests[&loki_zip].as_str());
    // Drift on a managed config: reverted, and Prometheus still ready.
    let rules = "/etc/prometheus/prometheus.yml";
    let pristine = host.sh(&format!("cat {rules}"));
    host.sh(&format!("echo '# edited by hand' >> {rules}"));
    tree.reconcile_ok();
    assert_eq!(host.sh(&format!("cat {rules}")), pristine);
    eventually("Prometheus ready again", 60, || {
        host.ok("curl -sf http://127.0.0.1:9090/-/ready")
    });

    // A checksum that does not match what the release publishes: nothing installed, the old
    // release still serving, the failure in status.
    let still_serving = || {
        assert_eq!(host.sh("readlink /opt/loki/current").trim(), "/opt/loki/3.4.2");
        eventually("Loki 3.4.2 answering", 30, || {
            host.run("curl -sf http://127.0.0.1:3100/ready").stdout == b"loki 3.4.2 ready"
        });
    };
    tree.server(
        "root",
        &monitoring_spec(&mirror.url, "    - name: loki\n      version: 3.9.0\n"),
    );
    let (code, text) = tree.reconcile();
    assert_ne!(code, 0, "{text}");
    let loki = tree.component("loki");
    assert_eq!(loki["state"], "Failed", "{loki}");
    assert!(
        loki["message"]
            .as_str()
            .unwrap_or_default()
            .contains("SHA-256 mismatch"),
        "{loki}"
    );
    assert!(!host.ok("test -e /opt/loki/3.9.0"));
    still_serving();

    // No published checksum: refused, nothing installed.
    tree.server(
        "root",
        &monitoring_spec(&mirror.url, "    - name: loki\n      version: 3.9.1\n"),
    );
    let (code, text) = tree.reconcile();
    assert_ne!(code, 0, "{text}");
    let loki = tree.component("loki");
    assert!(
        loki["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot fetch the published checksum"),
        "{loki}"
    );
    assert!(!host.ok("test -e /opt/loki/3.9.1"));
    still_serving();

    // A pinned checksum: installed without asking for SHA256SUMS; exactly Loki re-applied.
    let pinned = &digests[&format!("v3.9.1/loki-linux-{arch}.zip")];
    tree.server(
        "root",
        &monitoring_spec(
            &mirror.url,
            &format!("    - name: loki\n      version: 3.9.1\n      config: {{sha256: {pinned}}}\n"),
        ),
    );
    let asked = mirror.requests().len();
    tree.reconcile_ok();
    assert_eq!(mirror.requests()[asked..], [format!("/v3.9.1/loki-linux-{arch}.zip")]);
    assert_eq!(tree.changed(), ["loki"]);
    assert_eq!(host.sh("readlink /opt/loki/current").trim(), "/opt/loki/3.9.1");
    eventually("Loki 3.9.1 answering", 30, || {
        host.run("curl -sf http://127.0.0.1:3100/ready").stdout == b"loki 3.9.1 ready"
    });
    assert_eq!(artifact("loki")["verifiedBy"], "config sha256");
    assert_eq!(artifact("loki")["sha256"], pinned.as_str());
}

#[test]
fn a_non_root_login_with_sudo_and_prune_on_a_real_server() {
    let Some(host) = RealHost::up(3) else { return };
    // The test sets up the login: a `deploy` user with passwordless sudo and the same key.
    host.sh(
        "useradd -m -s /bin/bash deploy && install -d -m 700 -o deploy -g deploy ~deploy/.ssh \
         && install -m 600 -o deploy -g deploy /root/.ssh/authorized_keys ~deploy/.ssh/authorized_keys \
         && echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy",
    );
    let tree = Tree::new(host, "web-deploy");
    tree.set_secret("REDIS_PASSWORD", REDIS_PASSWORD);
    let spec = |components: &str, prune: bool| {
        format!("  components:\n{components}  secrets: [REDIS_PASSWORD]\n  prune: {prune}\n")
    };
    let both = "    - name: motd\n    - name: redis\n";
    tree.server("deploy", &spec(both, false));
    let host = &tree.host;
    tree.reconcile_ok();
    assert_eq!(tree.changed(), ["motd", "redis"]);
    assert_eq!(host.sh("systemctl is-active redis-server").trim(), "active");
    assert_eq!(
        host.sh(&format!("redis-cli --no-auth-warning -a '{REDIS_PASSWORD}' ping"))
            .trim(),
        "PONG"
    );
    // Scripts ran as root through sudo: the files they own are root's.
    assert_eq!(host.sh("stat -c %U /etc/redis/redis.chom.conf").trim(), "root");
    tree.reconcile_ok();
    assert!(tree.changed().is_empty(), "idempotent through sudo");
    host.sh("systemctl stop redis-server");
    tree.reconcile_ok();
    assert_eq!(
        host.sh("systemctl is-active redis-server").trim(),
        "active",
        "drift corrected"
    );

    // Dropped with prune: true: stopped, disabled, its config gone, its data kept.
    host.sh(&format!(
        "redis-cli --no-auth-warning -a '{REDIS_PASSWORD}' set chom-e2e kept && redis-cli --no-auth-warning -a '{REDIS_PASSWORD}' save"
    ));
    tree.server("deploy", &spec("    - name: motd\n", true));
    tree.reconcile_ok();
    assert!(!host.ok("systemctl is-active redis-server"), "stopped");
    assert!(!host.ok("systemctl is-enabled redis-server"), "disabled");
    assert!(
        !host.ok("test -e /etc/redis/redis.chom.conf"),
        "its config (and password) removed"
    );
    assert!(host.ok("test -s /var/lib/redis/dump.rdb"), "its data kept");
    assert!(tree.component("redis").is_null(), "no longer in the status");
}
