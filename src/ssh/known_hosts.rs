//! OpenSSH known_hosts parsing, matching and appending; owns the file format only and must not
//! touch the network or decide trust policy (pins, prompts and error wording live in `ssh.rs`).
//!
//! russh ships a known_hosts helper, but it splits fields on single spaces (tab-separated files
//! read as "unknown"), fails closed when a host lists two keys of one type (which breaks key
//! rotation) and reports line numbers that skip comments. This module replaces it.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

/// The outcome of looking a server's key up in known_hosts files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A non-revoked entry for this host holds exactly this key.
    Known,
    /// No entry for this host holds a key of the presented key's algorithm.
    Unknown,
    /// The host has keys of the presented algorithm, and none of them is the presented key.
    Changed {
        /// Every key of that algorithm listed for the host, with where it was found.
        expected: Vec<ExpectedKey>,
    },
    /// The presented key is listed under `@revoked` for this host and must never be accepted.
    Revoked {
        /// Where the `@revoked` line is.
        location: Location,
    },
}

/// A file and 1-based line number inside it, shown as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The known_hosts file.
    pub file: PathBuf,
    /// 1-based line number, counting comments and blank lines like an editor does.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A key that known_hosts lists for a host, as reported when the server presents another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedKey {
    /// `SHA256:…` fingerprint of the listed key.
    pub fingerprint: String,
    /// Where the key is listed.
    pub location: Location,
}

impl fmt::Display for ExpectedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.fingerprint, self.location)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
}

#[derive(Debug, Clone)]
enum Hosts {
    /// `|1|salt|hash`: HMAC-SHA1 of the host name keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A comma-separated pattern list, kept lowercase.
    Patterns(String),
}

#[derive(Debug, Clone)]
struct Entry {
    marker: Marker,
    hosts: Hosts,
    key: PublicKey,
    file: Arc<Path>,
    line: usize,
}

impl Entry {
    fn location(&self) -> Location {
        Location {
            file: self.file.to_path_buf(),
            line: self.line,
        }
    }
}

/// Entries parsed from one or more known_hosts files, ready to be queried.
///
/// A lookup must not scan every line: a fleet's known_hosts file has a line per server, and
/// scanning it for every server is quadratic (5,000 servers, 25 million comparisons). Entries
/// whose host field is a plain list of names are indexed by name; only hashed entries and
/// patterns with wildcards or negations are tried one by one, as OpenSSH does.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Lowercase host field (`name` or `[name]:port`) -> indexes into `entries`, ascending.
    by_name: HashMap<String, Vec<usize>>,
    /// Indexes of the entries that must be matched one by one, ascending.
    scanned: Vec<usize>,
}

impl KnownHosts {
    /// An empty set: every host is unknown.
    pub fn new() -> KnownHosts {
        KnownHosts::default()
    }

    /// Adds the entries of one file's text. Lines OpenSSH would ignore (bad keys, unknown
    /// markers, `@cert-authority`) are skipped rather than failing the whole file, because one
    /// odd line must not lock chom out of every server.
    pub fn add_text(&mut self, text: &str, file: &Path) {
        let file: Arc<Path> = Arc::from(file);
        for (index, line) in text.lines().enumerate() {
            if let Some(entry) = parse_line(line, &file, index + 1) {
                let at = self.entries.len();
                match &entry.hosts {
                    Hosts::Patterns(list) if !list.contains(['*', '?', '!']) => {
                        for name in list.split(',').filter(|n| !n.is_empty()) {
                            let slots = self.by_name.entry(name.to_owned()).or_default();
                            if slots.last() != Some(&at) {
                                slots.push(at);
                            }
                        }
                    }
                    _ => self.scanned.push(at),
                }
                self.entries.push(entry);
            }
        }
    }

    /// The entries whose host field matches `name` (already lowercase), in file order.
    fn matching(&self, name: &str) -> Vec<&Entry> {
        let mut found: Vec<usize> = self.by_name.get(name).cloned().unwrap_or_default();
        found.extend(
            self.scanned
                .iter()
                .copied()
                .filter(|&i| hosts_match(&self.entries[i].hosts, name)),
        );
        found.sort_unstable();
        found.into_iter().map(|i| &self.entries[i]).collect()
    }

    /// Parses one file's text.
    pub fn parse(text: &str, file: &Path) -> KnownHosts {
        let mut known = KnownHosts::new();
        known.add_text(text, file);
        known
    }

