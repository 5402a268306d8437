//! The mapping from the Bash deployer's `configs/inventory.yaml` to chom's tree: Server and
//! Role resources for `inventory.d/`, password-like values for `secrets.d/`, findings at
//! their line and column, the files to create and the order to create them in. It never
//! overwrites a file and never puts a secret value in plaintext into a file or a finding.
//! It must not parse arguments or print: `cli/import_legacy.rs` does both.

mod mapper;
mod plaintext;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diag::{self, Diagnostic};
use crate::inventory::Layout;
use crate::resource::{ApiVersion, Metadata, Requirements, Role, RoleKind, RoleSpec};
use crate::secrets::{self, MIN_REDACTED_LEN, Scope, SecretValue, SecretsError};
use crate::status::Timestamp;
use crate::validate::Document;

/// The seed deployer's roles and their minimum hardware: name, CPUs, memory (MiB), disk (GB).
pub const SEED_ROLES: [(&str, u32, u64, u64); 2] = [("observability", 1, 2048, 20), ("vpsmanager", 2, 4096, 40)];

/// Keys of a legacy server entry that have a place in a Server.
const SERVER_KEYS: [&str; 8] = [
    "hostname",
    "ip",
    "ssh_user",
    "ssh_port",
    "ssh_key_path",
    "specs",
    "components",
    "config",
];

/// A password-like value on its way into `secrets.d/`.
pub struct Moved {
    /// The secret's name (`SMTP_PASSWORD`).
    pub name: String,
    /// The file it goes into.
    pub scope: Scope,
    /// Where it was in the legacy file (`observability.config.smtp.password`).
    pub from: String,
    /// The value itself; never printed.
    pub value: SecretValue,
}

/// A mapped server and the values moved out of it.
pub struct Imported {
    /// The Server resource.
    pub server: crate::resource::Server,
    /// The values moved out of its entry into its own secrets file.
    pub secrets: Vec<Moved>,
}

/// Everything mapped from one legacy file.
pub struct Mapping {
    /// The servers, sorted by name.
    pub servers: Vec<Imported>,
    /// Values moved out of top-level settings into `common.yaml`.
    pub common: Vec<Moved>,
    /// Findings, sorted by position.
    pub findings: Vec<Diagnostic>,
    /// Where password-like values were, so that snippet lines never show them.
    pub secret_pointers: Vec<String>,
}

impl Mapping {
    /// Every moved value: the common ones first, then each server's.
    pub fn moved(&self) -> Vec<&Moved> {
        self.common
            .iter()
            .chain(self.servers.iter().flat_map(|s| &s.secrets))
            .collect()
    }
}

/// One file to create.
pub struct Target {
    /// Where it goes.
    pub path: PathBuf,
    /// Its whole text.
    pub content: String,
    /// What it is, for people (`Server web-1`).
    pub what: String,
}

