//! `chom import-legacy FILE`: turn the Bash deployer's `configs/inventory.yaml` into Server
//! and Role files in `inventory.d/` and age-encrypted values in `secrets.d/`. It maps the
//! whole file first, then checks every target, then writes; it never overwrites a file, and
//! it never prints or writes a secret value in plaintext. Exit codes: 0 imported (or a clean
//! `--dry-run`), 1 problems listed and nothing written, 2 usage error or unreadable FILE.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::diag::{self, Diagnostic, Format};
use crate::inventory::Layout;
use crate::resource::{
    Address, ApiVersion, ComponentName, ComponentRef, Config, DurationSpec, ExpectedSpecs, Metadata, Requirements,
    Role, RoleKind, RoleSpec, SecretName, Server, ServerKind, ServerName, ServerSpec, SshSpec,
};
use crate::secrets::{self, MIN_REDACTED_LEN, Scope, SecretValue, SecretsError};
use crate::validate::{Document, MAX_FILE_BYTES, escape_pointer_segment, is_password_like, parse_document};

/// Options of `chom import-legacy`. Each top-level mapping of FILE becomes a Server, the
/// seed's two Roles are written beside them, every password-like value moves into
/// secrets.d/, and what cannot be mapped is reported and kept as an annotation.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct ImportLegacyArgs {
    /// The legacy inventory file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The tree to write into (DIR/inventory.d, DIR/secrets.d).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Print the files, moved secrets (names only) and warnings; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Shown under `--help`, where the subcommand's one line from `cli.rs` is the description.
const AFTER_HELP: &str = "\
Exit codes: 0 imported, 1 problems listed and nothing written, 2 usage error or FILE
unreadable or not YAML. Password-like values move to DIR/secrets.d/, which needs
.recipients (`chom secrets keygen --out FILE`). Existing files are never overwritten.

Examples:
  chom import-legacy deploy/configs/inventory.yaml --dry-run
  chom import-legacy deploy/configs/inventory.yaml --out ~/fleet";

/// The seed deployer's roles and their minimum hardware.
const SEED_ROLES: [(&str, u32, u64, u64); 2] = [("observability", 1, 2048, 20), ("vpsmanager", 2, 4096, 40)];

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
struct Moved {
    name: String,
    scope: Scope,
    /// Where it was in the legacy file (`observability.config.smtp.password`).
    from: String,
    value: SecretValue,
}

/// A mapped server and the values moved out of it.
struct Imported {
    server: Server,
    secrets: Vec<Moved>,
}

/// One file to create.
struct Target {
    path: PathBuf,
    content: String,
    what: String,
}

