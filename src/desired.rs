//! The desired state of one server: its Role's defaults merged with its own spec, the
//! bytes of the scripts its components run, and a hash of all of it. The hash decides
//! whether a server needs reconciling after any change in the tree, so a changed
//! script, Role or config re-queues exactly the servers it affects. Pure: reads only
//! the script files it is given.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::inventory::{Inventory, Layout, ServerEntry};
use crate::resource::{ComponentRef, Config, DriftPolicy, ExpectedSpecs, Requirements};

/// Default per-component deadline (`timeout` in the resource).
pub const DEFAULT_COMPONENT_TIMEOUT: Duration = Duration::from_secs(600);

/// One component as it will be applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredComponent {
    /// Component name (`scripts/<name>.sh`).
    pub name: String,
    /// Version handed to the script.
    pub version: Option<String>,
    /// Role config ⊕ server config ⊕ role component config ⊕ server component config,
    /// deep-merged, later ones winning.
    pub config: Config,
    /// Deadline for one run.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// SHA-256 of the script's bytes (hex); `None` when the script is missing.
    pub script_sha256: Option<String>,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Everything that decides what a server should look like.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    /// Server name.
    pub name: String,
    /// Where to reach it.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// Components in apply order: the Role's first, then the server's own; a server
    /// component with a Role component's name replaces it in place (config merged).
    pub components: Vec<DesiredComponent>,
    /// The Role's config merged with the server's: what a component dropped from the
    /// list gets in `remove` mode (its own config went with it).
    pub config: Config,
    /// Secret names the components may read.
    pub secrets: Vec<String>,
    /// Version of each referenced secret that exists (`scope@updatedAt`); part of every
    /// component's applied digest, so a changed secret is re-applied.
    pub secret_versions: BTreeMap<String, String>,
    /// Servers that must be Ready first.
    pub depends_on: Vec<String>,
    /// Drift check period.
    #[serde(serialize_with = "serialize_duration")]
    pub interval: Duration,
    /// What to do on drift.
    pub drift_policy: DriftPolicy,
    /// Stop reconciling.
    pub suspend: bool,
    /// Remove components dropped from the list.
    pub prune: bool,
    /// The Role's minimums.
    pub requirements: Option<Requirements>,
    /// What the operator expects the hardware to be.
    pub expected_specs: Option<ExpectedSpecs>,
}

impl DesiredState {
    /// A stable hash (hex SHA-256, first 16 bytes) of the whole desired state.
    pub fn hash(&self) -> String {
        // serde_json's Map is ordered by key, so the encoding is canonical.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&bytes)[..16])
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Merges `overlay` into `base`: objects key by key, recursively; anything else is
/// replaced by the overlay.
pub fn deep_merge(base: &mut Config, overlay: &Config) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => deep_merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// What desired states are computed from besides the inventory: script digests and
/// secret versions, read once for many servers.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// SHA-256 of each script by component name (`None`: missing).
    pub scripts: BTreeMap<String, Option<String>>,
    /// Per server, the version (`scope@updatedAt`) of each secret it references. Read
    /// without decrypting, so a changed secret re-queues its servers even without a key.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads the script digests and secret versions the inventory's servers use.
pub fn sources(inventory: &Inventory, layout: &Layout) -> Sources {
    Sources {
        scripts: script_digests(inventory, layout),
        secrets: secret_versions(inventory, layout),
    }
}

fn secret_versions(inventory: &Inventory, layout: &Layout) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, entry) in &inventory.servers {
        if entry.server.spec.secrets.is_empty() {
            continue;
        }
        let listed = crate::secrets::list(&layout.secrets, Some(name)).unwrap_or_default();
        let versions = entry
            .server
            .spec
            .secrets
            .iter()
            .filter_map(|s| listed.iter().find(|l| l.name == s.0))
            .map(|l| (l.name.clone(), format!("{}@{}", l.scope, l.updated_at)))
            .collect();
        out.insert(name.clone(), versions);
    }
    out
}

fn script_digests(inventory: &Inventory, layout: &Layout) -> BTreeMap<String, Option<String>> {
    let mut digests = BTreeMap::new();
    let names = inventory
        .servers
        .values()
        .flat_map(|e| e.server.spec.components.iter())
        .chain(inventory.roles.values().flat_map(|r| r.role.spec.components.iter()))
        .map(|c| c.name.clone());
    for name in names {
        digests
            .entry(name)
            .or_insert_with_key(|n| layout.read_script(n).ok().map(|bytes| hex(&Sha256::digest(&bytes))));
    }
    digests
}

