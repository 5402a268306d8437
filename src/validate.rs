//! The only road from files to an [`Inventory`]: discover resource files, parse each with
//! positions, check it against the generated schema and the per-file rules, then run the
//! cross-file rules, reporting every problem in one pass. The CLI and the daemon both use
//! it. It never touches the network and never writes a file.

mod config;
mod document;
mod rules;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use config::load_config;
pub use document::{Document, MAX_FILE_BYTES, Positions, escape_pointer_segment, parse as parse_document};
pub use rules::is_password_like;

use crate::diag::{self, Diagnostic, Position};
use crate::inventory::{Inventory, Layout, RoleEntry, ServerEntry};
use crate::resource::{API_VERSION, Role, Server};

/// Validation could not run at all (exit code 2), as opposed to findings about files.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    /// The inventory folder is missing or unreadable.
    #[error("cannot read the inventory folder {path}; run `chom init` to create one, or pass --inventory DIR")]
    Inventory {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The outcome of validating a tree: the valid resources and every finding.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Valid resources only.
    pub inventory: Inventory,
    /// Every finding, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// How many resource files were read.
    pub files: usize,
    /// Secret names referenced by every Server file that parsed, valid or not, so
    /// `chom secrets check` sees references from servers whose secrets are missing.
    pub secret_references: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Report {
    /// True when any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The server a resource file that does not validate would be: its stem, when that is a
/// valid name and the file does not say it is a Role (Roles get no status file).
pub fn invalid_server_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let stem = name.strip_suffix(".yaml").or_else(|| name.strip_suffix(".yml"))?;
    let is_role = crate::fsread::read_to_string(file, crate::fsread::cap::RESOURCE)
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "kind: Role"));
    (!is_role && crate::resource::ServerName::is_valid(stem)).then(|| stem.to_owned())
}

/// A resource file after the per-file stage.
#[derive(Debug, Clone)]
struct Parsed {
    path: PathBuf,
    /// Present when the YAML parsed.
    doc: Option<Document>,
    /// The kind, when the document said a known one.
    resource: Option<Resource>,
    /// The `metadata.name` as written, even when the rest is invalid, so that references
    /// to a broken file do not also report "not defined".
    name: Option<(Kind, String)>,
    /// A Server's `spec.dependsOn` as written (its string entries), even when the rest
    /// is invalid, so a dependency cycle is reported beside a schema error in the same
    /// file instead of hiding behind it.
    depends_on: Vec<String>,
    diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Server,
    Role,
}

#[derive(Debug, Clone)]
enum Resource {
    Server(Box<Server>),
    Role(Box<Role>),
}

/// True for files that are resources: `.yaml`/`.yml`, not hidden, not a status file.
/// Editor and VCS temp files (`.x.swp`, `x.yaml~`, `#x.yaml#`, `x.yaml.orig`) fail the
/// extension or the hidden test.
pub fn is_resource_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && !name.starts_with('#')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".status.yaml")
        && !name.ends_with(".status.yml")
}

