//! Splitting the probe output into its marked sections, and reading the plain ones
//! (cpus, cpu-lists, meminfo, df, uname, os-release).

use super::OsInfo;

/// Lines that open a section start with this; the section's name is the next word.
const MARKER: &str = "@@chom:";

/// The probe output cut at its marker lines.
pub(super) struct Sections<'a> {
    list: Vec<(&'a str, Vec<&'a str>)>,
}

impl<'a> Sections<'a> {
    /// Lines before the first marker are dropped: they are whatever the login shell's
    /// startup files printed, not the probe.
    pub(super) fn split(output: &'a str) -> Self {
        let mut list: Vec<(&'a str, Vec<&'a str>)> = Vec::new();
        for line in output.lines() {
            if let Some(rest) = line.strip_prefix(MARKER) {
                let name = rest.split_whitespace().next().unwrap_or("");
                list.push((name, Vec::new()));
            } else if let Some((_, lines)) = list.last_mut() {
                lines.push(line);
            }
        }
        Self { list }
    }

    /// The lines of the first section so named; none when it is absent.
    pub(super) fn get(&self, name: &str) -> &[&'a str] {
        self.list
            .iter()
            .find(|(found, _)| *found == name)
            .map_or(&[], |(_, lines)| lines.as_slice())
    }
}

/// The first non-blank line, trimmed.
pub(super) fn first_line<'a>(lines: &[&'a str]) -> Option<&'a str> {
    lines.iter().copied().map(str::trim).find(|line| !line.is_empty())
}

/// The vCPU count; zero is no answer (`grep -c` prints 0 when /proc/cpuinfo is missing).
pub(super) fn cpus(lines: &[&str]) -> Option<u32> {
    first_line(lines)?.parse().ok().filter(|n| *n > 0)
}

/// The vCPU count from the `cpu-lists` section, as `nproc` counts it: the CPUs in the probing
/// shell's affinity (`Cpus_allowed_list`, which honours cpusets) that are also online. A
/// missing or unreadable online list counts the affinity alone.
pub(super) fn cpu_lists(lines: &[&str]) -> Option<u32> {
    let list = |key: &str| {
        lines
            .iter()
            .find_map(|line| line.trim().strip_prefix(key))
            .and_then(|value| cpu_ranges(value.trim()))
    };
    let allowed = list("allowed:")?;
    let count: u64 = match list("online:") {
        Some(online) => allowed
            .iter()
            .flat_map(|a| online.iter().map(move |o| (a, o)))
            .map(|(a, o)| u64::from(a.1.min(o.1)).saturating_sub(u64::from(a.0.max(o.0))))
            .sum(),
        None => allowed.iter().map(|(first, end)| u64::from(end - first)).sum(),
    };
    u32::try_from(count).ok().filter(|n| *n > 0)
}

/// The kernel's CPU list format, `0-3,8,10-11`, as sorted, disjoint half-open ranges; `None`
/// when malformed or longer than any machine's list could be (a hostile server cannot make
/// chom count for long).
fn cpu_ranges(text: &str) -> Option<Vec<(u32, u32)>> {
    const MAX_CPUS: u32 = 1 << 16;
    const MAX_PARTS: usize = 4096;
    let mut ranges = Vec::new();
    for part in text.split(',') {
        if ranges.len() == MAX_PARTS {
            return None;
        }
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if first > last || last >= MAX_CPUS {
            return None;
        }
        ranges.push((first, last + 1));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (first, end) in ranges {
        match merged.last_mut() {
            Some(last) if first <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((first, end)),
        }
    }
    Some(merged)
}

/// `MemTotal` in KiB (the kernel's "kB").
pub(super) fn mem_total_kib(lines: &[&str]) -> Option<u64> {
    lines.iter().find_map(|line| {
        let value = line.strip_prefix("MemTotal:")?;
        value.split_whitespace().next()?.parse().ok().filter(|kib| *kib > 0)
    })
}

/// Size and available space of `/`, from `df -Pk /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RootFs {
    pub(super) size_kib: u64,
    pub(super) available_kib: u64,
}

/// Reads the columns from the right (`... size used available capacity mountpoint`) so
/// that a device name with spaces, or one on a line of its own as df prints without
/// `-P`, cannot shift them.
pub(super) fn df_root(lines: &[&str]) -> Option<RootFs> {
    lines.iter().rev().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [.., size, used, available, capacity, _mount] = fields.as_slice() else {
            return None;
        };
        if !capacity.ends_with('%') {
            return None;
        }
        let size_kib: u64 = size.parse().ok().filter(|kib| *kib > 0)?;
        used.parse::<u64>().ok()?;
        let available_kib = available.parse().ok()?;
        Some(RootFs {
            size_kib,
            available_kib,
        })
    })
}

/// `PRETTY_NAME`, `ID` and `VERSION_ID`, with os-release(5)'s defaults for the first two.
pub(super) fn os_release(lines: &[&str]) -> OsInfo {
    let mut pretty_name = None;
    let mut name = None;
    let mut id = None;
    let mut version_id = None;
    for line in lines {
        let Some((key, raw)) = line.trim().split_once('=') else {
            continue;
        };
        let slot = match key {
            "PRETTY_NAME" => &mut pretty_name,
            "NAME" => &mut name,
            "ID" => &mut id,
            "VERSION_ID" => &mut version_id,
            _ => continue,
        };
        *slot = Some(unquote(raw)).filter(|value| !value.is_empty());
    }
    OsInfo {
        pretty_name: pretty_name.or(name).unwrap_or_else(|| "Linux".to_owned()),
        id: id.unwrap_or_else(|| "linux".to_owned()),
        version_id,
    }
}

/// Undoes the shell quoting os-release allows: double quotes with backslash escapes,
/// single quotes taken literally, and bare backslash escapes.
fn unquote(raw: &str) -> String {
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (Some('\''), _) => value.push(c),
            (_, '\\') => value.extend(chars.next()),
            // An unquoted blank ends the value; what follows would be another word.
            (None, c) if c.is_whitespace() => break,
            _ => value.push(c),
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quoting_and_fallbacks() {
        let os = os_release(&["# comment", "NAME='My \"Linux\"'", r#"ID="my\"os""#, "VERSION_ID="]);
        assert_eq!(os.pretty_name, "My \"Linux\"");
        assert_eq!(os.id, "my\"os");
        assert_eq!(os.version_id, None);
        let os = os_release(&[r#"PRETTY_NAME=Bare\ Name trailing"#, "ID=bare"]);
        assert_eq!(os.pretty_name, "Bare Name");
    }

    #[test]
    fn df_without_posix_format_wraps_long_names() {
        let root = df_root(&[
            "Filesystem           1K-blocks      Used Available Use% Mounted on",
            "/dev/mapper/a-very-long-volume-group-name-root",
            "                      20511312   4096000  15350352  22% /",
        ]);
        assert_eq!(
            root,
            Some(RootFs {
                size_kib: 20_511_312,
                available_kib: 15_350_352,
            })
        );
    }
}
