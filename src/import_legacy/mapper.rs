//! Walks a parsed legacy inventory and builds Servers, moved values and findings. It only
//! looks whether component scripts exist; it must not write anything, since what happens
//! to its results is the caller's business.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use super::plaintext::{Found, Taken, secret_name, take_secrets};
use super::{Imported, Moved, SEED_ROLES, SERVER_KEYS, kind_of, named};
use crate::diag::Diagnostic;
use crate::inventory::Layout;
use crate::resource::{
    Address, ApiVersion, ComponentName, ComponentRef, Config, DurationSpec, ExpectedSpecs, SecretName, Server,
    ServerKind, ServerName, ServerSpec, SshSpec,
};
use crate::secrets::{MIN_REDACTED_LEN, Scope};
use crate::validate::{Document, escape_pointer_segment};

/// Maps the parsed legacy document, collecting findings at their line and column.
pub(super) struct Mapper<'a> {
    pub(super) file: &'a Path,
    pub(super) doc: &'a Document,
    pub(super) layout: &'a Layout,
    pub(super) findings: Vec<Diagnostic>,
    /// Where password-like values were, so snippet lines never show them.
    pub(super) secret_pointers: Vec<String>,
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
    pub(super) fn map(&mut self, root: &serde_json::Map<String, Value>) -> (Vec<Imported>, Vec<Moved>) {
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
    fn ports_and_addresses_are_checked() {
        assert_eq!(port_of(&serde_json::json!(2222)), Some(2222));
        assert_eq!(port_of(&serde_json::json!("22")), Some(22));
        for bad in [serde_json::json!("abc"), serde_json::json!(0), serde_json::json!(70000)] {
            assert_eq!(port_of(&bad), None, "{bad}");
        }
    }
}
