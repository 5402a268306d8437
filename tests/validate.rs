//! `chom validate` end to end: the real binary over trees built in temp dirs. Every rule
//! is asserted by code, file, line and column; hostile inputs must give a finding, never
//! a hang or a crash.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const ROLE: &str = "apiVersion: chom.dev/v1
kind: Role
metadata:
  name: web
spec:
  requirements: {minCpu: 1}
";

const SERVER: &str = "apiVersion: chom.dev/v1
kind: Server
metadata:
  name: web-1
spec:
  address: 192.0.2.10
  role: web
  components:
    - name: motd
";

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    /// A valid tree: role `web`, server `web-1`, script `motd`.
    fn new() -> Self {
        let tree = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        tree.write("inventory.d/web.yaml", ROLE);
        tree.write("inventory.d/web-1.yaml", SERVER);
        tree.write("scripts/motd.sh", "#!/bin/sh\ntrue\n");
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn run(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_chom"))
            .current_dir(self.dir.path())
            .args(["validate", "--format", "json"])
            .args(extra)
            .output()
            .unwrap()
    }

    /// Findings as JSON and the exit code.
    fn findings(&self, extra: &[&str]) -> (Vec<Value>, i32) {
        let out = self.run(extra);
        let text = String::from_utf8_lossy(&out.stdout);
        let findings: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (findings, out.status.code().unwrap_or(-1))
    }
}

/// Asserts one finding with this code at file:line:column exists.
#[track_caller]
fn assert_finding(findings: &[Value], code: &str, file: &str, line: u64, column: u64) {
    let found = findings.iter().any(|f| {
        f["code"] == code
            && f["file"].as_str().is_some_and(|p| p.ends_with(file))
            && f["line"] == line
            && f["column"] == column
    });
    assert!(found, "no {code} at {file}:{line}:{column} in {findings:#?}");
}

/// Asserts the tree gives exactly one finding and it is this one.
#[track_caller]
fn assert_only(tree: &Tree, code: &str, file: &str, line: u64, column: u64) -> Value {
    let (findings, exit) = tree.findings(&[]);
    assert_finding(&findings, code, file, line, column);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(exit, if findings[0]["severity"] == "error" { 1 } else { 0 });
    findings[0].clone()
}

#[test]
fn a_valid_tree_has_no_findings_and_exits_0() {
    let tree = Tree::new();
    let (findings, exit) = tree.findings(&[]);
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(exit, 0);
    let human = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(tree.dir.path())
        .arg("validate")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("1 server(s) and 1 role(s) valid"));
}

#[test]
fn the_repository_example_fleet_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(root)
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 server(s) and 2 role(s) valid"), "{text}");
}

#[test]
fn yaml_syntax_errors_point_at_the_problem() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: \"web-1\n",
    );
    let d = assert_only(&tree, "yaml-syntax", "web-1.yaml", 4, 9);
    assert!(d["help"].as_str().unwrap().contains("syntax"));
}

#[test]
fn duplicate_keys_are_errors_at_the_second_key() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        SERVER.replace("  role: web\n", "  role: web\n  role: db\n"),
    );
    assert_only(&tree, "duplicate-key", "web-1.yaml", 8, 3);
}

#[test]
fn empty_files_are_errors() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", "# only a comment\n");
    assert_only(&tree, "empty-file", "web-1.yaml", 1, 1);
}

#[test]
fn several_documents_in_one_file_are_errors() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", format!("{SERVER}---\n{ROLE}"));
    assert_only(&tree, "multiple-documents", "web-1.yaml", 11, 1);
}

#[test]
fn unknown_api_version_and_kind_are_errors() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("chom.dev/v1", "chom.io/v2"));
    let d = assert_only(&tree, "unknown-api-version", "web-1.yaml", 1, 13);
    assert!(d["help"].as_str().unwrap().contains("chom.dev/v1"));
    tree.write("inventory.d/web-1.yaml", SERVER.replace("kind: Server", "kind: Servr"));
    assert_only(&tree, "unknown-kind", "web-1.yaml", 2, 7);
}

#[test]
fn unknown_fields_point_at_the_key() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("  address:", "  adress:"));
    let (findings, exit) = tree.findings(&[]);
    assert_eq!(exit, 1);
    assert_finding(&findings, "unknown-field", "web-1.yaml", 6, 3);
    assert_finding(&findings, "missing-field", "web-1.yaml", 6, 3);
    let unknown = findings.iter().find(|f| f["code"] == "unknown-field").unwrap();
    assert_eq!(unknown["pointer"], "/spec/adress");
}

