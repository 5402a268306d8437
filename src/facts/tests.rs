use super::*;

use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../tests/fixtures/facts/", $name, ".txt")),
        )
    };
}

/// Outputs of the probe: made by hand from each system's real formats, except the
/// `this-machine-*` ones, captured by running the script under dash and busybox.
const FIXTURES: &[(&str, &str)] = &[
    fixture!("debian-12-kvm"),
    fixture!("debian-13"),
    fixture!("ubuntu-24.04-hyperv"),
    fixture!("alpine-3.20"),
    fixture!("rocky-9-vmware"),
    fixture!("lxc-cgroup-limits"),
    fixture!("openvz"),
    fixture!("this-machine-dash"),
    fixture!("this-machine-busybox"),
];

fn fixture(name: &str) -> &'static str {
    FIXTURES
        .iter()
        .find(|(found, _)| *found == name)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

fn parsed(name: &str) -> Hardware {
    parse_probe(fixture(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn os(pretty_name: &str, id: &str, version_id: &str) -> OsInfo {
    OsInfo {
        pretty_name: pretty_name.to_owned(),
        id: id.to_owned(),
        version_id: Some(version_id.to_owned()),
    }
}

#[allow(clippy::too_many_arguments)]
fn hardware(
    cpu: u32,
    memory_mb: u64,
    disk_gb: u64,
    disk_free_gb: u64,
    arch: &str,
    os: OsInfo,
    kernel: &str,
    virtualization: Option<&str>,
) -> Hardware {
    Hardware {
        cpu,
        memory_mb,
        disk_gb,
        disk_free_gb,
        arch: arch.to_owned(),
        os,
        kernel: kernel.to_owned(),
        virtualization: virtualization.map(str::to_owned),
        boot_id: None,
        limits: None,
    }
}

fn debian_12() -> OsInfo {
    os("Debian GNU/Linux 12 (bookworm)", "debian", "12")
}

#[test]
fn debian_12_kvm() {
    let expected = hardware(2, 3931, 40, 12, "x86_64", debian_12(), "6.1.0-28-amd64", Some("kvm"));
    assert_eq!(parsed("debian-12-kvm"), expected);
    assert_eq!(
        summarize(&expected),
        "2 vCPU, 3931 MB RAM, 40 GB disk (12 GB free), x86_64, Debian GNU/Linux 12 (bookworm), kvm"
    );
}

#[test]
fn debian_13_arm64() {
    let expected = hardware(
        2,
        3789,
        39,
        35,
        "aarch64",
        os("Debian GNU/Linux 13 (trixie)", "debian", "13"),
        "6.12.48+deb13-arm64",
        Some("kvm"),
    );
    assert_eq!(parsed("debian-13"), expected);
}

#[test]
fn ubuntu_24_04_hyperv() {
    let expected = hardware(
        2,
        3911,
        29,
        25,
        "x86_64",
        os("Ubuntu 24.04.1 LTS", "ubuntu", "24.04"),
        "6.8.0-1021-azure",
        Some("microsoft"),
    );
    assert_eq!(parsed("ubuntu-24.04-hyperv"), expected);
}

#[test]
fn alpine_busybox_without_systemd() {
    let expected = hardware(
        1,
        979,
        24,
        22,
        "x86_64",
        os("Alpine Linux v3.20", "alpine", "3.20.3"),
        "6.6.49-0-virt",
        // DMI says QEMU; kvm-clock tells KVM acceleration.
        Some("kvm"),
    );
    assert_eq!(parsed("alpine-3.20"), expected);
}

#[test]
fn rocky_9_vmware_xfs() {
    let expected = hardware(
        4,
        7654,
        70,
        67,
        "x86_64",
        os("Rocky Linux 9.5 (Blue Onyx)", "rocky", "9.5"),
        "5.14.0-503.14.1.el9_5.x86_64",
        Some("vmware"),
    );
    assert_eq!(parsed("rocky-9-vmware"), expected);
}

#[test]
fn lxc_cgroup_limits_beat_the_host_proc() {
    let mut expected = hardware(
        2,
        2048,
        20,
        16,
        "x86_64",
        os("Ubuntu 22.04.5 LTS", "ubuntu", "22.04"),
        "6.1.0-25-amd64",
        Some("lxc"),
    );
    expected.limits = Some(CgroupLimits {
        cpu: Some(1.5),
        memory_mb: Some(2048),
        host_cpu: 16,
        host_memory_mb: 64300,
    });
    let hw = parsed("lxc-cgroup-limits");
    assert_eq!(hw, expected);
    assert_eq!(
        summarize(&hw),
        "2 vCPU, 2048 MB RAM, 20 GB disk (16 GB free), x86_64, Ubuntu 22.04.5 LTS, lxc, \
         cgroup limit 1.5 of 16 vCPU and 2048 of 64300 MB"
    );
}

#[test]
fn openvz_limit_equal_to_the_shown_ram_is_no_limit() {
    let expected = hardware(
        2,
        2048,
        50,
        41,
        "x86_64",
        os("CentOS Linux 7 (Core)", "centos", "7"),
        "3.10.0-1160.90.1.vz7.200.7",
        Some("openvz"),
    );
    assert_eq!(parsed("openvz"), expected);
}

#[test]
fn this_machine_under_dash_and_busybox() {
    let expected = Hardware {
        boot_id: Some("3f1c9a52-7d0e-4b8e-9a61-2c5d4e6f7a80".to_owned()),
        ..hardware(
            2,
            24105,
            252,
            79,
            "x86_64",
            debian_12(),
            "6.18.44-fc-v857",
            Some("docker"),
        )
    };
    // coreutils and busybox print df differently; the figures are the same.
    assert_eq!(parsed("this-machine-dash"), expected);
    assert_eq!(parsed("this-machine-busybox"), expected);
}

/// Without systemd-detect-virt the hints alone give the same answer, except on arm64
/// Hetzner, where neither DMI nor a clock nor a CPU flag names the hypervisor.
#[test]
fn hints_agree_with_systemd_detect_virt() {
    for (name, text) in FIXTURES {
        let stripped: String = text
            .lines()
            .filter(|line| !line.starts_with("systemd-detect-virt="))
            .map(|line| format!("{line}\n"))
            .collect();
        let expected = match *name {
            "debian-13" => None,
            _ => parsed(name).virtualization,
        };
        let hw = parse_probe(&stripped).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(hw.virtualization, expected, "{name}");
    }
}

fn probe_text(cpus: &str, meminfo: &str, limits: &[&str]) -> String {
    format!(
        "@@chom:cpus\n{cpus}\n@@chom:meminfo\n{meminfo}\n@@chom:df\n\
         Filesystem 1024-blocks Used Available Capacity Mounted on\n\
         /dev/vda1 10485760 5242880 5242880 50% /\n\
         @@chom:cgroup-limits\n{}\n",
        limits.join("\n")
    )
}

#[test]
fn limits_only_when_they_constrain() {
    let meminfo = "MemTotal:        4194304 kB";
    // Above the host, or "max": no limit.
    let text = probe_text(
        "2",
        meminfo,
        &[
            "/sys/fs/cgroup/cpu.max:400000 100000",
            "/sys/fs/cgroup/memory.max:8589934592",
        ],
    );
    let hw = parse_probe(&text).expect("parses");
    assert_eq!((hw.cpu, hw.memory_mb, hw.limits), (2, 4096, None));

    // Only the memory limit binds; a quota of exactly the host's CPUs does not.
    let text = probe_text(
        "2",
        meminfo,
        &[
            "/sys/fs/cgroup/cpu.max:200000 100000",
            "/sys/fs/cgroup/memory.max:1073741824",
        ],
    );
    let hw = parse_probe(&text).expect("parses");
    assert_eq!((hw.cpu, hw.memory_mb), (2, 1024));
    let limits = hw.limits.expect("memory limit");
    assert_eq!(limits.cpu, None);
    assert_eq!(limits.memory_mb, Some(1024));
    assert_eq!((limits.host_cpu, limits.host_memory_mb), (2, 4096));

    // A tiny quota still leaves one vCPU.
    let text = probe_text("8", meminfo, &["/sys/fs/cgroup/cpu.max:10000 100000"]);
    let hw = parse_probe(&text).expect("parses");
    assert_eq!(hw.cpu, 1);
    assert_eq!(hw.limits.and_then(|l| l.cpu), Some(0.1));
}

#[test]
fn missing_essentials_are_errors_naming_the_section() {
    let missing = |section, what| Err(ProbeError::Missing { section, what });
    assert_eq!(parse_probe(""), missing("cpus", "vCPU count"));
    assert_eq!(parse_probe("@@chom:cpus\n0\n"), missing("cpus", "vCPU count"));
    assert_eq!(parse_probe("@@chom:cpus\n2\n"), missing("meminfo", "MemTotal"));
    let no_df = "@@chom:cpus\n2\n@@chom:meminfo\nMemTotal: 1024 kB\n@@chom:df\n";
    assert_eq!(parse_probe(no_df), missing("df", "size of the root filesystem"));

    let message = ProbeError::Missing {
        section: "meminfo",
        what: "MemTotal",
    }
    .to_string();
    assert!(message.starts_with("no MemTotal in the `meminfo` section"), "{message}");
    assert!(message.contains("chom's probe script"), "{message}");
    assert!(message.contains("lacks /proc"), "{message}");
}

/// The affinity and online lists count as nproc does; the `cpus` number is the fallback.
#[test]
fn cpu_lists_count_the_allowed_cpus_that_are_online() {
    let cpus = |lists: &str| {
        let text = format!(
            "@@chom:cpu-lists\n{lists}\n{}",
            probe_text("7", "MemTotal: 2097152 kB", &[])
        );
        parse_probe(&text).expect("parses").cpu
    };
    assert_eq!(cpus("allowed:\t0-3\nonline:0-3"), 4);
    // A cpuset of CPUs 2, 4 and 5 on a host with 0-7 online.
    assert_eq!(cpus("allowed:\t2,4-5\nonline:0-7"), 3);
    // CPU 3 offline: the affinity mask still lists it, nproc does not count it.
    assert_eq!(cpus("allowed:\t0-7\nonline:0-2,4-7"), 7);
    assert_eq!(cpus("allowed:\t0-1\nonline:"), 2);
    assert_eq!(cpus("allowed:\t0-1"), 2);
    // Garbled or empty lists fall back to the `cpus` section.
    for bad in [
        "allowed:",
        "allowed:\t1-0",
        "allowed:\tx",
        "allowed:\t0-99999999",
        "allowed:\t0,,1",
    ] {
        assert_eq!(cpus(bad), 7, "{bad}");
    }
    // No CPU both allowed and online is no answer either.
    assert_eq!(cpus("allowed:\t4-5\nonline:0-3"), 7);
    // Overlapping or repeated parts count once; too many parts is garbage, not work.
    assert_eq!(cpus("allowed:\t0-3,2-5,5\nonline:0-63"), 6);
    let hostile = vec!["0-65535"; 5000].join(",");
    assert_eq!(cpus(&format!("allowed:\t{hostile}\nonline:{hostile}")), 7);
}

#[test]
fn optional_sections_may_be_missing() {
    let text = probe_text("3", "MemTotal: 2097152 kB", &[]);
    let hw = parse_probe(&text).expect("parses");
    assert_eq!(
        hw,
        Hardware {
            cpu: 3,
            memory_mb: 2048,
            disk_gb: 10,
            disk_free_gb: 5,
            arch: "unknown".to_owned(),
            os: OsInfo {
                pretty_name: "Linux".to_owned(),
                id: "linux".to_owned(),
                version_id: None,
            },
            kernel: "unknown".to_owned(),
            virtualization: None,
            boot_id: None,
            limits: None,
        }
    );
}

#[test]
fn banners_and_crlf_are_tolerated() {
    // Whatever the login shell's startup files print comes before the first marker.
    let text = format!(
        "Last login: Mon Nov  3 09:12:44 2025 from 192.0.2.7\r\n{}",
        fixture("debian-12-kvm").replace('\n', "\r\n")
    );
    assert_eq!(parse_probe(&text), Ok(parsed("debian-12-kvm")));
}

#[test]
fn json_is_camel_case_and_skips_absent_options() {
    let json = serde_json::to_value(parsed("debian-12-kvm")).expect("serializes");
    let keys: Vec<&str> = json.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "arch",
            "cpu",
            "diskFreeGb",
            "diskGb",
            "kernel",
            "memoryMb",
            "os",
            "virtualization"
        ]
    );
    assert_eq!(json["os"]["prettyName"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(json["os"]["versionId"], "12");

    let hw = parsed("lxc-cgroup-limits");
    let json = serde_json::to_value(&hw).expect("serializes");
    assert_eq!(
        json["limits"],
        serde_json::json!({"cpu": 1.5, "memoryMb": 2048, "hostCpu": 16, "hostMemoryMb": 64300})
    );
    let back: Hardware = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, hw);

    let schema = serde_json::to_value(schemars::schema_for!(Hardware)).expect("schema");
    let required = schema["required"].as_array().expect("required list");
    assert!(required.contains(&"diskFreeGb".into()));
    assert!(!required.contains(&"limits".into()));
}

/// A small deterministic generator: the tests need variety, not a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn never_panics_on_garbage_or_truncated_output() {
    for (_, text) in FIXTURES {
        for (end, _) in text.char_indices() {
            let _ = parse_probe(&text[..end]);
        }
    }

    let pieces = [
        "@@chom:",
        "cpus",
        "meminfo",
        "df",
        "cgroup-limits",
        "virt",
        "os-release",
        "\n",
        " ",
        ":",
        "=",
        "/",
        "%",
        "\"",
        "'",
        "\\",
        "-1",
        "0",
        "1",
        "max",
        "18446744073709551615",
        "99999999999999999999",
        "MemTotal:",
        "kB",
        "cpu.max",
        "memory.max",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "memory.limit_in_bytes",
        "systemd-detect-virt",
        "é",
        "\u{0}",
        "\r",
        "\t",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(60);
        let text: String = (0..len).map(|_| pieces[rng.below(pieces.len())]).collect();
        let _ = parse_probe(&text);
    }

    // Fixtures with lines dropped, swapped and numbers pushed to extremes.
    for _ in 0..2_000 {
        let (_, text) = FIXTURES[rng.below(FIXTURES.len())];
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for _ in 0..rng.below(6) {
            let i = rng.below(lines.len());
            match rng.below(4) {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let j = rng.below(lines.len());
                    lines.swap(i, j);
                }
                2 => lines[i] = lines[i].replace(|c: char| c.is_ascii_digit(), "9"),
                _ => lines[i] = lines[i].replace(|c: char| c.is_ascii_digit(), "0"),
            }
            if lines.is_empty() {
                break;
            }
        }
        let _ = parse_probe(&lines.join("\n"));
    }

    // Extremes that overflow naive arithmetic.
    let huge = probe_text(
        "4294967295",
        "MemTotal: 18446744073709551615 kB",
        &[
            "/sys/fs/cgroup/cpu.max:18446744073709551615 1",
            "/sys/fs/cgroup/memory.max:18446744073709551615",
        ],
    );
    let hw = parse_probe(&huge).expect("parses");
    assert_eq!(hw.cpu, u32::MAX);
}