/// Lists resource files under `root`, sorted, following symlinks but never looping.
/// Unreadable folders become findings.
fn discover(root: &Path, diagnostics: &mut Vec<Diagnostic>) -> Result<Vec<PathBuf>, FatalError> {
    let entries = std::fs::read_dir(root).map_err(|source| FatalError::Inventory {
        path: root.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    if let Ok(canonical) = root.canonicalize() {
        visited.insert(canonical);
    }
    let mut pending = vec![(root.to_path_buf(), Some(entries))];
    // Bounded: every folder is visited once (canonical paths), so symlink loops end.
    while let Some((dir, entries)) = pending.pop() {
        let entries = match entries.map_or_else(|| std::fs::read_dir(&dir), Ok) {
            Ok(e) => e,
            Err(e) => {
                diagnostics.push(
                    Diagnostic::error(
                        "unreadable",
                        &dir,
                        Position::START,
                        format!("cannot read this folder: {e}"),
                    )
                    .help("check its permissions"),
                );
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_str().is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            // Follows symlinks, as a git-sync checkout is one.
            let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir {
                if let Ok(canonical) = path.canonicalize()
                    && visited.insert(canonical)
                {
                    pending.push((path, None));
                }
            } else if is_resource_file(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Validates the tree in `layout`. `only` restricts the reported findings to those files
/// (as pre-commit passes them) while still checking them against the whole tree; files
/// in `only` outside the inventory folder are added to it.
pub fn load(layout: &Layout, only: &[PathBuf]) -> Result<Report, FatalError> {
    load_with(layout, only, None)
}

/// Per-file results kept between validations by a long-running process (the daemon),
/// so a change set re-parses only the files whose size, mtime or inode changed. The
/// cross-file rules always run over the whole tree.
#[derive(Debug, Default)]
pub struct Cache {
    entries: std::sync::Mutex<std::collections::HashMap<PathBuf, (FileKey, Parsed)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileKey {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

/// [`load`] reusing and refreshing `cache`.
pub fn load_cached(layout: &Layout, cache: &Cache) -> Result<Report, FatalError> {
    load_with(layout, &[], Some(cache))
}

fn load_with(layout: &Layout, only: &[PathBuf], cache: Option<&Cache>) -> Result<Report, FatalError> {
    let mut diagnostics = Vec::new();
    let mut files = discover(&layout.inventory, &mut diagnostics)?;
    let known: HashSet<PathBuf> = files.iter().filter_map(|f| f.canonicalize().ok()).collect();
    let mut wanted = HashSet::new();
    for file in only {
        let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
        wanted.insert(canonical.clone());
        // Status files and non-YAML files passed by a broad hook are skipped silently.
        let skipped = file.is_file() && !is_resource_file(file);
        if !skipped && !known.contains(&canonical) {
            files.push(file.clone());
        }
    }

    let parsed = match cache {
        None => parse_all(&files),
        Some(cache) => parse_changed(&files, cache),
    };
    let defined_secrets = rules::defined_secrets(&layout.secrets, &mut diagnostics);
    rules::script_library(layout, &mut diagnostics);
    let mut parsed = parsed;
    rules::cross_file(&mut parsed, layout, &defined_secrets);

    let mut inventory = Inventory::default();
    let mut secret_references = std::collections::BTreeMap::new();
    for p in &parsed {
        if let Some(Resource::Server(server)) = &p.resource {
            secret_references.insert(
                server.metadata.name.clone(),
                server.spec.secrets.iter().map(|s| s.0.clone()).collect(),
            );
        }
    }
    for p in &mut parsed {
        let clean = !p.diagnostics.iter().any(Diagnostic::is_error);
        diagnostics.append(&mut p.diagnostics);
        match p.resource.take() {
            Some(Resource::Server(server)) if clean => {
                inventory.servers.insert(
                    server.metadata.name.clone(),
                    ServerEntry {
                        server: *server,
                        path: p.path.clone(),
                        status_dir: layout.status.clone(),
                    },
                );
            }
            Some(Resource::Role(role)) if clean => {
                inventory.roles.insert(
                    role.metadata.name.clone(),
                    RoleEntry {
                        role: *role,
                        path: p.path.clone(),
                    },
                );
            }
            _ => {}
        }
    }
    // A server whose role is broken must not be deployed with half its defaults.
    let roles = &inventory.roles;
    inventory
        .servers
        .retain(|_, e| e.server.spec.role.as_ref().is_none_or(|r| roles.contains_key(r)));

    if !only.is_empty() {
        diagnostics.retain(|d| {
            let canonical = d.file.canonicalize().unwrap_or_else(|_| d.file.clone());
            wanted.contains(&canonical)
        });
    }
    diag::sort(&mut diagnostics);
    Ok(Report {
        inventory,
        diagnostics,
        files: files.len(),
        secret_references,
    })
}

/// The per-file stage for files that changed since the cache saw them; the rest are
/// taken from the cache. Files gone from the tree leave the cache.
fn parse_changed(files: &[PathBuf], cache: &Cache) -> Vec<Parsed> {
    let mut entries = cache.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let keys: Vec<Option<FileKey>> = files.iter().map(|f| file_key(f)).collect();
    // The key is taken before parsing: a file changed while it is parsed then differs
    // from its stored key next time and is parsed again, never missed.
    let (stale, stale_keys): (Vec<PathBuf>, Vec<Option<FileKey>>) = files
        .iter()
        .zip(&keys)
        .filter(|(f, k)| k.is_none() || entries.get(*f).is_none_or(|(old, _)| Some(*old) != **k))
        .map(|(f, k)| (f.clone(), *k))
        .unzip();
    for (parsed, key) in parse_all(&stale).into_iter().zip(stale_keys) {
        // Unreadable files keep no key and are tried again every time.
        let key = key.unwrap_or(FileKey {
            len: 0,
            modified: None,
            inode: 0,
        });
        entries.insert(parsed.path.clone(), (key, parsed));
    }
    let wanted: HashSet<&PathBuf> = files.iter().collect();
    entries.retain(|path, _| wanted.contains(path));
    files
        .iter()
        .filter_map(|f| entries.get(f).map(|(_, p)| p.clone()))
        .collect()
}

/// The per-file stage, spread over the machine's cores: a 10,000-file inventory must
/// validate in well under a second in pre-commit.
fn parse_all(files: &[PathBuf]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads <= 1 || files.len() < 64 {
        return files.iter().map(|f| parse_one(f)).collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|f| parse_one(f)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn parse_one(path: &Path) -> Parsed {
    let mut parsed = Parsed {
        path: path.to_path_buf(),
        doc: None,
        resource: None,
        name: None,
        depends_on: Vec::new(),
        diagnostics: Vec::new(),
    };
    match document::read(path) {
        Ok((_, doc)) => {
            check_document(path, &doc, &mut parsed);
            // Only positions outlive the per-file stage, and only those the cross-file
            // rules point at: the JSON value and the other positions are dropped here.
            let mut doc = doc;
            doc.value = Value::Null;
            doc.positions.prune(is_cross_file_pointer);
            parsed.doc = Some(doc);
        }
        Err(d) => parsed.diagnostics.push(d),
    }
    parsed
}

/// Pointers the cross-file rules report at.
fn is_cross_file_pointer(pointer: &str) -> bool {
    matches!(pointer, "" | "/metadata/name" | "/spec/role" | "/spec/address")
        || pointer.starts_with("/spec/dependsOn/")
        || pointer.starts_with("/spec/secrets/")
        || (pointer.starts_with("/spec/components/") && pointer.ends_with("/name"))
}

fn check_document(path: &Path, doc: &Document, parsed: &mut Parsed) {
    let out = &mut parsed.diagnostics;
    let Value::Object(root) = &doc.value else {
        out.push(
            Diagnostic::error(
                "not-a-mapping",
                path,
                doc.positions.value(""),
                "a resource must be a YAML mapping",
            )
            .help("start the file with `apiVersion: chom.dev/v1` and `kind: Server` or `kind: Role`"),
        );
        return;
    };
    match root.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => out.push(
            Diagnostic::error(
                "unknown-api-version",
                path,
                doc.positions.value("/apiVersion"),
                format!("apiVersion {other} is not known"),
            )
            .pointer("/apiVersion")
            .help(format!("use `apiVersion: {API_VERSION}`")),
        ),
        None => out.push(
            Diagnostic::error("unknown-api-version", path, Position::START, "apiVersion is missing")
                .pointer("/apiVersion")
                .help(format!("add `apiVersion: {API_VERSION}` at the top")),
        ),
    }
    let kind = match root.get("kind") {
        Some(Value::String(k)) if k == "Server" => Kind::Server,
        Some(Value::String(k)) if k == "Role" => Kind::Role,
        Some(other) => {
            out.push(
                Diagnostic::error(
                    "unknown-kind",
                    path,
                    doc.positions.value("/kind"),
                    format!("kind {other} is not known"),
                )
                .pointer("/kind")
                .help("inventory.d/ holds `kind: Server` and `kind: Role` resources"),
            );
            return;
        }
        None => {
            out.push(
                Diagnostic::error("unknown-kind", path, Position::START, "kind is missing")
                    .pointer("/kind")
                    .help("add `kind: Server` or `kind: Role`"),
            );
            return;
        }
    };
    if let Some(Value::String(name)) = root.get("metadata").and_then(|m| m.get("name")) {
        parsed.name = Some((kind, name.clone()));
    }
    if kind == Kind::Server
        && let Some(Value::Array(deps)) = doc.value.pointer("/spec/dependsOn")
    {
        parsed.depends_on = deps.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect();
    }
    let validators = crate::schema::validators();
    let (validator, schema) = match kind {
        Kind::Server => (&validators.server, &validators.sources[0]),
        Kind::Role => (&validators.role, &validators.sources[1]),
    };
    let before = out.len();
    for error in validator.iter_errors(&doc.value) {
        if let Some(d) = rules::schema_diagnostic(path, doc, &error, schema) {
            out.push(d);
        }
    }
    rules::per_file(path, doc, out);
    if out.len() > before || out.iter().any(Diagnostic::is_error) {
        return;
    }
    let resource = match kind {
        Kind::Server => serde_json::from_value::<Server>(doc.value.clone()).map(|s| Resource::Server(Box::new(s))),
        Kind::Role => serde_json::from_value::<Role>(doc.value.clone()).map(|r| Resource::Role(Box::new(r))),
    };
    match resource {
        Ok(resource) => {
            rules::typed(path, doc, &resource, out);
            parsed.resource = Some(resource);
        }
        // The schema mirrors the types, so this is a gap between them; still a finding.
        Err(e) => out.push(Diagnostic::error("schema", path, Position::START, e.to_string())),
    }
}
