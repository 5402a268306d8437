//! The validation rules beyond YAML syntax: schema errors turned into positioned
//! findings, per-file rules (plaintext secrets, name = file stem, address), and the
//! cross-file rules (unique names, references, dependency cycles, scripts, secrets,
//! shared addresses). Rules only produce findings; they never change a resource.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use jsonschema::ValidationError;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::{Document, Kind, Parsed, Resource, escape_pointer_segment};
use crate::diag::{Diagnostic, Position};
use crate::inventory::Layout;
use crate::resource::{Address, ComponentRef};

/// Turns one schema error into a finding at the offending key or value. apiVersion and
/// kind are checked before the schema with better messages, so their errors are dropped.
/// `schema` is the one validated against: an unknown field is compared with the fields
/// it allows there.
pub(super) fn schema_diagnostic(
    path: &Path,
    doc: &Document,
    error: &ValidationError<'_>,
    schema: &Value,
) -> Option<Diagnostic> {
    let pointer = error.instance_path().as_str().to_owned();
    if pointer == "/apiVersion" || pointer == "/kind" {
        return None;
    }
    let (code, at, pointer, message, help) = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let key = unexpected.first().cloned().unwrap_or_default();
            let key_pointer = format!("{pointer}/{}", escape_pointer_segment(&key));
            let known = fields_at(schema, &pointer);
            let message = format!(
                "unknown field `{key}`{}",
                crate::suggest::did_you_mean(&key, known.iter().map(String::as_str))
            );
            (
                "unknown-field",
                doc.positions.key(&key_pointer),
                key_pointer,
                message,
                Some(if known.is_empty() {
                    "remove it; unknown fields are errors so that a typo is never silently ignored".to_owned()
                } else {
                    format!(
                        "check the spelling; unknown fields are errors so that a typo is never silently ignored (the fields here: {})",
                        known.join(", ")
                    )
                }),
            )
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default().to_owned();
            (
                "missing-field",
                doc.positions.value(&pointer),
                format!("{pointer}/{}", escape_pointer_segment(&name)),
                format!("required field `{name}` is missing"),
                Some(format!("add `{name}:` here")),
            )
        }
        // The regexes of durations and labels say nothing to a person: name the form.
        ValidationErrorKind::Pattern { pattern } if pattern == crate::resource::DURATION_PATTERN => (
            "invalid-value",
            doc.positions.value(&pointer),
            pointer.clone(),
            format!(
                "{} {} is not a duration: {}",
                describe(&pointer),
                error.instance(),
                crate::resource::DURATION_HELP
            ),
            None,
        ),
        ValidationErrorKind::Pattern { pattern } if pattern == crate::selector::VALUE_PATTERN => (
            "invalid-value",
            doc.positions.value(&pointer),
            pointer.clone(),
            format!(
                "{} {} is not a label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or empty)",
                describe(&pointer),
                error.instance()
            ),
            None,
        ),
        ValidationErrorKind::PropertyNames { .. } if pointer.ends_with("/labels") => (
            "invalid-value",
            doc.positions.value(&pointer),
            pointer.clone(),
            format!(
                "{} a label key is not valid: {error}",
                describe(&pointer),
            ),
            Some(
                "a label key is an optional DNS-subdomain prefix and `/`, then at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (`env`, `app.example.com/tier`)"
                    .to_owned(),
            ),
        ),
        _ => (
            "invalid-value",
            doc.positions.value(&pointer),
            pointer.clone(),
            format!("{} {}", describe(&pointer), error),
            None,
        ),
    };
    let mut d = Diagnostic::error(code, path, at, message).pointer(pointer);
    d.help = help;
    Some(d)
}

fn describe(pointer: &str) -> String {
    if pointer.is_empty() {
        "the document:".to_owned()
    } else {
        format!("{pointer}:")
    }
}