/// One step of [`write`], reported as it is done.
pub enum Written<'a> {
    /// A moved value was stored in `file`.
    Secret {
        /// The value stored.
        moved: &'a Moved,
        /// The secrets file it went into.
        file: PathBuf,
    },
    /// A file was created.
    File(&'a Target),
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The document is not a mapping of server names.
    #[error(
        "{} is not a legacy inventory: it must be a mapping of server names to their settings \
         (`observability: {{hostname: …, ip: …}}`), not {kind}",
        file.display()
    )]
    NotAnInventory {
        /// The legacy file.
        file: PathBuf,
        /// What the document is instead (`a list`).
        kind: &'static str,
    },
    /// A resource could not be rendered as YAML.
    #[error("rendering a {kind}")]
    Render {
        /// `Role` or `Server`.
        kind: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
    /// A moved value could not be stored.
    #[error("storing {name} in {}", dir.display())]
    Store {
        /// The secret's name.
        name: String,
        /// The secrets folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: SecretsError,
    },
    /// A folder could not be created.
    #[error("creating {}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be created, for instance because it appeared since the check.
    #[error("creating {} (it must not exist)", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A created file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Maps the parsed legacy document `doc` of `file`. Each top-level mapping becomes a
/// Server, every password-like value is moved out, and what cannot be mapped is reported
/// and kept as an annotation. `layout` is the tree the result will be written into.
pub fn map(file: &Path, doc: &Document, layout: &Layout) -> Result<Mapping, ImportError> {
    let Value::Object(root) = &doc.value else {
        return Err(ImportError::NotAnInventory {
            file: file.to_owned(),
            kind: kind_of(&doc.value),
        });
    };
    let mut mapper = mapper::Mapper {
        file,
        doc,
        layout,
        findings: Vec::new(),
        secret_pointers: Vec::new(),
    };
    let (servers, common) = mapper.map(root);
    let mut findings = mapper.findings;
    diag::sort(&mut findings);
    Ok(Mapping {
        servers,
        common,
        findings,
        secret_pointers: mapper.secret_pointers,
    })
}

/// What stops the import before anything is written: a target or secrets file that exists
/// already, or moved values with no recipients to encrypt them to.
pub fn problems(layout: &Layout, targets: &[Target], moved: &[&Moved]) -> Vec<String> {
    let mut problems: Vec<String> = targets
        .iter()
        .filter(|t| t.path.symlink_metadata().is_ok())
        .map(|t| format!("{} exists; import-legacy never overwrites a file", t.path.display()))
        .collect();
    let secret_files: BTreeSet<PathBuf> = moved.iter().map(|m| layout.secrets.join(m.scope.file_name())).collect();
    for file in secret_files.iter().filter(|f| f.symlink_metadata().is_ok()) {
        problems.push(format!(
            "{} exists; import-legacy never overwrites a file",
            file.display()
        ));
    }
    if !moved.is_empty() {
        match secrets::Recipients::read(&layout.secrets) {
            Ok(_) => {}
            Err(SecretsError::NoRecipients { path }) => problems.push(format!(
                "{} is missing or lists no key, so the moved secrets cannot be encrypted; run \
                 `chom secrets keygen --out FILE --secrets {}` first",
                path.display(),
                layout.secrets.display()
            )),
            Err(e) => problems.push(format!("{e}")),
        }
    }
    problems
}

/// The legacy text with every password-like value cut out, for the snippet lines under
/// findings: a warning next to a password would otherwise print it. Lines are blanked,
/// never removed, so line numbers stay right.
pub fn redacted(text: &str, doc: &Document, pointers: &[String], moved: &[&Moved]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for pointer in pointers {
        let key = doc.positions.key(pointer);
        let value = doc.positions.value(pointer);
        if let Some(line) = lines.get_mut(value.line.saturating_sub(1)) {
            let cut = line
                .char_indices()
                .nth(value.column.saturating_sub(1))
                .map_or(line.len(), |(i, _)| i);
            line.truncate(cut);
            line.push_str(secrets::REDACTED);
        }
        // A block scalar or a multi-line list goes on while lines are indented past its key.
        for line in lines.iter_mut().skip(value.line) {
            let depth = line.chars().take_while(|c| c.is_whitespace()).count();
            if depth < key.column && !line.trim().is_empty() {
                break;
            }
            line.clear();
        }
    }
    let mut out = lines.join("\n");
    // Belt and braces: a value the positions missed (an alias) is cut out by its text.
    for m in moved.iter().filter(|m| m.value.len() >= MIN_REDACTED_LEN) {
        out = out.replace(m.value.expose(), secrets::REDACTED);
    }
    out
}

/// Server, Role and their rendered files, in the order they are written.
pub fn targets(layout: &Layout, source: &Path, servers: &[Imported]) -> Result<Vec<Target>, ImportError> {
    // Control characters in the path would end the comment line and corrupt the YAML.
    let source = source.display().to_string().replace(char::is_control, "?");
    let mut out = Vec::new();
    for role in seed_roles() {
        let body = serde_saphyr::to_string(&role).map_err(|source| ImportError::Render { kind: "Role", source })?;
        out.push(Target {
            path: layout
                .inventory
                .join("roles")
                .join(format!("{}.yaml", role.metadata.name)),
            content: format!(
                "# yaml-language-server: $schema=../../schemas/role.schema.json\n# Imported from {source} by \
                 `chom import-legacy`: the Bash deployer's minimums for this role.\n{body}"
            ),
            what: format!("Role {}", role.metadata.name),
        });
    }
    for s in servers {
        let body =
            serde_saphyr::to_string(&s.server).map_err(|source| ImportError::Render { kind: "Server", source })?;
        out.push(Target {
            path: layout.inventory.join(format!("{}.yaml", s.server.metadata.name)),
            content: format!(
                "# yaml-language-server: $schema=../schemas/server.schema.json\n# Imported from {source} by \
                 `chom import-legacy`; review it, then run `chom validate`.\n{body}"
            ),
            what: format!("Server {}", s.server.metadata.name),
        });
    }
    Ok(out)
}

/// Writes secrets first, then Roles, then Servers, so that a daemon watching the tree
/// never sees a server whose role or secrets do not exist yet. `report` hears of each
/// step once it is done.
pub fn write(
    layout: &Layout,
    targets: &[Target],
    moved: &[&Moved],
    mut report: impl FnMut(Written<'_>),
) -> Result<(), ImportError> {
    let now = Timestamp::now();
    for &m in moved {
        secrets::set(&layout.secrets, &m.scope, &m.name, &m.value, now).map_err(|source| ImportError::Store {
            name: m.name.clone(),
            dir: layout.secrets.clone(),
            source,
        })?;
        let file = layout.secrets.join(m.scope.file_name());
        report(Written::Secret { moved: m, file });
    }
    for t in targets {
        write_new(&t.path, &t.content)?;
        report(Written::File(t));
    }
    Ok(())
}

/// Creates `path`; `create_new` makes the existence check and the creation one step, so a
/// file that appeared since the check is still never overwritten.
fn write_new(path: &Path, content: &str) -> Result<(), ImportError> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ImportError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| ImportError::Create {
            path: path.to_owned(),
            source,
        })?;
    file.write_all(content.as_bytes()).map_err(|source| ImportError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The seed deployer's roles, with their minimum hardware as requirements.
fn seed_roles() -> Vec<Role> {
    SEED_ROLES
        .iter()
        .map(|&(name, cpu, memory, disk)| Role {
            api_version: ApiVersion::V1,
            kind: RoleKind::Role,
            metadata: named(name.to_owned()),
            spec: RoleSpec {
                requirements: Some(Requirements {
                    min_cpu: Some(cpu),
                    min_memory_mb: Some(memory),
                    min_disk_gb: Some(disk),
                }),
                ..RoleSpec::default()
            },
        })
        .collect()
}

/// Metadata with a name and nothing else.
fn named(name: String) -> Metadata {
    Metadata {
        name,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
    }
}

/// What kind of YAML value `value` is, for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::parse_document;

    #[test]
    fn snippet_source_never_shows_a_secret() {
        let text = "web:\n  config:\n    password: \"hunter2-long\"\n    key_password: |\n      line1\n      \
                    line2\n    host: h\n  ip: 192.0.2.1\n";
        let doc = parse_document(Path::new("legacy.yaml"), text).unwrap();
        let pointers = ["/web/config/password".to_owned(), "/web/config/key_password".to_owned()];
        let out = redacted(text, &doc, &pointers, &[]);
        assert!(
            !out.contains("hunter2") && !out.contains("line1") && !out.contains("line2"),
            "{out}"
        );
        assert!(out.contains("    password: [REDACTED]\n"), "{out}");
        assert_eq!(out.lines().nth(6), Some("    host: h"), "{out}");
        assert_eq!(out.lines().count(), text.lines().count());
    }

    #[test]
    fn a_legacy_entry_maps_to_a_server_and_its_moved_secrets() {
        let text = "ssh_key_path: /root/.ssh/id_ed25519\nobservability:\n  hostname: obs.example.com\n  ip: 0.0.0.0\n  \
                    ssh_port: 2222\n  components: [motd, node_exporter]\n  config:\n    smtp:\n      password: hunter2-long\n";
        let file = Path::new("legacy.yaml");
        let doc = parse_document(file, text).unwrap();
        let layout = Layout::beside(Path::new("/nonexistent/inventory.d"));
        let mapping = map(file, &doc, &layout).unwrap();
        let [imported] = &mapping.servers[..] else {
            panic!("one server expected");
        };
        let server = &imported.server;
        assert_eq!(server.metadata.name, "observability");
        assert_eq!(server.spec.address, "obs.example.com");
        assert_eq!(server.spec.ssh.port, 2222);
        assert_eq!(server.spec.ssh.identity_file.as_deref(), Some("/root/.ssh/id_ed25519"));
        assert_eq!(server.spec.role.as_deref(), Some("observability"));
        assert_eq!(
            server.spec.secrets.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
            ["SMTP_PASSWORD"]
        );
        assert!(
            server
                .spec
                .config
                .get("smtp")
                .is_some_and(|smtp| smtp.get("password").is_none())
        );
        let moved = mapping.moved();
        assert_eq!(moved.len(), 1);
        assert_eq!(
            (moved[0].from.as_str(), moved[0].value.expose()),
            ("observability.config.smtp.password", "hunter2-long")
        );
        let codes: Vec<&str> = mapping.findings.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            ["placeholder-ip", "missing-script", "missing-script"],
            "{:?}",
            mapping.findings
        );
        assert!(mapping.findings.iter().all(|d| !d.message.contains("hunter2")));
        assert!(matches!(
            map(file, &parse_document(file, "- a\n").unwrap(), &layout),
            Err(ImportError::NotAnInventory { kind: "a list", .. })
        ));
    }
}
