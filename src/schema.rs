//! JSON Schemas generated from the resource, status and secrets-file types (schemars), and
//! the compiled validators `validate` runs them through. The committed copies in `schemas/`
//! are written from here; a test fails when they are stale. The imports run one way: this
//! list reads the types, and no type's module calls back into it.

use std::path::Path;
use std::sync::OnceLock;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::resource::{Role, Server};
use crate::secrets::SecretSet;
use crate::status::ServerStatus;

/// The schema files chom publishes, by file name.
pub const FILES: [&str; 5] = [
    "server.schema.json",
    "role.schema.json",
    "status.schema.json",
    crate::secrets::SCHEMA_FILE,
    crate::treeconfig::SCHEMA_FILE,
];

/// The draft 2020-12 schema of a type, with documented unit enums as `enum`.
pub fn generate<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12().for_deserialize().into_generator();
    let mut value = generator.into_root_schema_for::<T>().to_value();
    consts_to_enums(&mut value);
    value
}

/// schemars writes a documented unit enum as `oneOf: [{const: a}, {const: b}]`. A wrong
/// value then fails as "not valid under any of the schemas"; `enum: [a, b]` makes the
/// validator say "is not one of a, b", and editors offer the values for completion.
fn consts_to_enums(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let consts: Option<Vec<Value>> = match map.get("oneOf") {
                Some(Value::Array(options)) => options.iter().map(|o| o.get("const").cloned()).collect(),
                _ => None,
            };
            if let Some(consts) = consts {
                map.remove("oneOf");
                if consts.iter().all(Value::is_string) {
                    map.insert("type".to_owned(), Value::from("string"));
                }
                map.insert("enum".to_owned(), Value::Array(consts));
            }
            map.values_mut().for_each(consts_to_enums);
        }
        Value::Array(items) => items.iter_mut().for_each(consts_to_enums),
        _ => {}
    }
}

/// The schema for `kind: Server`.
pub fn server() -> Value {
    generate::<Server>()
}

/// The schema for `kind: Role`.
pub fn role() -> Value {
    generate::<Role>()
}

/// The schema for `<name>.status.yaml` (`kind: ServerStatus`).
pub fn status() -> Value {
    generate::<ServerStatus>()
}

/// The schema for `chom.yaml` (`kind: Config`).
pub fn config() -> Value {
    generate::<crate::treeconfig::TreeConfig>()
}

/// The schema for a file in `secrets.d/` (`kind: SecretSet`), for editors and `chom validate`.
pub fn secret_set() -> Value {
    generate::<SecretSet>()
}

/// Every schema with the file name it is published under.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        (FILES[0], server()),
        (FILES[1], role()),
        (FILES[2], status()),
        (FILES[3], secret_set()),
        (FILES[4], config()),
    ]
}

/// Pretty JSON with a trailing newline, as committed.
pub fn to_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes every schema into `dir` (created if needed).
pub fn write_all(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, schema) in all() {
        let path = dir.join(name);
        std::fs::write(&path, to_text(&schema))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes each schema into `dir` that is not there yet (`chom init`, `chom
/// import-legacy`: a new tree's modelines point at `schemas/`); never replaces one.
pub fn write_missing(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, schema) in all() {
        let path = dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(to_text(&schema).as_bytes())?;
                written.push(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Compiled validators, built once per process (compiling costs about a millisecond, but
/// a 10,000-file inventory must not pay it per file).
pub struct Validators {
    /// For `kind: Server`.
    pub server: jsonschema::Validator,
    /// For `kind: Role`.
    pub role: jsonschema::Validator,
    /// For `chom.yaml` (`kind: Config`).
    pub config: jsonschema::Validator,
    /// The schemas these were compiled from (server, role, config), for the field names
    /// an unknown field is compared with.
    pub sources: [Value; 3],
}

/// The process-wide validators.
pub fn validators() -> &'static Validators {
    static VALIDATORS: OnceLock<Validators> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let sources = [server(), role(), config()];
        Validators {
            server: compile(&sources[0]),
            role: compile(&sources[1]),
            config: compile(&sources[2]),
            sources,
        }
    })
}

fn compile(schema: &Value) -> jsonschema::Validator {
    // The schemas are generated from our own types and covered by tests, so a failure
    // here is a programming error, not an input error.
    #[allow(clippy::expect_used)]
    jsonschema::validator_for(schema).expect("generated schema compiles")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schemas_are_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for (name, schema) in all() {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                committed == to_text(&schema),
                "schemas/{name} is stale; run `cargo run -- schema --write schemas/` and commit it"
            );
        }
    }

    #[test]
    fn schemas_state_the_defaults() {
        let server = server();
        let text = server.to_string();
        assert!(text.contains("\"default\":\"10m\""), "interval default");
        assert!(text.contains("\"default\":22"), "port default");
        assert!(text.contains("\"default\":\"root\""), "user default");
        assert!(text.contains("\"additionalProperties\":false"));
    }

    #[test]
    fn the_secret_set_schema_pins_kind_and_names() {
        let schema = secret_set();
        let text = schema.to_string();
        assert!(text.contains("SecretSet") && text.contains("propertyNames"), "{text}");
        assert!(text.contains("BEGIN AGE ENCRYPTED FILE"), "{text}");
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn validators_compile() {
        let v = validators();
        assert!(!v.server.is_valid(&serde_json::json!({})));
        assert!(!v.role.is_valid(&serde_json::json!({})));
        assert!(!v.config.is_valid(&serde_json::json!({})));
    }
}