/// The property names `schema` allows at the instance `pointer`, following `properties`,
/// `items`, `additionalProperties`, local `$ref`s and `allOf`/`anyOf`/`oneOf`.
fn fields_at(schema: &Value, pointer: &str) -> Vec<String> {
    fn resolve<'a>(root: &'a Value, node: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
        if depth > 16 {
            return;
        }
        if let Some(Value::String(r)) = node.get("$ref")
            && let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p))
        {
            resolve(root, target, out, depth + 1);
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = node.get(key) {
                for option in options {
                    resolve(root, option, out, depth + 1);
                }
            }
        }
        out.push(node);
    }
    let mut current = Vec::new();
    resolve(schema, schema, &mut current, 0);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        let mut next = Vec::new();
        for node in current {
            let child = node
                .get("properties")
                .and_then(|p| p.get(&segment))
                .or_else(|| segment.parse::<usize>().ok().and_then(|_| node.get("items")))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()));
            if let Some(child) = child {
                resolve(schema, child, &mut next, 0);
            }
        }
        current = next;
    }
    let mut fields: Vec<String> = current
        .iter()
        .filter_map(|n| n.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().cloned())
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// Key fragments that mark a value as a credential.
const SECRET_WORDS: [&str; 12] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "privatekey",
    "credential",
    "access_key",
    "auth_key",
];

/// Suffixes that name something about a credential rather than the credential itself
/// (`password_file: /run/secrets/x`, `token_ttl: 3600`).
const NON_SECRET_SUFFIXES: [&str; 8] = [
    "_file",
    "_path",
    "_ttl",
    "_length",
    "_name",
    "_env",
    "_expiry",
    "_lifetime",
];

/// True when a config key names a credential.
pub fn is_password_like(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SECRET_WORDS.iter().any(|w| key.contains(w)) && !NON_SECRET_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// Rules that need only the raw document: literal secrets anywhere in any `config`.
pub(super) fn per_file(path: &Path, doc: &Document, out: &mut Vec<Diagnostic>) {
    let mut configs = vec!["/spec/config".to_owned()];
    if let Some(Value::Array(components)) = doc.value.pointer("/spec/components") {
        configs.extend((0..components.len()).map(|i| format!("/spec/components/{i}/config")));
    }
    for pointer in configs {
        if let Some(value) = doc.value.pointer(&pointer) {
            find_plaintext_secrets(path, doc, value, &mut pointer.clone(), out);
        }
    }
}

fn find_plaintext_secrets(path: &Path, doc: &Document, value: &Value, pointer: &mut String, out: &mut Vec<Diagnostic>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_pointer_segment(key));
                let literal = match inner {
                    Value::String(s) => !s.is_empty(),
                    Value::Number(_) => true,
                    _ => false,
                };
                if literal && is_password_like(key) {
                    let name = secret_name_for(pointer);
                    out.push(
                        Diagnostic::error(
                            "plaintext-secret",
                            path,
                            doc.positions.value(pointer),
                            format!("`{key}` holds a literal secret value in the inventory"),
                        )
                        .pointer(pointer.clone())
                        .help(format!(
                            "move it into secrets.d/ (`chom secrets set {name}` reads it from stdin), list `{name}` under spec.secrets, and delete the value here"
                        )),
                    );
                } else {
                    find_plaintext_secrets(path, doc, inner, pointer, out);
                }
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                find_plaintext_secrets(path, doc, inner, pointer, out);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// A secret name suggested for the config value at `pointer`: the keys below `config`,
/// joined (`/spec/config/smtp/password` → `SMTP_PASSWORD`).
fn secret_name_for(pointer: &str) -> String {
    let segments: Vec<&str> = pointer.split('/').collect();
    let below = segments
        .iter()
        .rposition(|s| *s == "config")
        .map_or(&segments[..], |i| &segments[i + 1..]);
    let key = below
        .iter()
        .filter(|s| s.parse::<usize>().is_err())
        .copied()
        .collect::<Vec<_>>()
        .join("_");
    let mut name = crate::resource::shell_name(&key);
    if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
        name.insert_str(0, "SECRET_");
    }
    name
}

