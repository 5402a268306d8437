//! `secrets.d/`: secret values encrypted at rest with age, one armored ciphertext per value,
//! so names stay readable and diffs show which secret changed. It owns the file format, the
//! recipients and identity, the operations behind `chom secrets`, resolution for one server
//! and the redactor. It must never write a value in plaintext to disk, argv, a process
//! environment or a log field; delivering values to a server is the caller's job.
//!
//! Layout: `secrets.d/common.yaml` (every server), `secrets.d/<server>.yaml` (overrides for
//! one server), `secrets.d/.recipients` (the age public keys every value is encrypted to).

mod check;
mod error;
mod file;
mod keys;
mod redact;
mod resolve;
mod store;

use std::fmt;

pub use check::{CheckReport, Finding, References, Severity, check};
pub use error::{DecryptFailure, SecretsError};
pub use file::{SCHEMA_FILE, SecretEntry, SecretSet, SecretSetKind, SecretSetMetadata};
pub use keys::{Identity, Recipients, add_recipient, create_identity, locate_identity};
pub use redact::{MIN_REDACTED_LEN, REDACTED, RedactingStream, Redactor};
pub use resolve::{Resolved, ResolvedSecret, SecretValue, SecretVersion, Unresolved, UnresolvedReason, resolve};
pub use store::{
    DEFAULT_GENERATED_LEN, Generated, ListedSecret, MAX_GENERATED_LEN, MAX_VALUE_BYTES, MIN_GENERATED_LEN,
    RotateReport, generate, list, random_value, rotate, set,
};

/// The file stem of the secrets every server shares.
pub const COMMON: &str = "common";

/// The file in `secrets.d/` that lists the age public keys values are encrypted to.
pub const RECIPIENTS_FILE: &str = ".recipients";

/// The environment variable naming the age identity file.
pub const IDENTITY_ENV: &str = "CHOM_AGE_IDENTITY";

/// The systemd credential name (`LoadCredential=age-identity:/path`) read from
/// `$CREDENTIALS_DIRECTORY` when neither the option nor the variable is given.
pub const CREDENTIAL_NAME: &str = "age-identity";

/// The longest secret name accepted (it becomes a shell variable name on the server).
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` is a valid secret name: `^[A-Z][A-Z0-9_]*$`, at most [`MAX_NAME_LEN`].
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Refuses an invalid secret name with a message that says what a valid one looks like.
pub fn check_name(name: &str) -> Result<(), SecretsError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(SecretsError::BadName { name: name.to_owned() })
    }
}

/// Whether `name` can name a server-scoped file: an RFC 1123 label (as `metadata.name` of a
/// Server), at most 63 characters, and not `common`.
fn is_valid_server(name: &str) -> bool {
    name != COMMON && crate::resource::ServerName::is_valid(name)
}

/// Which file a secret lives in: shared by every server, or one server's override.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `common.yaml`: every server.
    Common,
    /// `<server>.yaml`: this server only; overrides `common.yaml`.
    Server(String),
}

impl Scope {
    /// The scope of one server. A server named `common` cannot have its own file, because
    /// that file is the one every server reads.
    pub fn server(name: &str) -> Result<Self, SecretsError> {
        if is_valid_server(name) {
            Ok(Self::Server(name.to_owned()))
        } else {
            Err(SecretsError::BadServer { name: name.to_owned() })
        }
    }

    /// `Common` without a server, else that server's scope.
    pub fn from_option(server: Option<&str>) -> Result<Self, SecretsError> {
        server.map_or(Ok(Self::Common), Self::server)
    }

    /// The scope a file stem names, if it names one.
    pub fn from_stem(stem: &str) -> Option<Self> {
        if stem == COMMON {
            Some(Self::Common)
        } else {
            Self::server(stem).ok()
        }
    }

    /// The file stem, which is also the file's `metadata.name`.
    pub fn stem(&self) -> &str {
        match self {
            Self::Common => COMMON,
            Self::Server(name) => name,
        }
    }

    /// The file name inside `secrets.d/`.
    pub fn file_name(&self) -> String {
        format!("{}.yaml", self.stem())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_follow_the_shell_variable_pattern() {
        for good in ["A", "SMTP_PASSWORD", "K8S_TOKEN_2", "X_"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "smtp", "1A", "_A", "A-B", "A B", "ÄB", &"A".repeat(129)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(check_name("lower").unwrap_err().to_string().contains("upper-case"));
    }

    #[test]
    fn server_scopes_are_labels_and_never_common() {
        assert_eq!(Scope::server("web-1").unwrap().file_name(), "web-1.yaml");
        for bad in ["common", "Web", "-a", "a-", "a/b", "..", "", "a.b"] {
            assert!(Scope::server(bad).is_err(), "{bad}");
        }
        assert_eq!(Scope::from_stem("common"), Some(Scope::Common));
        assert_eq!(Scope::from_stem("README"), None);
    }
}
