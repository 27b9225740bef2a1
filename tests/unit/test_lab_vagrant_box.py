"""The vagrant-libvirt box made from the lab build: metadata, its Vagrantfile, the libvirt
settings for KVM and TCG, the image edits (no Vagrant, libvirt or QEMU needed)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from xenwam.errors import ConfigError
from xenwam.lab.config import LabConfig
from xenwam.lab.qemu import host_argv
from xenwam.lab.vagrant_box import (
    ACCEL_ENV,
    DOM0_CMDLINE,
    DOM0_MEM_MIB,
    HOST_MEMORY_MIB,
    XEN_CMDLINE,
    Accel,
    ImageFile,
    boot_directory,
    box_metadata,
    box_vagrantfile,
    choose_accel,
    debugfs_script,
    image_files,
    image_size_gib,
    initrd_modules,
    kvm_probe_argv,
    libvirt_settings,
    packed_vagrantfile,
    parse_box_list,
    probe_accel,
)
from xenwam.runner import CommandResult

pytestmark = pytest.mark.unit

KEY = "7be7503469cb1991"


def test_metadata_is_vagrant_libvirt_box_format_v1() -> None:
    assert box_metadata(3) == {"provider": "libvirt", "format": "qcow2", "virtual_size": 3}
    assert json.loads(json.dumps(box_metadata(image_size_gib())))["virtual_size"] == 3
    with pytest.raises(ConfigError):
        box_metadata(0)


@pytest.mark.parametrize("size", ["3", "3M", "G", "2.5G"])
def test_image_size_must_be_whole_gib(size: str) -> None:
    with pytest.raises(ConfigError, match="whole GiB"):
        image_size_gib(size)


def test_tcg_settings_are_the_labs_cpu() -> None:
    tcg = libvirt_settings(Accel.TCG)
    assert tcg.driver == "qemu"  # libvirt's domain type for TCG
    assert (tcg.cpu_mode, tcg.cpu_model) == ("custom", "qemu64")
    assert ("npt", "require") in tcg.cpu_features
    assert not tcg.nested
    # The same CPU the QEMU lab gives its hosts.
    argv = host_argv(LabConfig(run_dir=Path("/run/x")), "a", xen=Path("/x"),
                     kernel=Path("/k"), initrd=Path("/i"))
    assert argv[argv.index("-cpu") + 1] == "qemu64,+npt"


def test_kvm_settings_pass_the_host_cpu_with_nesting() -> None:
    kvm = libvirt_settings(Accel.KVM)
    assert kvm.driver == "kvm"
    assert kvm.cpu_mode == "host-passthrough"
    assert kvm.cpu_model is None
    assert kvm.nested


def test_choose_accel() -> None:
    assert choose_accel(override=None, kvm_device=True, probe_ok=True) is Accel.KVM
    assert choose_accel(override=None, kvm_device=True, probe_ok=False) is Accel.TCG
    assert choose_accel(override=None, kvm_device=False, probe_ok=False) is Accel.TCG
    assert choose_accel(override="TCG", kvm_device=True, probe_ok=True) is Accel.TCG
    assert choose_accel(override="kvm", kvm_device=False, probe_ok=False) is Accel.KVM
    with pytest.raises(ConfigError, match=ACCEL_ENV):
        choose_accel(override="hvf", kvm_device=True, probe_ok=True)


class FakeRunner:
    """Records argv; answers with a fixed exit status (pure logic only)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls: list[tuple[list[str], object]] = []

    def run(self, argv: list[str], *, input: object = None, **_: object) -> CommandResult:
        self.calls.append((list(argv), input))
        return CommandResult(argv=tuple(argv), exit_status=self.status, stdout="", stderr="",
                             duration=0.0)


def test_probe_runs_qemu_only_when_dev_kvm_exists(tmp_path: Path) -> None:
    missing = tmp_path / "kvm"
    runner = FakeRunner(0)
    assert probe_accel(runner, {}, missing) is Accel.TCG
    assert runner.calls == []
    missing.touch()
    assert probe_accel(runner, {}, missing) is Accel.KVM
    assert runner.calls == [(kvm_probe_argv(), "quit\n")]
    assert probe_accel(FakeRunner(1), {}, missing) is Accel.TCG
    as_qemu = FakeRunner(0)
    assert probe_accel(as_qemu, {}, missing, qemu_user="libvirt-qemu") is Accel.KVM
    assert as_qemu.calls == [(kvm_probe_argv(as_user="libvirt-qemu"), "quit\n")]
    quiet = FakeRunner(0)
    assert probe_accel(quiet, {ACCEL_ENV: "tcg"}, missing) is Accel.TCG
    assert quiet.calls == []


def test_kvm_probe_waits_for_quit_on_stdin() -> None:
    argv = kvm_probe_argv()
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert "-S" in argv
    assert argv[argv.index("-monitor") + 1] == "stdio"


def test_kvm_probe_runs_as_the_user_libvirt_runs_qemu_as() -> None:
    # Root's QEMU may open a /dev/kvm (0600 without udev) that libvirt-qemu's cannot.
    argv = kvm_probe_argv(as_user="libvirt-qemu")
    assert argv[:4] == ["runuser", "-u", "libvirt-qemu", "--"]
    assert argv[4:] == kvm_probe_argv()