/// Rules on a schema-valid, typed resource: name = file stem, a usable address.
pub(super) fn typed(path: &Path, doc: &Document, resource: &Resource, out: &mut Vec<Diagnostic>) {
    let name = match resource {
        Resource::Server(s) => &s.metadata.name,
        Resource::Role(r) => &r.metadata.name,
    };
    let stem = file_stem(path);
    if *name != stem {
        out.push(
            Diagnostic::error(
                "name-mismatch",
                path,
                doc.positions.value("/metadata/name"),
                format!("metadata.name is `{name}` but the file is named `{stem}`"),
            )
            .pointer("/metadata/name")
            .help(format!(
                "rename the file to `{name}.yaml`, or set `name: {stem}` if that is a valid name"
            )),
        );
    }
    if let Resource::Server(server) = resource
        && let Some(problem) = address_problem(&server.spec.address)
    {
        out.push(
            Diagnostic::error("invalid-address", path, doc.positions.value("/spec/address"), problem)
                .pointer("/spec/address")
                .help("use the server's IP address or a DNS name chom can resolve"),
        );
    }
}

fn file_stem(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
        .unwrap_or(name)
        .to_owned()
}

/// Why an address cannot be used, if it cannot (the rule is [`Address`]'s).
fn address_problem(address: &str) -> Option<String> {
    address.parse::<Address>().err().map(|problem| problem.to_string())
}

/// Secret names defined in `secrets.d/`, by scope: `None` for `common.yaml` (every
/// server), `Some(server)` for `<server>.yaml`. An absent folder defines nothing.
pub(super) fn defined_secrets(dir: &Path, out: &mut Vec<Diagnostic>) -> BTreeMap<Option<String>, BTreeSet<String>> {
    let mut defined: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return defined;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| super::is_resource_file(p))
        .collect();
    files.sort();
    for file in files {
        let doc = match super::document::read(&file) {
            Ok((_, doc)) => doc,
            Err(d) => {
                out.push(d);
                continue;
            }
        };
        let stem = file_stem(&file);
        let scope = (stem != "common").then_some(stem);
        if let Some(Value::Object(secrets)) = doc.value.get("secrets") {
            defined.entry(scope).or_default().extend(secrets.keys().cloned());
        }
    }
    defined
}

/// Every `scripts/lib/*.sh` is sent ahead of every script, so one that cannot be read is
/// an error; one that is not a regular file (a FIFO, a device, a /proc file) is left out
/// of the scripts, never read.
pub(super) fn script_library(layout: &Layout, out: &mut Vec<Diagnostic>) {
    for lib in layout.script_library() {
        if let Err(e) = crate::fsread::read(&lib, crate::fsread::cap::SCRIPT) {
            let message = match &e {
                crate::fsread::ReadError::NotAFile { .. } => {
                    format!("{}; it is left out of every script", e.problem())
                }
                _ => format!("{}; no script can be sent until it is fixed", e.problem()),
            };
            out.push(Diagnostic::error(e.code(), &lib, Position::START, message).help(e.help()));
        }
    }
}

