"""``xenwam lab vagrant-box``: the lab's dom0 image packed as a vagrant-libvirt box.

Nothing is downloaded: the box is made from the cached ``xenwam lab build`` (its dom0
image, Xen, Debian's kernel and the dom0 initramfs).  A box is a tar archive of

- ``box.img``: the dom0 image as qcow2, with two files added for Vagrant (a DHCP client
  on the management NIC, started by busybox init after ``dom0-start.sh``);
- ``metadata.json``: ``{"provider": "libvirt", "format": "qcow2", "virtual_size": GIB}``;
- ``Vagrantfile``: ssh as root with the lab build's key, Xen booted by libvirt's direct
  kernel boot, and the accelerator: KVM when ``/dev/kvm`` works, TCG (libvirt domain
  type ``qemu``) otherwise;
- ``boot/``: ``xen``, ``vmlinuz``, ``initrd.gz`` and the build's ``id_ed25519``.

Xen boots as the lab boots it: QEMU loads ``xen`` as a multiboot kernel and passes
``-initrd "vmlinuz ARGS,initrd.gz"`` as its module list.  libvirt's ``<initrd>`` names
one file, which its DAC security driver chowns before QEMU starts, so a module list in it
is not a path it can label; the box therefore gives ``xen`` and Xen's command line to
libvirt (``<kernel>``, ``<cmdline>``) and the module list to QEMU directly
(``<qemu:commandline>``, vagrant-libvirt's ``qemuargs``).  QEMU runs as libvirt-qemu,
which cannot read root's home, so the boot files are copied to
``/var/lib/libvirt/boot/xenwam-KEY/`` the first time the box's Vagrantfile is loaded.

The pure parts (metadata, the box's Vagrantfile, the libvirt settings for KVM and TCG,
the image edits) are functions of their inputs; :class:`BoxMaker` runs the commands.
"""

from __future__ import annotations

import enum
import json
import os
import pwd
import shutil
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xenwam.errors import ConfigError, LabError
from xenwam.lab.build import DOM0_IMAGE_SIZE, Artifacts
from xenwam.runner import Runner, default_runner

#: The name ``vagrant box add`` gives the box, and vagrant/Vagrantfile uses.
BOX_NAME = "xenwam-dom0"
#: Where libvirt's QEMU reads the boot files from (readable by libvirt-qemu).
BOOT_ROOT = "/var/lib/libvirt/boot"
#: As :class:`xenwam.lab.config.LabConfig`'s defaults (a unit test holds them equal).
HOST_MEMORY_MIB = 1536
DOM0_MEM_MIB = 512
#: Xen's and dom0's command lines, as :func:`xenwam.lab.qemu.host_argv` gives them.
XEN_CMDLINE = (f"console=com1 com1=115200,8n1 dom0_mem={DOM0_MEM_MIB}M,"
               f"max:{DOM0_MEM_MIB}M")
DOM0_CMDLINE = "console=hvc0 root=/dev/vda"
#: Chooses the accelerator over the probe: ``kvm`` or ``tcg``.
ACCEL_ENV = "XENWAM_VAGRANT_ACCEL"
#: The user Debian's libvirt runs QEMU as (``user`` in qemu.conf); the KVM probe runs as
#: it, since root can open a ``/dev/kvm`` left at mode 0600 by a host without udev, where
#: libvirt's QEMU then fails with "Could not access KVM kernel module".
QEMU_USER = "libvirt-qemu"

Progress = Callable[[str], None]


class Accel(enum.Enum):
    """How libvirt runs the Xen hosts."""

    #: Hardware virtualisation; Xen's guests need nested virtualisation from the host.
    KVM = "kvm"
    #: QEMU's emulation (libvirt domain type ``qemu``), as the QEMU lab runs.
    TCG = "tcg"


@dataclass(frozen=True)
class LibvirtSettings:
    """vagrant-libvirt provider settings that depend on the accelerator."""

    #: ``lv.driver``: libvirt's domain type.
    driver: str
    cpu_mode: str
    #: Only with ``cpu_mode == "custom"``.
    cpu_model: str | None
    #: (feature name, policy) pairs.
    cpu_features: tuple[tuple[str, str], ...]
    nested: bool