/// The desired state of one server of `inventory`.
pub fn desired_state(inventory: &Inventory, entry: &ServerEntry, sources: &Sources) -> DesiredState {
    let scripts = &sources.scripts;
    let spec = &entry.server.spec;
    let role = inventory.role_of(&entry.server);
    let mut base_config = role.map(|r| r.spec.config.clone()).unwrap_or_default();
    deep_merge(&mut base_config, &spec.config);

    let mut refs: Vec<(ComponentRef, Option<ComponentRef>)> = role
        .map(|r| r.spec.components.iter().map(|c| (c.clone(), None)).collect())
        .unwrap_or_default();
    for own in &spec.components {
        match refs.iter_mut().find(|(r, _)| r.name == own.name) {
            Some(slot) => slot.1 = Some(own.clone()),
            None => refs.push((own.clone(), None)),
        }
    }
    let components = refs
        .into_iter()
        .map(|(first, over)| {
            let mut config = base_config.clone();
            deep_merge(&mut config, &first.config);
            let mut version = first.version.clone();
            let mut timeout = first.timeout;
            if let Some(over) = &over {
                deep_merge(&mut config, &over.config);
                version = over.version.clone().or(version);
                timeout = over.timeout.or(timeout);
            }
            DesiredComponent {
                script_sha256: scripts.get(&first.name).cloned().flatten(),
                name: first.name,
                version,
                config,
                timeout: timeout.map_or(DEFAULT_COMPONENT_TIMEOUT, |t| t.0),
            }
        })
        .collect();
    DesiredState {
        name: entry.server.metadata.name.clone(),
        address: spec.address.clone(),
        port: spec.ssh.port,
        user: spec.ssh.user.clone(),
        components,
        config: base_config,
        secrets: spec.secrets.iter().map(|s| s.0.clone()).collect(),
        secret_versions: sources
            .secrets
            .get(&entry.server.metadata.name)
            .cloned()
            .unwrap_or_default(),
        depends_on: spec.depends_on.clone(),
        interval: spec.interval.0,
        drift_policy: spec.drift_policy,
        suspend: spec.suspend,
        prune: spec.prune,
        requirements: role.and_then(|r| r.spec.requirements.clone()),
        expected_specs: spec.expected_specs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Config {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn deep_merge_lets_the_overlay_win_key_by_key() {
        let mut base = config(json!({"smtp": {"host": "a", "port": 25}, "x": 1}));
        deep_merge(&mut base, &config(json!({"smtp": {"host": "b"}, "x": [2]})));
        assert_eq!(
            Value::Object(base),
            json!({"smtp": {"host": "b", "port": 25}, "x": [2]})
        );
    }

    #[test]
    fn role_components_come_first_and_server_ones_override_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.d");
        std::fs::create_dir_all(&inv).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        for s in ["base", "nginx", "app"] {
            std::fs::write(dir.path().join(format!("scripts/{s}.sh")), format!("echo {s}\n")).unwrap();
        }
        std::fs::write(
            inv.join("web.yaml"),
            "apiVersion: chom.dev/v1\nkind: Role\nmetadata: {name: web}\nspec:\n  config: {tier: web, smtp: {host: a, port: 25}}\n  components:\n    - {name: base}\n    - {name: nginx, version: '1.24', config: {workers: 2}}\n",
        )
        .unwrap();
        std::fs::write(
            inv.join("web-1.yaml"),
            "apiVersion: chom.dev/v1\nkind: Server\nmetadata: {name: web-1}\nspec:\n  address: 192.0.2.1\n  role: web\n  config: {smtp: {host: b}}\n  components:\n    - {name: app}\n    - {name: nginx, config: {workers: 4}, timeout: 1m}\n",
        )
        .unwrap();
        let layout = Layout::beside(&inv);
        let report = crate::validate::load(&layout, &[]).unwrap();
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        let inventory = report.inventory;
        let digests = sources(&inventory, &layout);
        let desired = desired_state(&inventory, &inventory.servers["web-1"], &digests);
        let names: Vec<&str> = desired.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["base", "nginx", "app"]);
        let nginx = &desired.components[1];
        assert_eq!(nginx.version.as_deref(), Some("1.24"));
        assert_eq!(nginx.timeout, Duration::from_secs(60));
        assert_eq!(
            Value::Object(nginx.config.clone()),
            json!({"tier": "web", "smtp": {"host": "b", "port": 25}, "workers": 4})
        );
        assert!(nginx.script_sha256.is_some());

        let before = desired.hash();
        std::fs::write(dir.path().join("scripts/nginx.sh"), "echo changed\n").unwrap();
        let digests = sources(&inventory, &layout);
        assert_ne!(
            desired_state(&inventory, &inventory.servers["web-1"], &digests).hash(),
            before
        );
    }
}
