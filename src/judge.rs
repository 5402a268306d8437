//! Judgement of detected hardware: against the operator's `expectedSpecs` (a warning,
//! condition `SpecsMatch`), against the Role's minimums (a block, condition
//! `RequirementsMet`), and against the previous detection (a hardware change). Pure
//! functions over values; nothing here talks to a server.
//!
//! Tolerance: a VM sold as 4096 MB shows about 3931 MB in `MemTotal`, because the
//! kernel and firmware keep part of it, and a "40 GB" disk holds about 39 GiB once
//! formatted. Memory and disk therefore match when the detected figure is within
//! [`MEMORY_DISK_TOLERANCE`] below the stated one (and at most 2 % above it), and a
//! minimum is met when the detected figure reaches 90 % of it. vCPUs must match exactly.

use crate::hardware::Hardware;
use crate::resource::{ExpectedSpecs, Requirements};

/// The share of memory or disk that may be missing from the detected figure before it
/// counts as different (kernel, firmware and filesystem reserves).
pub const MEMORY_DISK_TOLERANCE: f64 = 0.10;

/// How much a detected figure may exceed the stated one and still match (hypervisors
/// round up).
const ABOVE_TOLERANCE: f64 = 0.02;

/// The outcome of one check, shaped as a condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True when the check passed.
    pub ok: bool,
    /// CamelCase reason (`MemoryMismatch`, `InsufficientDisk`, `AsExpected`).
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