def libvirt_settings(accel: Accel) -> LibvirtSettings:
    """The CPU and domain type for ``accel``.

    Under TCG the lab's ``-cpu qemu64,+npt``: ``qemu64`` boots a PV dom0 (``max``
    crashed it early) and ``npt`` gives Xen HAP through TCG's emulated SVM, which PVH
    guests need.  Under KVM the host's own CPU, with nested virtualisation.
    """
    if accel is Accel.TCG:
        return LibvirtSettings(driver="qemu", cpu_mode="custom", cpu_model="qemu64",
                               cpu_features=(("svm", "require"), ("npt", "require")),
                               nested=False)
    return LibvirtSettings(driver="kvm", cpu_mode="host-passthrough", cpu_model=None,
                           cpu_features=(), nested=True)


def kvm_probe_argv(qemu: str = "qemu-system-x86_64", *,
                   as_user: str | None = None) -> list[str]:
    """A QEMU that starts a KVM vCPU and waits: it quits cleanly on ``quit`` on stdin.

    Opening ``/dev/kvm`` is not enough: on some of the project's machines it opens, and
    QEMU then fails setting the vCPU's MSRs (before the monitor reads anything); on others
    root's QEMU runs KVM while libvirt's, running as ``as_user``, may not open the device.
    With ``as_user`` (root only) the probe runs as that user, by ``runuser``.
    """
    argv = [qemu, "-accel", "kvm", "-machine", "pc", "-cpu", "host", "-m", "64",
            "-nodefaults", "-display", "none", "-S", "-monitor", "stdio"]
    return ["runuser", "-u", as_user, "--", *argv] if as_user else argv


