//! The on-disk format of `secrets.d/*.yaml` (`kind: SecretSet`): its types and JSON Schema,
//! a reader that refuses plaintext values, and the atomic writer and folder lock. The reader
//! walks the YAML tree itself instead of going through serde, because serde's messages quote
//! the offending value ("invalid type: string \"hunter2\"") and a misplaced plaintext value
//! must never reach a terminal or a log. It knows nothing about keys or decryption.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode as _, MarkedYamlOwned, ScalarOwned, YamlDataOwned};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Scope, SecretsError, is_valid_name};
use crate::resource::ApiVersion;
use crate::status::Timestamp;

/// The file name of the published schema.
pub const SCHEMA_FILE: &str = "secretset.schema.json";

/// Secrets files larger than this are refused before parsing: an armored value is about
/// 4/3 of its plaintext plus 300 bytes, so this leaves room for hundreds of large values.
const MAX_FILE_BYTES: u64 = crate::fsread::cap::SECRETS;

/// First line of an age armor block.
pub(super) const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// Last line of an age armor block.
pub(super) const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";

/// Written at the top of every file so a reader of the repository knows not to edit values.
const HEADER: &str = "# Managed by `chom secrets`: each value is age-encrypted to the keys in .recipients.\n\
                      # Never write a plaintext value here; use `chom secrets set NAME`.\n";

/// One `secrets.d/<scope>.yaml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(
    title = "chom SecretSet",
    extend("$id" = "https://chom.dev/schemas/secretset.schema.json")
)]
pub struct SecretSet {
    /// Always `chom.dev/v1`.
    pub api_version: ApiVersion,
    /// Always `SecretSet`.
    pub kind: SecretSetKind,
    /// `common`, or the server the file overrides secrets for.
    pub metadata: SecretSetMetadata,
    /// Encrypted values by name (`^[A-Z][A-Z0-9_]*$`).
    #[schemars(extend("propertyNames" = { "pattern": "^[A-Z][A-Z0-9_]*$", "maxLength": 128 }))]
    pub secrets: BTreeMap<String, SecretEntry>,
}

/// The `kind` of a secrets file (a one-value enum so the schema pins it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SecretSetKind {
    /// `SecretSet`.
    SecretSet,
}

/// `metadata` of a secrets file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSetMetadata {
    /// `common`, or a server's name; always equal to the file's stem.
    #[schemars(regex(pattern = crate::resource::LABEL_PATTERN), length(min = 1, max = 63))]
    pub name: String,
}

/// One encrypted value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretEntry {
    /// The age-armored ciphertext of this one value (`-----BEGIN AGE ENCRYPTED FILE-----`).
    /// A plaintext value is refused.
    #[serde(serialize_with = "literal_block")]
    #[schemars(regex(pattern = r"^\s*-----BEGIN AGE ENCRYPTED FILE-----"))]
    pub value: String,
    /// When the value was last set (not when it was last re-encrypted): the secret's
    /// version, and what `--max-age` is measured from.
    pub updated_at: Timestamp,
}

/// Armor is several lines; a `|` block keeps it readable and makes a diff touch only the
/// secret that changed, where a quoted scalar would be one long line of `\n` escapes.
fn literal_block<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serde_saphyr::LitStr(value).serialize(serializer)
}

impl SecretSet {
    /// An empty set for `scope`.
    pub fn new(scope: &Scope) -> Self {
        Self {
            api_version: ApiVersion::V1,
            kind: SecretSetKind::SecretSet,
            metadata: SecretSetMetadata {
                name: scope.stem().to_owned(),
            },
            secrets: BTreeMap::new(),
        }
    }
}

/// Whether `value` looks like one age armor block (and nothing else).
pub(super) fn is_armored(value: &str) -> bool {
    let v = value.trim();
    v.starts_with(ARMOR_BEGIN) && v.ends_with(ARMOR_END) && v.len() > ARMOR_BEGIN.len() + ARMOR_END.len()
}

