//! What chom detected on a server (`Hardware`, its distribution and cgroup limits): model
//! data that status files, history, the requirement judgement and `chom detect` share. It
//! must not know how the facts are gathered (`facts.rs` owns the probe and its parsing).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What chom detected on a server, with cgroup limits already applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hardware {
    /// Effective vCPUs: the online CPUs this login may use, lowered to a cgroup CPU quota
    /// rounded up (a quota of 1.5 CPUs gives 2).
    #[schemars(range(min = 1))]
    pub cpu: u32,
    /// Effective memory in MB (MiB, as `free -m`): `MemTotal`, or the cgroup memory limit
    /// when that is lower.
    pub memory_mb: u64,
    /// Size of the root filesystem in GB (GiB rounded up, as `df -BG /`).
    pub disk_gb: u64,
    /// Space on the root filesystem available to unprivileged users, in GB (GiB rounded
    /// up, as the `Available` column of `df -BG /`).
    pub disk_free_gb: u64,
    /// Machine architecture as `uname -m` prints it, such as `x86_64` or `aarch64`.
    pub arch: String,
    /// The distribution, from os-release.
    pub os: OsInfo,
    /// Kernel release as `uname -r` prints it.
    pub kernel: String,
    /// Virtualization or container technology, named as `systemd-detect-virt` names it
    /// (`kvm`, `vmware`, `microsoft`, `lxc`, `openvz`, `docker`, ...; `vm-other` for an
    /// unidentified hypervisor). Absent on bare metal or when nothing points to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualization: Option<String>,
    /// The kernel's boot ID (`/proc/sys/kernel/random/boot_id`); a new one means the server
    /// rebooted. While it stays the same, the next detection reuses `virtualization`,
    /// which cannot change without a reboot, instead of running `systemd-detect-virt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The cgroup limits below the host's own figures (which it also holds), even one
    /// that rounding hides: a 1.5-CPU quota on a 2-CPU host leaves `cpu` at 2. Absent
    /// when no cgroup limit constrains this login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CgroupLimits>,
}

/// The distribution, from `/etc/os-release` (or `/usr/lib/os-release`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OsInfo {
    /// `PRETTY_NAME`, such as `Debian GNU/Linux 12 (bookworm)`; `Linux` when unknown, as
    /// os-release(5) prescribes.
    pub pretty_name: String,
    /// `ID`, such as `debian`, `ubuntu`, `rocky` or `alpine`; `linux` when unknown.
    pub id: String,
    /// `VERSION_ID`, such as `12` or `3.20.3`; absent on rolling releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// cgroup limits that constrain a server below its host (containers, or a login placed
/// in a limited slice), next to what the host itself shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CgroupLimits {
    /// CPU quota in CPUs (quota / period, such as `1.5`), when below the host's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory limit in MB (MiB), when below the host's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Online CPUs the host shows this login (`nproc`).
    pub host_cpu: u32,
    /// `MemTotal` of the host (as this login sees it), in MB (MiB).
    pub host_memory_mb: u64,
}