impl Verdict {
    fn pass(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

fn within(detected: u64, stated: u64) -> bool {
    let (d, s) = (detected as f64, stated as f64);
    d >= s * (1.0 - MEMORY_DISK_TOLERANCE) && d <= s * (1.0 + ABOVE_TOLERANCE)
}

/// Compares detection with `expectedSpecs`. Absent expectations always match.
pub fn specs(hw: &Hardware, expected: Option<&ExpectedSpecs>) -> Verdict {
    let Some(expected) = expected else {
        return Verdict::pass("NotSpecified", "no expectedSpecs to compare with");
    };
    let mut problems: Vec<(&str, String)> = Vec::new();
    if let Some(cpu) = expected.cpu
        && cpu != hw.cpu
    {
        problems.push(("CpuMismatch", format!("inventory says {cpu} vCPU, detected {}", hw.cpu)));
    }
    if let Some(mem) = expected.memory_mb
        && !within(hw.memory_mb, mem)
    {
        problems.push((
            "MemoryMismatch",
            format!("inventory says {mem} MB, detected {} MB", hw.memory_mb),
        ));
    }
    if let Some(disk) = expected.disk_gb
        && !within(hw.disk_gb, disk)
    {
        problems.push((
            "DiskMismatch",
            format!("inventory says {disk} GB disk, detected {} GB", hw.disk_gb),
        ));
    }
    match problems.first() {
        None => Verdict::pass("AsExpected", "detected hardware matches expectedSpecs"),
        Some((reason, _)) => Verdict {
            ok: false,
            reason: (*reason).to_owned(),
            message: problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "),
        },
    }
}

/// Compares detection with the Role's minimums. Absent requirements are always met.
pub fn requirements(hw: &Hardware, req: Option<&Requirements>) -> Verdict {
    let Some(req) = req else {
        return Verdict::pass("NoRequirements", "the server's role sets no minimum");
    };
    let reaches = |detected: u64, min: u64| detected as f64 >= min as f64 * (1.0 - MEMORY_DISK_TOLERANCE);
    let mut problems: Vec<(&str, String)> = Vec::new();
    if let Some(min) = req.min_cpu
        && hw.cpu < min
    {
        problems.push(("InsufficientCpu", format!("role needs {min} vCPU, detected {}", hw.cpu)));
    }
    if let Some(min) = req.min_memory_mb
        && !reaches(hw.memory_mb, min)
    {
        problems.push((
            "InsufficientMemory",
            format!("role needs {min} MB memory, detected {} MB", hw.memory_mb),
        ));
    }
    if let Some(min) = req.min_disk_gb
        && !reaches(hw.disk_gb, min)
    {
        problems.push((
            "InsufficientDisk",
            format!("role needs {min} GB disk, detected {} GB", hw.disk_gb),
        ));
    }
    match problems.first() {
        None => Verdict::pass("MinimumsMet", "detected hardware meets the role's minimums"),
        Some((reason, _)) => Verdict {
            ok: false,
            reason: (*reason).to_owned(),
            message: problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "),
        },
    }
}

/// What changed between two detections, in words (`memory 4096 → 8192 MB`). Free disk
/// space is left out: it changes all the time and is not hardware.
pub fn changes(before: &Hardware, after: &Hardware) -> Vec<String> {
    let mut out = Vec::new();
    if before.cpu != after.cpu {
        out.push(format!("vCPU {} → {}", before.cpu, after.cpu));
    }
    if before.memory_mb != after.memory_mb {
        out.push(format!("memory {} → {} MB", before.memory_mb, after.memory_mb));
    }
    if before.disk_gb != after.disk_gb {
        out.push(format!("disk {} → {} GB", before.disk_gb, after.disk_gb));
    }
    if before.arch != after.arch {
        out.push(format!("arch {} → {}", before.arch, after.arch));
    }
    if before.os != after.os {
        out.push(format!("os {} → {}", before.os.pretty_name, after.os.pretty_name));
    }
    if before.kernel != after.kernel {
        out.push(format!("kernel {} → {}", before.kernel, after.kernel));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::OsInfo;

    fn hw(cpu: u32, memory_mb: u64, disk_gb: u64) -> Hardware {
        Hardware {
            cpu,
            memory_mb,
            disk_gb,
            disk_free_gb: 10,
            arch: "x86_64".into(),
            os: OsInfo {
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                id: "debian".into(),
                version_id: None,
            },
            kernel: "6.1.0".into(),
            virtualization: Some("kvm".into()),
            boot_id: None,
            limits: None,
        }
    }

    fn expected(cpu: u32, memory_mb: u64, disk_gb: u64) -> ExpectedSpecs {
        ExpectedSpecs {
            cpu: Some(cpu),
            memory_mb: Some(memory_mb),
            disk_gb: Some(disk_gb),
        }
    }

    #[test]
    fn kernel_reserved_memory_and_formatted_disk_still_match() {
        let v = specs(&hw(2, 3931, 39), Some(&expected(2, 4096, 40)));
        assert!(v.ok, "{v:?}");
        assert_eq!(v.reason, "AsExpected");
    }

    #[test]
    fn a_smaller_server_than_the_inventory_says_is_a_mismatch() {
        let v = specs(&hw(1, 1963, 39), Some(&expected(2, 4096, 40)));
        assert!(!v.ok);
        assert_eq!(v.reason, "CpuMismatch");
        assert_eq!(
            v.message,
            "inventory says 2 vCPU, detected 1; inventory says 4096 MB, detected 1963 MB"
        );
        let v = specs(&hw(2, 8192, 40), Some(&expected(2, 4096, 40)));
        assert_eq!((v.ok, v.reason.as_str()), (false, "MemoryMismatch"));
    }

    #[test]
    fn requirements_block_below_the_minimum_with_the_first_reason() {
        let req = Requirements {
            min_cpu: Some(2),
            min_memory_mb: Some(4096),
            min_disk_gb: Some(40),
        };
        assert!(requirements(&hw(2, 3931, 39), Some(&req)).ok);
        let v = requirements(&hw(2, 3931, 20), Some(&req));
        assert_eq!((v.ok, v.reason.as_str()), (false, "InsufficientDisk"));
        assert_eq!(v.message, "role needs 40 GB disk, detected 20 GB");
        assert!(requirements(&hw(1, 512, 5), None).ok);
    }

    #[test]
    fn hardware_changes_are_described() {
        let before = hw(2, 4096, 40);
        let mut after = hw(4, 8192, 40);
        after.disk_free_gb = 3;
        assert_eq!(changes(&before, &after), vec!["vCPU 2 → 4", "memory 4096 → 8192 MB"]);
        assert!(changes(&before, &before).is_empty());
    }
}