/// The files found in `secrets.d/`.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// Secrets files by scope, sorted.
    pub(super) sets: Vec<(Scope, PathBuf)>,
    /// Files that are not secrets files (`Web.yaml`, `notes.txt`), so `check` can point at them.
    pub(super) strays: Vec<PathBuf>,
}

/// The files in `dir`. A missing folder holds none; hidden files, `README` and editor
/// backups are skipped.
pub(super) fn list_files(dir: &Path) -> Result<Listing, SecretsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(source) => {
            return Err(SecretsError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut sets = Vec::new();
    let mut strays = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SecretsError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || name.starts_with('#') || name == "README" || name.ends_with('~') {
            continue;
        }
        match name.strip_suffix(".yaml").and_then(Scope::from_stem) {
            Some(scope) => sets.push((scope, path)),
            None => strays.push(path),
        }
    }
    sets.sort();
    strays.sort();
    Ok(Listing { sets, strays })
}

/// Reads the file of `scope` in `dir`; `None` when it does not exist.
pub(super) fn read_scope(dir: &Path, scope: &Scope) -> Result<Option<SecretSet>, SecretsError> {
    let path = dir.join(scope.file_name());
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read(&path, scope).map(Some),
    }
}

/// Reads and checks one secrets file.
pub(super) fn read(path: &Path, scope: &Scope) -> Result<SecretSet, SecretsError> {
    let read_error = |source| SecretsError::Read {
        path: path.to_owned(),
        source,
    };
    // Never blocks on a FIFO or device and never reads past the cap.
    let bytes = crate::fsread::read(path, MAX_FILE_BYTES).map_err(|e| match e {
        crate::fsread::ReadError::Io { source, .. } => read_error(source),
        crate::fsread::ReadError::NotAFile { .. } => invalid(
            path,
            1,
            1,
            format!("{}; secrets files are plain YAML files", e.problem()),
        ),
        other => invalid(path, 1, 1, other.problem()),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| invalid(path, 1, 1, "the file is not UTF-8 text"))?;
    parse(path, &text, scope.stem())
}

fn invalid(path: &Path, line: usize, column: usize, problem: impl Into<String>) -> SecretsError {
    SecretsError::Invalid {
        path: path.to_owned(),
        line,
        column,
        problem: problem.into(),
    }
}

fn at(path: &Path, node: &MarkedYamlOwned, problem: impl Into<String>) -> SecretsError {
    let m = &node.span.start;
    invalid(path, m.line().max(1), m.col() + 1, problem)
}

fn strip_tags(node: &MarkedYamlOwned) -> &MarkedYamlOwned {
    match &node.data {
        YamlDataOwned::Tagged(_, inner) => strip_tags(inner),
        _ => node,
    }
}

fn as_str(node: &MarkedYamlOwned) -> Option<&str> {
    match &strip_tags(node).data {
        YamlDataOwned::Value(ScalarOwned::String(s)) | YamlDataOwned::Representation(s, _, _) => Some(s),
        _ => None,
    }
}

fn is_null(node: &MarkedYamlOwned) -> bool {
    matches!(strip_tags(node).data, YamlDataOwned::Value(ScalarOwned::Null))
}

/// The entries of a mapping node with their keys as text; `what` names the node in errors.
fn mapping<'a>(
    path: &Path,
    node: &'a MarkedYamlOwned,
    what: &str,
) -> Result<Vec<(&'a str, &'a MarkedYamlOwned, &'a MarkedYamlOwned)>, SecretsError> {
    let YamlDataOwned::Mapping(map) = &strip_tags(node).data else {
        return Err(at(path, node, format!("{what} must be a mapping")));
    };
    map.iter()
        .map(|(k, v)| match as_str(k) {
            Some(key) => Ok((key, k, v)),
            None => Err(at(path, k, format!("keys of {what} must be plain strings"))),
        })
        .collect()
}

