//! Host key policy: pins or known_hosts, judged inside russh's `check_server_key`; owns the
//! decision "is this the server we mean" and must not authenticate or run anything.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::{Algorithm, Fingerprint, HashAlg, PublicKey};

use super::error::SshError;
use super::known_hosts::{ExpectedKey, HostKeyStatus, KnownHosts, Location};

/// `SHA256:…` fingerprint of a public key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// One accepted host key from the inventory.
#[derive(Debug, Clone)]
pub(crate) enum Pin {
    Key(PublicKey),
    Fingerprint(Fingerprint),
}

impl Pin {
    fn matches(&self, key: &PublicKey) -> bool {
        match self {
            Pin::Key(pinned) => pinned.key_data() == key.key_data(),
            Pin::Fingerprint(fp) => key.fingerprint(fp.algorithm()) == *fp,
        }
    }
}

/// Parses pins written as OpenSSH public key lines (comment allowed) or `SHA256:` fingerprints.
pub(crate) fn parse_pins(name: &str, pins: &[String]) -> Result<Vec<Pin>, SshError> {
    pins.iter()
        .map(|raw| {
            let text = raw.trim();
            let parsed = if text.starts_with("SHA256:") {
                // ssh-keygen prints unpadded base64, but people paste padded forms too.
                Fingerprint::from_str(text.trim_end_matches('='))
                    .ok()
                    .map(Pin::Fingerprint)
            } else {
                PublicKey::from_openssh(text).ok().map(Pin::Key)
            };
            parsed.ok_or_else(|| SshError::BadPin {
                name: name.to_string(),
                pin: raw.clone(),
            })
        })
        .collect()
}

/// How a connection decides whether to trust the server.
#[derive(Debug)]
pub(crate) enum Policy {
    /// Pins are authoritative: known_hosts is not consulted.
    Pins(Vec<Pin>),
    /// Keys from the configured known_hosts files.
    KnownHosts(Arc<KnownHosts>),
    /// Accept anything and record it: only for `fetch_host_key`, which never authenticates.
    Capture,
}

/// What the policy concluded about the presented key.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    Trusted,
    Unknown,
    Changed(Vec<ExpectedKey>),
    Revoked(Location),
    NotPinned,
    Certificate,
}

impl Policy {
    fn judge(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        match self {
            Policy::Capture => Verdict::Trusted,
            Policy::Pins(pins) => {
                if pins.iter().any(|p| p.matches(key)) {
                    Verdict::Trusted
                } else {
                    Verdict::NotPinned
                }
            }
            Policy::KnownHosts(known) => match known.check(host, port, key) {
                HostKeyStatus::Known => Verdict::Trusted,
                HostKeyStatus::Unknown => Verdict::Unknown,
                HostKeyStatus::Changed { expected } => Verdict::Changed(expected),
                HostKeyStatus::Revoked { location } => Verdict::Revoked(location),
            },
        }
    }

    /// Host key algorithms to ask for first: the ones we can verify. Without this a server with
    /// ed25519 and ECDSA keys would present ed25519 and look unknown to a known_hosts file
    /// that lists only its ECDSA key.
    pub(crate) fn preferred_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        match self {
            Policy::Capture => Vec::new(),
            Policy::Pins(pins) => pins
                .iter()
                .filter_map(|p| match p {
                    Pin::Key(k) => Some(k.algorithm()),
                    Pin::Fingerprint(_) => None,
                })
                .collect(),
            Policy::KnownHosts(known) => known.algorithms_for(host, port),
        }
    }
}

/// The parsed known_hosts files, re-read only when one of them changed.
///
/// Each connection consults them, and a running daemon must see a key that `chom trust` added
/// meanwhile; but parsing a file with a line per server for every connection is quadratic in
/// the fleet's size. A file counts as changed when its length, inode or modification time
/// (nanoseconds) differ.
#[derive(Debug, Default)]
pub(crate) struct KnownHostsCache {
    loaded: tokio::sync::Mutex<Option<Loaded>>,
}

/// The files' stamps when read (`None`: missing), and what they held.
type Loaded = (Vec<Option<Stamp>>, Arc<KnownHosts>);

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    inode: u64,
    modified: Option<std::time::SystemTime>,
}

impl KnownHostsCache {
    /// The entries of `files`, from the cache when no file changed since they were read.
    pub(crate) async fn get(&self, files: &[PathBuf]) -> Result<Arc<KnownHosts>, SshError> {
        let mut loaded = self.loaded.lock().await;
        let mut stamps = Vec::with_capacity(files.len());
        for path in files {
            stamps.push(stamp(path).await?);
        }
        if let Some((seen, known)) = loaded.as_ref()
            && *seen == stamps
        {
            return Ok(Arc::clone(known));
        }
        let known = Arc::new(load_known_hosts(files).await?);
        *loaded = Some((stamps, Arc::clone(&known)));
        Ok(known)
    }
}

