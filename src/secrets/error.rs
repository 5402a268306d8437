//! Errors of the secrets module. Each message names files, lines and secret names, and
//! says what to do; none may ever hold a secret value or a private key.

use std::io;
use std::path::PathBuf;

use super::store::{MAX_GENERATED_LEN, MAX_VALUE_BYTES, MIN_GENERATED_LEN};

/// Why an operation on `secrets.d/` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// A file or folder could not be read.
    #[error("cannot read {path}; check that it exists and that chom may read it")]
    Read {
        /// What was read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}; check that its folder exists and is writable")]
    Write {
        /// What was written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another `chom secrets` process holds the folder, or the lock failed.
    #[error("cannot lock {path} against concurrent changes; wait for the other `chom secrets` to finish")]
    Lock {
        /// The locked folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A secrets file is not a valid SecretSet.
    #[error("{path}:{line}:{column}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and how to fix it (never quotes a value).
        problem: String,
    },
    /// A secrets file holds a value that is not an age armor block.
    #[error(
        "{path}:{line}:{column}: secret {name} holds a plaintext value, not an age-encrypted one; delete it from \
         the file, change the credential (git history keeps the old value) and store the new one with \
         `chom secrets set {name}`"
    )]
    Plaintext {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// 1-based column of the value.
        column: usize,
        /// The secret's name.
        name: String,
    },
    /// A secret name does not match `^[A-Z][A-Z0-9_]*$`.
    #[error(
        "{name:?} is not a valid secret name; use upper-case letters, digits and `_`, starting with a letter \
         (at most 128 characters)"
    )]
    BadName {
        /// The refused name.
        name: String,
    },
    /// A server name cannot name a secrets file.
    #[error(
        "{name:?} cannot have its own secrets file; use the server's metadata.name (a lower-case RFC 1123 label \
         other than `common`)"
    )]
    BadServer {
        /// The refused name.
        name: String,
    },
    /// `.recipients` is missing or lists no key.
    #[error("no age recipients in {path}; add a public key (`chom secrets keygen --out FILE` creates one and adds it)")]
    NoRecipients {
        /// The recipients file.
        path: PathBuf,
    },
    /// A line of `.recipients` is not an age X25519 public key.
    #[error("{path}:{line}: {problem}")]
    BadRecipient {
        /// The recipients file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        problem: &'static str,
    },
    /// No identity was given and none was found.
    #[error(
        "no age identity; pass --age-identity FILE, set CHOM_AGE_IDENTITY, or give the service the systemd \
         credential `age-identity` (LoadCredential=age-identity:/path/to/key)"
    )]
    NoIdentity,
    /// The identity file may be read or changed by group or others.
    #[error(
        "{path} is accessible by group or others (mode {mode:03o}); an age identity must be private: run \
         `chmod 600 {path}`"
    )]
    IdentityPermissions {
        /// The identity file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The identity file is a folder, pipe or device.
    #[error("{path} is not a regular file; pass the age identity file itself")]
    IdentityNotFile {
        /// The refused path.
        path: PathBuf,
    },
    /// A line of the identity file is not an X25519 identity. The line is never quoted.
    #[error(
        "{path}:{line}: not an age X25519 identity (AGE-SECRET-KEY-1…); passphrase-protected, plugin and SSH \
         identities are not supported"
    )]
    BadIdentity {
        /// The identity file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// The identity file holds no identity.
    #[error("{path} holds no age identity; create one with `chom secrets keygen --out FILE`")]
    EmptyIdentity {
        /// The identity file.
        path: PathBuf,
    },
    /// `keygen` refuses to overwrite a file.
    #[error("{path} already exists; choose another --out path, or delete the file if it is no longer needed")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// age could not encrypt.
    #[error("encrypting secret {name}")]
    Encrypt {
        /// The secret's name.
        name: String,
        /// age's error (boxed: it is large, and this variant is rare).
        #[source]
        source: Box<age::EncryptError>,
    },
    /// An empty value was given.
    #[error("the value of {name} is empty; pipe a non-empty value, or use --generate")]
    EmptyValue {
        /// The secret's name.
        name: String,
    },
    /// The value holds a NUL byte, which no shell variable can carry.
    #[error("the value of {name} contains a NUL byte, which a shell variable cannot hold; store text only")]
    NulInValue {
        /// The secret's name.
        name: String,
    },
    /// The value is larger than values may be.
    #[error(
        "the value of {name} is {bytes} bytes, over the limit of {MAX_VALUE_BYTES}; values travel with every \
         component run, so store a smaller one (a path or a reference instead of a file's content)"
    )]
    TooLarge {
        /// The secret's name.
        name: String,
        /// Its size.
        bytes: usize,
    },
    /// A generated length outside the accepted range.
    #[error("--length must be between {MIN_GENERATED_LEN} and {MAX_GENERATED_LEN}, not {length}")]
    BadLength {
        /// The refused length.
        length: usize,
    },
    /// The OS random number generator failed.
    #[error("cannot read random bytes from the operating system (/dev/urandom)")]
    Random {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `rotate` found values this identity cannot read and wrote nothing.
    #[error(
        "{count} secret(s) do not decrypt with this identity ({names}); nothing was rotated: use an identity that \
         can read them, or set them again"
    )]
    RotateBlocked {
        /// How many values failed.
        count: usize,
        /// `file: NAME` pairs.
        names: String,
    },
}

/// Why one value did not decrypt. Never holds plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptFailure {
    /// None of the identity's keys is among the value's recipients.
    #[error(
        "it is not encrypted to this identity; add the identity's public key to .recipients and run \
         `chom secrets rotate` with an identity that can read it"
    )]
    NotARecipient,
    /// The armor or the ciphertext is damaged.
    #[error("the ciphertext is damaged; set the secret again")]
    Damaged {
        /// age's error (boxed: it is large, and this variant is rare).
        #[source]
        source: Box<age::DecryptError>,
    },
    /// Reading the decrypted stream failed (a truncated or tampered payload).
    #[error("the ciphertext is truncated or was tampered with; set the secret again")]
    Truncated {
        /// The stream error.
        #[source]
        source: io::Error,
    },
    /// The plaintext is not UTF-8 text.
    #[error("the decrypted value is not UTF-8 text; set the secret again")]
    NotText,
}
