#!/bin/busybox sh
# PID 1 of the lab's busybox initramfs.  Loads the modules listed in /modules.list (in
# dependency order, chosen by `xenwam lab build`), then either switches to the root
# device named by root= (dom0) or runs /guest-init.sh (a lab guest).
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r mod; do
    insmod "/lib/modules/$mod" 2>/dev/null || echo "initramfs: insmod $mod failed"
done < /modules.list

root=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        root=*) root="${word#root=}" ;;
    esac
done

if [ -z "$root" ]; then
    exec /guest-init.sh
fi

# virtio devices appear asynchronously after their module loads.
tries=0
while [ ! -b "$root" ] && [ "$tries" -lt 100 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
if ! mount -t ext4 -o rw "$root" /newroot; then
    echo "initramfs: cannot mount root $root; dropping to a shell"
    exec sh
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /bin/busybox init