/// The rules that need the whole tree.
pub(super) fn cross_file(parsed: &mut [Parsed], layout: &Layout, secrets: &BTreeMap<Option<String>, BTreeSet<String>>) {
    duplicate_names(parsed);
    let names: BTreeSet<(Kind, String)> = parsed.iter().filter_map(|p| p.name.clone()).collect();
    let mut scripts: HashMap<String, bool> = HashMap::new();
    let mut script_exists = |name: &str| {
        *scripts
            .entry(name.to_owned())
            .or_insert_with(|| layout.script(name).is_file())
    };
    let no_secrets = BTreeSet::new();
    let common = secrets.get(&None).unwrap_or(&no_secrets);

    let mut addresses: HashMap<(String, u16), (PathBuf, String)> = HashMap::new();
    for p in parsed.iter_mut() {
        let Some(doc) = &p.doc else { continue };
        let (components, out) = match &p.resource {
            Some(Resource::Server(s)) => (&s.spec.components, &mut p.diagnostics),
            Some(Resource::Role(r)) => (&r.spec.components, &mut p.diagnostics),
            None => continue,
        };
        missing_scripts(&p.path, doc, components, &mut script_exists, layout, out);
        let Some(Resource::Server(server)) = &p.resource else {
            continue;
        };
        let spec = &server.spec;
        if let Some(role) = &spec.role
            && !names.contains(&(Kind::Role, role.clone()))
        {
            out.push(
                Diagnostic::error(
                    "unknown-role",
                    &p.path,
                    doc.positions.value("/spec/role"),
                    format!(
                        "role `{role}` is not defined{}",
                        crate::suggest::did_you_mean(
                            role,
                            names.iter().filter(|(k, _)| *k == Kind::Role).map(|(_, n)| n.as_str())
                        )
                    ),
                )
                .pointer("/spec/role")
                .help(format!(
                    "add inventory.d/{role}.yaml with `kind: Role`, or fix the name"
                )),
            );
        }
        for (i, dep) in spec.depends_on.iter().enumerate() {
            if !names.contains(&(Kind::Server, dep.clone())) {
                let pointer = format!("/spec/dependsOn/{i}");
                out.push(
                    Diagnostic::error(
                        "unknown-dependency",
                        &p.path,
                        doc.positions.value(&pointer),
                        format!(
                            "server `{dep}` is not defined{}",
                            crate::suggest::did_you_mean(
                                dep,
                                names
                                    .iter()
                                    .filter(|(k, _)| *k == Kind::Server)
                                    .map(|(_, n)| n.as_str())
                            )
                        ),
                    )
                    .pointer(pointer)
                    .help("dependsOn lists servers of this inventory that must be Ready first"),
                );
            }
        }
        let own = secrets.get(&Some(server.metadata.name.clone())).unwrap_or(&no_secrets);
        for (i, secret) in spec.secrets.iter().enumerate() {
            if !common.contains(&secret.0) && !own.contains(&secret.0) {
                let pointer = format!("/spec/secrets/{i}");
                out.push(
                    Diagnostic::error(
                        "undefined-secret",
                        &p.path,
                        doc.positions.value(&pointer),
                        format!("secret `{}` is not defined in {}", secret.0, layout.secrets.display()),
                    )
                    .pointer(pointer)
                    .help(format!(
                        "run `chom secrets set {}` (add `--server {}` for this server only)",
                        secret.0, server.metadata.name
                    )),
                );
            }
        }
        let key = (spec.address.to_ascii_lowercase(), spec.ssh.port);
        if let Some((other_path, other)) = addresses.get(&key) {
            out.push(
                Diagnostic::warning(
                    "duplicate-address",
                    &p.path,
                    doc.positions.value("/spec/address"),
                    format!(
                        "{}:{} is also the address of `{other}` ({})",
                        key.0,
                        key.1,
                        other_path.display()
                    ),
                )
                .pointer("/spec/address")
                .help("two resources for one machine will fight over it; remove one unless that is intended"),
            );
        } else {
            addresses.insert(key, (p.path.clone(), server.metadata.name.clone()));
        }
    }
    dependency_cycles(parsed);
}

fn missing_scripts(
    path: &Path,
    doc: &Document,
    components: &[ComponentRef],
    exists: &mut dyn FnMut(&str) -> bool,
    layout: &Layout,
    out: &mut Vec<Diagnostic>,
) {
    for (i, c) in components.iter().enumerate() {
        if !exists(&c.name) {
            let pointer = format!("/spec/components/{i}/name");
            out.push(
                Diagnostic::error(
                    "missing-script",
                    path,
                    doc.positions.value(&pointer),
                    format!(
                        "component `{}` has no script {}",
                        c.name,
                        layout.script(&c.name).display()
                    ),
                )
                .pointer(pointer)
                .help(format!(
                    "write scripts/{}.sh (POSIX sh, idempotent), or fix the name",
                    c.name
                )),
            );
        }
    }
}

