//! One file's text → one YAML document as a `serde_json::Value` plus the line and column
//! of every node and key, so later checks can point at the offending spot. Reads with
//! saphyr (YAML 1.2 core schema: `no` stays a string) and never panics or hangs on
//! hostile input. It knows nothing about chom's resource types.

// A finding is returned once per broken file, never in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;

use saphyr::{MarkedYamlOwned, ScalarOwned, YamlDataOwned, YamlLoader};
use serde_json::Value;

use crate::diag::{Diagnostic, Position};

/// Files larger than this are refused before parsing. A server file is a few hundred
/// bytes; a multi-megabyte one is a mistake (or an attack) and would slow every
/// pre-commit run.
pub const MAX_FILE_BYTES: usize = crate::fsread::cap::RESOURCE as usize;

/// Alias expansion budget in nodes. A resource never needs more; a "billion laughs"
/// document hits it at once instead of exhausting memory.
const ALIAS_NODE_LIMIT: usize = 10_000;

/// Nesting deeper than this is refused: resources are shallow, and the recursive walk
/// must never overflow the stack on a crafted file.
const MAX_DEPTH: usize = 64;

/// A parsed document and where each of its nodes came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as JSON, ready for the schema check and serde.
    pub value: Value,
    /// Positions by JSON pointer.
    pub positions: Positions,
}

/// Positions of values and mapping keys by JSON pointer (`/spec/ssh/port`).
#[derive(Debug, Clone, Default)]
pub struct Positions {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Positions {
    /// Where the value at `pointer` starts, or the nearest enclosing node's position when
    /// the pointer names something absent (a missing required property).
    pub fn value(&self, pointer: &str) -> Position {
        self.nearest(pointer, &self.values)
    }

    /// Where the key of the property at `pointer` starts (falls back to its value).
    pub fn key(&self, pointer: &str) -> Position {
        match self.keys.get(pointer) {
            Some(p) => *p,
            None => self.value(pointer),
        }
    }

    /// Keeps only the positions `keep` accepts. The cross-file rules need a handful of
    /// pointers per file; dropping the rest keeps a 10,000-file validation small.
    pub fn prune(&mut self, keep: impl Fn(&str) -> bool) {
        self.values.retain(|k, _| keep(k));
        self.keys.retain(|k, _| keep(k));
        self.values.shrink_to_fit();
        self.keys.shrink_to_fit();
    }

