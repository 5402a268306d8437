//! The transport's error type; owns the wording users see and must not hold any logic beyond
//! classifying which failures are worth a retry.

use std::path::PathBuf;
use std::time::Duration;

use super::known_hosts::{ExpectedKey, Location};

/// Everything that can go wrong talking to a server. Messages say what happened and what to
/// do; the context lives in fields so callers (status, history) can record it structurally.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Nothing listens on the port (TCP RST on connect).
    #[error("connection to {host}:{port} was refused; check that sshd runs and the port is right")]
    ConnectRefused {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
    },
    /// TCP connect, key exchange and authentication together took longer than allowed.
    #[error(
        "connecting to {host}:{port} timed out after {timeout:?}; check the address, the firewall and that the server is up"
    )]
    ConnectTimeout {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The TCP connection could not be made (DNS, routing, …).
    #[error("cannot connect to {host}:{port}")]
    Connect {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server kept resetting the handshake, even after backing off.
    #[error(
        "the ssh handshake with {host}:{port} was reset {attempts} times; the server may be overloaded or dropping connections (sshd MaxStartups)"
    )]
    HandshakeReset {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// How many attempts were made.
        attempts: u32,
        /// The last reset.
        #[source]
        source: russh::Error,
    },
    /// The SSH handshake failed for a reason other than host key checks or resets.
    #[error("the ssh handshake with {host}:{port} failed")]
    Handshake {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// The protocol error.
        #[source]
        source: russh::Error,
    },
    /// The server's host key is in no known_hosts file and no pin was given.
    #[error(
        "host key for {host}:{port} is not known ({fingerprint}); run `chom trust {name}` after checking the fingerprint, or pin it under spec.ssh.hostKeys"
    )]
    UnknownHostKey {
        /// Server (inventory) name.
        name: String,
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// Fingerprint of the key the server presented.
        fingerprint: String,
    },
    /// known_hosts lists other keys of the same type for this host: possibly an attack.
    #[error(
        "host key changed for {host}:{port}: expected {}, server presented {presented}; if the server was reinstalled, verify and run `chom trust {name}`",
        join(.expected)
    )]
    HostKeyChanged {
        /// Server (inventory) name.
        name: String,
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// The keys known_hosts lists for the host, with file and line.
        expected: Vec<ExpectedKey>,
        /// Fingerprint of the key the server presented.
        presented: String,
    },
    /// The presented key is marked `@revoked`.
    #[error("host key {fingerprint} of {host}:{port} is revoked ({location}); the server must get a new host key")]
    HostKeyRevoked {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// Fingerprint of the revoked key.
        fingerprint: String,
        /// The `@revoked` line.
        location: Location,
    },
    /// Pins are configured and the server presented none of them.
    #[error(
        "host key of {host}:{port} ({presented}) matches none of the keys pinned for {name} under spec.ssh.hostKeys; if the server was reinstalled, verify the new key and update the pin"
    )]
    HostKeyNotPinned {
        /// Server (inventory) name.
        name: String,
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// Fingerprint of the key the server presented.
        presented: String,
    },
    /// The server offered a certificate instead of a plain host key.
    #[error(
        "{host}:{port} presented a host certificate; chom does not trust certificate authorities, so pin the plain host key"
    )]
    HostCertificate {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
    },
    /// A pin in the inventory is neither a public key line nor a SHA256 fingerprint.
    #[error("host key pin {pin:?} for {name} is neither an OpenSSH public key line nor a SHA256:… fingerprint")]
    BadPin {
        /// Server (inventory) name.
        name: String,
        /// The pin as written.
        pin: String,
    },
    /// A known_hosts file exists but cannot be read.
    #[error("cannot read known_hosts file {path}")]
    KnownHostsRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The identity file cannot be read.
    #[error("cannot read identity file {path}")]
    IdentityRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The identity file is not a private key russh understands.
    #[error("identity file {path} is not a usable private key")]
    IdentityInvalid {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: russh::keys::Error,
    },
    /// The identity file has a passphrase and no agent could stand in for it.
    #[error(
        "identity file {path} is encrypted and no ssh-agent offers a key; load it with `ssh-add {path}` or use a key without a passphrase"
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// Neither an identity file nor an agent is available.
    #[error(
        "no way to authenticate as {user} on {host}: set spec.ssh.identityFile or start an ssh-agent (SSH_AUTH_SOCK)"
    )]
    NoAuthMethod {
        /// Login user.
        user: String,
        /// Server address.
        host: String,
    },
    /// The server refused every key we offered.
    #[error(
        "{host}:{port} refused {user} (tried {}); add the key to that user's authorized_keys",
        .tried.join(", ")
    )]
    AuthRefused {
        /// Login user.
        user: String,
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// What was offered, e.g. `key file ~/.ssh/id_ed25519`, `agent key SHA256:…`.
        tried: Vec<String>,
    },
    /// The established session failed (channel could not be opened, connection lost, …).
    #[error("the ssh session with {host}:{port} failed")]
    Session {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// The protocol error.
        #[source]
        source: russh::Error,
    },
    /// The server answered the exec request with a failure.
    #[error("{host}:{port} refused to run the command")]
    ExecRefused {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
    },
    /// The command ran past its deadline and was killed.
    #[error("the command on {host}:{port} did not finish within {deadline:?}; it was killed on the server")]
    Timeout {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// chom was interrupted (a second Ctrl-C, or shutdown past its bound) while the command
    /// ran; it was killed on the server.
    #[error("interrupted: chom was stopped while the command ran on {host}:{port}; it was killed on the server")]
    Interrupted {
        /// Server address.
        host: String,
        /// Server port.
        port: u16,
    },
    /// `sudo -n` wanted a password.
    #[error(
        "sudo on {host} wants a password for {user}; allow {user} to run sudo without a password (NOPASSWD in /etc/sudoers.d)"
    )]
    SudoNeedsPassword {
        /// Login user.
        user: String,
        /// Server address.
        host: String,
    },
}

impl SshError {
    /// True when the command was cut short by the transport's interrupt.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, SshError::Interrupted { .. })
    }
}

fn join(expected: &[ExpectedKey]) -> String {
    expected
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A handshake that died this way was most likely dropped by the server's MaxStartups throttle
/// (it accepts, then closes before or during key exchange), so another try later can succeed.
pub(crate) fn is_handshake_reset(err: &russh::Error) -> bool {
    use std::io::ErrorKind;
    match err {
        russh::Error::IO(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
                | ErrorKind::BrokenPipe
        ),
        russh::Error::Disconnect | russh::Error::HUP => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_and_early_eof_are_retryable_but_protocol_errors_are_not() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_handshake_reset(&russh::Error::IO(reset)));
        assert!(is_handshake_reset(&russh::Error::Disconnect));
        assert!(!is_handshake_reset(&russh::Error::UnknownKey));
        assert!(!is_handshake_reset(&russh::Error::Version));
    }

    #[test]
    fn changed_message_names_both_fingerprints_and_the_line() {
        let err = SshError::HostKeyChanged {
            name: "web1".into(),
            host: "10.0.0.1".into(),
            port: 22,
            expected: vec![ExpectedKey {
                fingerprint: "SHA256:old".into(),
                location: Location {
                    file: PathBuf::from("/root/.ssh/known_hosts"),
                    line: 7,
                },
            }],
            presented: "SHA256:new".into(),
        };
        assert_eq!(
            err.to_string(),
            "host key changed for 10.0.0.1:22: expected SHA256:old (/root/.ssh/known_hosts:7), server presented SHA256:new; if the server was reinstalled, verify and run `chom trust web1`"
        );
    }
}
