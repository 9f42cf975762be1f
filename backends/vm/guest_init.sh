#!/bin/sh
# /init of the harness guest: built into the initramfs by backends/vm/image.py, booted by backends/vm/qemu.py.
#
# Contract with the host (backends/vm/qemu.py):
#   virtio-9p tag hxctl -> /hx/ctl. The host wrote job.sh there; this script writes kernel_release,
#       started (its host-side mtime is "guest command starts"), stdout, stderr and, last, status.
#   job.sh is sourced in a subshell and uses only the helpers below:
#       hx_mount TAG DIR, hx_fail MESSAGE, cd, export, hx_exec ARGV...
#   isa-debug-exit (port 0xf4): qemu exits with (code << 1) | 1, proof that this script ran to its end.
#
# /bin/sh is dash, not busybox: busybox ash runs its own applet for a bare name such as `ip` or
# `ping` even when PATH holds the real iproute2/iputils binary. Busybox applets that start other
# programs (env, xargs, timeout) still prefer applets, so this script calls real tools by full path
# and hx_exec resolves the guest command through PATH itself.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root LANG=C.UTF-8 TERM=dumb
umask 022

hx_log() { echo "hx-init: $*"; }
hx_uptime() { cut -d' ' -f1 /proc/uptime; }

hx_poweroff() {  # CODE: report CODE to the host through isa-debug-exit, then power off
    hx_code=$1
    # qemu folds (code << 1) | 1 into its 8-bit exit status; the status file carries the full code.
    [ "$hx_code" -gt 127 ] && hx_code=127
    sync
    printf "\\$(printf %o "$hx_code")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    # Only reached without an isa-debug-exit device. The kernel runs with acpi=off, so power off
    # is not available; a reboot is, and qemu -no-reboot turns it into an exit.
    reboot -f
}

hx_mount() {  # TAG DIR: mount the host directory that qemu shares as virtio-9p TAG on DIR
    mkdir -p "$2" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "$1" "$2"
}

hx_fail() {  # MESSAGE: the guest could not set the command up; the host raises VMError with MESSAGE
    echo "$*" > /hx/ctl/setup_error
    echo "hx-init: $*" >&2
    exit 125
}

hx_exec() {  # ARGV...: exec ARGV with ARGV[0] looked up in PATH, never as a busybox applet
    hx_cmd=$1
    shift
    case $hx_cmd in
    */*) ;;
    *)
        hx_ifs=$IFS
        IFS=:
        for hx_dir in $PATH; do
            if [ -f "$hx_dir/$hx_cmd" ] && [ -x "$hx_dir/$hx_cmd" ]; then
                hx_cmd=$hx_dir/$hx_cmd
                break
            fi
        done
        IFS=$hx_ifs
        ;;
    esac
    exec "$hx_cmd" "$@"
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
# pyroute2 and iproute2 keep named network namespaces under /var/run/netns (/var/run -> /run).
mount -t tmpfs -o mode=0755 run /run
mkdir -p /run/netns
echo  # the firmware leaves the console mid-line
hx_log "init started at uptime $(hx_uptime)s"

/bin/ip link set lo up
[ -f /etc/hx/env ] && . /etc/hx/env

# The docker layer (backends/vm/image.py, extras=("docker",)) is in the image: a real dockerd will run.
# It needs the unified cgroup hierarchy (runc creates each container's cgroup there) and writable
# /var/lib; /etc/hx/docker exports its settings (DOCKER_RAMDISK, the vfs storage driver, ...).
if [ -f /etc/hx/docker ]; then
    mount -t cgroup2 cgroup2 /sys/fs/cgroup || hx_log "cannot mount cgroup2 on /sys/fs/cgroup"
    mount -t tmpfs -o mode=0755 varlib /var/lib
    . /etc/hx/docker
    # iptables' netfilter modules: Docker's embedded DNS is wired with NAT rules in each container.
    while read -r hx_mod hx_args; do
        [ -n "$hx_mod" ] || continue
        # shellcheck disable=SC2086
        insmod "$hx_mod" $hx_args || hx_log "insmod $hx_mod failed"
    done < /etc/hx/docker-modules
    hx_log "docker layer ready at uptime $(hx_uptime)s"
fi

# Insert the modules in the dependency order that the host computed (deps first): no modules.dep
# parsing in the guest, and no on-demand loading later.
if [ -f /etc/hx/modules ]; then
    while read -r hx_mod hx_args; do
        [ -n "$hx_mod" ] || continue
        # shellcheck disable=SC2086  # module options are separate words on purpose
        insmod "$hx_mod" $hx_args || hx_log "insmod $hx_mod failed"
    done < /etc/hx/modules
fi
hx_log "modules loaded at uptime $(hx_uptime)s"

# Snapshot mode (backends/vm/snapshot.py): the agent loads the harness, says READY on ttyS1 and waits; the
# host saves the guest there. Each restore resumes it: it mounts /hx/ctl itself (a mounted 9p share would
# forbid the save), runs job.json in-process and writes the same files a job.sh run does.
case " $(cat /proc/cmdline) " in
*" hx.agent "*)
    hx_log "agent starts at uptime $(hx_uptime)s"
    # By path, not -m: the package backends.vm imports host-only code. -P: its directory is not sys.path[0].
    python3 -P /hx/project/backends/vm/guest_agent.py < /dev/null
    hx_status=$?
    hx_log "agent exited with status $hx_status at uptime $(hx_uptime)s"
    hx_poweroff "$hx_status"
    ;;
esac

if ! hx_mount hxctl /hx/ctl; then
    hx_log "cannot mount the control share (virtio-9p tag hxctl)"
    hx_poweroff 127
fi
if [ ! -f /hx/ctl/job.sh ]; then
    hx_log "no job.sh on the control share"
    hx_poweroff 127
fi

uname -r > /hx/ctl/kernel_release
hx_uptime > /hx/ctl/started
hx_log "command starts at uptime $(hx_uptime)s"
( . /hx/ctl/job.sh ) < /dev/null > /hx/ctl/stdout 2> /hx/ctl/stderr
hx_status=$?
echo "$hx_status" > /hx/ctl/status
hx_log "command exited with status $hx_status at uptime $(hx_uptime)s"
hx_poweroff "$hx_status"