    fn nearest(&self, pointer: &str, map: &HashMap<String, Position>) -> Position {
        let mut current = pointer;
        loop {
            if let Some(p) = map.get(current) {
                return *p;
            }
            match current.rfind('/') {
                Some(i) => current = &current[..i],
                None => return Position::START,
            }
        }
    }
}

/// Escapes one JSON-pointer segment (RFC 6901).
pub fn escape_pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Reads and parses `path`. Findings (syntax, empty, several documents, not UTF-8, too
/// large, not a regular file) come back as diagnostics, never as `Err`.
pub fn read(path: &Path) -> Result<(String, Document), Diagnostic> {
    let at = Position::START;
    // Never blocks (FIFOs, devices, /proc files are refused) and never reads past the cap.
    let bytes = crate::fsread::read(path, crate::fsread::cap::RESOURCE).map_err(|e| {
        let help = match &e {
            crate::fsread::ReadError::NotAFile {
                what: "a directory", ..
            } => "pass the files inside it, or the folder with --inventory",
            crate::fsread::ReadError::NotAFile { .. } => {
                "resources must be plain files (pipes, sockets, devices and /proc or /sys files are refused)"
            }
            crate::fsread::ReadError::TooLarge { .. } => {
                "a resource file describes one server or role; split or trim it"
            }
            other => other.help(),
        };
        let message = match &e {
            crate::fsread::ReadError::TooLarge { .. } => {
                format!("the file is larger than {MAX_FILE_BYTES} bytes, the limit for resources")
            }
            other => other.problem(),
        };
        Diagnostic::error(e.code(), path, at, message).help(help)
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let column = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        Diagnostic::error(
            "not-utf8",
            path,
            Position { line, column },
            "the file is not valid UTF-8 (binary data or another encoding)",
        )
        .help("save the file as UTF-8 text")
    })?;
    let doc = parse(path, &text)?;
    Ok((text, doc))
}

/// Parses YAML text into exactly one document.
pub fn parse(path: &Path, text: &str) -> Result<Document, Diagnostic> {
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut loader: YamlLoader<'_, MarkedYamlOwned> = YamlLoader::default();
    loader.alias_limit(ALIAS_NODE_LIMIT);
    let scan = parser.load(&mut loader, true).err().or_else(|| loader.error().cloned());
    if let Some(err) = scan {
        let marker = err.marker();
        let at = Position {
            line: marker.line().max(1),
            column: marker.col() + 1,
        };
        let info = err.info();
        let (code, help) = if info.contains("duplicated key") {
            (
                "duplicate-key",
                "a key may appear once per mapping; remove or merge the repeated one",
            )
        } else if info.contains("alias expansion") {
            (
                "alias-limit",
                "anchors and aliases may not expand to more than 10,000 nodes",
            )
        } else {
            (
                "yaml-syntax",
                "fix the YAML syntax at this position (check indentation, quotes and colons)",
            )
        };
        return Err(Diagnostic::error(code, path, at, info.to_owned()).help(help));
    }
    let docs = loader.into_documents();
    if let Some(second) = docs.get(1) {
        let at = position(&second.span.start);
        // A second `---` with nothing after it is harmless noise from some editors.
        if docs.len() > 2 || !matches!(second.data, YamlDataOwned::Value(ScalarOwned::Null)) {
            return Err(Diagnostic::error(
                "multiple-documents",
                path,
                at,
                "the file holds more than one YAML document",
            )
            .help("put each resource in its own file, named after it"));
        }
    }
    let Some(root) = docs.into_iter().next() else {
        return Err(empty(path));
    };
    if matches!(root.data, YamlDataOwned::Value(ScalarOwned::Null)) {
        return Err(empty(path));
    }
    let mut positions = Positions::default();
    let value = convert(path, &root, &mut String::new(), &mut positions, 0)?;
    Ok(Document { value, positions })
}

fn empty(path: &Path) -> Diagnostic {
    Diagnostic::error("empty-file", path, Position::START, "the file holds no resource")
        .help("delete the file, or write a Server or Role in it (see `chom init`)")
}

fn position(marker: &saphyr::Marker) -> Position {
    Position {
        line: marker.line().max(1),
        column: marker.col() + 1,
    }
}

fn convert(
    path: &Path,
    node: &MarkedYamlOwned,
    pointer: &mut String,
    positions: &mut Positions,
    depth: usize,
) -> Result<Value, Diagnostic> {
    let at = position(&node.span.start);
    positions.values.insert(pointer.clone(), at);
    if depth > MAX_DEPTH {
        return Err(
            Diagnostic::error("too-deep", path, at, format!("nesting deeper than {MAX_DEPTH} levels"))
                .pointer(pointer.clone())
                .help("resources are shallow; flatten this structure"),
        );
    }
    Ok(match &node.data {
        YamlDataOwned::Value(scalar) => scalar_to_json(scalar),
        YamlDataOwned::Representation(text, _, _) => Value::String(text.clone()),
        YamlDataOwned::Tagged(_, inner) => convert(path, inner, pointer, positions, depth + 1)?,
        YamlDataOwned::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                out.push(convert(path, item, pointer, positions, depth + 1)?);
                pointer.truncate(len);
            }
            Value::Array(out)
        }
        YamlDataOwned::Mapping(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (key, value) in map {
                let key_text = match &key.data {
                    YamlDataOwned::Value(ScalarOwned::String(s)) => s.clone(),
                    YamlDataOwned::Value(ScalarOwned::Null) => "null".to_owned(),
                    YamlDataOwned::Value(other) => scalar_to_json(other).to_string(),
                    YamlDataOwned::Representation(s, _, _) => s.clone(),
                    _ => {
                        return Err(Diagnostic::error(
                            "complex-key",
                            path,
                            position(&key.span.start),
                            "a mapping key must be a plain scalar",
                        )
                        .pointer(pointer.clone()));
                    }
                };
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_pointer_segment(&key_text));
                positions.keys.insert(pointer.clone(), position(&key.span.start));
                let converted = convert(path, value, pointer, positions, depth + 1)?;
                pointer.truncate(len);
                out.insert(key_text, converted);
            }
            Value::Object(out)
        }
        YamlDataOwned::Alias(_) | YamlDataOwned::BadValue => {
            return Err(
                Diagnostic::error("yaml-syntax", path, at, "this value could not be read")
                    .pointer(pointer.clone())
                    .help("check for an undefined alias (`*name`) or a malformed tagged value"),
            );
        }
    })
}

