//! `chom import-legacy` end to end: the real binary in a temp dir turns the Bash deployer's
//! inventory (tests/fixtures/legacy/) into a tree that `chom validate` accepts, with every
//! password encrypted in secrets.d/ and never in a file, on stdout or on stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The non-empty secret values of the fixtures; none may leave secrets.d/ unencrypted.
const VALUES: [&str; 5] = [
    "Smtp-Pl41ntext-S3cret",
    "M4riaDB-R00t-Pl41ntext",
    "S3-Pl41ntext-Key",
    "Common-Pl41ntext-Token",
    "98765",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy")
        .join(name)
}

struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    /// A temp dir holding a copy of the repo's example scripts, which `chom validate`
    /// needs for every component.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        std::fs::create_dir(root.join("scripts")).unwrap();
        for entry in std::fs::read_dir(scripts)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
        {
            std::fs::copy(entry.path(), root.join("scripts").join(entry.file_name())).unwrap();
        }
        Self { _tmp: tmp, root }
    }

    fn chom(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_chom"))
            .args(args)
            .current_dir(&self.root)
            .env_remove("CHOM_AGE_IDENTITY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("CHOM_SECRETS")
            .env_remove("CHOM_INVENTORY")
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        for value in VALUES {
            assert!(!text.contains(value), "a secret value was printed: {text}");
        }
        out
    }

    fn import(&self, file: &str, extra: &[&str]) -> Output {
        let path = fixture(file);
        let mut args = vec!["import-legacy", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.chom(&args)
    }

    fn keygen(&self) {
        let out = self.chom(&["secrets", "keygen", "--out", "key"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.root.join(relative)).unwrap()
    }

    /// Every file under the root but the scripts, by relative path, with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let relative = path.strip_prefix(root).unwrap().to_owned();
                    out.insert(relative, std::fs::read(&path).unwrap());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(&self.root, &self.root, &mut files);
        files.retain(|p, _| !p.starts_with("scripts"));
        files
    }

    fn assert_no_plaintext_on_disk(&self) {
        for (path, bytes) in self.snapshot() {
            let text = String::from_utf8_lossy(&bytes);
            for value in VALUES {
                assert!(!text.contains(value), "{} holds a secret in plaintext", path.display());
            }
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn server(text: &str) -> chom::resource::Server {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn the_seed_inventory_becomes_a_valid_tree_with_encrypted_secrets() {
    let t = Tree::new();
    t.keygen();
    let out = t.import("inventory.yaml", &[]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("warning[placeholder-ip]"), "{printed}");
    assert!(
        printed.contains("`vpsmanager.config.smtp.password` is empty; dropped"),
        "{printed}"
    );
    assert!(printed.contains("as SMTP_PASSWORD") && printed.contains("as MARIADB_ROOT_PASSWORD"));

    let files: Vec<PathBuf> = t.snapshot().into_keys().collect();
    let expected = [
        "inventory.d/observability.yaml",
        "inventory.d/roles/observability.yaml",
        "inventory.d/roles/vpsmanager.yaml",
        "inventory.d/vpsmanager.yaml",
        "key",
        // The schemas the modelines point at, as `chom init` writes them.
        "schemas/config.schema.json",
        "schemas/role.schema.json",
        "schemas/secretset.schema.json",
        "schemas/server.schema.json",
        "schemas/status.schema.json",
        "secrets.d/.recipients",
        "secrets.d/observability.yaml",
        "secrets.d/vpsmanager.yaml",
    ];
    assert_eq!(files, expected.map(PathBuf::from));

    let obs_text = t.read("inventory.d/observability.yaml");
    assert!(obs_text.starts_with("# yaml-language-server: $schema=../schemas/server.schema.json\n# Imported from"));
    let obs = server(&obs_text);
    assert_eq!(obs.spec.address, "obs.example.com");
    assert_eq!(obs.spec.role.as_deref(), Some("observability"));
    assert_eq!(obs.spec.ssh.user, "deploy");
    assert_eq!(obs.spec.ssh.port, 22);
    assert_eq!(
        obs.spec.ssh.identity_file.as_deref(),
        Some("~/.ssh/chom_deploy_ed25519")
    );
    let specs = obs.spec.expected_specs.unwrap();
    assert_eq!(
        (specs.cpu, specs.memory_mb, specs.disk_gb),
        (Some(1), Some(2048), Some(20))
    );
    let names: Vec<&str> = obs.spec.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["prometheus", "loki", "grafana"]);
    assert_eq!(
        serde_json::Value::Object(obs.spec.config),
        serde_json::json!({"grafana_domain": "grafana.example.com", "smtp": {"host": "smtp.example.com"}})
    );
    assert_eq!(
        obs.spec.secrets,
        [chom::resource::SecretName("SMTP_PASSWORD".to_owned())]
    );
    let vps = server(&t.read("inventory.d/vpsmanager.yaml"));
    assert_eq!(
        vps.spec.secrets,
        [chom::resource::SecretName("MARIADB_ROOT_PASSWORD".to_owned())]
    );
    assert!(vps.spec.config.get("mariadb_root_password").is_none());
    let role: chom::resource::Role = serde_saphyr::from_str(&t.read("inventory.d/roles/vpsmanager.yaml")).unwrap();
    let req = role.spec.requirements.unwrap();
    assert_eq!(
        (req.min_cpu, req.min_memory_mb, req.min_disk_gb),
        (Some(2), Some(4096), Some(40))
    );

    let validate = t.chom(&["validate"]);
    assert_eq!(code(&validate), 0, "{}", stdout(&validate));
    assert!(
        stdout(&validate).contains("2 server(s) and 2 role(s) valid"),
        "{}",
        stdout(&validate)
    );
    let check = t.chom(&["secrets", "check", "--age-identity", "key"]);
    assert_eq!(code(&check), 0, "{}", stdout(&check));
    assert!(
        stdout(&check).contains("2 decrypted, 2 reference(s) resolved"),
        "{}",
        stdout(&check)
    );

    t.assert_no_plaintext_on_disk();
    let identity = chom::secrets::Identity::load(&t.root.join("key")).unwrap();
    let dir = t.root.join("secrets.d");
    for (server, name, value) in [
        ("observability", "SMTP_PASSWORD", VALUES[0]),
        ("vpsmanager", "MARIADB_ROOT_PASSWORD", VALUES[1]),
    ] {
        let resolved = chom::secrets::resolve(&dir, server, [name], &identity).unwrap();
        assert_eq!(resolved.value(name).map(|v| v.expose()), Some(value), "{server} {name}");
    }
}

#[test]
fn a_second_import_refuses_to_overwrite_and_changes_nothing() {
    let t = Tree::new();
    t.keygen();
    assert_eq!(code(&t.import("inventory.yaml", &[])), 0);
    let before = t.snapshot();
    let out = t.import("inventory.yaml", &[]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let printed = stdout(&out);
    for file in [
        "inventory.d/observability.yaml",
        "inventory.d/roles/vpsmanager.yaml",
        "secrets.d/vpsmanager.yaml",
    ] {
        assert!(printed.contains(&format!("{file} exists")), "{file}: {printed}");
    }
    assert!(printed.contains("nothing written"), "{printed}");
    assert_eq!(t.snapshot(), before, "a refused import must not touch a file");
}

#[test]
fn one_existing_target_blocks_every_write() {
    let t = Tree::new();
    t.keygen();
    std::fs::create_dir_all(t.root.join("inventory.d")).unwrap();
    std::fs::write(t.root.join("inventory.d/vpsmanager.yaml"), "# mine\n").unwrap();
    let out = t.import("inventory.yaml", &[]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("inventory.d/vpsmanager.yaml exists"),
        "{}",
        stdout(&out)
    );
    assert!(!t.root.join("inventory.d/observability.yaml").exists());
    assert!(!t.root.join("secrets.d/observability.yaml").exists());
    assert_eq!(t.read("inventory.d/vpsmanager.yaml"), "# mine\n");
}

#[test]
fn dry_run_prints_the_plan_without_values_and_writes_nothing() {
    let t = Tree::new();
    t.keygen();
    let before = t.snapshot();
    let out = t.import("inventory.yaml", &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let printed = stdout(&out);
    for line in [
        "create ./inventory.d/observability.yaml  (Server observability)",
        "create ./inventory.d/roles/observability.yaml  (Role observability)",
        "secret SMTP_PASSWORD  from observability.config.smtp.password  into ./secrets.d/observability.yaml",
        "secret MARIADB_ROOT_PASSWORD  from vpsmanager.config.mariadb_root_password",
        "warning[placeholder-ip]",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
    assert_eq!(t.snapshot(), before, "--dry-run must write nothing");
}

#[test]
fn without_recipients_nothing_is_written_and_keygen_is_named() {
    let t = Tree::new();
    let out = t.import("inventory.yaml", &[]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("run `chom secrets keygen --out FILE"),
        "{}",
        stdout(&out)
    );
    assert!(t.snapshot().is_empty(), "{:?}", t.snapshot().keys());
}

#[test]
fn malformed_legacy_files_get_clear_errors() {
    let t = Tree::new();
    t.keygen();
    let before = t.snapshot();

    let out = t.import("not-a-mapping.yaml", &[]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("must be a mapping of server names"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not a list"), "{}", stderr(&out));

    let out = t.import("empty.yaml", &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("empty.yaml is empty"), "{}", stderr(&out));

    let out = t.import("bad-port.yaml", &[]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("bad-port.yaml:5:13: error[bad-port]: ssh_port \"abc\" is not a TCP port"),
        "{}",
        stdout(&out)
    );

    let broken = t.root.join("broken.yaml");
    std::fs::write(&broken, "observability:\n  ip: [1, 2\n").unwrap();
    let out = t.chom(&["import-legacy", broken.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("broken.yaml:"), "{}", stderr(&out));
    std::fs::remove_file(&broken).unwrap();

    let not_server = t.root.join("scalar-server.yaml");
    std::fs::write(
        &not_server,
        "vpsmanager: wp.example.com\nobservability:\n  ip: 203.0.113.1\n",
    )
    .unwrap();
    let out = t.chom(&["import-legacy", not_server.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("server `vpsmanager` is text, not a mapping of its settings"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_file(&not_server).unwrap();

    let list = t.root.join("secret-list.yaml");
    std::fs::write(
        &list,
        "web:\n  ip: 203.0.113.1\n  config:\n    api_tokens: [Common-Pl41ntext-Token, x]\n",
    )
    .unwrap();
    let out = t.chom(&["import-legacy", list.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("`web.config.api_tokens` is a list of secret values"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_file(&list).unwrap();

    let out = t.chom(&["import-legacy", "no-such-file.yaml"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot read no-such-file.yaml"),
        "{}",
        stderr(&out)
    );
    assert_eq!(t.snapshot(), before, "a failed import must write nothing");
}

#[test]
fn unmapped_keys_are_reported_and_kept_as_annotations() {
    let t = Tree::new();
    std::fs::create_dir(t.root.join("fleet")).unwrap();
    std::fs::rename(t.root.join("scripts"), t.root.join("fleet/scripts")).unwrap();
    let out = t.chom(&["secrets", "keygen", "--out", "key", "--secrets", "fleet/secrets.d"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = t.import("oddities.yaml", &["--out", "fleet"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let printed = stdout(&out);
    for line in [
        "warning[unmapped]: top-level `deployer_version`",
        "warning[unmapped]: `backup` of `observability`",
        "warning[unmapped]: `notes` of `observability`",
        "`observability.config.grafana_admin_password` is empty; dropped",
        "observability.backup.s3_secret_key into fleet/secrets.d/observability.yaml as BACKUP_S3_SECRET_KEY",
        "backup_api_token into fleet/secrets.d/common.yaml as BACKUP_API_TOKEN",
        "warning[numeric-secret]: `observability.config.redis_password` was a YAML number",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
    let obs = server(&t.read("fleet/inventory.d/observability.yaml"));
    let notes = obs.metadata.annotations.get("chom.dev/legacy-notes").unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(notes).unwrap(),
        serde_json::json!(["first", "second"])
    );
    let backup = obs.metadata.annotations.get("chom.dev/legacy-backup").unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(backup).unwrap(),
        serde_json::json!({"schedule": "daily"})
    );
    assert!(
        obs.metadata
            .annotations
            .contains_key("chom.dev/legacy-deployer_version")
    );
    assert_eq!(obs.spec.address, "203.0.113.10");
    assert_eq!(obs.spec.ssh.port, 2222);
    assert!(obs.spec.config.is_empty());

    let validate = t.chom(&["validate", "--inventory", "fleet/inventory.d"]);
    assert_eq!(code(&validate), 0, "{}", stdout(&validate));
    t.assert_no_plaintext_on_disk();
    let identity = chom::secrets::Identity::load(&t.root.join("key")).unwrap();
    let dir = t.root.join("fleet/secrets.d");
    let names = ["BACKUP_API_TOKEN", "BACKUP_S3_SECRET_KEY", "REDIS_PASSWORD"];
    assert_eq!(obs.spec.secrets.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), names);
    let resolved = chom::secrets::resolve(&dir, "observability", names, &identity).unwrap();
    assert_eq!(resolved.value(names[1]).map(|v| v.expose()), Some(VALUES[2]));
    assert_eq!(resolved.value(names[0]).map(|v| v.expose()), Some(VALUES[3]));
    assert_eq!(resolved.value(names[2]).map(|v| v.expose()), Some(VALUES[4]));
    let common = t.read("fleet/secrets.d/common.yaml");
    assert!(common.contains("BACKUP_API_TOKEN:"), "{common}");
}