/// Parses the text of one secrets file whose stem is `stem`.
pub(super) fn parse(path: &Path, text: &str, stem: &str) -> Result<SecretSet, SecretsError> {
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| {
        let m = e.marker();
        invalid(
            path,
            m.line().max(1),
            m.col() + 1,
            format!("{}; fix the YAML syntax here", e.info()),
        )
    })?;
    let mut docs = docs.iter().filter(|d| !is_null(d));
    let Some(root) = docs.next() else {
        return Err(invalid(
            path,
            1,
            1,
            "the file is empty; delete it, or add secrets with `chom secrets set`",
        ));
    };
    if let Some(second) = docs.next() {
        return Err(at(path, second, "a secrets file holds exactly one YAML document"));
    }
    let (mut api_version, mut kind, mut metadata, mut secrets) = (None, None, None, None);
    for (key, key_node, value) in mapping(path, root, "a SecretSet")? {
        let slot = match key {
            "apiVersion" => &mut api_version,
            "kind" => &mut kind,
            "metadata" => &mut metadata,
            "secrets" => &mut secrets,
            other => {
                return Err(at(
                    path,
                    key_node,
                    format!("unknown key {other:?}; a SecretSet has only apiVersion, kind, metadata and secrets"),
                ));
            }
        };
        *slot = Some(value);
    }
    fn required<'a>(
        path: &Path,
        node: Option<&'a MarkedYamlOwned>,
        key: &str,
    ) -> Result<&'a MarkedYamlOwned, SecretsError> {
        node.ok_or_else(|| invalid(path, 1, 1, format!("`{key}` is missing; add it (see {SCHEMA_FILE})")))
    }
    let api_node = required(path, api_version, "apiVersion")?;
    if as_str(api_node) != Some("chom.dev/v1") {
        return Err(at(path, api_node, "apiVersion must be `chom.dev/v1`"));
    }
    let kind_node = required(path, kind, "kind")?;
    if as_str(kind_node) != Some("SecretSet") {
        return Err(at(path, kind_node, "kind must be `SecretSet`"));
    }
    let metadata_node = required(path, metadata, "metadata")?;
    let mut name = None;
    for (key, key_node, value) in mapping(path, metadata_node, "metadata")? {
        if key != "name" {
            return Err(at(
                path,
                key_node,
                format!("unknown key metadata.{key}; metadata has only `name`"),
            ));
        }
        name = Some(value);
    }
    let name_node = name.ok_or_else(|| {
        at(
            path,
            metadata_node,
            "metadata.name is missing; set it to the file's stem",
        )
    })?;
    if as_str(name_node) != Some(stem) {
        return Err(at(
            path,
            name_node,
            format!("metadata.name must equal the file's stem, {stem:?}"),
        ));
    }
    let secrets_node = required(path, secrets, "secrets")?;
    let mut set = SecretSet {
        api_version: ApiVersion::V1,
        kind: SecretSetKind::SecretSet,
        metadata: SecretSetMetadata { name: stem.to_owned() },
        secrets: BTreeMap::new(),
    };
    for (name, key_node, entry) in mapping(path, secrets_node, "secrets")? {
        if !is_valid_name(name) {
            return Err(at(
                path,
                key_node,
                format!(
                    "{name:?} is not a valid secret name; use upper-case letters, digits and `_`, starting with a letter"
                ),
            ));
        }
        set.secrets
            .insert(name.to_owned(), parse_entry(path, name, key_node, entry)?);
    }
    Ok(set)
}

