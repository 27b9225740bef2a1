#!/bin/sh
# Provision one Xen host of the Vagrant lab: HOST (a|b), LAYOUT (wan|lan), SHAPING flags.
# The same provision-dom0.sh as the QEMU lab image, in host mode (it also installs the
# hypervisor), then the lab's address plan via xenwam.lab.hostnet.
set -eu
host="$1"
layout="$2"
shaping="${3:-}"
XENWAM_PROVISION_MODE=host sh /opt/xenwam/xenwam/lab/files/provision-dom0.sh
install -m 0644 /opt/xenwam/xenwam/lab/files/profile-xenwam.sh /etc/profile.d/xenwam.sh

# Same dom0 memory as in the QEMU lab; Debian's Xen GRUB entry reads this variable.
if ! grep -q '^GRUB_CMDLINE_XEN_DEFAULT=' /etc/default/grub 2>/dev/null; then
    echo 'GRUB_CMDLINE_XEN_DEFAULT="dom0_mem=512M,max:512M"' >> /etc/default/grub
    update-grub
fi

# Guests boot the same kernel and busybox initramfs as in the QEMU lab; copy them from a
# `xenwam lab build` cache if one was rsynced along, else use this host's kernel.
mkdir -p /var/lib/xenwam-lab
[ -e /var/lib/xenwam-lab/vmlinuz ] || cp "/boot/vmlinuz-$(uname -r)" /var/lib/xenwam-lab/vmlinuz

if [ -d /proc/xen ] && [ -e /proc/xen/capabilities ]; then
    # shellcheck disable=SC2086
    PYTHONPATH=/opt/xenwam python3 -m xenwam.lab.hostnet --host "$host" --layout "$layout" \
        $shaping
else
    echo "xen-host.sh: not running under Xen yet; run \`vagrant reload xen-$host --provision\`"
fi
