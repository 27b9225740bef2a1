#!/bin/sh
# Provision one Xen host of the Vagrant lab: HOST (a|b), LAYOUT (wan|lan), SHAPING flags.
# On the xenwam-dom0 box (made from the lab's image, already provisioned by
# xenwam/lab/files/provision-dom0.sh) this applies the lab's address plan with
# xenwam.lab.hostnet, as `xenwam lab up` does.  On a plain Debian 12 machine it first runs
# the same provision-dom0.sh in host mode (which also installs the hypervisor); then
# reboot into Xen and provision again.
set -eu
host="$1"
layout="$2"
shaping="${3:-}"
if ! command -v xl >/dev/null 2>&1; then
    XENWAM_PROVISION_MODE=host sh /opt/xenwam/xenwam/lab/files/provision-dom0.sh
    install -m 0644 /opt/xenwam/xenwam/lab/files/profile-xenwam.sh /etc/profile.d/xenwam.sh
    # Same dom0 memory as in the QEMU lab; Debian's Xen GRUB entry reads this variable.
    if ! grep -q '^GRUB_CMDLINE_XEN_DEFAULT=' /etc/default/grub 2>/dev/null; then
        echo 'GRUB_CMDLINE_XEN_DEFAULT="dom0_mem=512M,max:512M"' >> /etc/default/grub
        update-grub
    fi
    mkdir -p /var/lib/xenwam-lab
    [ -e /var/lib/xenwam-lab/vmlinuz ] || cp "/boot/vmlinuz-$(uname -r)" /var/lib/xenwam-lab/vmlinuz
fi
if [ -e /proc/xen/capabilities ]; then
    # shellcheck disable=SC2086
    PYTHONPATH=/opt/xenwam python3 -m xenwam.lab.hostnet --host "$host" --layout "$layout" \
        $shaping
    xl info | sed -n 's/^\(xen_version\|xen_caps\|total_memory\|free_memory\)/xen-host.sh: &/p'
else
    echo "xen-host.sh: not running under Xen yet; run \`vagrant reload xen-$host --provision\`"
fi