def test_boot_settings_match_the_qemu_lab() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(LabConfig)}
    assert fields["memory_mib"] == HOST_MEMORY_MIB
    assert fields["dom0_mem_mib"] == DOM0_MEM_MIB
    argv = host_argv(LabConfig(run_dir=Path("/run/x")), "a", xen=Path("/b/xen"),
                     kernel=Path("/b/vmlinuz"), initrd=Path("/b/initrd.gz"))
    assert argv[argv.index("-append") + 1] == XEN_CMDLINE
    lab_initrd = argv[argv.index("-initrd") + 1]
    # The lab adds xw.host=; the box leaves the host name to the Vagrantfile.
    assert lab_initrd.replace(" xw.host=a", "") == initrd_modules("/b")
    assert initrd_modules("/b") == f"/b/vmlinuz {DOM0_CMDLINE},/b/initrd.gz"


def test_initrd_modules_refuse_commas() -> None:
    with pytest.raises(ConfigError, match="comma"):
        initrd_modules("/var/lib/a,b")
    with pytest.raises(ConfigError, match="comma"):
        initrd_modules("/b", "console=hvc0 foo=1,2")


def test_boot_directory() -> None:
    assert boot_directory(KEY) == f"/var/lib/libvirt/boot/xenwam-{KEY}"
    with pytest.raises(ConfigError):
        boot_directory("../etc")


def test_box_vagrantfile() -> None:
    text = box_vagrantfile(KEY)
    boot = boot_directory(KEY)
    assert f'xenwam_boot = "{boot}"' in text
    assert 'config.ssh.username = "root"' in text
    assert "config.ssh.insert_key = false" in text
    assert 'File.join(xenwam_box, "id_ed25519")' in text
    assert "insecure_private_key" not in text
    assert 'lv.kernel = File.join(xenwam_boot, "xen")' in text
    assert f"lv.cmd_line = {json.dumps(XEN_CMDLINE)}" in text
    # The module list goes to QEMU itself, right after -initrd.
    args = re.findall(r"lv\.qemuargs value: (\".*\")", text)
    assert [json.loads(a) for a in args] == ["-initrd", initrd_modules(boot)]
    # Both accelerators, TCG as libvirt's "qemu" domain with the lab's CPU.
    kvm_branch, _, tcg_branch = text.partition('if xenwam_accel == "kvm"')[2].partition("else")
    assert 'lv.driver = "kvm"' in kvm_branch and 'lv.cpu_mode = "host-passthrough"' in kvm_branch
    assert 'lv.driver = "qemu"' in tcg_branch and 'lv.cpu_model = "qemu64"' in tcg_branch
    assert 'lv.cpu_feature name: "npt", policy: "require"' in tcg_branch
    assert f'ENV.fetch("{ACCEL_ENV}", "")' in text
    assert 'lv.management_network_mode = "none"' in text
    assert f"lv.memory = {HOST_MEMORY_MIB}" in text
    # Balanced Ruby blocks: every do/if/unless/begin has its end.
    openers = len(re.findall(r"\bdo\b|^\s*(?:if|unless|begin)\b", text, re.M))
    assert openers == len(re.findall(r"^\s*end\b", text, re.M))


def test_image_files_start_dhcp_after_the_lab_init() -> None:
    files = {f.path: f for f in image_files()}
    inittab = files["/etc/inittab"].text.splitlines()
    sysinit = [line for line in inittab if line.startswith("::sysinit:")]
    assert sysinit == ["::sysinit:/usr/local/sbin/xenwam-dom0-start",
                       "::sysinit:/usr/local/sbin/xenwam-vagrant-net"]
    lab_inittab = (Path(__file__).parents[2] / "xenwam/lab/files/dom0-inittab").read_text()
    for line in lab_inittab.splitlines():
        if line and not line.startswith("#"):
            assert line in inittab
    net = files["/usr/local/sbin/xenwam-vagrant-net"]
    assert net.mode == 0o755 and net.text.startswith("#!/bin/sh\n")
    assert "-s /usr/local/sbin/xenwam-vagrant-udhcpc" in net.text
    assert files["/usr/local/sbin/xenwam-vagrant-udhcpc"].mode == 0o755


def test_debugfs_script(tmp_path: Path) -> None:
    f = ImageFile("/usr/local/sbin/tool", 0o755, "x")
    script = debugfs_script([(f, tmp_path / "file0")])
    assert script.splitlines() == [
        "cd /usr/local/sbin", "rm tool", f"write {tmp_path / 'file0'} tool",
        "sif tool mode 0100755", "sif tool uid 0", "sif tool gid 0"]
    with pytest.raises(ConfigError):
        debugfs_script([(ImageFile("relative", 0o644, ""), tmp_path / "f")])
    with pytest.raises(ConfigError):
        debugfs_script([(ImageFile("/a b", 0o644, ""), tmp_path / "f")])


def test_parse_box_list() -> None:
    text = ("xenwam-dom0     (libvirt, 0)\n"
            "debian/bookworm64 (libvirt, 12.20231009.1)\n")
    assert parse_box_list(text) == [("xenwam-dom0", "libvirt"),
                                    ("debian/bookworm64", "libvirt")]
    assert parse_box_list("There are no installed boxes! Use `vagrant box add`\n") == []


def test_a_box_with_another_vagrantfile_is_not_up_to_date(tmp_path: Path) -> None:
    """A box packed by an older xenwam (another Vagrantfile) is packed again: the check
    reads the Vagrantfile from the box's tar."""
    box = tmp_path / "x.box"
    with tarfile.open(box, "w") as tar:
        for name, text in (("metadata.json", "{}\n"), ("Vagrantfile", "# old\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert packed_vagrantfile(box) == "# old\n"
    assert packed_vagrantfile(box) != box_vagrantfile("k")
    (tmp_path / "junk.box").write_bytes(b"not a tar")
    assert packed_vagrantfile(tmp_path / "junk.box") is None
    assert packed_vagrantfile(tmp_path / "missing.box") is None