#[test]
fn ports_outside_1_to_65535_are_errors_at_the_value() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        SERVER.replace("  role: web\n", "  role: web\n  ssh: {port: 70000}\n"),
    );
    let d = assert_only(&tree, "invalid-value", "web-1.yaml", 8, 15);
    assert_eq!(d["pointer"], "/spec/ssh/port");
    tree.write(
        "inventory.d/web-1.yaml",
        SERVER.replace("  role: web\n", "  role: web\n  ssh:\n    port: 0\n"),
    );
    assert_only(&tree, "invalid-value", "web-1.yaml", 9, 11);
}

#[test]
fn names_must_be_rfc1123_labels() {
    let tree = Tree::new();
    tree.write("inventory.d/Web_1.yaml", SERVER.replace("name: web-1", "name: Web_1"));
    std::fs::remove_file(tree.path("inventory.d/web-1.yaml")).unwrap();
    let d = assert_only(&tree, "invalid-value", "Web_1.yaml", 4, 9);
    assert_eq!(d["pointer"], "/metadata/name");
}

#[test]
fn names_must_equal_the_file_stem() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("name: web-1", "name: web-2"));
    let d = assert_only(&tree, "name-mismatch", "web-1.yaml", 4, 9);
    assert!(d["help"].as_str().unwrap().contains("web-2.yaml"));
}

#[test]
fn names_are_unique_across_sub_folders() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/prod/web-1.yaml",
        SERVER.replace("192.0.2.10", "192.0.2.11"),
    );
    let (findings, exit) = tree.findings(&[]);
    assert_eq!(exit, 1);
    assert_eq!(findings.len(), 2, "both files are told: {findings:#?}");
    assert_finding(&findings, "duplicate-name", "inventory.d/prod/web-1.yaml", 4, 9);
    assert_finding(&findings, "duplicate-name", "inventory.d/web-1.yaml", 4, 9);
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("inventory.d/web-1.yaml")
    );
    assert!(
        findings[1]["message"]
            .as_str()
            .unwrap()
            .contains("inventory.d/prod/web-1.yaml")
    );
}

#[test]
fn roles_must_exist() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("role: web", "role: webb"));
    assert_only(&tree, "unknown-role", "web-1.yaml", 7, 9);
}

#[test]
fn dependencies_must_exist() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", format!("{SERVER}  dependsOn: [db-1]\n"));
    assert_only(&tree, "unknown-dependency", "web-1.yaml", 10, 15);
}

#[test]
fn dependency_cycles_are_printed() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", format!("{SERVER}  dependsOn: [web-2]\n"));
    let second = SERVER.replace("web-1", "web-2").replace("192.0.2.10", "192.0.2.12");
    tree.write("inventory.d/web-2.yaml", format!("{second}  dependsOn: [web-1]\n"));
    let d = assert_only(&tree, "dependency-cycle", "web-1.yaml", 10, 15);
    assert!(d["message"].as_str().unwrap().contains("web-1 → web-2 → web-1"), "{d}");
    tree.write("inventory.d/web-2.yaml", second);
    tree.write("inventory.d/web-1.yaml", format!("{SERVER}  dependsOn: [web-1]\n"));
    let d = assert_only(&tree, "dependency-cycle", "web-1.yaml", 10, 15);
    assert!(d["message"].as_str().unwrap().contains("web-1 → web-1"), "{d}");
}

#[test]
fn every_component_needs_a_script() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("name: motd", "name: nginx"));
    let d = assert_only(&tree, "missing-script", "web-1.yaml", 9, 13);
    assert!(d["help"].as_str().unwrap().contains("scripts/nginx.sh"));
    tree.write("scripts/nginx.sh", "true\n");
    let (findings, _) = tree.findings(&[]);
    assert!(findings.is_empty(), "{findings:#?}");
    let mut role = ROLE.to_owned();
    role.push_str("  components: [{name: redis}]\n");
    tree.write("inventory.d/web.yaml", role);
    assert_only(&tree, "missing-script", "web.yaml", 7, 23);
}

#[test]
fn secrets_must_be_defined_in_secrets_d() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        format!("{SERVER}  secrets: [SMTP_PASSWORD]\n"),
    );
    let d = assert_only(&tree, "undefined-secret", "web-1.yaml", 10, 13);
    assert!(d["help"].as_str().unwrap().contains("chom secrets set SMTP_PASSWORD"));
    tree.write("secrets.d/common.yaml", "secrets:\n  SMTP_PASSWORD: {value: x}\n");
    let (findings, exit) = tree.findings(&[]);
    assert!(findings.is_empty() && exit == 0, "{findings:#?}");
}

#[test]
fn a_shared_address_is_a_warning_only() {
    let tree = Tree::new();
    tree.write("inventory.d/web-2.yaml", SERVER.replace("web-1", "web-2"));
    let d = assert_only(&tree, "duplicate-address", "web-2.yaml", 6, 12);
    assert_eq!(d["severity"], "warning");
}

