#!/usr/bin/env python3
"""Runs one tool invocation and prints what it cost, as one tab-separated line:

    rc  wall_s  cpu_s  tree_rss_peak_mib  proc_rss_peak_mib  hosts_cpu_s

cpu_s counts every process the tool started, including daemonised ones such as Ansible's
ControlPersist masters: the tool runs in its own cpuacct group (cgroup v1) when the machine
has one (otherwise the tool's and its waited-for children's user+sys time). tree_rss_peak
is the largest sum of resident memory over the tool's processes, sampled every 250 ms;
proc_rss_peak is the largest single process (the kernel's own high-water mark from wait4).
hosts_cpu_s is the CPU the test hosts' sshd group used meanwhile (bench/fleet/up.sh).

usage: measure.py --tag TAG [--timeout S] [--stdout FILE] -- COMMAND...
"""
import argparse
import os
import subprocess
import sys
import threading
import time

CGROUP = "/sys/fs/cgroup/cpuacct/chomfleet"
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def tree_rss(procs_file):
    total = 0
    try:
        with open(procs_file) as f:
            pids = f.read().split()
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", required=True)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--stdout", default=os.devnull)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")

    group = None
    if os.path.isdir(os.path.dirname(CGROUP)):
        group = os.path.join(CGROUP, a.tag)
        os.makedirs(group, exist_ok=True)
    hosts_before = read_int(os.path.join(CGROUP, "hosts", "cpuacct.usage"))

    def join_group():
        if group:
            with open(os.path.join(group, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    start = time.monotonic()
    peak = [0]
    done = threading.Event()
    with open(a.stdout, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stdin=subprocess.DEVNULL, preexec_fn=join_group)

        def sample():
            deadline = start + a.timeout
            while not done.wait(0.25):
                if group:
                    peak[0] = max(peak[0], tree_rss(os.path.join(group, "cgroup.procs")) or 0)
                if time.monotonic() > deadline:
                    print(f"measure: {a.tag} timed out after {a.timeout:.0f} s", file=sys.stderr)
                    proc.kill()
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
    rc = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    proc.returncode = rc
    peak = peak[0]

    cpu = usage.ru_utime + usage.ru_stime
    if group:
        ns = read_int(os.path.join(group, "cpuacct.usage"))
        if ns is not None:
            cpu = ns / 1e9
        # Whatever outlived the tool (a ControlPersist master) leaves for the root group.
        for pid in open(os.path.join(group, "cgroup.procs")).read().split():
            try:
                with open(os.path.join(os.path.dirname(CGROUP), "cgroup.procs"), "w") as f:
                    f.write(pid)
            except OSError:
                pass
        try:
            os.rmdir(group)
        except OSError:
            pass
    proc_peak = usage.ru_maxrss * 1024
    peak = max(peak, proc_peak)
    hosts_after = read_int(os.path.join(CGROUP, "hosts", "cpuacct.usage"))
    hosts = (hosts_after - hosts_before) / 1e9 if None not in (hosts_before, hosts_after) else float("nan")
    print(f"{rc}\t{wall:.3f}\t{cpu:.3f}\t{peak / 2**20:.1f}\t{proc_peak / 2**20:.1f}\t{hosts:.3f}")


if __name__ == "__main__":
    main()