/// Runs the probe through `program args...` the way chom does over SSH; `None` when the
/// shell is not installed.
fn run_probe(program: &str, args: &[&str], script: &str) -> Option<String> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => return None,
        Err(err) => panic!("{program}: {err}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script written");
    let output = child.wait_with_output().expect("probe ran");
    // A script cut short is a syntax error by design; only a whole one must succeed.
    if script == PROBE_SCRIPT {
        assert!(output.status.success(), "{program}: {:?}", output.status);
        assert!(
            output.stderr.is_empty(),
            "{program}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn markers(output: &str) -> Vec<&str> {
    output.lines().filter(|line| line.starts_with("@@chom:")).collect()
}

#[test]
fn real_probe_runs_here() {
    let shells: [(&str, &[&str]); 3] = [("sh", &["-s"]), ("dash", &["-s"]), ("busybox", &["sh", "-s"])];
    let mut ran = 0;
    for (program, args) in shells {
        let Some(output) = run_probe(program, args, PROBE_SCRIPT) else {
            assert_ne!(program, "sh", "sh must exist on Linux");
            continue;
        };
        ran += 1;
        // Whole, and with the sections the captured fixtures have: they keep up with it.
        assert_eq!(
            markers(&output),
            markers(fixture("this-machine-dash")),
            "{program}:\n{output}"
        );
        let hw = parse_probe(&output).unwrap_or_else(|err| panic!("{program}: {err}\n{output}"));
        assert!(hw.cpu >= 1, "{program}: {hw:?}");
        assert!(hw.memory_mb > 0, "{program}: {hw:?}");
        assert!(hw.disk_gb > 0, "{program}: {hw:?}");
        assert!(hw.disk_free_gb <= hw.disk_gb, "{program}: {hw:?}");
        assert!(!hw.arch.is_empty() && hw.arch != "unknown", "{program}: {hw:?}");
        assert!(!hw.kernel.is_empty() && hw.kernel != "unknown", "{program}: {hw:?}");
        assert!(!hw.os.id.is_empty(), "{program}: {hw:?}");
        assert!(!summarize(&hw).is_empty());
    }
    assert!(ran >= 1);
}

#[test]
fn a_truncated_script_runs_nothing() {
    let half = &PROBE_SCRIPT[..PROBE_SCRIPT.len() / 2];
    let output = run_probe("sh", &["-s"], half).expect("sh exists");
    assert!(!output.contains("@@chom:"), "{output}");
}

/// shellcheck, where installed, holds the script to POSIX sh.
#[test]
fn probe_script_is_posix_sh() {
    let Some(_) = run_probe("shellcheck", &["--version"], "") else {
        return;
    };
    let mut child = Command::new("shellcheck")
        .args(["--shell=sh", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("shellcheck starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(PROBE_SCRIPT.as_bytes())
        .expect("script written");
    let output = child.wait_with_output().expect("shellcheck ran");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn the_probe_input_carries_the_last_boot_id_and_virtualization() {
    let boot = "3f1c9a52-7d0e-4b8e-9a61-2c5d4e6f7a80";
    let last = Hardware {
        boot_id: Some(boot.to_owned()),
        ..hardware(2, 2048, 10, 5, "x86_64", debian_12(), "6.1.0", Some("kvm"))
    };
    let input = String::from_utf8(probe_input(Some(&last))).unwrap();
    assert_eq!(
        input,
        format!("chom_known_boot={boot}\nchom_known_virt=kvm\n{PROBE_SCRIPT}")
    );
    // Bare metal is remembered as systemd-detect-virt names it.
    let metal = Hardware {
        virtualization: None,
        ..last.clone()
    };
    let input = String::from_utf8(probe_input(Some(&metal))).unwrap();
    assert!(input.starts_with(&format!("chom_known_boot={boot}\nchom_known_virt=none\n")));
    // Nothing known, or values no probe prints (a hand-edited status file): the bare script.
    assert_eq!(probe_input(None), PROBE_SCRIPT.as_bytes());
    for (boot_id, virt) in [
        (None, Some("kvm")),
        (Some("$(reboot)"), Some("kvm")),
        (Some(boot), Some("kvm; reboot")),
        (Some(boot), Some("")),
    ] {
        let odd = Hardware {
            boot_id: boot_id.map(str::to_owned),
            virtualization: virt.map(str::to_owned),
            ..last.clone()
        };
        assert_eq!(probe_input(Some(&odd)), PROBE_SCRIPT.as_bytes(), "{boot_id:?} {virt:?}");
    }
}

#[test]
fn the_probe_reuses_the_virtualization_only_within_the_same_boot() {
    let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return;
    };
    let boot = boot.trim();
    let fresh = parse_probe(&run_probe("sh", &["-s"], PROBE_SCRIPT).expect("sh exists")).unwrap();
    assert_eq!(fresh.boot_id.as_deref(), Some(boot));
    // Same boot: the recorded answer is taken as it is, even one no host would give.
    let same = Hardware {
        virtualization: Some("bhyve".to_owned()),
        ..fresh.clone()
    };
    let input = String::from_utf8(probe_input(Some(&same))).unwrap();
    let output = run_probe("sh", &["-s"], &input).expect("sh exists");
    assert_eq!(parse_probe(&output).unwrap().virtualization.as_deref(), Some("bhyve"));
    // Another boot: detected again.
    let rebooted = Hardware {
        boot_id: Some("00000000-0000-0000-0000-000000000000".to_owned()),
        ..same
    };
    let input = String::from_utf8(probe_input(Some(&rebooted))).unwrap();
    let output = run_probe("sh", &["-s"], &input).expect("sh exists");
    assert_eq!(parse_probe(&output).unwrap().virtualization, fresh.virtualization);
}
