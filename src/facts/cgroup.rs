//! Reading the `cgroup-limits` section: `<path>:<value>` lines for every level from the
//! probe's own cgroup up to the mount root, cgroup v2 (`cpu.max`, `memory.max`) and v1
//! (`cpu.cfs_quota_us` with `cpu.cfs_period_us`, `memory.limit_in_bytes`) alike.
//!
//! The tightest limit anywhere on the path is the one that binds, so this keeps the
//! minimum of each; whether it is below the host's figures is for the caller to judge.

/// The kernel's default CFS period, used when a level shows a quota without one.
const DEFAULT_PERIOD_US: u64 = 100_000;

/// The tightest limits found, before comparing them with the host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Found {
    /// CPUs (quota / period).
    pub(super) cpu: Option<f64>,
    /// Bytes.
    pub(super) memory_bytes: Option<u64>,
}

/// The lowest CPU quota and memory limit on the path, whatever the host has.
pub(super) fn tightest(lines: &[&str]) -> Found {
    let mut found = Found::default();
    // cgroup v1 splits quota and period into two files of the same directory.
    let mut v1_quotas: Vec<(&str, u64)> = Vec::new();
    let mut v1_periods: Vec<(&str, u64)> = Vec::new();
    for line in lines {
        // Values never hold a colon; paths might, so split at the last one.
        let Some((path, value)) = line.trim().rsplit_once(':') else {
            continue;
        };
        let Some((dir, file)) = path.rsplit_once('/') else {
            continue;
        };
        let value = value.trim();
        match file {
            "cpu.max" => {
                let mut words = value.split_whitespace();
                // "max" (or anything unreadable) is no limit.
                let quota = words.next().and_then(|word| word.parse().ok());
                let period = words.next().map_or(Some(DEFAULT_PERIOD_US), |word| word.parse().ok());
                if let (Some(quota), Some(period)) = (quota, period) {
                    keep_lower_cpu(&mut found, quota, period);
                }
            }
            "memory.max" | "memory.limit_in_bytes" => {
                // "max" in v2; v1 says unlimited with a huge number, weeded out later.
                if let Ok(bytes) = value.parse::<u64>() {
                    found.memory_bytes = Some(found.memory_bytes.map_or(bytes, |b| b.min(bytes)));
                }
            }
            // -1 means no quota and does not parse as u64.
            "cpu.cfs_quota_us" => {
                if let Ok(quota) = value.parse() {
                    v1_quotas.push((dir, quota));
                }
            }
            "cpu.cfs_period_us" => {
                if let Ok(period) = value.parse() {
                    v1_periods.push((dir, period));
                }
            }
            _ => {}
        }
    }
    for (dir, quota) in v1_quotas {
        let period = v1_periods
            .iter()
            .find(|(found_dir, _)| *found_dir == dir)
            .map_or(DEFAULT_PERIOD_US, |(_, period)| *period);
        keep_lower_cpu(&mut found, quota, period);
    }
    found
}

/// A zero quota or period is no limit the kernel would accept; skipping them also keeps
/// the ratio finite.
fn keep_lower_cpu(found: &mut Found, quota: u64, period: u64) {
    if quota == 0 || period == 0 {
        return;
    }
    let cpus = quota as f64 / period as f64;
    found.cpu = Some(found.cpu.map_or(cpus, |c| c.min(cpus)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_tightest_limits() {
        let found = tightest(&[
            "/sys/fs/cgroup/a/b/cpu.max:max 100000",
            "/sys/fs/cgroup/a/b/memory.max:max",
            "/sys/fs/cgroup/a/cpu.max:250000 100000",
            "/sys/fs/cgroup/a/memory.max:4294967296",
            "/sys/fs/cgroup/cpu.max:50000",
            "/sys/fs/cgroup/memory.max:8589934592",
        ]);
        assert_eq!(found.cpu, Some(0.5));
        assert_eq!(found.memory_bytes, Some(4_294_967_296));

        // v1: quota and period are paired by directory; -1 is no quota.
        let found = tightest(&[
            "/sys/fs/cgroup/cpu/docker/x/cpu.cfs_quota_us:-1",
            "/sys/fs/cgroup/cpu/docker/x/cpu.cfs_period_us:100000",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us:150000",
            "/sys/fs/cgroup/cpu/cpu.cfs_period_us:50000",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes:9223372036854771712",
        ]);
        assert_eq!(found.cpu, Some(3.0));
        assert_eq!(found.memory_bytes, Some(9_223_372_036_854_771_712));

        let found = tightest(&["/x/cpu.max:0 100000", "/x/cpu.max:100 0", "garbage", "/:"]);
        assert_eq!(found, Found::default());
    }
}
