//! The validated snapshot of `inventory.d/` that everything after validation reads:
//! servers and roles by name, with the file each came from. Built only by
//! `validate::load`; this module never reads files itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::resource::{Role, Server};

/// Where the parts of a chom tree live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `inventory.d/`: Server and Role files, sub-folders allowed.
    pub inventory: PathBuf,
    /// `scripts/`: one `<component>.sh` per component.
    pub scripts: PathBuf,
    /// `secrets.d/`: encrypted secret values.
    pub secrets: PathBuf,
    /// Where status files go: `None` beside each server's file; a folder of its own for a
    /// git-sourced tree, whose checkouts are replaced per commit.
    pub status: Option<PathBuf>,
}

impl Layout {
    /// The conventional layout: `scripts/` and `secrets.d/` beside `inventory`.
    pub fn beside(inventory: &Path) -> Self {
        let parent = inventory.parent().map(Path::to_path_buf).unwrap_or_default();
        Self {
            inventory: inventory.to_path_buf(),
            scripts: parent.join("scripts"),
            secrets: parent.join("secrets.d"),
            status: None,
        }
    }

    /// The folder of the owner lock: the status folder when there is one (it outlives
    /// checkouts), else the inventory.
    pub fn owner_dir(&self) -> &Path {
        self.status.as_deref().unwrap_or(&self.inventory)
    }

    /// The status file of server `name` whose resource is `file`.
    pub fn status_path(&self, file: &Path, name: &str) -> PathBuf {
        let dir = match &self.status {
            Some(dir) => dir.as_path(),
            None => file.parent().unwrap_or(Path::new(".")),
        };
        dir.join(format!("{name}.status.yaml"))
    }

    /// The script file of a component.
    pub fn script(&self, component: &str) -> PathBuf {
        self.scripts.join(format!("{component}.sh"))
    }

    /// What chom sends for a component: every `scripts/lib/*.sh` in name order (shared
    /// helpers), then the component's own script. Digests, plans and rollback objects
    /// all use these bytes, so a changed helper re-applies the components. Only regular
    /// files are helpers: anything else in `scripts/lib/` (a FIFO, a device, a /proc file)
    /// is left out, never read, and `chom validate` reports it. Each file is read with
    /// the script cap ([`crate::fsread::cap::SCRIPT`]).
    pub fn read_script(&self, component: &str) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        for lib in self.script_library() {
            match crate::fsread::read(&lib, crate::fsread::cap::SCRIPT) {
                Ok(lib) => bytes.extend(lib),
                Err(crate::fsread::ReadError::NotAFile { .. }) => continue,
                Err(e) => return Err(script_error(e)),
            }
            if !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
        }
        bytes.extend(crate::fsread::read(&self.script(component), crate::fsread::cap::SCRIPT).map_err(script_error)?);
        Ok(bytes)
    }

    /// The `scripts/lib/*.sh` entries that are not folders, in name order.
    pub fn script_library(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.scripts.join("lib")) else {
            return Vec::new();
        };
        let mut libs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sh") && !p.is_dir())
            .collect();
        libs.sort();
        libs
    }
}

/// A script's read error; its message names the file (`cannot read scripts/x.sh: …`).
fn script_error(e: crate::fsread::ReadError) -> std::io::Error {
    let kind = match &e {
        crate::fsread::ReadError::Io { source, .. } => source.kind(),
        crate::fsread::ReadError::TooLarge { .. } => std::io::ErrorKind::FileTooLarge,
        _ => std::io::ErrorKind::InvalidInput,
    };
    std::io::Error::new(kind, e.to_string())
}

/// A server that passed validation, and its file.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEntry {
    /// The resource.
    pub server: Server,
    /// The file it was read from; its status file goes beside it.
    pub path: PathBuf,
    /// The status folder when it is not the file's ([`Layout::status`]).
    pub status_dir: Option<PathBuf>,
}

impl ServerEntry {
    /// `<name>.status.yaml` beside the resource file (or in the layout's status folder).
    pub fn status_path(&self) -> PathBuf {
        let dir = match &self.status_dir {
            Some(dir) => dir.as_path(),
            None => self.path.parent().unwrap_or(Path::new(".")),
        };
        dir.join(format!("{}.status.yaml", self.server.metadata.name))
    }
}

/// A role that passed validation, and its file.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleEntry {
    /// The resource.
    pub role: Role,
    /// The file it was read from.
    pub path: PathBuf,
}

/// Every valid resource of the tree. Resources with errors are left out, so the
/// daemon keeps serving the rest while one file is broken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// Valid servers by name.
    pub servers: BTreeMap<String, ServerEntry>,
    /// Valid roles by name.
    pub roles: BTreeMap<String, RoleEntry>,
}

impl Inventory {
    /// The role of a server, when it has one.
    pub fn role_of(&self, server: &Server) -> Option<&Role> {
        server
            .spec
            .role
            .as_ref()
            .and_then(|r| self.roles.get(r))
            .map(|e| &e.role)
    }
}
