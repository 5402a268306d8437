//! Naming the virtualization from the `virt` section: `systemd-detect-virt`'s own answer
//! when the host has it, else the same hints it reads, weighed in the same order
//! (a container first, then a hypervisor), giving the same names.

/// DMI vendor or product name prefixes that name a hypervisor. Only the ones that never
/// appear on physical machines: "Microsoft Corporation" also sells laptops, so Hyper-V is
/// told by its product name instead.
const DMI_PREFIXES: &[(&str, &str)] = &[
    ("KVM", "kvm"),
    ("OpenStack", "kvm"),
    ("KubeVirt", "kvm"),
    ("Amazon EC2", "amazon"),
    ("Google Compute Engine", "google"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Apple Virtualization", "apple"),
];

/// Values of `container=` in PID 1's environment that systemd-detect-virt knows by name;
/// any other is `container-other`.
const CONTAINER_NAMES: &[&str] = &[
    "lxc",
    "lxc-libvirt",
    "systemd-nspawn",
    "docker",
    "podman",
    "rkt",
    "wsl",
    "proot",
    "pouch",
];

/// The virtualization named by the hints, or `None` for bare metal or no evidence.
pub(super) fn detect(lines: &[&str], kernel: &str) -> Option<String> {
    let hints = Hints::parse(lines);
    if let Some(answer) = hints.get("systemd-detect-virt").filter(|a| !a.is_empty()) {
        return (answer != "none").then(|| answer.to_owned());
    }
    container(&hints, kernel).or_else(|| vm(&hints)).map(str::to_owned)
}

/// The `key=value` lines of the section; flags are printed as `key=1`.
struct Hints<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Hints<'a> {
    fn parse(lines: &[&'a str]) -> Self {
        Self(
            lines
                .iter()
                .filter_map(|line| {
                    let (key, value) = line.split_once('=')?;
                    Some((key.trim(), value.trim()))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(found, _)| *found == key).map(|(_, value)| *value)
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn container<'a>(hints: &Hints<'a>, kernel: &str) -> Option<&'a str> {
    if let Some(name) = hints.get("container").filter(|name| !name.is_empty()) {
        return Some(
            CONTAINER_NAMES
                .iter()
                .copied()
                .find(|known| *known == name)
                .unwrap_or("container-other"),
        );
    }
    if hints.has("containerenv") {
        return Some("podman");
    }
    if hints.has("dockerenv") {
        return Some("docker");
    }
    // An OpenVZ host node has /proc/bc as well; only a container lacks it.
    if (hints.has("proc-vz") || hints.has("user-beancounters")) && !hints.has("proc-bc") {
        return Some("openvz");
    }
    // WSL2 kernels are named like 5.15.153.1-microsoft-standard-WSL2.
    if kernel.to_ascii_lowercase().contains("microsoft") {
        return Some("wsl");
    }
    None
}

fn vm<'a>(hints: &Hints<'a>) -> Option<&'a str> {
    let vendor = hints.get("dmi-sys_vendor").unwrap_or("");
    let product = hints.get("dmi-product_name").unwrap_or("");
    for (prefix, name) in DMI_PREFIXES {
        if vendor.starts_with(prefix) || product.starts_with(prefix) {
            return Some(name);
        }
    }
    if vendor.starts_with("Microsoft Corporation") && product.starts_with("Virtual Machine") {
        return Some("microsoft");
    }
    if hints.get("hypervisor-type") == Some("xen") {
        return Some("xen");
    }
    // The paravirtual clock betrays the hypervisor even when DMI says only "QEMU"
    // (KVM-accelerated QEMU, as Proxmox and most clouds run it) or a cloud's own name.
    let clocksources = hints.get("clocksource").unwrap_or("");
    for (clock, name) in [
        ("kvm-clock", "kvm"),
        ("hyperv_clocksource_tsc_page", "microsoft"),
        ("xen", "xen"),
    ] {
        if clocksources.split_whitespace().any(|found| found == clock) {
            return Some(name);
        }
    }
    if vendor.starts_with("QEMU") || product.starts_with("QEMU") {
        return Some("qemu");
    }
    if hints.has("cpu-hypervisor") {
        return Some("vm-other");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtualization_hints() {
        let cases: &[(&[&str], Option<&str>)] = &[
            // systemd-detect-virt's answer wins, "none" included.
            (&["systemd-detect-virt=none", "cpu-hypervisor=1"], None),
            (&["systemd-detect-virt=", "dockerenv=1"], Some("docker")),
            (&["container=oci"], Some("container-other")),
            (&["containerenv=1", "dockerenv=1"], Some("podman")),
            // A container wins over the hypervisor under it.
            (&["container=lxc", "dmi-sys_vendor=QEMU"], Some("lxc")),
            // An OpenVZ host node has /proc/bc too.
            (&["proc-vz=1", "proc-bc=1"], None),
            (&["user-beancounters=1"], Some("openvz")),
            // A Surface laptop is not Hyper-V.
            (
                &[
                    "dmi-sys_vendor=Microsoft Corporation",
                    "dmi-product_name=Surface Laptop 4",
                ],
                None,
            ),
            (&["dmi-sys_vendor=QEMU", "clocksource=tsc acpi_pm"], Some("qemu")),
            (
                &["dmi-sys_vendor=Amazon EC2", "clocksource=kvm-clock tsc"],
                Some("amazon"),
            ),
            (&["hypervisor-type=xen"], Some("xen")),
            (&["cpu-hypervisor=1"], Some("vm-other")),
            (&["dmi-sys_vendor=Dell Inc."], None),
            (&["garbage", "=", "=1"], None),
        ];
        for (hints, expected) in cases {
            assert_eq!(detect(hints, "6.1.0-28-amd64").as_deref(), *expected, "{hints:?}");
        }
        let wsl = detect(&[], "5.15.153.1-microsoft-standard-WSL2");
        assert_eq!(wsl.as_deref(), Some("wsl"));
    }
}