async fn stamp(path: &PathBuf) -> Result<Option<Stamp>, SshError> {
    use std::os::unix::fs::MetadataExt;
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(Some(Stamp {
            len: meta.len(),
            inode: meta.ino(),
            modified: meta.modified().ok(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SshError::KnownHostsRead {
            path: path.clone(),
            source,
        }),
    }
}

/// Reads every known_hosts file; a missing file counts as empty (a fresh machine has none).
async fn load_known_hosts(files: &[PathBuf]) -> Result<KnownHosts, SshError> {
    let mut known = KnownHosts::new();
    for path in files {
        // Never blocks on a FIFO or device in its place, never reads past the cap.
        let file = path.clone();
        let read =
            tokio::task::spawn_blocking(move || crate::fsread::read_to_string(&file, crate::fsread::cap::KNOWN_HOSTS))
                .await
                .unwrap_or_else(|e| {
                    Err(crate::fsread::ReadError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })
                });
        match read {
            Ok(text) => known.add_text(&text, path),
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(SshError::KnownHostsRead {
                    path: path.clone(),
                    source: e.into(),
                });
            }
        }
    }
    Ok(known)
}

/// What the handshake saw, shared with the caller because russh only reports
/// "Unknown server key" when `check_server_key` says no.
pub(crate) type Seen = Arc<Mutex<Option<(PublicKey, Verdict)>>>;

/// The russh client handler: it only judges the host key.
pub(crate) struct Checker {
    pub(crate) policy: Arc<Policy>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) seen: Seen,
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let public = key.public_key();
        let verdict = if key.certificate().is_some() {
            // We do not trust any CA, so the key inside a certificate proves nothing to us.
            Verdict::Certificate
        } else {
            self.policy.judge(&self.host, self.port, &public)
        };
        let trusted = matches!(verdict, Verdict::Trusted);
        if let Ok(mut slot) = self.seen.lock() {
            *slot = Some((public, verdict));
        }
        Ok(trusted)
    }
}

/// Turns a refusal into the error users see; `None` when the verdict was not a refusal.
pub(crate) fn refusal(name: &str, host: &str, port: u16, key: &PublicKey, verdict: &Verdict) -> Option<SshError> {
    let (name, host, presented) = (name.to_string(), host.to_string(), fingerprint(key));
    Some(match verdict {
        Verdict::Trusted => return None,
        Verdict::Unknown => SshError::UnknownHostKey {
            name,
            host,
            port,
            fingerprint: presented,
        },
        Verdict::Changed(expected) => SshError::HostKeyChanged {
            name,
            host,
            port,
            expected: expected.clone(),
            presented,
        },
        Verdict::Revoked(location) => SshError::HostKeyRevoked {
            host,
            port,
            fingerprint: presented,
            location: location.clone(),
        },
        Verdict::NotPinned => SshError::HostKeyNotPinned {
            name,
            host,
            port,
            presented,
        },
        Verdict::Certificate => SshError::HostCertificate { host, port },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGA//5oOQnXVDaeC4bjEnLdHwJbIMiLvo0SzzMP94B7M";
    const ED_A_FP: &str = "SHA256:ZrOjn/fiDiiELe+DoTwly75QHWX3UFzRVZyCEbdU9U0";
    const ED_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN9PwPQKbqXq9EbAD42OuCD5A4/rjBoQBTsx3Jwf3L9P";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[tokio::test]
    async fn known_hosts_are_parsed_again_only_when_a_file_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("a.example {ED_A}\n")).unwrap();
        let files = vec![file.clone(), dir.path().join("missing")];
        let cache = KnownHostsCache::default();
        let first = cache.get(&files).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &cache.get(&files).await.unwrap()),
            "unchanged: not re-read"
        );
        assert_eq!(first.check("b.example", 22, &key(ED_B)), HostKeyStatus::Unknown);

        // `chom trust` appends while a daemon runs: the next connection sees the key.
        super::super::known_hosts::append_entry(&file, "b.example", 22, &key(ED_B)).unwrap();
        let after = cache.get(&files).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &after));
        assert_eq!(after.check("b.example", 22, &key(ED_B)), HostKeyStatus::Known);

        // A file that appears later counts too.
        std::fs::write(&files[1], format!("c.example {ED_A}\n")).unwrap();
        let third = cache.get(&files).await.unwrap();
        assert_eq!(third.check("c.example", 22, &key(ED_A)), HostKeyStatus::Known);
    }

    #[test]
    fn pins_accept_key_lines_with_comments_and_fingerprints() {
        let pins = parse_pins("web1", &[format!("{ED_A} root@web1"), format!("{ED_A_FP}=")]).unwrap();
        assert!(pins.iter().all(|p| p.matches(&key(ED_A))));
        assert!(!pins.iter().any(|p| p.matches(&key(ED_B))));
    }

    #[test]
    fn a_garbled_pin_is_rejected_with_the_server_name() {
        let err = parse_pins("web1", &["ssh-ed25519 nope".to_string()]).err().unwrap();
        assert!(err.to_string().contains("for web1"), "{err}");
    }

    #[test]
    fn pins_override_known_hosts() {
        let pins = Policy::Pins(parse_pins("web1", &[ED_B.to_string()]).unwrap());
        assert!(matches!(pins.judge("web1", 22, &key(ED_A)), Verdict::NotPinned));
        assert!(matches!(pins.judge("web1", 22, &key(ED_B)), Verdict::Trusted));
    }

    #[test]
    fn unknown_message_tells_how_to_trust() {
        let err = refusal("web1", "127.0.0.2", 2222, &key(ED_A), &Verdict::Unknown).unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "host key for 127.0.0.2:2222 is not known ({ED_A_FP}); run `chom trust web1` after checking the fingerprint, or pin it under spec.ssh.hostKeys"
            )
        );
    }
}
