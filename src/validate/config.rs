//! `chom.yaml` → a checked [`TreeConfig`], or findings with file, line, column and JSON
//! pointer like every resource file: the same reader, the same schema diagnostics. It
//! never resolves paths or looks at the command line (`cli/` does that with the result).

use std::path::Path;

use serde_json::Value;

use super::{document, rules};
use crate::diag::{Diagnostic, Position};
use crate::resource::API_VERSION;
use crate::treeconfig::TreeConfig;

/// Reads and checks the tree configuration at `path`. The config is returned only when
/// no finding is an error.
pub fn load_config(path: &Path) -> (Option<TreeConfig>, Vec<Diagnostic>) {
    let doc = match document::read(path) {
        Ok((_, doc)) => doc,
        Err(d) => return (None, vec![d]),
    };
    let mut out = Vec::new();
    let Value::Object(root) = &doc.value else {
        out.push(
            Diagnostic::error(
                "not-a-mapping",
                path,
                doc.positions.value(""),
                "chom.yaml must be a YAML mapping",
            )
            .help(format!(
                "start the file with `apiVersion: {API_VERSION}` and `kind: Config`"
            )),
        );
        return (None, out);
    };
    match root.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        other => out.push(
            Diagnostic::error(
                "unknown-api-version",
                path,
                other.map_or(Position::START, |_| doc.positions.value("/apiVersion")),
                other.map_or_else(
                    || "apiVersion is missing".to_owned(),
                    |v| format!("apiVersion {v} is not known"),
                ),
            )
            .pointer("/apiVersion")
            .help(format!("use `apiVersion: {API_VERSION}`")),
        ),
    }
    match root.get("kind") {
        Some(Value::String(k)) if k == "Config" => {}
        other => out.push(
            Diagnostic::error(
                "unknown-kind",
                path,
                other.map_or(Position::START, |_| doc.positions.value("/kind")),
                other.map_or_else(
                    || "kind is missing".to_owned(),
                    |v| format!("kind {v} is not known here"),
                ),
            )
            .pointer("/kind")
            .help("chom.yaml holds `kind: Config`"),
        ),
    }
    let validators = crate::schema::validators();
    for error in validators.config.iter_errors(&doc.value) {
        if let Some(d) = rules::schema_diagnostic(path, &doc, &error, &validators.sources[2]) {
            out.push(d);
        }
    }
    check_values(path, &doc, &mut out);
    if out.iter().any(Diagnostic::is_error) {
        return (None, out);
    }
    match serde_json::from_value::<TreeConfig>(doc.value) {
        Ok(config) => (Some(config), out),
        // The schema mirrors the type, so this is a gap between them; still a finding.
        Err(e) => {
            out.push(Diagnostic::error("schema", path, Position::START, e.to_string()));
            (None, out)
        }
    }
}

/// Values the schema's patterns cannot judge: a shard index below its count, and a
/// metrics address that parses.
fn check_values(path: &Path, doc: &document::Document, out: &mut Vec<Diagnostic>) {
    let daemon = doc.value.get("daemon");
    if let Some(Value::String(shard)) = daemon.and_then(|d| d.get("shard"))
        && let Err(message) = shard.parse::<crate::shard::Shard>()
    {
        out.push(
            Diagnostic::error("invalid-value", path, doc.positions.value("/daemon/shard"), message)
                .pointer("/daemon/shard")
                .help("write `K/N` with K from 0 to N-1, such as `0/3`"),
        );
    }
    if let Some(Value::String(addr)) = daemon.and_then(|d| d.get("metricsAddr"))
        && addr != "off"
        && addr.parse::<std::net::SocketAddr>().is_err()
    {
        out.push(
            Diagnostic::error(
                "invalid-value",
                path,
                doc.positions.value("/daemon/metricsAddr"),
                format!("{addr:?} is not an address such as 127.0.0.1:9477"),
            )
            .pointer("/daemon/metricsAddr")
            .help("write `host:port` with an IP address, or `off`"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> (Option<TreeConfig>, Vec<Diagnostic>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chom.yaml");
        std::fs::write(&path, text).unwrap();
        load_config(&path)
    }

    const HEAD: &str = "apiVersion: chom.dev/v1\nkind: Config\n";

    #[test]
    fn a_minimal_config_is_valid() {
        let (config, findings) = check(HEAD);
        assert!(findings.is_empty(), "{findings:?}");
        assert!(config.is_some());
    }

    #[test]
    fn an_unknown_field_is_reported_at_its_key() {
        let (config, findings) = check(&format!("{HEAD}ssh:\n  connectTimeout: 5s\n  idleTimout: 1m\n"));
        assert!(config.is_none());
        let d = &findings[0];
        assert_eq!((d.code, d.line, d.column), ("unknown-field", 5, 3), "{findings:?}");
        assert_eq!(d.pointer, "/ssh/idleTimout");
    }

    #[test]
    fn a_wrong_kind_a_bad_duration_and_a_bad_shard_are_each_reported() {
        let text = "apiVersion: chom.dev/v1\nkind: Server\nssh:\n  idleTimeout: soon\ndaemon:\n  shard: 3/3\n";
        let (_, findings) = check(text);
        let codes: Vec<_> = findings.iter().map(|d| (d.code, d.line)).collect();
        assert!(codes.contains(&("unknown-kind", 2)), "{codes:?}");
        assert!(codes.contains(&("invalid-value", 4)), "{codes:?}");
        assert!(codes.contains(&("invalid-value", 6)), "{codes:?}");
    }
}
