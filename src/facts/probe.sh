# chom hardware probe, fed to `sh -s` on stdin. POSIX sh only (dash, bash,
# busybox ash). It only gathers raw text between `@@chom:<section>` markers;
# chom parses it (src/facts.rs). It never fails halfway: every section runs in
# its own subshell, stderr is discarded and the script always exits 0.

# Every command started costs the server a fork and an exec, and chom probes
# every server at each interval, so files are read with shell builtins and only
# what the shell cannot do itself (nproc, df, uname, systemd-detect-virt) runs
# as a program.
#
# chom may put two assignments before the script: chom_known_boot and
# chom_known_virt, the boot ID and virtualization its last detection recorded.
chom_cat() {
  while IFS= read -r chom_line || [ -n "$chom_line" ]; do
    printf '%s\n' "$chom_line"
  done <"$1"
}

# The whole probe is one function so that the shell has read all of it before
# anything runs: commands then cannot swallow the rest of the script from
# stdin, and a script cut short in transit is a syntax error that runs nothing.
chom_probe() {
  # The format's version: raise it when a section changes meaning.
  printf '%s\n' '@@chom:probe 1'

  # nproc counts the CPUs this process may use (it honours cpusets); GNU nproc
  # would also obey OMP_* variables, which say nothing about the machine.
  printf '%s\n' '@@chom:cpus'
  (
    unset OMP_NUM_THREADS OMP_THREAD_LIMIT
    n=$(nproc)
    case $n in '' | *[!0-9]*) n=$(getconf _NPROCESSORS_ONLN) ;; esac
    case $n in '' | *[!0-9]*) n=$(grep -c '^processor' /proc/cpuinfo) ;; esac
    printf '%s\n' "$n"
  )

  printf '%s\n' '@@chom:meminfo'
  (
    while IFS= read -r l; do
      case $l in MemTotal:* | MemAvailable:*) printf '%s\n' "$l" ;; esac
    done </proc/meminfo
  )

  # -P keeps one line per filesystem and the same columns on coreutils and
  # busybox; -k fixes the unit whatever BLOCKSIZE says.
  printf '%s\n' '@@chom:df'
  (df -Pk /)

  # One uname for both: POSIX prints the release before the machine.
  u=$(uname -r -m)
  printf '%s\n' '@@chom:arch' "${u##* }" '@@chom:kernel' "${u% *}"

  printf '%s\n' '@@chom:os-release'
  (
    if [ -r /etc/os-release ]; then
      chom_cat /etc/os-release
    else
      chom_cat /usr/lib/os-release
    fi
  )

  # systemd-detect-virt knows best, and its answer is final; the hints below
  # are what it looks at itself, for hosts without it (Alpine, old or minimal
  # images).
  chom_boot=
  [ -r /proc/sys/kernel/random/boot_id ] && read -r chom_boot </proc/sys/kernel/random/boot_id
  printf '%s\n' '@@chom:boot-id' "$chom_boot"

  printf '%s\n' '@@chom:virt'
  (
    # Still the boot the last detection saw (chom passes it in): the virtualization cannot
    # have changed without a reboot, so systemd-detect-virt, the probe's dearest step, is
    # skipped.
    if [ -n "$chom_boot" ] && [ "${chom_known_boot:-}" = "$chom_boot" ] && [ -n "${chom_known_virt:-}" ]; then
      printf 'systemd-detect-virt=%s\n' "$chom_known_virt"
      exit 0
    fi
    if command -v systemd-detect-virt >/dev/null; then
      v=$(systemd-detect-virt)
      if [ -n "$v" ]; then
        printf 'systemd-detect-virt=%s\n' "$v"
        exit 0
      fi
    fi
    c=$(tr '\000' '\n' </proc/1/environ | sed -n 's/^container=//p')
    [ -n "$c" ] && printf 'container=%s\n' "$c"
    [ -e /.dockerenv ] && echo dockerenv=1
    [ -e /run/.containerenv ] && echo containerenv=1
    [ -d /proc/vz ] && echo proc-vz=1
    [ -d /proc/bc ] && echo proc-bc=1
    [ -e /proc/user_beancounters ] && echo user-beancounters=1
    for f in sys_vendor product_name; do
      [ -r /sys/class/dmi/id/$f ] && read -r v </sys/class/dmi/id/$f && printf 'dmi-%s=%s\n' $f "$v"
    done
    [ -r /sys/hypervisor/type ] && read -r v </sys/hypervisor/type && printf 'hypervisor-type=%s\n' "$v"
    f=/sys/devices/system/clocksource/clocksource0/available_clocksource
    [ -r $f ] && read -r v <$f && printf 'clocksource=%s\n' "$v"
    grep -q -E '^flags.* hypervisor( |$)' /proc/cpuinfo && echo cpu-hypervisor=1
  )

  printf '%s\n' '@@chom:cgroup'
  (chom_cat /proc/self/cgroup)

  # Limits may sit on any ancestor of our cgroup (a container's limit is on
  # its root), so every level up to the mount root is printed as
  # `<file>:<value>` and chom keeps the tightest.
  printf '%s\n' '@@chom:cgroup-limits'
  (
    # $1: mount point, $2: cgroup path, then the files to read at each level.
    chom_walk() {
      b=$1
      d=${2%/}
      shift 2
      case $d in /*) ;; *) d= ;; esac
      while :; do
        for f in "$@"; do
          [ -r "$b$d/$f" ] && read -r v <"$b$d/$f" && printf '%s:%s\n' "$b$d/$f" "$v"
        done
        [ -z "$d" ] && break
        d=${d%/*}
      done
    }
    v2=
    mem=
    cpu=
    while IFS=: read -r id ctl path; do
      [ "$id:$ctl" = 0: ] && v2=${path:-/}
      case ",$ctl," in *,memory,*) mem=$path ;; esac
      case ",$ctl," in *,cpu,*) cpu=$path ;; esac
    done </proc/self/cgroup
    [ -n "$v2" ] && chom_walk /sys/fs/cgroup "$v2" cpu.max memory.max
    [ -n "$mem" ] && chom_walk /sys/fs/cgroup/memory "$mem" memory.limit_in_bytes
    if [ -n "$cpu" ]; then
      for b in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct; do
        if [ -d $b ]; then
          chom_walk $b "$cpu" cpu.cfs_quota_us cpu.cfs_period_us
          break
        fi
      done
    fi
  )

  printf '%s\n' '@@chom:end'
}
export LC_ALL=C
PATH=$PATH:/usr/sbin:/usr/bin:/sbin:/bin
chom_probe </dev/null 2>/dev/null
exit 0