fn parse_entry(
    path: &Path,
    name: &str,
    key_node: &MarkedYamlOwned,
    entry: &MarkedYamlOwned,
) -> Result<SecretEntry, SecretsError> {
    let plaintext = |node: &MarkedYamlOwned| {
        let m = &node.span.start;
        SecretsError::Plaintext {
            path: path.to_owned(),
            line: m.line().max(1),
            column: m.col() + 1,
            name: name.to_owned(),
        }
    };
    if is_null(entry) {
        return Err(at(
            path,
            key_node,
            format!("secret {name} has no value; delete it or store one with `chom secrets set {name}`"),
        ));
    }
    if !matches!(strip_tags(entry).data, YamlDataOwned::Mapping(_)) {
        // `NAME: hunter2`: the most likely mistake, and the most dangerous to echo.
        return Err(plaintext(entry));
    }
    let (mut value, mut updated_at) = (None, None);
    for (key, key_node, v) in mapping(path, entry, &format!("secret {name}"))? {
        match key {
            "value" => value = Some(v),
            "updatedAt" => updated_at = Some(v),
            other => {
                return Err(at(
                    path,
                    key_node,
                    format!("unknown key {other:?} in secret {name}; an entry has only value and updatedAt"),
                ));
            }
        }
    }
    let value_node = value.ok_or_else(|| {
        at(
            path,
            entry,
            format!("secret {name} has no value; store one with `chom secrets set {name}`"),
        )
    })?;
    let value = match as_str(value_node) {
        Some(v) if is_armored(v) => v.to_owned(),
        _ if is_null(value_node) => {
            return Err(at(
                path,
                value_node,
                format!("secret {name} has an empty value; store one with `chom secrets set {name}`"),
            ));
        }
        _ => return Err(plaintext(value_node)),
    };
    let time_node = updated_at.ok_or_else(|| {
        at(
            path,
            entry,
            format!("secret {name} has no updatedAt; add the time it was set (2026-11-26T12:00:00Z)"),
        )
    })?;
    let updated_at = as_str(time_node).and_then(Timestamp::parse).ok_or_else(|| {
        at(
            path,
            time_node,
            format!("updatedAt of {name} must be an RFC 3339 UTC time such as 2026-11-26T12:00:00Z"),
        )
    })?;
    Ok(SecretEntry { value, updated_at })
}