    /// Looks up `key` for `host:port`. Any matching key accepts (several keys per host are
    /// normal during key rotation); a revoked match refuses regardless of other entries.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
        let name = host_field(host, port).to_ascii_lowercase();
        let for_host = self.matching(&name);
        if let Some(revoked) = for_host
            .iter()
            .find(|e| e.marker == Marker::Revoked && same_key(&e.key, key))
        {
            return HostKeyStatus::Revoked {
                location: revoked.location(),
            };
        }
        let usable = for_host.iter().filter(|e| e.marker == Marker::None);
        let mut expected = Vec::new();
        for entry in usable {
            if same_key(&entry.key, key) {
                return HostKeyStatus::Known;
            }
            if same_family(&entry.key.algorithm(), &key.algorithm()) {
                expected.push(ExpectedKey {
                    fingerprint: sha256_fingerprint(&entry.key),
                    location: entry.location(),
                });
            }
        }
        if expected.is_empty() {
            HostKeyStatus::Unknown
        } else {
            HostKeyStatus::Changed { expected }
        }
    }

    /// The algorithms of the non-revoked keys listed for `host:port`, in file order without
    /// repeats. The handshake prefers these so a server with several host keys presents the
    /// one we know instead of looking "unknown" (OpenSSH's client does the same).
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = host_field(host, port).to_ascii_lowercase();
        let mut out: Vec<Algorithm> = Vec::new();
        for entry in self.matching(&name) {
            if entry.marker == Marker::None {
                let alg = entry.key.algorithm();
                if !out.contains(&alg) {
                    out.push(alg);
                }
            }
        }
        out
    }
}

/// The host column OpenSSH uses: `host` on port 22, `[host]:port` otherwise.
pub fn host_field(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The canonical known_hosts line for a key (`host key-type base64`, no comment, no newline).
pub fn entry_line(host: &str, port: u16, key: &PublicKey) -> Result<String, std::io::Error> {
    let blob = key.key_data().clone();
    let bare = PublicKey::new(blob, "");
    let text = bare
        .to_openssh()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(format!("{} {}", host_field(host, port), text.trim_end()))
}

/// Appends the canonical entry for `host:port` to `path`, creating the file (mode 0600) and its
/// parent directory (mode 0700) when missing. Blocking I/O: meant for the `chom trust` command.
pub fn append_entry(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), std::io::Error> {
    let line = entry_line(host, port, key)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        // A FIFO or device in its place must neither block nor be written to.
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file; known_hosts must be a plain file",
                path.display()
            ),
        ));
    }
    // A file whose last line lacks a newline would otherwise glue our entry onto it.
    let mut text = String::new();
    let len = meta.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(&line);
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// `SHA256:…` fingerprint, the form `ssh-keygen -l` prints.
pub(crate) fn sha256_fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// RSA keys are one family whatever signature hash was negotiated.
pub(crate) fn same_family(a: &Algorithm, b: &Algorithm) -> bool {
    let rsa = |x: &Algorithm| matches!(x, Algorithm::Rsa { .. });
    (rsa(a) && rsa(b)) || a == b
}

fn parse_line(line: &str, file: &Arc<Path>, number: usize) -> Option<Entry> {
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let marker = if let Some(name) = first.strip_prefix('@') {
        match name {
            "revoked" => {
                first = fields.next()?;
                Marker::Revoked
            }
            // CA-signed host keys are not supported: skipping means such hosts look unknown,
            // which fails closed.
            _ => return None,
        }
    } else {
        Marker::None
    };
    let key_type = fields.next()?;
    let key_b64 = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{key_type} {key_b64}")).ok()?;
    let hosts = parse_hosts(first)?;
    Some(Entry {
        marker,
        hosts,
        key,
        file: Arc::clone(file),
        line: number,
    })
}

fn parse_hosts(field: &str) -> Option<Hosts> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        return Some(Hosts::Hashed {
            salt: BASE64.decode(salt).ok()?,
            hash: BASE64.decode(hash).ok()?,
        });
    }
    if field.starts_with('|') {
        return None;
    }
    Some(Hosts::Patterns(field.to_ascii_lowercase()))
}

fn hosts_match(hosts: &Hosts, name: &str) -> bool {
    match hosts {
        Hosts::Hashed { salt, hash } => {
            let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        Hosts::Patterns(list) => pattern_list_matches(list, name),
    }
}

/// OpenSSH semantics: a matching negated pattern vetoes the whole list, otherwise any
/// matching positive pattern matches.
fn pattern_list_matches(list: &str, name: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',').filter(|p| !p.is_empty()) {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if wildcard_match(pattern.as_bytes(), name.as_bytes()) {
            positive = true;
        }
    }
    positive
}