fn duplicate_names(parsed: &mut [Parsed]) {
    let mut by_name: HashMap<(Kind, String), Vec<usize>> = HashMap::new();
    for (i, p) in parsed.iter().enumerate() {
        if let Some(key) = &p.name {
            by_name.entry(key.clone()).or_default().push(i);
        }
    }
    // Every file of a clash is told, naming the others, so pre-commit on either shows it.
    for ((kind, name), indices) in by_name.into_iter().filter(|(_, v)| v.len() > 1) {
        for &i in &indices {
            let others: Vec<String> = indices
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| parsed[j].path.display().to_string())
                .collect();
            let p = &mut parsed[i];
            let at = p
                .doc
                .as_ref()
                .map_or(Position::START, |d| d.positions.value("/metadata/name"));
            p.diagnostics.push(
                Diagnostic::error(
                    "duplicate-name",
                    &p.path,
                    at,
                    format!("{kind:?} `{name}` is also defined in {}", others.join(", ")),
                )
                .pointer("/metadata/name")
                .help("names are unique per kind across the whole inventory, sub-folders included"),
            );
        }
    }
}

/// Reports each dependency cycle once, at the `dependsOn` entry of its first server
/// (by name) that starts it, printing the whole cycle.
fn dependency_cycles(parsed: &mut [Parsed]) {
    let mut graph: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    // From what each file says, valid or not: a schema error elsewhere in a file must
    // not hide the cycle it takes part in.
    for (i, p) in parsed.iter().enumerate() {
        if let Some((Kind::Server, name)) = &p.name {
            graph.entry(name.clone()).or_insert((i, p.depends_on.clone()));
        }
    }
    // Iterative colouring DFS: 0 = unseen, 1 = on the stack, 2 = done.
    let mut colour: HashMap<&str, u8> = HashMap::new();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        if colour.get(start.as_str()).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        colour.insert(start, 1);
        while let Some((node, next)) = stack.last_mut() {
            let deps = graph.get(*node).map(|(_, d)| d.as_slice()).unwrap_or_default();
            if let Some(dep) = deps.get(*next) {
                *next += 1;
                match colour.get(dep.as_str()).copied().unwrap_or(0) {
                    0 if graph.contains_key(dep) => {
                        colour.insert(dep, 1);
                        stack.push((dep.as_str(), 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == dep.as_str()).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..].iter().map(|(n, _)| (*n).to_owned()).collect();
                        cycle.push(dep.clone());
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            } else {
                colour.insert(node, 2);
                stack.pop();
            }
        }
    }
    for cycle in cycles {
        let (first, second) = (&cycle[0], cycle.get(1).unwrap_or(&cycle[0]));
        let Some((index, deps)) = graph.get(first) else {
            continue;
        };
        let entry = deps.iter().position(|d| d == second).unwrap_or(0);
        let p = &mut parsed[*index];
        let pointer = format!("/spec/dependsOn/{entry}");
        let at = p.doc.as_ref().map_or(Position::START, |d| d.positions.value(&pointer));
        p.diagnostics.push(
            Diagnostic::error(
                "dependency-cycle",
                &p.path,
                at,
                format!("dependsOn forms a cycle: {}", cycle.join(" → ")),
            )
            .pointer(pointer)
            .help("no server could ever become Ready first; remove one of these dependencies"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_like_keys_are_recognised() {
        for key in [
            "password",
            "smtp_password",
            "DB_PASSWD",
            "api-key",
            "apiKey",
            "token",
            "private_key",
            "aws_access_key",
            "credentials",
        ] {
            assert!(is_password_like(key), "{key}");
        }
        for key in ["host", "password_file", "token_ttl", "user", "port", "secret_name"] {
            assert!(!is_password_like(key), "{key}");
        }
    }

    #[test]
    fn addresses_are_checked() {
        assert!(address_problem("203.0.113.10").is_none());
        assert!(address_problem("::1").is_none());
        assert!(address_problem("obs.example.com").is_none());
        assert!(address_problem("0.0.0.0").is_some());
        assert!(address_problem("bad_host!").is_some());
        assert!(address_problem("-x.example.com").is_some());
    }

    #[test]
    fn suggested_secret_names_are_shell_variables() {
        assert_eq!(secret_name_for("/spec/config/smtp/password"), "SMTP_PASSWORD");
        assert_eq!(
            secret_name_for("/spec/components/0/config/admin-password"),
            "ADMIN_PASSWORD"
        );
        assert_eq!(secret_name_for("/spec/config/2fa_token"), "SECRET_2FA_TOKEN");
    }
}
