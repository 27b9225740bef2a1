"""Number a real machine the way the QEMU lab numbers its hosts (used by vagrant/).

``python3 -m xenwam.lab.hostnet --host a --layout wan`` on a Xen host renames the NIC
whose MAC is the lab's link MAC to ``wan``, makes ``xenbr0`` and applies the same
:func:`~xenwam.lab.config.dom0_network_commands` and netem shaping as ``xenwam lab up``;
It then makes the host a xenwam host the way ``xenwam lab up`` does
(:func:`~xenwam.lab.config.xenwam_host_steps`: ``xenwam`` on the PATH, the
``block-xenwam`` hook, the site file, DRBD loaded), so that ``xenwam migrate`` runs between
the Vagrant sites.  ``--correspondent`` numbers the correspondent instead.  Idempotent: an
address or route that already exists is left alone, files are rewritten.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from xenwam.errors import LabError
from xenwam.lab import config as cfg
from xenwam.lab.qemu import mac_address
from xenwam.runner import Runner, default_runner


def nic_with_mac(mac: str, sys_class_net: Path = Path("/sys/class/net")) -> str | None:
    """The name of the interface whose address is ``mac``, if any."""
    for dev in sorted(sys_class_net.iterdir()):
        try:
            if (dev / "address").read_text().strip().lower() == mac.lower():
                return dev.name
        except OSError:
            continue
    return None


def _run_tolerant(runner: Runner, argv: Sequence[str]) -> None:
    res = runner.run(argv, check=False)
    if not res.ok and "File exists" not in res.stderr:
        raise LabError(f"{res.command_line!r} failed: {res.stderr.strip()}")


def configure_host(host: str, layout: cfg.Layout, shaping: cfg.Shaping,
                   runner: Runner = default_runner,
                   sys_class_net: Path = Path("/sys/class/net")) -> None:
    """Rename the link NIC to ``wan``, make ``xenbr0`` and number both for ``layout``."""
    link_mac = mac_address(host, 2)
    current = nic_with_mac(link_mac, sys_class_net)
    if current is None:
        raise LabError(f"no interface has the lab link MAC {link_mac}; give the link NIC "
                          "that MAC (see vagrant/Vagrantfile)")
    if current != "wan":
        runner.run(["ip", "link", "set", current, "down"])
        runner.run(["ip", "link", "set", current, "name", "wan"])
    runner.run(["ip", "link", "set", "wan", "up"])
    _run_tolerant(runner, ["ip", "link", "add", "xenbr0", "type", "bridge"])
    runner.run(["ip", "link", "set", "xenbr0", "up"])
    for argv in cfg.dom0_network_commands(layout, host):
        _run_tolerant(runner, argv)
    runner.run(shaping.netem_argv("wan"), check=not shaping.is_null)


def install_xenwam(host: str, layout: cfg.Layout, shaping: cfg.Shaping,
                   runner: Runner = default_runner) -> None:
    """Make this machine's dom0 the xenwam host ``host`` (same steps as the QEMU lab)."""
    for step in cfg.xenwam_host_steps(layout, host, shaping):
        runner.run(list(step.argv), input=step.input)


def configure_correspondent(layout: cfg.Layout, ifname: str,
                            runner: Runner = default_runner) -> None:
    """Give the correspondent its address on ``ifname`` and its routes to both sites."""
    _run_tolerant(runner, ["ip", "addr", "add", str(cfg.correspondent_address()), "dev", ifname])
    runner.run(["ip", "link", "set", ifname, "up"])
    for argv in cfg.correspondent_routes(layout):
        _run_tolerant(runner, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python3 -m xenwam.lab.hostnet",
                                     description=__doc__.split("\n\n")[0])
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--host", choices=cfg.HOSTS)
    who.add_argument("--correspondent", metavar="IFNAME",
                     help="number this machine as the correspondent, on IFNAME")
    parser.add_argument("--layout", choices=[x.value for x in cfg.Layout], default="wan")
    parser.add_argument("--rtt", default="0ms")
    parser.add_argument("--rate", default="0")
    parser.add_argument("--loss", default="0")
    args = parser.parse_args(argv)
    try:
        layout = cfg.Layout(args.layout)
        if args.host:
            shaping = cfg.Shaping.parse(args.rtt, args.rate, args.loss)
            configure_host(args.host, layout, shaping)
            install_xenwam(args.host, layout, shaping)
        else:
            configure_correspondent(layout, args.correspondent)
    except LabError as exc:
        print(f"hostnet: error: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