#[test]
fn placeholder_addresses_are_errors() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("192.0.2.10", "0.0.0.0"));
    assert_only(&tree, "invalid-address", "web-1.yaml", 6, 12);
}

#[test]
fn literal_passwords_in_any_config_are_errors() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        format!("{SERVER}      config: {{admin_password: hunter2}}\n  config:\n    smtp:\n      host: mail\n      password: s3cret\n      token: \"\"\n"),
    );
    let (findings, exit) = tree.findings(&[]);
    assert_eq!(exit, 1);
    assert_finding(&findings, "plaintext-secret", "web-1.yaml", 10, 32);
    assert_finding(&findings, "plaintext-secret", "web-1.yaml", 14, 17);
    assert_eq!(findings.len(), 2, "an empty value is not a secret: {findings:#?}");
    let smtp = findings.iter().find(|f| f["line"] == 14).unwrap();
    assert!(
        smtp["help"]
            .as_str()
            .unwrap()
            .contains("chom secrets set SMTP_PASSWORD"),
        "{smtp}"
    );
    for f in &findings {
        assert!(
            !f.to_string().contains("s3cret") && !f.to_string().contains("hunter2"),
            "value leaked: {f}"
        );
    }
    let mut role = ROLE.to_owned();
    role.push_str("  config:\n    db:\n      root_passwd: 12345\n");
    tree.write("inventory.d/web-1.yaml", SERVER);
    tree.write("inventory.d/web.yaml", role);
    assert_only(&tree, "plaintext-secret", "web.yaml", 9, 20);
}

#[test]
fn status_hidden_and_temp_files_are_skipped() {
    let tree = Tree::new();
    for name in [
        "web-1.status.yaml",
        ".web-1.yaml.swp",
        ".hidden.yaml",
        "web-1.yaml~",
        "#web-1.yaml#",
        "web-1.yaml.orig",
        "notes.md",
    ] {
        tree.write(&format!("inventory.d/{name}"), "{{{ not yaml");
    }
    tree.write("inventory.d/.git/config.yaml", "{{{");
    let (findings, exit) = tree.findings(&[]);
    assert!(findings.is_empty() && exit == 0, "{findings:#?}");
    let (findings, exit) = tree.findings(&["inventory.d/web-1.status.yaml"]);
    assert!(findings.is_empty() && exit == 0, "{findings:#?}");
}

#[test]
fn billion_laughs_is_refused_quickly() {
    let tree = Tree::new();
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    tree.write("inventory.d/bomb.yaml", text);
    let (findings, exit) = tree.findings(&[]);
    assert_eq!(exit, 1);
    assert!(
        findings
            .iter()
            .any(|f| f["code"] == "alias-limit" && f["file"].as_str().unwrap().ends_with("bomb.yaml"))
    );
}

#[test]
fn huge_files_are_refused_before_parsing() {
    let tree = Tree::new();
    tree.write("inventory.d/huge.yaml", "a: b\n".repeat(2_000_000));
    assert_only(&tree, "too-large", "huge.yaml", 1, 1);
}

#[test]
fn binary_garbage_and_invalid_utf8_get_findings() {
    let tree = Tree::new();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    tree.write("inventory.d/garbage.yaml", garbage);
    tree.write(
        "inventory.d/latin1.yaml",
        b"apiVersion: chom.dev/v1\nkind: Server\n# caf\xe9\n",
    );
    let (findings, exit) = tree.findings(&[]);
    assert_eq!(exit, 1);
    assert!(
        findings
            .iter()
            .any(|f| f["file"].as_str().unwrap().ends_with("garbage.yaml")),
        "{findings:#?}"
    );
    assert_finding(&findings, "not-utf8", "latin1.yaml", 3, 6);
}

#[test]
fn odd_file_types_never_hang_or_crash() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("inventory.d/x.yaml")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target.yaml", tree.path("inventory.d/broken.yaml")).unwrap();
    let fifo = tree.path("inventory.d/pipe.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (findings, exit) = tree.findings(&[]);
    assert_eq!(exit, 1);
    assert_finding(&findings, "unreadable", "broken.yaml", 1, 1);
    assert_finding(&findings, "not-a-file", "pipe.yaml", 1, 1);
    assert_eq!(findings.len(), 2, "a folder named x.yaml is a folder: {findings:#?}");
    let (findings, _) = tree.findings(&["inventory.d/x.yaml"]);
    assert_finding(&findings, "not-a-file", "x.yaml", 1, 1);
}