def libvirt_qemu_user() -> str | None:
    """:data:`QEMU_USER` when this process is root and the user exists, else None (the
    probe then runs as this process's user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return None
    return QEMU_USER


def choose_accel(*, override: str | None, kvm_device: bool, probe_ok: bool) -> Accel:
    """KVM when ``/dev/kvm`` exists and the probe QEMU ran, else TCG; ``override``
    (``$XENWAM_VAGRANT_ACCEL``) wins when set."""
    if override:
        try:
            return Accel(override.strip().lower())
        except ValueError:
            raise ConfigError(f"{ACCEL_ENV}={override!r} is not an accelerator; "
                              "give kvm or tcg, or unset it to probe") from None
    return Accel.KVM if kvm_device and probe_ok else Accel.TCG


def probe_accel(runner: Runner = default_runner,
                environ: Mapping[str, str] = os.environ,
                kvm_device: Path = Path("/dev/kvm"),
                qemu_user: str | None = None) -> Accel:
    """:func:`choose_accel` with the probe run (only when ``/dev/kvm`` exists), as
    ``qemu_user`` when given."""
    override = environ.get(ACCEL_ENV)
    present = kvm_device.exists()
    ok = False
    if present and not override:
        ok = runner.run(kvm_probe_argv(as_user=qemu_user), input="quit\n", check=False,
                        timeout=60).ok
    return choose_accel(override=override, kvm_device=present, probe_ok=ok)


def box_metadata(virtual_size_gib: int) -> dict[str, object]:
    """The box's ``metadata.json`` (vagrant-libvirt's box format, version 1)."""
    if virtual_size_gib < 1:
        raise ConfigError(f"a box disk of {virtual_size_gib} GiB is too small")
    return {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size_gib}


def image_size_gib(size: str = DOM0_IMAGE_SIZE) -> int:
    """``"3G"`` -> 3 (the dom0 image's size as mkfs was given it)."""
    if not size.endswith("G") or not size[:-1].isdigit():
        raise ConfigError(f"the dom0 image size {size!r} is not whole GiB, like 3G")
    return int(size[:-1])


def boot_directory(build_key: str) -> str:
    """Where the box's boot files go on the libvirt host for lab build ``build_key``."""
    if not build_key.isalnum():
        raise ConfigError(f"the lab build key {build_key!r} is not alphanumeric")
    return f"{BOOT_ROOT}/xenwam-{build_key}"


def initrd_modules(boot_dir: str, dom0_args: str = DOM0_CMDLINE) -> str:
    """QEMU's ``-initrd`` for Xen: dom0's kernel with its arguments, then its initramfs.

    QEMU's multiboot loader splits the value on commas into modules, so no comma may
    appear inside a path or an argument.
    """
    for part, what in ((boot_dir, "the boot directory"), (dom0_args, "dom0's arguments")):
        if "," in part:
            raise ConfigError(f"{what} {part!r} contains a comma, which QEMU would take "
                              "for the start of the next multiboot module")
    return f"{boot_dir}/vmlinuz {dom0_args},{boot_dir}/initrd.gz"


def _ruby(value: str) -> str:
    """A Ruby string literal (double-quoted, escaped)."""
    return json.dumps(value)


def _settings_ruby(settings: LibvirtSettings, indent: str) -> str:
    lines = [f"lv.driver = {_ruby(settings.driver)}",
             f"lv.cpu_mode = {_ruby(settings.cpu_mode)}"]
    if settings.cpu_model is not None:
        lines.append(f"lv.cpu_model = {_ruby(settings.cpu_model)}")
        lines.append('lv.cpu_fallback = "forbid"')
    for name, policy in settings.cpu_features:
        lines.append(f"lv.cpu_feature name: {_ruby(name)}, policy: {_ruby(policy)}")
    lines.append(f"lv.nested = {'true' if settings.nested else 'false'}")
    return "\n".join(indent + line for line in lines)


def box_vagrantfile(build_key: str, qemu: str = "qemu-system-x86_64") -> str:
    """The Vagrantfile inside the box: what every machine made from it gets."""
    boot = boot_directory(build_key)
    probe = ", ".join(_ruby(a) for a in kvm_probe_argv(qemu))
    probe_as_qemu = ", ".join(_ruby(a) for a in kvm_probe_argv(qemu, as_user=QEMU_USER))
    return f"""\
# -*- mode: ruby -*-
# Made by `xenwam lab vagrant-box` from lab build {build_key}: a xenwam lab dom0 (Xen 4.17,
# PV dom0, Debian's kernel) booted by libvirt's direct kernel boot as the QEMU lab boots it.
require "etc"
require "fileutils"

xenwam_box = File.expand_path("boot", __dir__)
xenwam_boot = {_ruby(boot)}
# QEMU runs as libvirt-qemu and cannot read the box under root's home: copy the boot
# files where it can (once per lab build).
%w[xen vmlinuz initrd.gz].each do |name|
  target = File.join(xenwam_boot, name)
  next if File.exist?(target) && File.size(target) == File.size(File.join(xenwam_box, name))
  FileUtils.mkdir_p(xenwam_boot, mode: 0o755)
  FileUtils.cp(File.join(xenwam_box, name), target + ".tmp")
  File.chmod(0o644, target + ".tmp")
  File.rename(target + ".tmp", target)
end

# KVM when /dev/kvm works (a QEMU with a KVM vCPU starts and quits), else TCG;
# {ACCEL_ENV}=kvm|tcg decides instead.  As root the probe runs as {QEMU_USER}, the user
# libvirt runs QEMU as: root may open a /dev/kvm that libvirt's QEMU cannot.
xenwam_accel = ENV.fetch({_ruby(ACCEL_ENV)}, "").downcase
if xenwam_accel.empty?
  xenwam_accel = "tcg"
  if File.exist?("/dev/kvm")
    xenwam_probe = [{probe}]
    if Process.uid.zero? && (Etc.getpwnam({_ruby(QEMU_USER)}) rescue nil)
      xenwam_probe = [{probe_as_qemu}]
    end
    begin
      IO.popen(xenwam_probe, "r+", err: File::NULL) do |io|
        io.write("quit\\n")
        io.close_write
        io.read
      end
      xenwam_accel = "kvm" if $?.success?
    rescue SystemCallError
      xenwam_accel = "tcg"
    end
  end
end
unless %w[kvm tcg].include?(xenwam_accel)
  raise "{ACCEL_ENV}=#{{xenwam_accel}}: give kvm or tcg, or unset it to probe"
end

Vagrant.configure("2") do |config|
  # The lab build's per-build key (the image's root authorises it); nothing fixed ships,
  # so Vagrant's insecure key is never used or replaced.
  config.ssh.username = "root"
  config.ssh.private_key_path = [File.join(xenwam_box, "id_ed25519")]
  config.ssh.insert_key = false
  config.ssh.sudo_command = "%c"
  config.ssh.shell = "sh"
  config.vm.synced_folder ".", "/vagrant", disabled: true
  # Under TCG, Xen and dom0 take a minute or more to answer ssh.
  config.vm.boot_timeout = 900

  config.vm.provider :libvirt do |lv|
    lv.memory = {HOST_MEMORY_MIB}
    lv.cpus = 1
    if xenwam_accel == "kvm"
{_settings_ruby(libvirt_settings(Accel.KVM), "      ")}
    else
{_settings_ruby(libvirt_settings(Accel.TCG), "      ")}
    end
    lv.kernel = File.join(xenwam_boot, "xen")
    lv.cmd_line = {_ruby(XEN_CMDLINE)}
    # Xen's multiboot modules: libvirt's <initrd> takes one file (see xenwam/lab/vagrant_box.py).
    lv.qemuargs value: "-initrd"
    lv.qemuargs value: {_ruby(initrd_modules(boot))}
    lv.disk_bus = "virtio"
    lv.disk_driver cache: "unsafe"
    lv.graphics_type = "none"
    # The dom0s need no way out: an isolated management network with DHCP only.
    lv.management_network_mode = "none"
  end
end
"""


#: Started by busybox init after dom0-start.sh: vagrant-libvirt finds a machine by the
#: DHCP lease its management network's dnsmasq hands out.
VAGRANT_NET_SCRIPT = """\
#!/bin/sh
# Added by `xenwam lab vagrant-box`: ask the management network (libvirt's dnsmasq) for
# an address, as Vagrant expects.  dom0-start.sh has named the NIC ctl when it has the
# lab's control MAC (vagrant/Vagrantfile gives it); otherwise the first other NIC.
dev=ctl
if [ ! -e /sys/class/net/ctl ]; then
    for d in /sys/class/net/*; do
        case "${d##*/}" in lo|wan|xenbr*|vif*|tap*) continue ;; esac
        dev="${d##*/}"
        break
    done
fi
ip link set "$dev" up
busybox udhcpc -i "$dev" -b -t 30 -T 2 -s /usr/local/sbin/xenwam-vagrant-udhcpc \\
    -x hostname:"$(hostname)" >/dev/null 2>&1
"""

#: udhcpc's event script: add the leased address, keep everything else as it is (no
#: default route: the management network is isolated, and the lab sets its own routes).
VAGRANT_UDHCPC_SCRIPT = """\
#!/bin/sh
case "$1" in
    bound|renew)
        ip -4 addr flush dev "$interface" label "$interface:v"
        ip -4 addr add "$ip/${mask:-24}" dev "$interface" label "$interface:v"
        ;;
esac
exit 0
"""

#: busybox init for a Vagrant dom0: the lab's, plus the DHCP client.
VAGRANT_INITTAB = """\
# busybox init for a xenwam Vagrant dom0: the lab's start script, then DHCP for Vagrant.
::sysinit:/usr/local/sbin/xenwam-dom0-start
::sysinit:/usr/local/sbin/xenwam-vagrant-net
hvc0::respawn:-/bin/sh
::ctrlaltdel:/bin/busybox poweroff -f
"""


@dataclass(frozen=True)
class ImageFile:
    """A file to put into the box's copy of the dom0 image."""

    path: str
    mode: int
    text: str


def image_files() -> list[ImageFile]:
    """What the box adds to (or replaces in) the lab's dom0 image."""
    return [
        ImageFile("/etc/inittab", 0o644, VAGRANT_INITTAB),
        ImageFile("/usr/local/sbin/xenwam-vagrant-net", 0o755, VAGRANT_NET_SCRIPT),
        ImageFile("/usr/local/sbin/xenwam-vagrant-udhcpc", 0o755, VAGRANT_UDHCPC_SCRIPT),
    ]


def debugfs_script(files: Sequence[tuple[ImageFile, Path]]) -> str:
    """``debugfs -w -f`` commands writing each (file, local copy) into an ext4 image,
    root-owned with the file's mode, replacing what was there."""
    lines = []
    for f, local in files:
        directory, _, name = f.path.rpartition("/")
        if not f.path.startswith("/") or not name or any(c.isspace() for c in f.path):
            raise ConfigError(f"cannot place {f.path!r} in the image: give an absolute "
                              "path without spaces")
        if any(c.isspace() for c in str(local)):
            raise ConfigError(f"debugfs cannot read {local}: its path has a space")
        lines += [f"cd {directory or '/'}", f"rm {name}", f"write {local} {name}",
                  f"sif {name} mode 0{0o100000 | f.mode:o}", f"sif {name} uid 0",
                  f"sif {name} gid 0"]
    return "\n".join(lines) + "\n"


def parse_box_list(text: str) -> list[tuple[str, str]]:
    """``vagrant box list`` -> [(name, provider)] (its lines: ``NAME (PROVIDER, VERSION)``)."""
    boxes = []
    for line in text.splitlines():
        name, _, rest = line.strip().partition("(")
        if name.strip() and rest:
            boxes.append((name.strip(), rest.split(",")[0].strip()))
    return boxes


# ---------------------------------------------------------------- making the box

@dataclass(frozen=True)
class Box:
    """A made box file."""

    path: Path
    build_key: str
    seconds: float


def packed_vagrantfile(box: Path) -> str | None:
    """The Vagrantfile inside a box tar (its second member, so only the start of the
    file is read), or None when it has none or is not a tar: a box packed by an older
    xenwam is then packed again."""
    try:
        with tarfile.open(box, "r:") as tar:
            for _ in range(4):
                member = tar.next()
                if member is None:
                    return None
                if member.name == "Vagrantfile":
                    f = tar.extractfile(member)
                    return f.read().decode("utf-8", errors="replace") if f else None
    except (OSError, tarfile.TarError):
        return None
    return None


@dataclass
class BoxMaker:
    """Packs a lab build into a box; every command goes through ``runner``."""

    runner: Runner = default_runner
    progress: Progress = print

    def make(self, arts: Artifacts, out: Path, *, force: bool = False) -> Box:
        """Write ``out`` (a box tar) from the build in ``arts``, unless it is newer than
        the build already."""
        key = arts.directory.name
        vagrantfile = box_vagrantfile(key)
        start = time.monotonic()
        if not arts.complete():
            raise LabError(f"the lab build in {arts.directory} is incomplete; run "
                           "`xenwam lab build --force`")
        if (out.exists() and not force
                and out.stat().st_mtime >= arts.dom0_image.stat().st_mtime
                and packed_vagrantfile(out) == vagrantfile):
            self.progress(f"box {out} is up to date with lab build {key}")
            return Box(out, key, 0.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        work = out.parent / f".{out.name}.{os.getpid()}.d"
        if work.exists():
            shutil.rmtree(work)
        (work / "boot").mkdir(parents=True)
        try:
            self.progress("copying the dom0 image and adding Vagrant's DHCP client")
            raw = work / "dom0.img"
            self.runner.run(["cp", "--sparse=always", str(arts.dom0_image), str(raw)],
                            timeout=600)
            staged = []
            for i, f in enumerate(image_files()):
                local = work / f"file{i}"
                local.write_text(f.text)
                staged.append((f, local))
            script = work / "debugfs.cmd"
            script.write_text(debugfs_script(staged))
            res = self.runner.run(["debugfs", "-w", "-f", str(script), str(raw)],
                                  timeout=300)
            # debugfs exits 0 even when a command fails; its complaints are on stderr
            # ("rm" of a file not there yet is expected).
            errors = [line for line in res.stderr.splitlines()
                      if ":" in line and "File not found by ext2_lookup" not in line
                      and not line.startswith("debugfs ")]
            if errors:
                raise LabError(f"debugfs could not edit the box image: {'; '.join(errors)}")
            self.progress("converting the image to qcow2")
            self.runner.run(["qemu-img", "convert", "-O", "qcow2", str(raw),
                             str(work / "box.img")], timeout=900)
            raw.unlink()
            (work / "metadata.json").write_text(
                json.dumps(box_metadata(image_size_gib()), indent=2) + "\n")
            (work / "Vagrantfile").write_text(vagrantfile)
            for name, src in (("xen", arts.xen), ("vmlinuz", arts.kernel),
                              ("initrd.gz", arts.initrd), ("id_ed25519", arts.ssh_key)):
                shutil.copy(src, work / "boot" / name)
            os.chmod(work / "boot" / "id_ed25519", 0o600)
            self.progress(f"packing {out}")
            partial = out.with_name(out.name + ".part")
            with tarfile.open(partial, "w") as tar:
                for name in ("metadata.json", "Vagrantfile", "box.img", "boot"):
                    tar.add(work / name, arcname=name)
            partial.rename(out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        seconds = round(time.monotonic() - start, 1)
        self.progress(f"box {out} from lab build {key} in {seconds} s")
        return Box(out, key, seconds)

    def add(self, box: Box, name: str = BOX_NAME) -> None:
        """``vagrant box add --force`` the box under ``name`` (replacing an older one)."""
        self.progress(f"vagrant box add {name} {box.path}")
        self.runner.run(["vagrant", "box", "add", "--force", "--name", name,
                         str(box.path)], timeout=900)