fn scalar_to_json(scalar: &ScalarOwned) -> Value {
    match scalar {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(*b),
        ScalarOwned::Integer(i) => Value::from(*i),
        ScalarOwned::FloatingPoint(f) => {
            serde_json::Number::from_f64(f.into_inner()).map_or_else(|| Value::String(f.to_string()), Value::Number)
        }
        ScalarOwned::String(s) => Value::String(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Document {
        parse(Path::new("t.yaml"), text).unwrap()
    }

    fn parse_err(text: &str) -> Diagnostic {
        parse(Path::new("t.yaml"), text).unwrap_err()
    }

    #[test]
    fn positions_point_at_values_and_keys() {
        let doc = parse_ok("a: 1\nspec:\n  ssh:\n    port: 70000\n");
        assert_eq!(doc.positions.value("/spec/ssh/port"), Position { line: 4, column: 11 });
        assert_eq!(doc.positions.key("/spec/ssh/port"), Position { line: 4, column: 5 });
        assert_eq!(
            doc.positions.value("/spec/ssh/missing"),
            Position { line: 4, column: 5 }
        );
    }

    #[test]
    fn yaml_1_2_core_schema_keeps_norway_a_string() {
        let doc = parse_ok("country: no\nmode: 0755\non: yes\n");
        assert_eq!(doc.value["country"], "no");
        assert_eq!(doc.value["on"], "yes");
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second_key() {
        let d = parse_err("a: 1\nb: 2\na: 3\n");
        assert_eq!((d.code, d.line, d.column), ("duplicate-key", 3, 1));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let d = parse_err("a: [1, 2\nb: 3\n");
        assert_eq!(d.code, "yaml-syntax");
        assert!(d.line >= 1);
    }

    #[test]
    fn a_second_document_is_refused() {
        let d = parse_err("a: 1\n---\nb: 2\n");
        assert_eq!((d.code, d.line), ("multiple-documents", 3));
    }

    #[test]
    fn empty_and_comment_only_files_are_reported() {
        assert_eq!(parse_err("").code, "empty-file");
        assert_eq!(parse_err("# nothing\n").code, "empty-file");
        assert_eq!(parse_err("---\n").code, "empty-file");
    }

    #[test]
    fn billion_laughs_stops_at_the_alias_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let d = parse_err(&text);
        assert_eq!(d.code, "alias-limit");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let d = parse_err(&text);
        assert!(matches!(d.code, "too-deep" | "yaml-syntax"), "{d:?}");
    }

    #[test]
    fn pointer_segments_are_escaped() {
        let doc = parse_ok("\"a/b~c\": 1\n");
        assert_eq!(doc.positions.key("/a~1b~0c"), Position { line: 1, column: 1 });
    }
}