#[test]
fn files_given_are_checked_against_the_whole_tree() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-2.yaml",
        SERVER.replace("web-1", "web-2").replace("192.0.2.10", "0.0.0.0"),
    );
    // web-1 references role `web` from a file not given: no unknown-role.
    let (findings, exit) = tree.findings(&["inventory.d/web-1.yaml"]);
    assert!(findings.is_empty() && exit == 0, "{findings:#?}");
    let (findings, exit) = tree.findings(&["inventory.d/web-2.yaml"]);
    assert_eq!(exit, 1);
    assert_finding(&findings, "invalid-address", "web-2.yaml", 6, 12);
}

#[test]
fn github_format_prints_annotations() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("role: web", "role: webb"));
    let out = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(tree.dir.path())
        .args(["validate", "--format", "github"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("::error file=inventory.d/web-1.yaml,line=7,col=9,title=chom unknown-role::"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn human_format_shows_position_snippet_and_help() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", SERVER.replace("role: web", "role: webb"));
    let out = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(tree.dir.path())
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("inventory.d/web-1.yaml:7:9: error[unknown-role]: role `webb` is not defined"),
        "{text}"
    );
    assert!(text.contains("7 |   role: webb"), "{text}");
    assert!(text.contains("= help: "), "{text}");
}

#[test]
fn a_missing_inventory_exits_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chom"))
        .current_dir(dir.path())
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chom init"));
}

#[test]
fn init_scaffolds_a_valid_tree_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let chom = env!("CARGO_BIN_EXE_chom");
    let out = Command::new(chom).current_dir(dir.path()).arg("init").output().unwrap();
    assert!(out.status.success());
    let gitignore = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
    assert!(gitignore.contains("*.status.yaml") && gitignore.contains(".chom/"));
    let validate = Command::new(chom)
        .current_dir(dir.path())
        .arg("validate")
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stdout)
    );
    std::fs::write(dir.path().join("inventory.d/web-1.yaml"), "mine").unwrap();
    let again = Command::new(chom).current_dir(dir.path()).arg("init").output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("inventory.d/web-1.yaml")).unwrap(),
        "mine"
    );
}

#[test]
fn documents_that_are_not_mappings_are_errors() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", "- just\n- a list\n");
    assert_only(&tree, "not-a-mapping", "web-1.yaml", 1, 1);
}

#[test]
fn complex_keys_and_deep_nesting_are_errors() {
    let tree = Tree::new();
    tree.write(
        "inventory.d/web-1.yaml",
        format!("{SERVER}  config:\n    ? [a, b]\n    : c\n"),
    );
    assert_only(&tree, "complex-key", "web-1.yaml", 11, 7);
    let deep = format!("{SERVER}  config:\n    x: {}1{}\n", "[".repeat(80), "]".repeat(80));
    tree.write("inventory.d/web-1.yaml", deep);
    let d = assert_only(&tree, "too-deep", "web-1.yaml", 11, 70);
    assert!(d["message"].as_str().unwrap().contains("64"));
}

#[test]
fn durations_must_be_written_with_a_unit() {
    let tree = Tree::new();
    tree.write("inventory.d/web-1.yaml", format!("{SERVER}  interval: 10x\n"));
    let d = assert_only(&tree, "invalid-value", "web-1.yaml", 10, 13);
    assert_eq!(d["pointer"], "/spec/interval");
}

#[test]
fn the_daemon_cache_reparses_only_changed_files_and_forgets_deleted_ones() {
    let tree = Tree::new();
    let layout = chom::inventory::Layout::beside(&tree.path("inventory.d"));
    let cache = chom::validate::Cache::default();
    let first = chom::validate::load_cached(&layout, &cache).unwrap();
    assert!(first.diagnostics.is_empty());
    assert_eq!(first.inventory.servers["web-1"].server.spec.address, "192.0.2.10");
    tree.write("inventory.d/web-1.yaml", SERVER.replace("192.0.2.10", "192.0.2.99"));
    tree.write(
        "inventory.d/web-2.yaml",
        SERVER.replace("web-1", "web-2").replace("role: web", "role: nope"),
    );
    let second = chom::validate::load_cached(&layout, &cache).unwrap();
    assert_eq!(
        second.inventory.servers["web-1"].server.spec.address, "192.0.2.99",
        "a changed file is re-read"
    );
    assert!(
        second.diagnostics.iter().any(|d| d.code == "unknown-role"),
        "cross-file rules still run"
    );
    std::fs::remove_file(tree.path("inventory.d/web-2.yaml")).unwrap();
    let third = chom::validate::load_cached(&layout, &cache).unwrap();
    assert!(third.diagnostics.is_empty() && !third.inventory.servers.contains_key("web-2"));
    assert_eq!(
        third.inventory,
        chom::validate::load(&layout, &[]).unwrap().inventory,
        "same answer as a cold load"
    );
}
