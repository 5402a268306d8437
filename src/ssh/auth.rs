//! Public-key authentication from an identity file, then from ssh-agent; owns the order of
//! attempts and must never prompt (chom runs unattended) or log key material.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::Handle;
use russh::keys::PrivateKeyWithHashAlg;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::{HashAlg, PrivateKey};

use super::error::SshError;
use super::host_key::{Checker, fingerprint};

/// Who to log in as and where, for error messages.
pub(crate) struct Login<'a> {
    pub(crate) user: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) identity_file: Option<&'a Path>,
    pub(crate) agent_socket: Option<&'a Path>,
}

enum Identity {
    Key(Box<PrivateKey>),
    Encrypted(PathBuf),
}

/// Tries the identity file first (an explicit choice beats whatever the agent holds), then every
/// plain key the agent offers.
pub(crate) async fn authenticate(handle: &mut Handle<Checker>, login: &Login<'_>) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    let mut encrypted: Option<PathBuf> = None;

    if let Some(path) = login.identity_file {
        match load_identity(path).await? {
            Identity::Key(key) => {
                tried.push(format!("key file {}", path.display()));
                let hash = rsa_hash(handle, key.algorithm().is_rsa(), login).await?;
                let offer = PrivateKeyWithHashAlg::new(Arc::new(*key), hash);
                let result = handle
                    .authenticate_publickey(login.user, offer)
                    .await
                    .map_err(|source| session_error(login, source))?;
                if result.success() {
                    return Ok(());
                }
            }
            Identity::Encrypted(path) => encrypted = Some(path),
        }
    }

    let agent_keys = try_agent(handle, login, &mut tried).await?;
    if agent_keys == AgentOutcome::Success {
        return Ok(());
    }

    if tried.is_empty() {
        return Err(match encrypted {
            Some(path) => SshError::EncryptedKey { path },
            None => SshError::NoAuthMethod {
                user: login.user.to_string(),
                host: login.host.to_string(),
            },
        });
    }
    if let Some(path) = encrypted {
        tried.insert(0, format!("key file {} (encrypted, skipped)", path.display()));
    }
    Err(SshError::AuthRefused {
        user: login.user.to_string(),
        host: login.host.to_string(),
        port: login.port,
        tried,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum AgentOutcome {
    Success,
    NotUsed,
}

async fn try_agent(
    handle: &mut Handle<Checker>,
    login: &Login<'_>,
    tried: &mut Vec<String>,
) -> Result<AgentOutcome, SshError> {
    let Some(socket) = login.agent_socket else {
        return Ok(AgentOutcome::NotUsed);
    };
    // An agent that is configured but gone (stale SSH_AUTH_SOCK) is treated as absent: the
    // resulting NoAuthMethod/EncryptedKey error says what to fix.
    let mut agent = match AgentClient::connect_uds(socket).await {
        Ok(agent) => agent,
        Err(e) => {
            tracing::debug!(socket = %socket.display(), error = %e, "ssh-agent unusable");
            return Ok(AgentOutcome::NotUsed);
        }
    };
    let identities = match agent.request_identities().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::debug!(socket = %socket.display(), error = %e, "ssh-agent listing failed");
            return Ok(AgentOutcome::NotUsed);
        }
    };
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            // Certificates need a CA on the server side that chom does not manage.
            continue;
        };
        tried.push(format!("agent key {}", fingerprint(&key)));
        let hash = rsa_hash(handle, key.algorithm().is_rsa(), login).await?;
        match handle
            .authenticate_publickey_with(login.user, key, hash, &mut agent)
            .await
        {
            Ok(result) if result.success() => return Ok(AgentOutcome::Success),
            Ok(_) => {}
            Err(russh::AgentAuthError::Send(_)) => {
                return Err(session_error(login, russh::Error::SendError));
            }
            // The agent declined to sign (e.g. a confirm-only key): try the next one.
            Err(e) => tracing::debug!(error = %e, "ssh-agent did not sign"),
        }
    }
    Ok(AgentOutcome::NotUsed)
}

async fn load_identity(path: &Path) -> Result<Identity, SshError> {
    // Never blocks on a FIFO or device in its place, never reads past the cap.
    let file = path.to_path_buf();
    let text = tokio::task::spawn_blocking(move || crate::fsread::read_to_string(&file, crate::fsread::cap::SSH_KEY))
        .await
        .map_err(std::io::Error::other)
        .and_then(|read| read.map_err(std::io::Error::from))
        .map_err(|source| SshError::IdentityRead {
            path: path.to_path_buf(),
            source,
        })?;
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(Identity::Key(Box::new(key))),
        Err(russh::keys::Error::KeyIsEncrypted) => Ok(Identity::Encrypted(path.to_path_buf())),
        Err(source) => Err(SshError::IdentityInvalid {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// RSA signatures need a hash the server accepts; ask only for RSA keys because the lookup may
/// wait up to a second for the server's extension info.
async fn rsa_hash(handle: &Handle<Checker>, is_rsa: bool, login: &Login<'_>) -> Result<Option<HashAlg>, SshError> {
    if !is_rsa {
        return Ok(None);
    }
    handle
        .best_supported_rsa_hash()
        .await
        .map(Option::flatten)
        .map_err(|source| session_error(login, source))
}

fn session_error(login: &Login<'_>, source: russh::Error) -> SshError {
    SshError::Session {
        host: login.host.to_string(),
        port: login.port,
        source,
    }
}