/// The text of a secrets file.
pub(super) fn render(set: &SecretSet) -> Result<String, SecretsError> {
    let body = serde_saphyr::to_string(set).map_err(|e| SecretsError::Write {
        path: PathBuf::from(set.metadata.name.clone() + ".yaml"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    Ok(format!("{HEADER}{body}"))
}

/// Writes `set` as `dir/<scope>.yaml`, atomically.
pub(super) fn write(dir: &Path, scope: &Scope, set: &SecretSet) -> Result<(), SecretsError> {
    let path = dir.join(scope.file_name());
    let text = render(set)?;
    write_atomic(&path, text.as_bytes(), 0o644).map_err(|source| SecretsError::Write { path, source })
}

/// Writes `bytes` to `path` so that readers see the old or the new file, never half of
/// one: a hidden temp file in the same folder (the watcher and validator skip hidden
/// files), fsync, the mode set before the rename (tempfile creates 0600), rename, and an
/// fsync of the folder so the rename survives a crash.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    crate::atomic::write(path, bytes, mode)
}

/// An exclusive lock on the `secrets.d/` folder itself (flock on its descriptor), held for a
/// read-modify-write so two `chom secrets set` runs cannot lose each other's update. Locking
/// the folder rather than a lock file leaves nothing behind in the repository.
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, waiting for another holder to finish.
    pub(super) fn acquire(dir: &Path) -> Result<Self, SecretsError> {
        let error = |source| SecretsError::Lock {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| SecretsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let file = File::open(dir).map_err(error)?;
        file.lock().map_err(error)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARMOR: &str =
        "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCg==\n-----END AGE ENCRYPTED FILE-----\n";

    fn doc(secrets: &str) -> String {
        format!("apiVersion: chom.dev/v1\nkind: SecretSet\nmetadata: {{name: common}}\nsecrets:\n{secrets}")
    }

    fn armored_entry(name: &str) -> String {
        let body: String = ARMOR.lines().map(|l| format!("      {l}\n")).collect();
        format!("  {name}:\n    value: |\n{body}    updatedAt: 2026-11-26T12:00:00Z\n")
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new("secrets.d/common.yaml"), text, "common")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_documented_shape_parses() {
        let set = parse(Path::new("c.yaml"), &doc(&armored_entry("SMTP_PASSWORD")), "common").unwrap();
        let entry = &set.secrets["SMTP_PASSWORD"];
        assert_eq!(entry.value, ARMOR);
        assert_eq!(entry.updated_at.to_string(), "2026-11-26T12:00:00Z");
    }

    #[test]
    fn plaintext_values_are_refused_without_being_quoted() {
        for text in [
            doc("  SMTP_PASSWORD: hunter2-plain\n"),
            doc("  SMTP_PASSWORD:\n    value: hunter2-plain\n    updatedAt: 2026-11-26T12:00:00Z\n"),
            doc("  SMTP_PASSWORD:\n    value: 12345678\n    updatedAt: 2026-11-26T12:00:00Z\n"),
            doc(
                "  SMTP_PASSWORD:\n    value: \"age-encryption.org/v1 hunter2-plain\"\n    updatedAt: 2026-11-26T12:00:00Z\n",
            ),
        ] {
            let message = parse_err(&text);
            assert!(message.contains("plaintext value"), "{message}");
            assert!(message.contains("SMTP_PASSWORD"), "{message}");
            assert!(
                !message.contains("hunter2") && !message.contains("12345678"),
                "{message}"
            );
        }
    }

    #[test]
    fn structural_mistakes_say_where_and_what_to_do() {
        let message = parse_err(&doc(&armored_entry("smtp_password")));
        assert!(message.starts_with("secrets.d/common.yaml:5:3:"), "{message}");
        assert!(message.contains("not a valid secret name"), "{message}");
        let message = parse_err(&doc(
            "  A:\n    value: |\n      x\n    updatedAt: 2026-11-26T12:00:00Z\n    note: x\n",
        ));
        assert!(message.contains("unknown key \"note\""), "{message}");
        let text = doc(&armored_entry("A")).replace("name: common", "name: web-1");
        assert!(parse_err(&text).contains("must equal the file's stem"));
        let text = doc(&armored_entry("A")).replace("2026-11-26T12:00:00Z", "yesterday");
        assert!(parse_err(&text).contains("RFC 3339"));
        assert!(parse_err("").contains("empty"));
        assert!(parse_err(&doc("")).contains("secrets must be a mapping"));
        assert!(parse_err("a: [1\n").contains("fix the YAML syntax"));
        let twice = format!("{}{}", doc(&armored_entry("A")), armored_entry("A"));
        assert!(parse_err(&twice).contains("duplicated key"), "{}", parse_err(&twice));
    }

    #[test]
    fn written_files_read_back_unchanged_and_keep_values_as_blocks() {
        let mut set = SecretSet::new(&Scope::Common);
        set.secrets.insert(
            "B".into(),
            SecretEntry {
                value: ARMOR.into(),
                updated_at: Timestamp::parse("2026-11-26T12:00:00Z").unwrap(),
            },
        );
        let text = render(&set).unwrap();
        assert!(text.contains("value: |"), "{text}");
        assert!(text.contains(&format!("\n      {ARMOR_BEGIN}\n")), "{text}");
        assert_eq!(parse(Path::new("c.yaml"), &text, "common").unwrap(), set);
    }

    #[test]
    fn files_are_written_atomically_with_mode_644() {
        let dir = tempfile::tempdir().unwrap();
        let set = SecretSet::new(&Scope::Common);
        write(dir.path(), &Scope::Common, &set).unwrap();
        let path = dir.path().join("common.yaml");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        assert_eq!(read(&path, &Scope::Common).unwrap(), set);
    }
}
