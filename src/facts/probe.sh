# chom hardware probe, fed to `sh -s` on stdin. POSIX sh only (dash, bash,
# busybox ash). It only gathers raw text between `@@chom:<section>` markers;
# chom parses it (src/facts.rs). It never fails halfway: a section that cannot
# read what it wants prints less, stderr is discarded and the script always
# exits 0.

# Every command started costs the server a fork and an exec, and every subshell
# a fork, and chom probes every server at each interval, so files are read with
# shell builtins, sections run in braces, and only what the shell cannot do
# itself (df, systemd-detect-virt; nproc and uname on kernels without the files
# below) runs as a program. A section that fails prints less, never aborts the
# probe: a failed redirection or builtin does not end a non-interactive shell.
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

  # The CPUs this shell may run on (its affinity, which honours cpusets) and the
  # CPUs online; chom counts those in both lists, which is what nproc prints.
  # Only a kernel without the lists (before 2.6.26) costs an nproc.
  chom_allowed=
  while IFS=: read -r k v; do
    case $k in Cpus_allowed_list) chom_allowed=$v && break ;; esac
  done </proc/self/status
  chom_online=
  [ -r /sys/devices/system/cpu/online ] && read -r chom_online </sys/devices/system/cpu/online
  if [ -n "$chom_allowed" ]; then
    printf '%s\n' '@@chom:cpu-lists' "allowed:$chom_allowed" "online:$chom_online"
  else
    # GNU nproc would also obey OMP_* variables, which say nothing about the machine.
    printf '%s\n' '@@chom:cpus'
    (
      unset OMP_NUM_THREADS OMP_THREAD_LIMIT
      n=$(nproc)
      case $n in '' | *[!0-9]*) n=$(getconf _NPROCESSORS_ONLN) ;; esac
      case $n in '' | *[!0-9]*) n=$(grep -c '^processor' /proc/cpuinfo) ;; esac
      printf '%s\n' "$n"
    )
  fi

  printf '%s\n' '@@chom:meminfo'
  # The shell reads a file a byte at a time, so stop at MemAvailable (line 3).
  while IFS= read -r l; do
    case $l in
      MemTotal:*) printf '%s\n' "$l" ;;
      MemAvailable:*) printf '%s\n' "$l" && break ;;
    esac
  done </proc/meminfo

  # -P keeps one line per filesystem and the same columns on coreutils and
  # busybox; -k fixes the unit whatever BLOCKSIZE says.
  printf '%s\n' '@@chom:df'
  df -Pk /

  # What uname -m -r prints, from the kernel's own files (kernel.arch is 6.1+);
  # one uname for both otherwise: POSIX prints the release before the machine.
  chom_arch=
  chom_kernel=
  [ -r /proc/sys/kernel/arch ] && read -r chom_arch </proc/sys/kernel/arch
  [ -r /proc/sys/kernel/osrelease ] && read -r chom_kernel </proc/sys/kernel/osrelease
  if [ -z "$chom_arch" ] || [ -z "$chom_kernel" ]; then
    u=$(uname -r -m)
    chom_arch=${u##* }
    chom_kernel=${u% *}
  fi
  printf '%s\n' '@@chom:arch' "$chom_arch" '@@chom:kernel' "$chom_kernel"

  printf '%s\n' '@@chom:os-release'
  if [ -r /etc/os-release ]; then
    chom_cat /etc/os-release
  else
    chom_cat /usr/lib/os-release
  fi

  # systemd-detect-virt knows best, and its answer is final; the hints below
  # are what it looks at itself, for hosts without it (Alpine, old or minimal
  # images).
  chom_boot=
  [ -r /proc/sys/kernel/random/boot_id ] && read -r chom_boot </proc/sys/kernel/random/boot_id
  printf '%s\n' '@@chom:boot-id' "$chom_boot"

  printf '%s\n' '@@chom:virt'
  # Still the boot the last detection saw (chom passes it in): the virtualization cannot
  # have changed without a reboot, so systemd-detect-virt, the probe's dearest step, is
  # skipped.
  if [ -n "$chom_boot" ] && [ "${chom_known_boot:-}" = "$chom_boot" ] && [ -n "${chom_known_virt:-}" ]; then
    printf 'systemd-detect-virt=%s\n' "$chom_known_virt"
  else
    (
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
  fi

  printf '%s\n' '@@chom:cgroup'
  chom_cat /proc/self/cgroup

  # Limits may sit on any ancestor of our cgroup (a container's limit is on
  # its root), so every level up to the mount root is printed as
  # `<file>:<value>` and chom keeps the tightest.
  printf '%s\n' '@@chom:cgroup-limits'
  {
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
  }

  printf '%s\n' '@@chom:end'
}
export LC_ALL=C
PATH=$PATH:/usr/sbin:/usr/bin:/sbin:/bin
chom_probe </dev/null 2>/dev/null
exit 0
