//! age keys: the recipients (`secrets.d/.recipients`) values are encrypted to, the identity
//! that decrypts them (found via option, environment or systemd credential, refused when
//! group- or world-accessible), encryption and decryption of one value, and creating a new
//! identity. Only X25519 keys are supported. It never prints, logs or returns a private key
//! or a decrypted value in an error.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::ExposeSecret as _;
use age::x25519;

use super::file::{DirLock, write_atomic};
use super::{CREDENTIAL_NAME, DecryptFailure, IDENTITY_ENV, RECIPIENTS_FILE, SecretValue, SecretsError};
use crate::status::Timestamp;

/// The age public keys in `secrets.d/.recipients`; every value is encrypted to all of them.
pub struct Recipients {
    path: PathBuf,
    keys: Vec<x25519::Recipient>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipients")
            .field("path", &self.path)
            .field("keys", &self.public_keys())
            .finish()
    }
}

impl Recipients {
    /// Reads `dir/.recipients`: one `age1…` key a line; `#` starts a comment; blank lines
    /// are ignored. A missing or empty file is an error, since nothing could be encrypted.
    pub fn read(dir: &Path) -> Result<Self, SecretsError> {
        let path = dir.join(RECIPIENTS_FILE);
        let text = match crate::fsread::read_to_string(&path, crate::fsread::cap::RECIPIENTS) {
            Ok(text) => text,
            Err(e) if e.is_not_found() => return Err(SecretsError::NoRecipients { path }),
            Err(e) => return Err(SecretsError::Read { path, source: e.into() }),
        };
        Self::parse(&path, &text)
    }

    /// Parses the text of a recipients file; `path` is only for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SecretsError> {
        let mut keys: Vec<x25519::Recipient> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |problem| SecretsError::BadRecipient {
                path: path.to_owned(),
                line: index + 1,
                problem,
            };
            if line.starts_with("AGE-SECRET-KEY-") {
                return Err(bad(
                    "this is a PRIVATE key, not a public one: remove it from the file and from git history, \
                     then create a new identity (`chom secrets keygen`) and rotate",
                ));
            }
            if line.starts_with("ssh-") {
                return Err(bad(
                    "SSH recipients are not supported; add an age X25519 public key (age1…) instead",
                ));
            }
            let key = x25519::Recipient::from_str(line)
                .map_err(|_| bad("not an age X25519 public key (age1…); one key per line, `#` starts a comment"))?;
            if !keys.iter().any(|k| k.to_string() == key.to_string()) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(SecretsError::NoRecipients { path: path.to_owned() });
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
        })
    }

    /// How many distinct keys there are (never zero).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a recipients list without keys is refused when read.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public keys, as written in the file.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys.iter().map(ToString::to_string).collect()
    }

    /// Encrypts one value to every recipient, as an armor block.
    pub(super) fn encrypt(&self, name: &str, value: &SecretValue) -> Result<String, SecretsError> {
        let error = |source| SecretsError::Encrypt {
            name: name.to_owned(),
            source: Box::new(source),
        };
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient)).map_err(error)?;
        let mut out = Vec::new();
        let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(|e| error(e.into()))?;
        let mut writer = encryptor.wrap_output(armor).map_err(|e| error(e.into()))?;
        writer
            .write_all(value.expose().as_bytes())
            .map_err(|e| error(e.into()))?;
        writer
            .finish()
            .and_then(ArmoredWriter::finish)
            .map_err(|e| error(e.into()))?;
        // The armor alphabet is ASCII, so this never fails; lossy keeps it panic-free anyway.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// An age identity (one or more X25519 private keys) that decrypts values.
pub struct Identity {
    path: PathBuf,
    keys: Vec<x25519::Identity>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("path", &self.path)
            .field("public_keys", &self.public_keys())
            .finish()
    }
}

