//! `chom secrets` end to end: the real binary in a temp dir, values through stdin only,
//! and no value ever in a file, on stdout or on stderr.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const VALUE: &str = "pl41n-text 'quoted' value";

struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        std::fs::create_dir(root.join("keys")).unwrap();
        Self { _tmp: tmp, root }
    }

    fn secrets(&self) -> PathBuf {
        self.root.join("secrets.d")
    }

    fn key(&self) -> PathBuf {
        self.root.join("keys/me.key")
    }

    fn chom(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chom"))
            .arg("secrets")
            .args(args)
            .current_dir(&self.root)
            .env_remove("CHOM_AGE_IDENTITY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("CHOM_SECRETS")
            .env_remove("CHOM_INVENTORY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // A command that fails before reading stdin (a bad name) closes the pipe early.
            let _ = pipe.write_all(text.as_bytes());
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.contains(VALUE) && !text.contains("pl41n"),
            "a value was printed: {text}"
        );
        out
    }

    fn keygen(&self) {
        let key = self.key();
        let out = self.chom(&["keygen", "--out", key.to_str().unwrap()], None);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).starts_with("age1"));
    }

    fn with_key(&self) -> [String; 2] {
        ["--age-identity".to_owned(), self.key().to_string_lossy().into_owned()]
    }

    fn all_files_text(&self) -> String {
        fn walk(dir: &Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut text = String::new();
        walk(&self.secrets(), &mut text);
        text
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

#[test]
fn set_reads_stdin_and_no_file_holds_the_value_in_plaintext() {
    let t = Tree::new();
    t.keygen();
    let out = t.chom(&["set", "SMTP_PASSWORD"], Some(&format!("{VALUE}\n")));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = t.chom(&["set", "SMTP_PASSWORD", "--server", "web-1"], Some(VALUE));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let files = t.all_files_text();
    assert!(files.contains("SMTP_PASSWORD") && files.contains("BEGIN AGE ENCRYPTED FILE"));
    assert!(!files.contains(VALUE) && !files.contains("pl41n"), "plaintext on disk");
    let mode = std::fs::metadata(t.secrets().join("common.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    let list = t.chom(&["list"], None);
    assert_eq!(code(&list), 0);
    assert!(stdout(&list).contains("SMTP_PASSWORD  common"), "{}", stdout(&list));
    assert!(stdout(&list).contains("SMTP_PASSWORD  web-1"), "{}", stdout(&list));

    let key = t.with_key();
    let check = t.chom(&["check", &key[0], &key[1]], None);
    assert_eq!(code(&check), 0, "{}{}", stdout(&check), stderr(&check));
    assert!(stdout(&check).contains("2 decrypted"), "{}", stdout(&check));
}

#[test]
fn an_empty_value_is_refused_with_usage_exit_code() {
    let t = Tree::new();
    t.keygen();
    let out = t.chom(&["set", "A"], Some("\n"));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
    let out = t.chom(&["set", "lower"], Some(VALUE));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a valid secret name"), "{}", stderr(&out));
}

#[test]
fn generate_never_replaces_a_value_without_force() {
    let t = Tree::new();
    t.keygen();
    let common = t.secrets().join("common.yaml");
    let out = t.chom(&["set", "GRAFANA_ADMIN_PASSWORD", "--generate"], None);
    assert!(
        stdout(&out).contains("generated GRAFANA_ADMIN_PASSWORD (32 characters)"),
        "{}",
        stdout(&out)
    );
    let first = std::fs::read(&common).unwrap();
    let out = t.chom(&["set", "GRAFANA_ADMIN_PASSWORD", "--generate"], None);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("kept GRAFANA_ADMIN_PASSWORD"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read(&common).unwrap(),
        first,
        "a re-run must not touch the file"
    );
    let out = t.chom(&["set", "GRAFANA_ADMIN_PASSWORD", "--generate", "--force"], None);
    assert!(stdout(&out).contains("replaced"), "{}", stdout(&out));
    assert_ne!(std::fs::read(&common).unwrap(), first);
}

/// Writes one Server file per entry of `{"server": ["SECRET", …]}` into inventory.d/.
fn write_inventory(root: &std::path::Path, references: &str) {
    let map: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(references).unwrap();
    let dir = root.join("inventory.d");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (server, secrets)) in map.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{server}.yaml")),
            format!(
                "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: {server}\nspec:\n  address: 192.0.2.{}\n  secrets: [{}]\n",
                i + 1,
                secrets.join(", ")
            ),
        )
        .unwrap();
    }
}

#[test]
fn check_fails_on_a_missing_reference_and_warns_on_old_values() {
    let t = Tree::new();
    t.keygen();
    t.chom(&["set", "OLD_TOKEN"], Some(VALUE));
    let common = t.secrets().join("common.yaml");
    let text = std::fs::read_to_string(&common).unwrap();
    let stamp = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("updatedAt: "))
        .unwrap()
        .to_owned();
    std::fs::write(&common, text.replace(&stamp, "2020-01-01T00:00:00Z")).unwrap();
    let refs = t.root.join("refs.json");
    std::fs::write(&refs, r#"{"web-1": ["OLD_TOKEN"], "web-2": []}"#).unwrap();
    let key = t.with_key();

    let run = |extra: &[&str], references: &str| {
        std::fs::write(&refs, references).unwrap();
        write_inventory(&t.root, references);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chom"));
        cmd.args(["secrets", "check", &key[0], &key[1]])
            .args(extra)
            .current_dir(&t.root)
            .env_remove("CHOM_INVENTORY")
            .env_remove("CHOM_AGE_IDENTITY");
        cmd.output().unwrap()
    };
    let ok = run(&["--max-age", "30"], r#"{"web-1": ["OLD_TOKEN"], "web-2": []}"#);
    assert_eq!(code(&ok), 0, "{}{}", stdout(&ok), stderr(&ok));
    assert!(
        stdout(&ok).contains("warning: ") && stdout(&ok).contains("OLD_TOKEN was set"),
        "{}",
        stdout(&ok)
    );
    assert!(!stdout(&ok).contains("pl41n"));

    let missing = run(&[], r#"{"web-1": ["OLD_TOKEN", "NOT_THERE"]}"#);
    assert_eq!(code(&missing), 1, "{}", stdout(&missing));
    assert!(
        stdout(&missing).contains("server web-1 references secret NOT_THERE"),
        "{}",
        stdout(&missing)
    );
    assert!(!stdout(&missing).contains("pl41n"));
}

#[test]
fn a_world_readable_identity_is_refused_with_the_chmod_to_run() {
    let t = Tree::new();
    t.keygen();
    std::fs::set_permissions(t.key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = t.with_key();
    let out = t.chom(&["check", &key[0], &key[1]], None);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    let out = t.chom(&["rotate", &key[0], &key[1]], None);
    assert_eq!(code(&out), 2);
}

#[test]
fn a_plaintext_value_in_a_file_is_refused_without_printing_it() {
    let t = Tree::new();
    t.keygen();
    std::fs::write(
        t.secrets().join("common.yaml"),
        format!("apiVersion: chom.dev/v1\nkind: SecretSet\nmetadata: {{name: common}}\nsecrets:\n  PW: \"{VALUE}\"\n"),
    )
    .unwrap();
    let out = t.chom(&["list"], None);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("plaintext value"), "{}", stderr(&out));
    let key = t.with_key();
    let out = t.chom(&["check", &key[0], &key[1]], None);
    assert_eq!(code(&out), 1);
}

#[test]
fn rotate_re_encrypts_for_a_new_recipient() {
    let t = Tree::new();
    t.keygen();
    t.chom(&["set", "A_SECRET"], Some(VALUE));
    let second = t.root.join("keys/second.key");
    let out = t.chom(&["keygen", "--out", second.to_str().unwrap()], None);
    assert_eq!(code(&out), 0);
    let with_second = ["--age-identity", second.to_str().unwrap()];
    let before = t.chom(&["check", with_second[0], with_second[1]], None);
    assert_eq!(
        code(&before),
        1,
        "the new key cannot read old values yet: {}",
        stdout(&before)
    );
    let blocked = t.chom(&["rotate", with_second[0], with_second[1]], None);
    assert_eq!(code(&blocked), 1, "{}", stdout(&blocked));
    let key = t.with_key();
    let out = t.chom(&["rotate", &key[0], &key[1]], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("re-encrypted 1 secret(s) in 1 file(s) to 2 recipient(s)"),
        "{}",
        stdout(&out)
    );
    let after = t.chom(&["check", with_second[0], with_second[1]], None);
    assert_eq!(code(&after), 0, "{}", stdout(&after));
}

#[test]
fn the_identity_can_come_from_a_systemd_credential() {
    let t = Tree::new();
    t.keygen();
    t.chom(&["set", "A_SECRET"], Some(VALUE));
    let creds = t.root.join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(t.key(), creds.join("age-identity")).unwrap();
    std::fs::set_permissions(creds.join("age-identity"), std::fs::Permissions::from_mode(0o400)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chom"))
        .args(["secrets", "check"])
        .current_dir(&t.root)
        .env_remove("CHOM_AGE_IDENTITY")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let none = t.chom(&["check"], None);
    assert_eq!(code(&none), 2);
    assert!(stderr(&none).contains("no age identity"), "{}", stderr(&none));
}
