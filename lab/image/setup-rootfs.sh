#!/bin/sh
# Make a Debian root file system boot cleanly as a systemd container. $1 is the root.
set -eu
root="$1"
# Units that make no sense in a container (no consoles, no udev, no kernel modules).
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
            systemd-modules-load.service sys-kernel-debug.mount sys-kernel-tracing.mount \
            systemd-remount-fs.service systemd-firstboot.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# Keep downloaded packages (the lab's apt cache) and never install recommends implicitly.
rm -f "$root/etc/apt/apt.conf.d/docker-clean"
printf 'APT::Install-Recommends "false";\nBinary::apt::APT::Keep-Downloaded-Packages "true";\n' \
  > "$root/etc/apt/apt.conf.d/90kvlab"
# A fresh machine-id at every boot; journald keeps its files in memory (the container is throwaway).
: > "$root/etc/machine-id"
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' > "$root/etc/systemd/journald.conf.d/kvlab.conf"
# Every container gets its own SSH host keys, made at its first boot: the package's keys (made when
# the image was built) would be the same in every container, so they are removed here.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
  > "$root/etc/systemd/system/ssh.service.d/kvlab-host-keys.conf"
