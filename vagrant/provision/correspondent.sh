#!/bin/sh
# Provision the Vagrant lab's correspondent: the lab address plan on its link NIC (the
# one with the lab's correspondent link MAC), with xenwam.lab.hostnet as the QEMU lab.
# The xenwam-dom0 box has python3 and pyroute2; a plain Debian machine gets them.
set -eu
layout="$1"
if ! python3 -c 'import pyroute2, cryptography' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-cryptography \
        python3-pyroute2 iproute2 iputils-ping tcpdump
fi
ifname=$(ip -o link | awk -F': ' '/52:54:00:00:0c:02/ {print $2}')
PYTHONPATH=/opt/xenwam python3 -m xenwam.lab.hostnet --correspondent "${ifname%@*}" --layout "$layout"