impl Identity {
    /// Reads an identity file (as `age-keygen` writes it: `AGE-SECRET-KEY-1…` lines, `#`
    /// comments). Like ssh with private keys, a file that group or others may access is
    /// refused, with the `chmod` that fixes it.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let read_error = |source| SecretsError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if !meta.is_file() {
            return Err(SecretsError::IdentityNotFile { path: path.to_owned() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::IdentityPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = crate::fsread::read_to_string(path, crate::fsread::cap::IDENTITY).map_err(|e| match e {
            crate::fsread::ReadError::NotAFile { .. } => SecretsError::IdentityNotFile { path: path.to_owned() },
            other => read_error(other.into()),
        })?;
        Self::parse(path, &text)
    }

    /// Parses identity text; `path` is only for messages. A bad line is reported by number,
    /// never quoted.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SecretsError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = x25519::Identity::from_str(line).map_err(|_| SecretsError::BadIdentity {
                path: path.to_owned(),
                line: index + 1,
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(SecretsError::EmptyIdentity { path: path.to_owned() });
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
        })
    }

    /// A fresh identity held only in memory (for tests and `create_identity`).
    pub fn generate() -> Self {
        Self {
            path: PathBuf::from("(generated)"),
            keys: vec![x25519::Identity::generate()],
        }
    }

    /// The public keys (`age1…`) of this identity, to add to `.recipients`.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.to_public().to_string()).collect()
    }

    /// Where the identity was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decrypts one armored value.
    pub(super) fn decrypt(&self, armored: &str) -> Result<SecretValue, DecryptFailure> {
        let damaged = |source| match source {
            age::DecryptError::NoMatchingKeys => DecryptFailure::NotARecipient,
            source => DecryptFailure::Damaged {
                source: Box::new(source),
            },
        };
        let decryptor =
            age::Decryptor::new_buffered(ArmoredReader::new(armored.trim_start().as_bytes())).map_err(damaged)?;
        let mut reader = decryptor
            .decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .map_err(damaged)?;
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| DecryptFailure::Truncated { source })?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SecretValue::new(text)),
            Err(e) => {
                // Do not leave the plaintext bytes in freed memory.
                let mut bytes = e.into_bytes();
                bytes.fill(0);
                Err(DecryptFailure::NotText)
            }
        }
    }

    /// Writes this identity to a new file with mode 0600, as `age-keygen` would.
    fn write_new(&self, path: &Path) -> Result<(), SecretsError> {
        let write_error = |source| SecretsError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => SecretsError::Exists { path: path.to_owned() },
                _ => write_error(e),
            })?;
        let mut text = format!("# created: {}\n", Timestamp::now());
        for key in &self.keys {
            text.push_str(&format!("# public key: {}\n", key.to_public()));
            text.push_str(key.to_string().expose_secret());
            text.push('\n');
        }
        let result = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
        // The String held a private key; clear it before it is freed.
        let mut bytes = text.into_bytes();
        bytes.fill(0);
        result.map_err(write_error)
    }
}

