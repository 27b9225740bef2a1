#!/bin/sh
# Turn a Debian 12 system into a xenwam lab Xen host (dom0 userland).
#
# Shared by the QEMU lab image (run inside the debootstrap chroot by `xenwam lab build`,
# with XENWAM_PROVISION_MODE=image) and by vagrant/ (run on a real Debian 12 machine,
# XENWAM_PROVISION_MODE=host, which also installs the hypervisor and the GRUB entry).
# Idempotent: running it twice changes nothing more.
set -eu

MODE="${XENWAM_PROVISION_MODE:-image}"
export DEBIAN_FRONTEND=noninteractive

# What a xenwam Xen host needs at run time.  The python3-* packages are the Debian
# builds of the libraries xenwam and hip import, so no PyPI access is needed in dom0.
PACKAGES="xen-utils-4.17 xenstore-utils drbd-utils openssh-server openssh-client iproute2
bridge-utils kmod socat iputils-ping procps e2fsprogs python3 python3-cryptography
python3-pyroute2 python3-zstandard python3-rich tcpdump busybox util-linux"

if [ "$MODE" = image ]; then
    # Nothing may start services inside the build chroot.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi

apt-get update -q
apt-get -y -q dist-upgrade
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $PACKAGES
if [ "$MODE" = host ]; then
    apt-get install -y -q --no-install-recommends xen-system-amd64
fi
apt-get clean
rm -rf /var/lib/apt/lists/*

# Root logs in with the lab's key only.
mkdir -p /etc/ssh/sshd_config.d /root/.ssh
chmod 700 /root/.ssh
cat > /etc/ssh/sshd_config.d/xenwam-lab.conf <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
# The lab multiplexes every command to a dom0 over one connection.
MaxSessions 64
CONF

mkdir -p /var/lib/xenwam-lab /var/log/xen/console /etc/xen

# xenwam's commands run with PYTHONPYCACHEPREFIX (their source tree may be read-only, as
# the lab's share is), and Python then looks for all bytecode there, the standard
# library's too: compile it there once.  A file that does not compile (test data,
# templates) is compiled when imported, if it ever is.
PYTHONPYCACHEPREFIX=/var/cache/xenwam/pycache python3 -m compileall -q \
    -x '/(test|tests|idlelib|tkinter|lib2to3|turtledemo)/' \
    /usr/lib/python3.11 /usr/lib/python3/dist-packages > /dev/null || true

if [ "$MODE" = image ]; then
    rm -f /usr/sbin/policy-rc.d
    # The per-build host keys are written by `xenwam lab build` after this script.
    rm -f /etc/ssh/ssh_host_*
fi
