#!/bin/sh
# Bring up a lab dom0 without systemd or udev (run once by busybox init).
# Host-specific network addresses are set later by `xenwam lab up` over ssh; this script
# only starts what every Xen host needs and the control path (sshd on the QEMU user-net NIC).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "xenwam-dom0: $*" > /dev/hvc0; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock /run/sshd /run/xen /run/xen-hotplug /var/log/xen/console
# Without udev these links are missing, and Xen's hotplug locking.sh then spins until
# libxl kills the script (disk attach times out).
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mount -o remount,rw /

host=lab
for word in $(cat /proc/cmdline); do
    case "$word" in
        xw.host=*) host="${word#xw.host=}" ;;
    esac
done
hostname "$host"
echo "$host" > /etc/hostname

for m in virtio_net xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback \
         loop bridge tun 9p 9pnet_virtio sch_netem; do
    modprobe "$m" || say "modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen

/usr/lib/xen-4.17/bin/xenstored --pid-file /run/xenstored.pid
tries=0
until xenstore-read / >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -gt 100 ] && { say "xenstored did not come up"; break; }
    sleep 0.1
done
/usr/lib/xen-4.17/bin/xen-init-dom0 || say "xen-init-dom0 failed"
/usr/sbin/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest \
    --log-dir=/var/log/xen/console || say "xenconsoled failed"

# NICs are told apart by the MACs `xenwam lab up` gives them: ...:01 control, ...:02 link.
ip link set lo up
for dev in /sys/class/net/*; do
    name="${dev##*/}"
    case "$(cat "$dev/address")" in
        52:54:00:*:01) ip link set "$name" name ctl ;;
        52:54:00:*:02) ip link set "$name" name wan ;;
    esac
done
ip link set ctl up
# QEMU user-net forwards 127.0.0.1:PORT on the lab host to this address.
ip addr add 10.0.2.15/24 dev ctl
ip link set wan up
ip link add xenbr0 type bridge
ip link set xenbr0 up

mkdir -p /opt/xenwam
if grep -q '^xenwam$' /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2>/dev/null; then
    mount -t 9p -o trans=virtio,version=9p2000.L,ro xenwam /opt/xenwam \
        || say "cannot mount the xenwam source share"
fi
# The share's bytecode, compiled by the lab host (the share itself is read-only), where
# PYTHONPYCACHEPREFIX looks for it; the rest of the prefix is dom0's own (image-built).
if grep -q '^xenwampyc$' /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2>/dev/null; then
    mkdir -p /var/cache/xenwam/pycache/opt/xenwam
    mount -t 9p -o trans=virtio,version=9p2000.L,ro xenwampyc /var/cache/xenwam/pycache/opt/xenwam \
        || say "cannot mount the xenwam bytecode share"
fi

/usr/sbin/sshd || say "sshd failed"
say "ready"
