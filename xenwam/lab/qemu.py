"""QEMU command lines for the lab's Xen hosts (pure: builds argv, runs nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xenwam.errors import ConfigError
from xenwam.lab.config import CONTROL_ADDRESS, LabConfig, host_index


@dataclass(frozen=True)
class HostFiles:
    """Per-host files in the lab's run directory."""

    disk: Path
    serial_socket: Path
    serial_log: Path
    pidfile: Path
    qemu_log: Path

    @classmethod
    def for_host(cls, run_dir: Path, host: str) -> HostFiles:
        """The standard names of ``host``'s files under ``run_dir``."""
        host_index(host)
        return cls(
            disk=run_dir / f"{host}.qcow2",
            serial_socket=run_dir / f"{host}.serial",
            serial_log=run_dir / f"{host}.console.log",
            pidfile=run_dir / f"{host}.pid",
            qemu_log=run_dir / f"{host}.qemu.log",
        )


def mac_address(host: str, nic: int) -> str:
    """MAC of ``host``'s NIC ``nic`` (1 control, 2 link); dom0-start.sh names NICs by it."""
    index = host_index(host)
    return f"52:54:00:00:{0x0A + index:02x}:{nic:02x}"


def _no_commas(value: str, what: str) -> str:
    # QEMU splits option values on commas; a path with one would silently become a
    # different option.
    if "," in value:
        raise ConfigError(f"{what} {value!r} contains a comma, which QEMU cannot take; move it")
    return value


def host_argv(
    config: LabConfig,
    host: str,
    *,
    xen: Path,
    kernel: Path,
    initrd: Path,
    qemu: str = "qemu-system-x86_64",
) -> list[str]:
    """The QEMU argv for lab host ``host``: a Xen hypervisor booting a PV dom0.

    ``-cpu qemu64,+npt`` boots a PV dom0 and gives Xen HAP (through TCG's emulated SVM),
    which PVH guests need.  The control NIC is QEMU user-net restricted to the
    forwarded ssh port; the link NIC is a tap that appears in the lab's switch namespace
    because QEMU is started inside it.
    """
    files = HostFiles.for_host(config.run_dir, host)
    paths = [xen, kernel, initrd, files.disk, files.serial_socket, files.serial_log,
             files.pidfile]
    for p in paths:
        _no_commas(str(p), "the path")
    module = f"{kernel} console=hvc0 root=/dev/vda xw.host={host}"
    argv = [
        qemu,
        "-name", f"xwlab-{config.tag}-{host}",
        "-accel", f"tcg,tb-size={config.tcg_cache_mib}",
        "-cpu", "qemu64,+npt",
        "-m", str(config.memory_mib),
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-kernel", str(xen),
        "-append",
        f"console=com1 com1=115200,8n1 dom0_mem={config.dom0_mem_mib}M,"
        f"max:{config.dom0_mem_mib}M",
        "-initrd", f"{module},{initrd}",
        "-drive", f"file={files.disk},if=virtio,format=qcow2,cache=unsafe",
        "-chardev",
        f"socket,id=ser,path={files.serial_socket},server=on,wait=off,"
        f"logfile={files.serial_log}",
        "-serial", "chardev:ser",
        "-netdev",
        f"user,id=ctl,net=10.0.2.0/24,restrict=on,"
        f"hostfwd=tcp:127.0.0.1:{config.ssh_port(host)}-{CONTROL_ADDRESS}:22",
        "-device", f"virtio-net-pci,netdev=ctl,mac={mac_address(host, 1)}",
        "-netdev", f"tap,id=lnk,ifname={config.tap_name(host)},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=lnk,mac={mac_address(host, 2)}",
        "-pidfile", str(files.pidfile),
    ]
    if config.source_dir is not None:
        src = _no_commas(str(config.source_dir), "the source directory")
        argv += [
            "-virtfs",
            f"local,path={src},mount_tag=xenwam,security_model=none,readonly=on",
            "-virtfs",
            f"local,path={_no_commas(str(config.dom0_pycache), 'the run directory')},"
            "mount_tag=xenwampyc,security_model=none,readonly=on",
        ]
    return argv


def overlay_argv(base: Path, overlay: Path) -> list[str]:
    """``qemu-img`` argv making a copy-on-write overlay of the dom0 image for one host."""
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
            str(overlay)]