/// `*` matches any run (including none), `?` exactly one byte. Iterative with one backtrack
/// point, so hostile patterns cannot make it exponential.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGA//5oOQnXVDaeC4bjEnLdHwJbIMiLvo0SzzMP94B7M";
    const ED_A_FP: &str = "SHA256:ZrOjn/fiDiiELe+DoTwly75QHWX3UFzRVZyCEbdU9U0";
    const ED_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN9PwPQKbqXq9EbAD42OuCD5A4/rjBoQBTsx3Jwf3L9P";
    const ED_B_FP: &str = "SHA256:+gbnhk5wDx20fb7globY2k6RMM17iuBNxErG/BcZ99g";
    const EC_A: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBK9BlsoX9LH5MPteR3YJCzEbcUkMyi82/nxdA8o1365hwzCVDC4dBAhryyhiUN89hgGcFAiam9LKYQ66v344esM=";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    fn check(text: &str, host: &str, port: u16, k: &str) -> HostKeyStatus {
        KnownHosts::parse(text, Path::new("kh")).check(host, port, &key(k))
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(sha256_fingerprint(&key(ED_A)), ED_A_FP);
        assert_eq!(sha256_fingerprint(&key(ED_B)), ED_B_FP);
    }

    #[test]
    fn plain_host_with_tabs_and_runs_of_spaces_is_known() {
        let text = format!("web1\t  {}   comment here\n", ED_A.replace(' ', "\t"));
        assert_eq!(check(&text, "web1", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "WEB1", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "web2", 22, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn non_default_port_needs_bracket_form() {
        let text = format!("[web1]:2222 {ED_A}\nweb2 {ED_A}\n");
        assert_eq!(check(&text, "web1", 2222, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "web1", 22, ED_A), HostKeyStatus::Unknown);
        assert_eq!(check(&text, "web2", 2222, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn comma_lists_and_comments_and_blank_lines() {
        let text = format!("# fleet\n\n   \nweb1,10.0.0.1,[10.0.0.1]:2200 {ED_A}\n");
        assert_eq!(check(&text, "10.0.0.1", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "10.0.0.1", 2200, ED_A), HostKeyStatus::Known);
    }

    #[test]
    fn hashed_entries_written_by_ssh_keygen_match() {
        // Produced by `ssh-keygen -H` for [web1.example.com]:2222 and 10.0.0.5.
        let text = format!(
            "|1|AScTUPBoY75GwwfgMInqJA3uWiE=|q1Bw1Xf6N+VpnY90yR4x5G8DWz8= {ED_A}\n\
             |1|G15GnjOSCWARaKd3EXZ3UmIKDGs=|4FY1PHUmsi/rZFxGG8bux5gfkM0= {ED_B}\n"
        );
        assert_eq!(check(&text, "web1.example.com", 2222, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "10.0.0.5", 22, ED_B), HostKeyStatus::Known);
        assert_eq!(check(&text, "10.0.0.6", 22, ED_B), HostKeyStatus::Unknown);
        assert!(matches!(
            check(&text, "10.0.0.5", 22, ED_A),
            HostKeyStatus::Changed { .. }
        ));
    }

    #[test]
    fn wildcards_and_negation() {
        let text = format!("*.prod.example,!db?.prod.example,[127.0.0.*]:2222 {ED_A}\n");
        assert_eq!(check(&text, "web.prod.example", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "db1.prod.example", 22, ED_A), HostKeyStatus::Unknown);
        assert_eq!(check(&text, "db12.prod.example", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "127.0.0.42", 2222, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "127.0.0.42", 22, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn indexed_and_scanned_entries_keep_file_order() {
        // The hashed field is `ssh-keygen -H`'s for 10.0.0.5.
        let text = format!(
            "10.0.0.* {ED_A}\n10.0.0.5,10.0.0.6 {ED_B}\n10.0.0.5 {ED_B}\n\
             |1|G15GnjOSCWARaKd3EXZ3UmIKDGs=|4FY1PHUmsi/rZFxGG8bux5gfkM0= {ED_A}\n"
        );
        let known = KnownHosts::parse(&text, Path::new("kh"));
        let lines: Vec<usize> = known.matching("10.0.0.5").iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4]);
        assert_eq!(known.matching("10.0.0.6").len(), 2, "the wildcard line and the list");
        assert!(known.matching("10.0.1.5").is_empty());
    }

    #[test]
    fn a_line_per_server_is_looked_up_by_name() {
        let text: String = (0..2000)
            .map(|i| format!("10.1.{}.{} {ED_A}\n", i / 250, i % 250))
            .collect();
        let known = KnownHosts::parse(&text, Path::new("kh"));
        assert!(known.scanned.is_empty());
        assert_eq!(check(&text, "10.1.7.249", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(known.matching("10.1.7.249").len(), 1);
        assert_eq!(check(&text, "10.1.9.0", 22, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn wildcard_matcher_edge_cases() {
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"a*b*c", b"axxbyyc"));
        assert!(!wildcard_match(b"a*b*c", b"axxbyy"));
        assert!(wildcard_match(b"??", b"ab"));
        assert!(!wildcard_match(b"?", b"ab"));
        assert!(wildcard_match(b"*a", b"aaaa"));
        assert!(!wildcard_match(b"", b"a"));
    }

    #[test]
    fn any_of_several_keys_accepts_during_rotation() {
        let text = format!("web1 {ED_B}\nweb1 {ED_A}\n");
        assert_eq!(check(&text, "web1", 22, ED_A), HostKeyStatus::Known);
        assert_eq!(check(&text, "web1", 22, ED_B), HostKeyStatus::Known);
    }

    #[test]
    fn changed_lists_every_key_of_that_algorithm_with_real_line_numbers() {
        let text = format!("# header\n\nweb1 {ED_B}\nweb1 {EC_A}\nother {ED_B}\n");
        let status = check(&text, "web1", 22, ED_A);
        assert_eq!(
            status,
            HostKeyStatus::Changed {
                expected: vec![ExpectedKey {
                    fingerprint: ED_B_FP.to_string(),
                    location: Location {
                        file: PathBuf::from("kh"),
                        line: 3
                    },
                }]
            }
        );
        assert_eq!(
            match status {
                HostKeyStatus::Changed { expected } => expected[0].to_string(),
                _ => String::new(),
            },
            format!("{ED_B_FP} (kh:3)")
        );
    }

    #[test]
    fn a_key_of_another_algorithm_only_is_unknown() {
        let text = format!("web1 {EC_A}\n");
        assert_eq!(check(&text, "web1", 22, ED_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn revoked_key_is_refused_even_when_also_listed() {
        let text = format!("web1 {ED_A}\n@revoked * {ED_A}\n");
        assert_eq!(
            check(&text, "web1", 22, ED_A),
            HostKeyStatus::Revoked {
                location: Location {
                    file: PathBuf::from("kh"),
                    line: 2
                }
            }
        );
    }

    #[test]
    fn cert_authority_and_broken_lines_are_skipped() {
        let text = format!(
            "@cert-authority *.example {ED_B}\nweb1 ssh-ed25519 not-base64\nweb1\n|2|x|y {ED_B}\nweb1 {ED_A}\n"
        );
        let known = KnownHosts::parse(&text, Path::new("kh"));
        assert_eq!(known.entries.len(), 1);
        assert_eq!(known.check("web1", 22, &key(ED_A)), HostKeyStatus::Known);
        assert_eq!(known.check("x.example", 22, &key(ED_B)), HostKeyStatus::Unknown);
    }

    #[test]
    fn several_files_combine() {
        let mut known = KnownHosts::parse(&format!("web1 {ED_B}\n"), Path::new("one"));
        known.add_text(&format!("web1 {ED_A}\n"), Path::new("two"));
        assert_eq!(known.check("web1", 22, &key(ED_A)), HostKeyStatus::Known);
    }

    #[test]
    fn algorithms_for_lists_known_types_once() {
        let text = format!("web1 {EC_A}\nweb1 {ED_A}\nweb1 {ED_B}\n@revoked web1 {ED_A}\n");
        let known = KnownHosts::parse(&text, Path::new("kh"));
        assert_eq!(
            known.algorithms_for("web1", 22),
            vec![key(EC_A).algorithm(), key(ED_A).algorithm()]
        );
    }

    #[test]
    fn entry_line_is_canonical() {
        let k = key(&format!("{ED_A} someone@laptop"));
        assert_eq!(entry_line("web1", 22, &k).unwrap(), format!("web1 {ED_A}"));
        assert_eq!(
            entry_line("10.1.1.1", 2222, &k).unwrap(),
            format!("[10.1.1.1]:2222 {ED_A}")
        );
    }

    #[test]
    fn append_creates_private_file_and_fixes_missing_newline() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        append_entry(&path, "web1", 22, &key(ED_A)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("sub")).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        std::fs::write(&path, format!("web0 {ED_B}")).unwrap();
        append_entry(&path, "web1", 2222, &key(ED_A)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("web0 {ED_B}\n[web1]:2222 {ED_A}\n"));
        let known = KnownHosts::parse(&text, &path);
        assert_eq!(known.check("web1", 2222, &key(ED_A)), HostKeyStatus::Known);
    }
}