/// Runs the import; see [`ImportLegacyArgs`] for the exit codes.
pub fn run(args: &ImportLegacyArgs) -> anyhow::Result<ExitCode> {
    let text = read_legacy(&args.file)?;
    let doc = parse_document(&args.file, &text).map_err(|d| {
        if d.code == "empty-file" {
            anyhow::anyhow!(
                "{} is empty: there is no legacy inventory to import",
                args.file.display()
            )
        } else {
            anyhow::anyhow!("{}:{}:{}: {}", d.file.display(), d.line, d.column, d.message)
        }
    })?;
    let Value::Object(root) = &doc.value else {
        anyhow::bail!(
            "{} is not a legacy inventory: it must be a mapping of server names to their settings \
             (`observability: {{hostname: …, ip: …}}`), not {}",
            args.file.display(),
            kind_of(&doc.value)
        );
    };
    let layout = Layout::beside(&args.out.join("inventory.d"));
    let mut mapper = Mapper {
        file: &args.file,
        doc: &doc,
        layout: &layout,
        findings: Vec::new(),
        secret_pointers: Vec::new(),
    };
    let (servers, common) = mapper.map(root);
    let mut findings = std::mem::take(&mut mapper.findings);

    let targets = targets(&layout, &args.file, &servers)?;
    let mut problems: Vec<String> = targets
        .iter()
        .filter(|t| t.path.symlink_metadata().is_ok())
        .map(|t| format!("{} exists; import-legacy never overwrites a file", t.path.display()))
        .collect();
    let moved: Vec<&Moved> = common.iter().chain(servers.iter().flat_map(|s| &s.secrets)).collect();
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

    diag::sort(&mut findings);
    let source = redacted(&text, &doc, &mapper.secret_pointers, &moved);
    print!("{}", diag::render(&findings, Format::Human, &|_| Some(source.clone())));
    for problem in &problems {
        println!("error: {problem}");
    }
    let errors = findings.iter().filter(|d| d.is_error()).count() + problems.len();
    if errors > 0 {
        println!("nothing written: {errors} problem(s) to fix first");
        return Ok(ExitCode::from(1));
    }
    if args.dry_run {
        println!("plan (--dry-run, nothing written):");
        for t in &targets {
            println!("  create {}  ({})", t.path.display(), t.what);
        }
        for m in &moved {
            let file = layout.secrets.join(m.scope.file_name());
            println!("  secret {}  from {}  into {}", m.name, m.from, file.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    write(&layout, &targets, &moved)?;
    println!(
        "imported {} server(s) and {} role(s), moved {} secret(s); components now read moved values as shell \
         variables ($NAME); next: chom validate",
        servers.len(),
        SEED_ROLES.len(),
        moved.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The legacy text with every password-like value cut out, for the snippet lines under
/// findings: a warning next to a password would otherwise print it. Lines are blanked,
/// never removed, so line numbers stay right.
fn redacted(text: &str, doc: &Document, pointers: &[String], moved: &[&Moved]) -> String {
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

/// Reads FILE as UTF-8 text, refusing one larger than a resource may be.
fn read_legacy(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a regular file", path.display());
    }
    if meta.len() > MAX_FILE_BYTES as u64 {
        anyhow::bail!(
            "{} is {} bytes, over the {MAX_FILE_BYTES}-byte limit",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}

/// Server, Role and their rendered files, in the order they are written.
fn targets(layout: &Layout, source: &Path, servers: &[Imported]) -> anyhow::Result<Vec<Target>> {
    // Control characters in the path would end the comment line and corrupt the YAML.
    let source = source.display().to_string().replace(char::is_control, "?");
    let mut out = Vec::new();
    for role in seed_roles() {
        let body = serde_saphyr::to_string(&role).context("rendering a Role")?;
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
        let body = serde_saphyr::to_string(&s.server).context("rendering a Server")?;
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
/// never sees a server whose role or secrets do not exist yet.
fn write(layout: &Layout, targets: &[Target], moved: &[&Moved]) -> anyhow::Result<()> {
    let now = crate::status::Timestamp::now();
    for m in moved {
        secrets::set(&layout.secrets, &m.scope, &m.name, &m.value, now)
            .with_context(|| format!("storing {} in {}", m.name, layout.secrets.display()))?;
        let file = layout.secrets.join(m.scope.file_name());
        println!("moved  {} into {} as {}", m.from, file.display(), m.name);
    }
    for t in targets {
        write_new(&t.path, &t.content)?;
        println!("created {}  ({})", t.path.display(), t.what);
    }
    Ok(())
}

/// Creates `path`; `create_new` makes the existence check and the creation one step, so a
/// file that appeared since the check is still never overwritten.
fn write_new(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

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

fn named(name: String) -> Metadata {
    Metadata {
        name,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
    }
}

/// Maps the parsed legacy document, collecting findings at their line and column.
struct Mapper<'a> {
    file: &'a Path,
    doc: &'a Document,
    layout: &'a Layout,
    findings: Vec<Diagnostic>,
    /// Where password-like values were, so snippet lines never show them.
    secret_pointers: Vec<String>,
}

impl Mapper<'_> {
    fn error(&mut self, code: &'static str, pointer: &str, message: String, help: &str) {
        let at = self.doc.positions.value(pointer);
        let d = Diagnostic::error(code, self.file, at, message).pointer(pointer);
        self.findings.push(if help.is_empty() { d } else { d.help(help) });
    }

    fn warning(&mut self, code: &'static str, pointer: &str, message: String) {
        let at = self.doc.positions.key(pointer);
        self.findings
            .push(Diagnostic::warning(code, self.file, at, message).pointer(pointer));
    }

    /// Top-level scalars first (`ssh_key_path` and friends apply to every server), then
    /// one Server per mapping. Returns the servers sorted by name and the common secrets.
    fn map(&mut self, root: &serde_json::Map<String, Value>) -> (Vec<Imported>, Vec<Moved>) {
        let mut identity = None;
        let mut shared = BTreeMap::new();
        let mut common_found = Vec::new();
        for (key, value) in root {
            let pointer = format!("/{}", escape_pointer_segment(key));
            match value {
                _ if key == "ssh_key_path" => identity = self.text(&pointer, Some(value), "ssh_key_path"),
                Value::Object(_) => {}
                _ if SEED_ROLES.iter().any(|r| r.0 == key) => self.error(
                    "not-a-mapping",
                    &pointer,
                    format!("server `{key}` is {}, not a mapping of its settings", kind_of(value)),
                    "write `hostname:`, `ip:`, `ssh_user:`, … indented below it",
                ),
                Value::Null | Value::Array(_) => self.error(
                    "not-a-mapping",
                    &pointer,
                    format!(
                        "`{key}` is {}: neither a server (a mapping) nor a setting",
                        kind_of(value)
                    ),
                    "give the server its settings, or remove the entry",
                ),
                _ => {
                    let mut holder = serde_json::Map::from_iter([(key.clone(), value.clone())]);
                    take_secrets(&mut holder, &mut Vec::new(), &mut common_found);
                    if let Some(kept) = holder.remove(key) {
                        self.warning(
                            "unmapped",
                            &pointer,
                            format!("top-level `{key}` has no place in chom; kept on every server as annotation chom.dev/legacy-{key}"),
                        );
                        shared.insert(format!("chom.dev/legacy-{key}"), kept.to_string());
                    }
                }
            }
        }
        if let Some(path) = &identity {
            self.check_identity("/ssh_key_path", path);
        }
        let common = self.collect(common_found, "", &Scope::Common);
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut servers = Vec::new();
        for (key, value) in root {
            let Value::Object(entry) = value else { continue };
            let pointer = format!("/{}", escape_pointer_segment(key));
            let Some(name) = to_label(key) else {
                self.error(
                    "bad-name",
                    &pointer,
                    format!("`{key}` cannot be made into a server name"),
                    "rename it: lower-case letters, digits and `-`",
                );
                continue;
            };
            if let Some(other) = names.insert(name.clone(), key.clone()) {
                self.error(
                    "duplicate-name",
                    &pointer,
                    format!("`{key}` and `{other}` both become server `{name}`"),
                    "rename one of them",
                );
                continue;
            }
            if name != *key {
                self.warning(
                    "renamed",
                    &pointer,
                    format!("server `{key}` is named `{name}` (an RFC 1123 label)"),
                );
            }
            let mut imported = self.server(key, &name, &pointer, entry, identity.as_deref());
            imported.server.metadata.annotations.extend(shared.clone());
            let refs = &mut imported.server.spec.secrets;
            refs.extend(
                imported
                    .secrets
                    .iter()
                    .chain(&common)
                    .map(|m| SecretName(m.name.clone())),
            );
            refs.sort();
            refs.dedup();
            servers.push(imported);
        }
        if servers.is_empty() {
            self.error(
                "no-servers",
                "",
                "the file holds no server (a top-level key whose value is a mapping)".to_owned(),
                "",
            );
        }
        servers.sort_by(|a, b| a.server.metadata.name.cmp(&b.server.metadata.name));
        (servers, common)
    }

    fn server(
        &mut self,
        key: &str,
        name: &str,
        pointer: &str,
        entry: &serde_json::Map<String, Value>,
        identity: Option<&str>,
    ) -> Imported {
        let field = |f: &str| format!("{pointer}/{f}");
        let mut annotations = BTreeMap::new();
        let address = self.address(key, pointer, entry, &mut annotations);
        let mut ssh = SshSpec::default();
        if let Some(user) = self.text(&field("ssh_user"), entry.get("ssh_user"), "ssh_user") {
            if user.is_empty() || user.len() > 64 {
                self.error(
                    "bad-value",
                    &field("ssh_user"),
                    "ssh_user must be 1 to 64 characters".to_owned(),
                    "",
                );
            }
            ssh.user = user;
        }
        if let Some(port) = entry.get("ssh_port").filter(|v| !v.is_null()) {
            match port_of(port) {
                Some(p) => ssh.port = p,
                None => self.error(
                    "bad-port",
                    &field("ssh_port"),
                    format!("ssh_port {port} is not a TCP port"),
                    "use a number from 1 to 65535",
                ),
            }
        }
        let own_identity = self.text(&field("ssh_key_path"), entry.get("ssh_key_path"), "ssh_key_path");
        if let Some(path) = &own_identity {
            self.check_identity(&field("ssh_key_path"), path);
        }
        ssh.identity_file = own_identity.or_else(|| identity.map(str::to_owned));
        let expected_specs = self.specs(&field("specs"), entry.get("specs"), &mut annotations);
        let components = self.components(&field("components"), entry.get("components"));

        let mut found = Vec::new();
        let config = match entry.get("config") {
            None | Some(Value::Null) => Config::new(),
            Some(Value::Object(map)) => {
                let mut map = map.clone();
                take_secrets(&mut map, &mut Vec::new(), &mut found);
                map
            }
            Some(other) => {
                let message = format!("config is {}, not a mapping", kind_of(other));
                self.error("bad-value", &field("config"), message, "");
                Config::new()
            }
        };
        let config_found = found.len();
        let mut unknown: serde_json::Map<String, Value> = entry
            .iter()
            .filter(|(k, _)| !SERVER_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        take_secrets(&mut unknown, &mut Vec::new(), &mut found);
        for (i, f) in found.iter_mut().enumerate() {
            if i < config_found {
                f.path.insert(0, "config".to_owned());
            }
        }
        for (k, v) in unknown {
            self.warning(
                "unmapped",
                &field(&escape_pointer_segment(&k)),
                format!("`{k}` of `{key}` has no place in a Server; kept as annotation chom.dev/legacy-{k}"),
            );
            annotations.insert(format!("chom.dev/legacy-{k}"), v.to_string());
        }
        let secrets = match Scope::server(name) {
            Ok(scope) => self.collect(found, pointer, &scope),
            Err(_) if found.is_empty() => Vec::new(),
            Err(_) => {
                let message = format!("server `{name}` cannot have secrets of its own (`common` is everyone's)");
                self.error("bad-name", pointer, message, "rename the server");
                Vec::new()
            }
        };
        let mut metadata = named(name.to_owned());
        metadata.annotations = annotations;
        let role = SEED_ROLES.iter().find(|r| r.0 == key).map(|r| r.0.to_owned());
        let spec = ServerSpec {
            address,
            ssh,
            role,
            expected_specs,
            components,
            config,
            secrets: Vec::new(),
            depends_on: Vec::new(),
            interval: DurationSpec(std::time::Duration::from_secs(600)),
            drift_policy: crate::resource::DriftPolicy::default(),
            prune: false,
            suspend: false,
        };
        let server = Server {
            api_version: ApiVersion::V1,
            kind: ServerKind::Server,
            metadata,
            spec,
        };
        Imported { server, secrets }
    }

    /// `ip` unless it is absent or a placeholder, else `hostname`. A hostname that is not
    /// the address is kept as an annotation, since scripts or people may still use it.
    fn address(
        &mut self,
        key: &str,
        pointer: &str,
        entry: &serde_json::Map<String, Value>,
        annotations: &mut BTreeMap<String, String>,
    ) -> String {
        let ip = self.text(&format!("{pointer}/ip"), entry.get("ip"), "ip");
        let hostname = self.text(&format!("{pointer}/hostname"), entry.get("hostname"), "hostname");
        let usable_ip = ip
            .as_deref()
            .filter(|ip| ip.parse::<IpAddr>().is_ok_and(|a| !a.is_unspecified()));
        if let Some(ip) = usable_ip {
            if let Some(h) = &hostname {
                annotations.insert(
                    "chom.dev/legacy-hostname".to_owned(),
                    Value::from(h.as_str()).to_string(),
                );
            }
            return ip.to_owned();
        }
        let usable_host = hostname.filter(|h| Address::is_valid(h));
        match (ip, usable_host) {
            (Some(ip), Some(host)) => {
                let why = if ip.is_empty() {
                    "is empty".to_owned()
                } else {
                    format!("`{ip}` is a placeholder")
                };
                let message = format!("ip of `{key}` {why}; its address is the hostname `{host}`");
                self.warning("placeholder-ip", &format!("{pointer}/ip"), message);
                host
            }
            (None, Some(host)) => host,
            (_, None) => {
                self.error(
                    "no-address",
                    pointer,
                    format!("`{key}` has no usable address: no real ip and no valid hostname"),
                    "set `ip` or `hostname` in the legacy file",
                );
                String::new()
            }
        }
    }

    fn specs(
        &mut self,
        pointer: &str,
        value: Option<&Value>,
        annotations: &mut BTreeMap<String, String>,
    ) -> Option<ExpectedSpecs> {
        let map = match value {
            None | Some(Value::Null) => return None,
            Some(Value::Object(map)) => map,
            Some(other) => {
                let message = format!(
                    "specs is {}, not a mapping of cpu, memory_mb and disk_gb",
                    kind_of(other)
                );
                self.error("bad-value", pointer, message, "");
                return None;
            }
        };
        let mut get = |field: &str| -> Option<u64> {
            let at = format!("{pointer}/{field}");
            match map.get(field)? {
                Value::Number(n) if n.as_u64() == Some(0) => {
                    self.warning("zero-spec", &at, format!("specs.{field} is 0; left out"));
                    None
                }
                Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
                other => {
                    self.error(
                        "bad-value",
                        &at,
                        format!("specs.{field} is {other}, not a whole number"),
                        "",
                    );
                    None
                }
            }
        };
        let cpu = get("cpu");
        let specs = ExpectedSpecs {
            cpu: cpu.and_then(|c| u32::try_from(c).ok()),
            memory_mb: get("memory_mb"),
            disk_gb: get("disk_gb"),
        };
        for (k, v) in map
            .iter()
            .filter(|(k, _)| !["cpu", "memory_mb", "disk_gb"].contains(&k.as_str()))
        {
            let at = format!("{pointer}/{}", escape_pointer_segment(k));
            self.warning(
                "unmapped",
                &at,
                format!("specs.{k} has no place in expectedSpecs; kept as annotation"),
            );
            annotations.insert(format!("chom.dev/legacy-specs.{k}"), v.to_string());
        }
        let empty = specs.cpu.is_none() && specs.memory_mb.is_none() && specs.disk_gb.is_none();
        (!empty).then_some(specs)
    }

    fn components(&mut self, pointer: &str, value: Option<&Value>) -> Vec<ComponentRef> {
        let items = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                let message = format!("components is {}, not a list of names", kind_of(other));
                self.error("bad-value", pointer, message, "");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{pointer}/{i}");
            let Some(name) = item.as_str().filter(|n| ComponentName::is_valid(n)) else {
                self.error(
                    "bad-component",
                    &at,
                    format!("component {item} is not a name chom accepts"),
                    "lower-case letters, digits, `-` and `_`; scripts/<name>.sh runs it",
                );
                continue;
            };
            if !self.layout.script(name).is_file() {
                let script = self.layout.script(name);
                let message = format!("{} does not exist yet; `chom validate` needs it", script.display());
                self.warning("missing-script", &at, message);
            }
            out.push(ComponentRef {
                name: name.to_owned(),
                version: None,
                config: Config::new(),
                timeout: None,
            });
        }
        out
    }

    /// A text field: absent or null is `None`; anything but a string is an error.
    fn text(&mut self, pointer: &str, value: Option<&Value>, what: &str) -> Option<String> {
        match value? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => {
                self.error(
                    "bad-value",
                    pointer,
                    format!("{what} is {}, not text", kind_of(other)),
                    "",
                );
                None
            }
        }
    }

    fn check_identity(&mut self, pointer: &str, path: &str) {
        if !path.starts_with('/') && !path.starts_with("~/") {
            let base = self.layout.inventory.parent().unwrap_or(Path::new("."));
            let message = format!(
                "ssh_key_path `{path}` is relative; chom reads it from {}",
                base.display()
            );
            self.warning("relative-key-path", pointer, message);
        }
    }

    /// Names the values found below `pointer` (already in legacy path segments), drops
    /// empty ones with a note, and keeps names unique within `scope`.
    fn collect(&mut self, found: Vec<Found>, pointer: &str, scope: &Scope) -> Vec<Moved> {
        let mut used = BTreeSet::new();
        let mut out = Vec::new();
        for f in found {
            let at = f
                .path
                .iter()
                .fold(pointer.to_owned(), |p, s| p + "/" + &escape_pointer_segment(s));
            self.secret_pointers.push(at.clone());
            let server = pointer.trim_start_matches('/');
            let from = [server].into_iter().chain(f.path.iter().map(String::as_str));
            let from = from.filter(|s| !s.is_empty()).collect::<Vec<_>>().join(".");
            let (value, number) = match f.taken {
                Taken::Value { value, number } => (value, number),
                Taken::Empty => {
                    self.warning(
                        "empty-secret",
                        &at,
                        format!("`{from}` is empty; dropped (nothing to move)"),
                    );
                    continue;
                }
                Taken::List => {
                    self.error(
                        "secret-list",
                        &at,
                        format!("`{from}` is a list of secret values; each secret needs a name of its own"),
                        "give each value its own key (`tokens: {a: …, b: …}`), then import again",
                    );
                    continue;
                }
            };
            let base = secret_name(&f.path);
            let mut name = base.clone();
            for n in 2.. {
                if used.insert(name.clone()) {
                    break;
                }
                name = format!("{base}_{n}");
            }
            if name != base {
                self.warning(
                    "renamed-secret",
                    &at,
                    format!("`{from}` is stored as {name}: {base} is taken"),
                );
            }
            if number {
                let message = format!("`{from}` was a YAML number; stored as its decimal text");
                self.warning("numeric-secret", &at, message);
            }
            if value.expose().chars().count() < MIN_REDACTED_LEN {
                let message =
                    format!("`{from}` is shorter than {MIN_REDACTED_LEN} characters, so logs will not redact it");
                self.warning("short-secret", &at, message);
            }
            out.push(Moved {
                name,
                scope: scope.clone(),
                from,
                value,
            });
        }
        out
    }
}

/// What a password-like key at `path` (legacy key segments) held.
struct Found {
    path: Vec<String>,
    taken: Taken,
}

/// What a password-like key held.
enum Taken {
    /// A value to move; `number` when YAML read it as a number.
    Value { value: SecretValue, number: bool },
    /// `""` or nothing: there is nothing to move.
    Empty,
    /// A list of values, which has no single secret name to move it under.
    List,
}

/// Removes every password-like key holding a scalar from `map`, however deep, the way
/// `chom validate` finds them (`plaintext-secret`), and records where each was.
fn take_secrets(map: &mut serde_json::Map<String, Value>, path: &mut Vec<String>, found: &mut Vec<Found>) {
    // Rebuilt rather than removed from in place, so the remaining keys keep their order.
    for (key, mut value) in std::mem::take(map) {
        path.push(key.clone());
        let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Null);
        let taken = match &value {
            _ if !is_password_like(&key) => None,
            Value::String(s) if !s.is_empty() => Some(Taken::Value {
                value: SecretValue::new(s.clone()),
                number: false,
            }),
            Value::Number(n) => Some(Taken::Value {
                value: SecretValue::new(n.to_string()),
                number: true,
            }),
            Value::String(_) | Value::Null => Some(Taken::Empty),
            // Such a list is left out rather than kept, so its values reach no file.
            Value::Array(items) if !items.is_empty() && items.iter().all(scalar) => Some(Taken::List),
            _ => None,
        };
        if let Some(taken) = taken {
            found.push(Found {
                path: path.clone(),
                taken,
            });
        } else {
            descend(&mut value, path, found);
            map.insert(key, value);
        }
        path.pop();
    }
}

fn descend(value: &mut Value, path: &mut Vec<String>, found: &mut Vec<Found>) {
    match value {
        Value::Object(map) => take_secrets(map, path, found),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                descend(item, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The secret name for a value at `path`: the keys below `config` joined by `_`,
/// upper-cased, list indices left out (`config.smtp.password` → `SMTP_PASSWORD`), as
/// `chom validate` suggests.
fn secret_name(path: &[String]) -> String {
    let below_config = match path.first() {
        Some(first) if first == "config" => &path[1..],
        _ => path,
    };
    let words: Vec<&str> = below_config
        .iter()
        .map(String::as_str)
        .filter(|s| s.parse::<usize>().is_err())
        .collect();
    let mut name: String = words
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
        name.insert_str(0, "SECRET_");
    }
    name.truncate(secrets::MAX_NAME_LEN - 8);
    name
}

/// `key` as an RFC 1123 label: lower-cased, `_`, `.` and spaces as `-`, other characters
/// dropped; `None` when nothing is left.
fn to_label(key: &str) -> Option<String> {
    let mut label = String::new();
    for c in key.chars() {
        match c {
            'a'..='z' | '0'..='9' => label.push(c),
            'A'..='Z' => label.push(c.to_ascii_lowercase()),
            '-' | '_' | '.' | ' ' if !label.is_empty() && !label.ends_with('-') => label.push('-'),
            _ => {}
        }
    }
    label.truncate(63);
    let label = label.trim_end_matches('-').to_owned();
    ServerName::is_valid(&label).then_some(label)
}

fn port_of(value: &Value) -> Option<u16> {
    let number = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    number.and_then(|n| u16::try_from(n).ok()).filter(|p| *p > 0)
}

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

    #[test]
    fn legacy_keys_become_rfc1123_labels() {
        assert_eq!(to_label("observability").as_deref(), Some("observability"));
        assert_eq!(to_label("Web_Server.1").as_deref(), Some("web-server-1"));
        assert_eq!(to_label("__a__b__").as_deref(), Some("a-b"));
        assert_eq!(to_label("!!!"), None);
        assert_eq!(to_label(&"x".repeat(80)).map(|l| l.len()), Some(63));
    }

    #[test]
    fn secret_names_come_from_the_config_path() {
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(secret_name(&path(&["config", "smtp", "password"])), "SMTP_PASSWORD");
        assert_eq!(secret_name(&path(&["users", "0", "api-key"])), "USERS_API_KEY");
        assert_eq!(secret_name(&path(&["2fa_token"])), "SECRET_2FA_TOKEN");
        assert!(secrets::is_valid_name(&secret_name(&path(&[&"a".repeat(300)]))));
    }

    #[test]
    fn password_like_scalars_are_taken_out_at_any_depth() {
        let Value::Object(mut map) = serde_json::json!({
            "smtp": {"host": "h", "password": "p4ss-w0rd"},
            "users": [{"name": "a", "token": 1234}],
            "db_password": "",
            "password_file": "/run/x",
            "api_tokens": ["a1", "b2"],
        }) else {
            unreachable!()
        };
        let mut found = Vec::new();
        take_secrets(&mut map, &mut Vec::new(), &mut found);
        let paths: Vec<String> = found.iter().map(|f| f.path.join(".")).collect();
        assert_eq!(paths, ["api_tokens", "db_password", "smtp.password", "users.0.token"]);
        assert!(matches!(found.remove(0).taken, Taken::List));
        assert!(matches!(found[0].taken, Taken::Empty));
        assert!(matches!(&found[1].taken, Taken::Value { value, number: false } if value.expose() == "p4ss-w0rd"));
        assert!(matches!(found[2].taken, Taken::Value { number: true, .. }));
        assert_eq!(
            Value::Object(map),
            serde_json::json!({"smtp": {"host": "h"}, "users": [{"name": "a"}], "password_file": "/run/x"})
        );
    }

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
    fn ports_and_addresses_are_checked() {
        assert_eq!(port_of(&serde_json::json!(2222)), Some(2222));
        assert_eq!(port_of(&serde_json::json!("22")), Some(22));
        for bad in [serde_json::json!("abc"), serde_json::json!(0), serde_json::json!(70000)] {
            assert_eq!(port_of(&bad), None, "{bad}");
        }
    }
}
