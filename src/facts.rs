//! Hardware detection: owns the probe script chom runs on a server and the pure parsing of
//! its output into [`Hardware`]. No I/O and no SSH here: the caller sends [`PROBE_SCRIPT`]
//! on the standard input of [`PROBE_COMMAND`] in one round trip and hands the text it
//! printed to [`parse_probe`].
//!
//! Units follow the tools an operator would check by hand: "MB" is MiB as `free -m`
//! prints it (rounded down), "GB" is GiB as `df -BG` prints it (rounded up).

mod cgroup;
mod sections;
mod virt;

#[cfg(test)]
mod tests;

use sections::Sections;

/// The detected hardware is model, shared by status, history and judgement; it lives in
/// `hardware.rs` and is re-exported here, where it is parsed.
pub use crate::hardware::{CgroupLimits, Hardware, OsInfo};

/// The probe: one POSIX `sh` script (dash, bash and busybox ash alike) that prints raw
/// facts between `@@chom:<section>` marker lines and always exits 0.
///
/// It is read whole before it runs, so a copy cut short in transit runs nothing.
pub const PROBE_SCRIPT: &str = include_str!("facts/probe.sh");

/// The remote command that [`PROBE_SCRIPT`] is fed to on its standard input.
pub const PROBE_COMMAND: &str = crate::ssh::SCRIPT_ON_STDIN;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Why the output of the probe could not be turned into [`Hardware`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// An essential value (vCPUs, memory or disk) is missing or unreadable.
    #[error(
        "no {what} in the `{section}` section of the probe output: it was probably not \
         printed by chom's probe script, or the host lacks /proc"
    )]
    Missing {
        /// The section it is read from, as named by its `@@chom:` marker.
        section: &'static str,
        /// The value that could not be read.
        what: &'static str,
    },
}

/// Parses what [`PROBE_SCRIPT`] printed into [`Hardware`].
///
/// Pure and total: any input gives a value or an error, never a panic. Text before the
/// first marker (a login banner, say) is ignored, and so are unknown sections. Missing
/// optional facts get neutral values (`unknown` arch or kernel, a `Linux` os, no
/// virtualization, no limits); missing vCPUs, memory or root filesystem are an error.
pub fn parse_probe(output: &str) -> Result<Hardware, ProbeError> {
    let sections = Sections::split(output);

    let host_cpu = sections::cpu_lists(sections.get("cpu-lists"))
        .or_else(|| sections::cpus(sections.get("cpus")))
        .ok_or(ProbeError::Missing {
            section: "cpus",
            what: "vCPU count",
        })?;
    let mem_total_kib = sections::mem_total_kib(sections.get("meminfo")).ok_or(ProbeError::Missing {
        section: "meminfo",
        what: "MemTotal",
    })?;
    let root = sections::df_root(sections.get("df")).ok_or(ProbeError::Missing {
        section: "df",
        what: "size of the root filesystem",
    })?;

    let host_memory_bytes = mem_total_kib.saturating_mul(KIB);
    let host_memory_mb = host_memory_bytes / MIB;
    let found = cgroup::tightest(sections.get("cgroup-limits"));
    // A limit at or above what the host has constrains nothing (cgroup v1 reports
    // "unlimited" as a huge number, and OpenVZ sets its limit to the RAM it shows).
    let cpu_limit = found.cpu.filter(|quota| *quota < f64::from(host_cpu));
    let memory_limit = found.memory_bytes.filter(|bytes| *bytes < host_memory_bytes);

    let cpu = match cpu_limit {
        // In range: the quota is positive and below host_cpu, itself a u32.
        Some(quota) => (quota.ceil() as u32).clamp(1, host_cpu),
        None => host_cpu,
    };
    let memory_mb = memory_limit.map_or(host_memory_mb, |bytes| bytes / MIB);
    let limits = (cpu_limit.is_some() || memory_limit.is_some()).then(|| CgroupLimits {
        cpu: cpu_limit,
        memory_mb: memory_limit.map(|bytes| bytes / MIB),
        host_cpu,
        host_memory_mb,
    });

    let kernel = sections::first_line(sections.get("kernel")).unwrap_or("unknown");
    Ok(Hardware {
        cpu,
        memory_mb,
        disk_gb: kib_to_gib_ceil(root.size_kib),
        disk_free_gb: kib_to_gib_ceil(root.available_kib),
        arch: sections::first_line(sections.get("arch"))
            .unwrap_or("unknown")
            .to_owned(),
        os: sections::os_release(sections.get("os-release")),
        kernel: kernel.to_owned(),
        virtualization: virt::detect(sections.get("virt"), kernel),
        boot_id: sections::first_line(sections.get("boot-id"))
            .filter(|id| is_boot_id(id))
            .map(str::to_owned),
        limits,
    })
}

/// What the probe reads on its standard input: the script, preceded by what the last
/// detection recorded (`previous`) so that the probe can skip what cannot have changed.
/// Values that could not have come from a probe (an edited status file) are left out.
pub fn probe_input(previous: Option<&Hardware>) -> Vec<u8> {
    let mut input = String::new();
    if let Some(hw) = previous
        && let Some(boot_id) = hw.boot_id.as_deref().filter(|id| is_boot_id(id))
    {
        let virt = hw.virtualization.as_deref().unwrap_or("none");
        let plain = !virt.is_empty()
            && virt.len() <= 32
            && virt
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if plain {
            input.push_str(&format!("chom_known_boot={boot_id}\nchom_known_virt={virt}\n"));
        }
    }
    input.push_str(PROBE_SCRIPT);
    input.into_bytes()
}

/// A boot ID as the kernel prints it: a UUID, hex digits and dashes.
fn is_boot_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// `df -BG` rounds up, so a "40 GB" disk whose filesystem keeps 38.7 GiB reads 39, not 38.
fn kib_to_gib_ceil(kib: u64) -> u64 {
    kib.div_ceil(GIB / KIB)
}

/// A one-line human summary, such as
/// `2 vCPU, 3931 MB RAM, 40 GB disk (12 GB free), x86_64, Debian GNU/Linux 12 (bookworm), kvm`,
/// followed by the cgroup limits when there are any.
pub fn summarize(hw: &Hardware) -> String {
    let mut line = format!(
        "{} vCPU, {} MB RAM, {} GB disk ({} GB free), {}, {}",
        hw.cpu, hw.memory_mb, hw.disk_gb, hw.disk_free_gb, hw.arch, hw.os.pretty_name
    );
    if let Some(virtualization) = &hw.virtualization {
        line.push_str(", ");
        line.push_str(virtualization);
    }
    if let Some(limits) = &hw.limits {
        let mut parts = Vec::new();
        if let Some(cpu) = limits.cpu {
            parts.push(format!("{cpu} of {} vCPU", limits.host_cpu));
        }
        if let Some(memory_mb) = limits.memory_mb {
            parts.push(format!("{memory_mb} of {} MB", limits.host_memory_mb));
        }
        line.push_str(", cgroup limit ");
        line.push_str(&parts.join(" and "));
    }
    line
}
