#!/bin/sh
# A lab guest (PVH, busybox initramfs).  It configures eth0 from the kernel command line
# (xw.ip=CIDR xw.gw=ADDR), writes a timestamped counter to its console once a second so a
# test can see that it kept running across a migration, and reads commands from its
# console so the lab can renumber it (`xenwam lab guest-run`).
# Guests made with --python carry python3, iproute2's ip and the project's hip package
# there (/usr/bin first: iproute2's ip, not busybox's, which has no `ip xfrm`).
export PATH=/usr/bin:/bin PYTHONPATH=/opt/xenwam PYTHONDONTWRITEBYTECODE=1
mkdir -p /tmp /run
mount -t tmpfs tmpfs /tmp
ip=""
gw=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        xw.ip=*) ip="${word#xw.ip=}" ;;
        xw.gw=*) gw="${word#xw.gw=}" ;;
    esac
done
ip link set lo up
tries=0
while [ ! -e /sys/class/net/eth0 ] && [ "$tries" -lt 100 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
ip link set eth0 up
[ -n "$ip" ] && ip addr add "$ip" dev eth0
[ -n "$gw" ] && ip route add default via "$gw"
echo "xw-guest: up ip=$ip gw=$gw"
# Guests made with --hip start hipd, the xenwam guest agent and the records echo server.
[ -x /etc/xenwam-lab/services ] && /etc/xenwam-lab/services

(
    n=0
    while :; do
        n=$((n + 1))
        echo "xw-tick $n $(date +%s)"
        sleep 1
    done
) > /dev/hvc0 2>&1 &

while :; do
    sh < /dev/hvc0 > /dev/hvc0 2>&1
    sleep 1
done