/// Where the identity is: `explicit` (the `--age-identity` option), else the
/// `CHOM_AGE_IDENTITY` variable, else `$CREDENTIALS_DIRECTORY/age-identity` when systemd
/// passed the credential. `env` looks a variable up (`|k| std::env::var_os(k)`); tests pass
/// a map so they never touch the process environment.
pub fn locate_identity(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, SecretsError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    if let Some(path) = env(IDENTITY_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(dir).join(CREDENTIAL_NAME);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(SecretsError::NoIdentity)
}

/// Creates a new identity file at `path` (mode 0600; an existing file is never
/// overwritten) and returns its public key.
pub fn create_identity(path: &Path) -> Result<String, SecretsError> {
    let identity = Identity::generate();
    identity.write_new(path)?;
    Ok(identity.public_keys().concat())
}

/// Appends `public_key` to `dir/.recipients` (created if needed) unless it is already
/// listed; returns whether it was added. Values already stored stay unreadable to the new
/// key until someone who can read them runs `chom secrets rotate`.
pub fn add_recipient(dir: &Path, public_key: &str) -> Result<bool, SecretsError> {
    let path = dir.join(RECIPIENTS_FILE);
    let new = Recipients::parse(&path, public_key)?;
    let _lock = DirLock::acquire(dir)?;
    let old = match crate::fsread::read_to_string(&path, crate::fsread::cap::RECIPIENTS) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => String::new(),
        Err(e) => return Err(SecretsError::Read { path, source: e.into() }),
    };
    if !old.trim().is_empty() {
        let listed = Recipients::parse(&path, &old)?;
        if new.public_keys().iter().all(|k| listed.public_keys().contains(k)) {
            return Ok(false);
        }
    }
    let mut text = if old.is_empty() {
        "# age public keys that can read secrets.d/ values, one a line.\n\
         # After adding or removing one, run `chom secrets rotate`.\n"
            .to_owned()
    } else {
        old
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("# added {}\n", Timestamp::now()));
    for key in new.public_keys() {
        text.push_str(&key);
        text.push('\n');
    }
    write_atomic(&path, text.as_bytes(), 0o644).map_err(|source| SecretsError::Write { path, source })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn value(text: &str) -> SecretValue {
        SecretValue::new(text.to_owned())
    }

    fn recipients_of(identities: &[&Identity]) -> Recipients {
        let text: String = identities
            .iter()
            .flat_map(|i| i.public_keys())
            .map(|k| k + "\n")
            .collect();
        Recipients::parse(Path::new(".recipients"), &text).unwrap()
    }

    #[test]
    fn values_round_trip_through_armor() {
        let me = Identity::generate();
        let armored = recipients_of(&[&me]).encrypt("A", &value("s3cret value\n")).unwrap();
        assert!(super::super::file::is_armored(&armored), "{armored}");
        assert!(!armored.contains("s3cret"));
        assert_eq!(me.decrypt(&armored).unwrap().expose(), "s3cret value\n");
    }

    #[test]
    fn every_recipient_can_decrypt_and_strangers_cannot() {
        let (alice, bob, eve) = (Identity::generate(), Identity::generate(), Identity::generate());
        let armored = recipients_of(&[&alice, &bob]).encrypt("A", &value("shared")).unwrap();
        assert_eq!(alice.decrypt(&armored).unwrap().expose(), "shared");
        assert_eq!(bob.decrypt(&armored).unwrap().expose(), "shared");
        assert!(matches!(eve.decrypt(&armored), Err(DecryptFailure::NotARecipient)));
    }

    #[test]
    fn damaged_ciphertext_is_reported_not_panicked() {
        let me = Identity::generate();
        let armored = recipients_of(&[&me]).encrypt("A", &value("x")).unwrap();
        let broken = armored.replacen('A', "B", 3);
        assert!(me.decrypt(&broken).is_err());
        assert!(
            me.decrypt("-----BEGIN AGE ENCRYPTED FILE-----\n-----END AGE ENCRYPTED FILE-----\n")
                .is_err()
        );
    }

    #[test]
    fn recipients_files_allow_comments_and_refuse_private_keys() {
        let me = Identity::generate();
        let key = me.public_keys().concat();
        let text = format!("# team\n\n{key}  # alice\n{key}\n");
        assert_eq!(Recipients::parse(Path::new("r"), &text).unwrap().len(), 1);
        let err = Recipients::parse(Path::new("r"), "AGE-SECRET-KEY-1ABC\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("PRIVATE key") && !err.contains("1ABC"), "{err}");
        let err = Recipients::parse(Path::new("r"), "# only comments\n").unwrap_err();
        assert!(matches!(err, SecretsError::NoRecipients { .. }));
        let err = Recipients::parse(Path::new("r"), "x\nage1nope\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r:1:"), "{err}");
    }

    #[test]
    fn a_group_or_world_readable_identity_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        let public = create_identity(&path).unwrap();
        assert!(public.starts_with("age1"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Identity::load(&path).unwrap().public_keys(), vec![public]);
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let message = Identity::load(&path).unwrap_err().to_string();
            assert!(message.contains(&format!("chmod 600 {}", path.display())), "{message}");
        }
        assert!(matches!(create_identity(&path), Err(SecretsError::Exists { .. })));
    }

    #[test]
    fn bad_identity_lines_are_numbered_never_quoted() {
        let err = Identity::parse(Path::new("k"), "# c\nAGE-SECRET-KEY-1NOTVALIDATALL\n").unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("k:2:") && !message.contains("NOTVALID"),
            "{message}"
        );
        assert!(matches!(
            Identity::parse(Path::new("k"), "\n# none\n"),
            Err(SecretsError::EmptyIdentity { .. })
        ));
    }

    #[test]
    fn identity_is_found_by_option_then_variable_then_systemd_credential() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "x").unwrap();
        let env = |map: HashMap<&'static str, OsString>| move |k: &str| map.get(k).cloned();
        let creds = HashMap::from([("CREDENTIALS_DIRECTORY", dir.path().as_os_str().to_owned())]);
        let both = HashMap::from([
            ("CREDENTIALS_DIRECTORY", dir.path().as_os_str().to_owned()),
            (IDENTITY_ENV, OsString::from("/env/key")),
        ]);
        assert_eq!(
            locate_identity(Some(Path::new("/opt/key")), env(both.clone())).unwrap(),
            Path::new("/opt/key")
        );
        assert_eq!(locate_identity(None, env(both)).unwrap(), Path::new("/env/key"));
        assert_eq!(
            locate_identity(None, env(creds)).unwrap(),
            dir.path().join(CREDENTIAL_NAME)
        );
        assert!(matches!(
            locate_identity(None, env(HashMap::new())),
            Err(SecretsError::NoIdentity)
        ));
    }

    #[test]
    fn adding_a_recipient_twice_adds_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = Identity::generate().public_keys().concat();
        assert!(add_recipient(dir.path(), &key).unwrap());
        assert!(!add_recipient(dir.path(), &key).unwrap());
        let recipients = Recipients::read(dir.path()).unwrap();
        assert_eq!(recipients.public_keys(), vec![key]);
        assert!(add_recipient(dir.path(), "not-a-key").is_err());
    }
}
