"""``xenwam lab build``: the lab's hypervisor, kernel, initramfs and dom0 image.

Everything comes from Debian packages (``apt-get download`` + ``dpkg-deb -x``) and from
``debootstrap``; the project's own provisioning files are in ``xenwam/lab/files``.  The
result is cached under ``~/.cache/xenwam/lab/<key>`` where the key hashes the candidate
versions of the packages used and the contents of the provisioning files, so a change
to either rebuilds and anything else reuses the cache.  The project's source code is not
part of the image (it is shared into dom0 at boot), so a code change costs no rebuild.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import importlib.util
import io
import json
import logging
import marshal
import os
import re
import shutil
import stat
import sys
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from xenwam.errors import LabError
from xenwam.runner import Runner, default_runner

log = logging.getLogger(__name__)

#: Bumped when the image layout changes in a way the file digests would not show.
BUILD_FORMAT = 4

FILES_DIR = Path(__file__).parent / "files"

XEN_PACKAGE = "xen-hypervisor-4.17-amd64"
XEN_UTILS_PACKAGE = "xen-utils-4.17"
BUSYBOX_PACKAGE = "busybox-static"
SUITE = "bookworm"

#: Modules the dom0 initramfs loads to reach its ext4 root on virtio-blk.
DOM0_INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
#: Modules a lab guest loads (PVH: Xen front-ends for its disk and network), then what
#: hipd's kernel data plane needs (XFRM, ESP, the HIT's dummy device, TUN) and the
#: kernel's random generator (without it the kernel refuses an ESP state).  The guest has
#: no modprobe: the kernel cannot load them on demand.
GUEST_INITRAMFS_MODULES = ("xen-blkfront", "xen-netfront",
                           "xfrm_user", "esp4", "authenc", "echainiv", "seqiv", "ecb",
                           "dummy", "tun", "sha3_generic", "jitterentropy_rng",
                           "sha512_generic", "ctr", "drbg", "ansi_cprng")

#: Module trees not needed in a lab dom0 (saves about half of the 390 MB).
MODULE_DIRS_SKIPPED = (
    "kernel/drivers/gpu", "kernel/drivers/media", "kernel/drivers/net/wireless",
    "kernel/drivers/net/ethernet", "kernel/drivers/infiniband", "kernel/drivers/staging",
    "kernel/drivers/usb", "kernel/drivers/hid", "kernel/drivers/input", "kernel/sound",
    "kernel/drivers/bluetooth", "kernel/net/bluetooth", "kernel/net/wireless",
    "kernel/net/mac80211", "kernel/drivers/iio", "kernel/drivers/scsi",
    "kernel/drivers/isdn", "kernel/drivers/platform",
)

DOM0_IMAGE_SIZE = "3G"

#: What of dom0's Python a guest carries (appended to its initramfs by
#: ``xenwam lab guest create --python``): the interpreter, the standard library without
#: what no daemon needs, and the ``cryptography`` package hip uses.
GUEST_PYTHON_SKIPPED = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                        "pydoc_data", "distutils", "__pycache__", "config-3.11-x86_64-linux-gnu",
                        "site-packages", "dist-packages", "curses", "dbm", "lib-dynload")
#: Extension modules guests get (name prefixes in lib-dynload); the rest pull in large
#: libraries (sqlite, Berkeley DB, ncurses, the CJK codecs) nothing in hip needs.
GUEST_PYTHON_EXTENSIONS = ("_asyncio", "_bisect", "_blake2", "_contextvars", "_csv",
                           "_ctypes.", "_datetime", "_decimal", "_hashlib", "_heapq", "_json",
                           "_lsprof", "_md5", "_multiprocessing", "_opcode", "_pickle",
                           "_posixshmem", "_posixsubprocess", "_queue", "_random", "_sha1",
                           "_sha256", "_sha3", "_sha512", "_socket", "_ssl", "_statistics",
                           "_struct", "_uuid", "_zoneinfo", "array", "binascii", "cmath",
                           "fcntl", "grp", "math", "mmap", "resource", "select", "termios",
                           "unicodedata", "zlib", "_bz2", "_lzma", "_sqlite3")
#: Debian packages (dist-packages) guests get besides cryptography: hipd follows addresses
#: with pyroute2 (which imports unittest and sqlite3, so those stay in the stdlib above).
GUEST_PYTHON_PACKAGES = ("pyroute2",)

Progress = Callable[[str], None]


# ---------------------------------------------------------------- parsing (pure)

def parse_kernel_package(apt_cache_depends: str) -> str:
    """The ``linux-image-6.1.0-NN-amd64`` that ``apt-cache depends linux-image-amd64`` names."""
    for line in apt_cache_depends.splitlines():
        m = re.match(r"^\s*Depends:\s*(linux-image-\d[\w.+-]*-amd64)\s*$", line)
        if m:
            return m.group(1)
    raise LabError(
        "`apt-cache depends linux-image-amd64` names no linux-image-*-amd64 package; "
        "run `apt-get update` and check that the Debian mirror is configured"
    )


def parse_candidate_version(apt_cache_policy: str, package: str) -> str:
    """The ``Candidate:`` version of ``package`` in ``apt-cache policy`` output."""
    current = None
    for line in apt_cache_policy.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
            continue
        m = re.match(r"^\s+Candidate:\s*(\S+)", line)
        if m and current == package:
            if m.group(1) == "(none)":
                break
            return m.group(1)
    raise LabError(
        f"apt has no candidate version of {package!r}; run `apt-get update` and check "
        "that bookworm (and bookworm-security) are in the apt sources"
    )


@dataclass(frozen=True)
class AptSource:
    """One Debian archive the host's apt uses."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_apt_sources(text: str) -> list[AptSource]:
    """Parse deb822 ``.sources`` and one-line ``.list`` text (``deb`` entries only)."""
    sources: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("deb "):
                words = [w for w in line.split()[1:] if not w.startswith("[")]
                if len(words) >= 3 and "]" not in words[0]:
                    sources.append(AptSource(words[0], (words[1],), tuple(words[2:])))
                continue
            if ":" in line:
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" in fields.get("types", "").split() and "uris" in fields:
            for uri in fields["uris"].split():
                sources.append(AptSource(
                    uri, tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "main").split()),
                ))
    return sources


def chroot_sources(sources: Iterable[AptSource], suite: str = SUITE) -> str:
    """A deb822 sources file for the dom0 image: the host's Debian archives for ``suite``.

    Only archives serving ``suite``, ``suite-updates`` or ``suite-security`` are kept, so a
    host's third-party repositories (whose keys the image lacks) stay out.
    """
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    stanzas = []
    for src in sources:
        suites = [s for s in src.suites if s in wanted]
        if not suites:
            continue
        stanzas.append(
            f"Types: deb\nURIs: {src.uri}\nSuites: {' '.join(suites)}\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    if not stanzas:
        raise LabError(
            f"the host's apt sources have no {suite} archive; add the Debian mirror "
            "to /etc/apt/sources.list.d and run `apt-get update`"
        )
    return "\n".join(stanzas)


def main_mirror(sources: Iterable[AptSource], suite: str = SUITE) -> str:
    """The archive URI serving ``suite`` itself, for debootstrap."""
    for src in sources:
        if suite in src.suites:
            return src.uri
    raise LabError(f"the host's apt sources have no archive for {suite!r}")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """``modules.dep`` -> {module path: [dependency paths]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[path.strip()] = rest.split()
    return deps


def module_name(path: str) -> str:
    """``kernel/fs/ext4/ext4.ko`` -> ``ext4`` (dashes and underscores are the same)."""
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def load_order(deps: dict[str, list[str]], wanted: Iterable[str]) -> list[str]:
    """Module paths to insmod, dependencies first, each once, for the ``wanted`` names."""
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []

    def visit(path: str, trail: tuple[str, ...]) -> None:
        if path in order:
            return
        if path in trail:
            raise LabError(f"modules.dep has a dependency cycle through {path}")
        for dep in deps.get(path, []):
            visit(dep, (*trail, path))
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key not in by_name:
            raise LabError(f"kernel module {name!r} is not in this kernel's modules.dep")
        visit(by_name[key], ())
    return order


def newc_archive(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A cpio ``newc`` archive of (path, mode, data) entries, as the kernel unpacks it.

    Directories have ``stat.S_IFDIR`` in mode and empty data; symlinks ``S_IFLNK`` with
    the target as data.
    """
    out = bytearray()

    def header(ino: int, mode: int, size: int, name: bytes) -> None:
        fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(name + b"\0")
        out.extend(b"\0" * (-len(out) % 4))

    ino = 1
    for path, mode, data in entries:
        header(ino, mode, len(data), path.encode())
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))
        ino += 1
    header(0, 0, 0, b"TRAILER!!!")
    out.extend(b"\0" * (-len(out) % 512))
    return bytes(out)


def with_parents(files: dict[str, tuple[int, bytes]]) -> list[tuple[str, int, bytes]]:
    """Archive entries for ``files`` (path -> (mode, data)), every parent directory first.

    The kernel's initramfs unpacker does not create missing parents, and a later
    archive appended to the first may name directories the first already has.
    """
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    ordered = sorted(dirs, key=lambda d: (d.count("/"), d))
    entries = [(d, stat.S_IFDIR | 0o755, b"") for d in ordered]
    entries += [(p, mode, data) for p, (mode, data) in sorted(files.items())]
    return entries


def parse_ldd(text: str) -> set[str]:
    """Absolute paths of the shared objects ``ldd`` output names."""
    found = set()
    for line in text.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            found.add(m.group(1))
    return found


#: The Python guests run (Debian 12's): bytecode made here must be its bytecode.
GUEST_PYTHON = (3, 11)


def bytecode(source: bytes, filename: str, *, checked: bool = False) -> bytes:
    """``source`` compiled into a .pyc that Python loads without looking for the source
    (PEP 552's unchecked hash-based form); ``filename`` is what tracebacks will name.

    Guests unpack their initramfs into RAM and cannot keep a bytecode cache across boots:
    without bytecode every import compiles its module again, and under TCG that made
    hipd and the agent take minutes to start.
    """
    if sys.version_info[:2] != GUEST_PYTHON:
        raise LabError(f"the lab compiles guests' Python with the host's, which must be "
                       f"Python {'.'.join(map(str, GUEST_PYTHON))} as on Debian 12, not "
                       f"{sys.version.split()[0]}")
    code = compile(source, filename, "exec", dont_inherit=True)
    flags = 0b11 if checked else 0b01  # hash-based; with checked, compared with the source
    return (importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


#: The project's packages dom0s import from the lab's share.
DOM0_PACKAGES = ("xenwam", "hip", "xenwam_guest")


def precompile_tree(source_dir: Path, out_dir: Path, mount: str = "/opt/xenwam") -> int:
    """Bytecode for the project's packages in ``source_dir`` as dom0s see them at
    ``mount``, laid out in ``out_dir`` as ``PYTHONPYCACHEPREFIX`` expects it under
    ``PREFIX/MOUNT`` (dom0 mounts ``out_dir`` there); return how many modules.

    Checked hash-based: a dom0 that imports a module edited since compiles it again
    instead of running stale code.  The share is read-only, so without this each dom0
    compiled every module it ran once per boot, under TCG (a minute for the first
    ``xenwam`` call).
    """
    count = 0
    tag = sys.implementation.cache_tag
    for package in DOM0_PACKAGES:
        for path in sorted((source_dir / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(source_dir)
            try:
                compiled = bytecode(path.read_bytes(), f"{mount}/{rel}", checked=True)
            except SyntaxError:  # dom0 reports it when it imports the module
                continue
            target = out_dir / rel.parent / f"{rel.stem}.{tag}.pyc"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(compiled)
            count += 1
    return count


def _installed_module(path: Path, rel: str) -> dict[str, tuple[int, bytes]]:
    """A third-party package's file for a guest: a module as its bytecode alone."""
    if rel.endswith(".py"):
        return {rel[:-3] + ".pyc": (stat.S_IFREG | 0o644,
                                    bytecode(path.read_bytes(), "/" + rel))}
    return {rel: (stat.S_IFREG | 0o644, path.read_bytes())}


def package_piece(package_dir: Path, dest: str, *, sources: bool = True) -> bytes:
    """A gzip'd newc archive of the Python package in ``package_dir`` placed at ``dest``.

    Appended to a guest's initramfs so the guest runs the project's current code (e.g.
    ``hip`` at ``opt/xenwam/hip``) without an image rebuild.  Each module comes with its
    bytecode in ``__pycache__``; with ``sources`` False only the bytecode goes (as
    ``module.pyc`` where the source was), for third-party code whose lines tracebacks
    need not show.
    """
    files: dict[str, tuple[int, bytes]] = {}
    tag = sys.implementation.cache_tag
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(package_dir)
        target = f"{dest.strip('/')}/{rel}"
        source = path.read_bytes()
        compiled = bytecode(source, "/" + target)
        if sources:
            files[target] = (stat.S_IFREG | 0o644, source)
            cached = f"{dest.strip('/')}/{rel.parent}/__pycache__/{rel.stem}.{tag}.pyc"
            files[os.path.normpath(cached)] = (stat.S_IFREG | 0o644, compiled)
        else:
            files[target[:-3] + ".pyc"] = (stat.S_IFREG | 0o644, compiled)
    if not files:
        raise LabError(f"{package_dir} holds no Python files; is the source tree complete?")
    return gzip.compress(newc_archive(with_parents(files)), compresslevel=6)


# ---------------------------------------------------------------- inputs and cache key

@dataclass(frozen=True)
class BuildInputs:
    """What the lab image is made of; its hash is the cache key."""

    xen_version: str
    xen_utils_version: str
    kernel_package: str
    kernel_version: str
    busybox_version: str
    files_digest: str
    build_format: int = BUILD_FORMAT

    @property
    def key(self) -> str:
        """16 hex digits naming the cache directory."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def files_digest(directory: Path = FILES_DIR) -> str:
    """SHA-256 over the provisioning files and this build module (names and contents)."""
    h = hashlib.sha256()
    for path in [*sorted(directory.rglob("*")), Path(__file__)]:
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(path.name.encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def resolve_inputs(runner: Runner = default_runner) -> BuildInputs:
    """Ask apt which package versions a build would use now."""
    kernel_pkg = parse_kernel_package(
        runner.run(["apt-cache", "depends", "linux-image-amd64"]).stdout
    )
    policy = runner.run(
        ["apt-cache", "policy", XEN_PACKAGE, XEN_UTILS_PACKAGE, kernel_pkg, BUSYBOX_PACKAGE]
    ).stdout
    return BuildInputs(
        xen_version=parse_candidate_version(policy, XEN_PACKAGE),
        xen_utils_version=parse_candidate_version(policy, XEN_UTILS_PACKAGE),
        kernel_package=kernel_pkg,
        kernel_version=parse_candidate_version(policy, kernel_pkg),
        busybox_version=parse_candidate_version(policy, BUSYBOX_PACKAGE),
        files_digest=files_digest(),
    )


@dataclass(frozen=True)
class Artifacts:
    """A finished build in the cache."""

    directory: Path

    @property
    def xen(self) -> Path:
        """The hypervisor (multiboot ELF, loaded with QEMU -kernel)."""
        return self.directory / "xen"

    @property
    def kernel(self) -> Path:
        """Debian's kernel, for dom0 and guests."""
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        """The dom0 initramfs."""
        return self.directory / "initrd.gz"

    @property
    def dom0_image(self) -> Path:
        """The dom0 root filesystem (raw ext4; hosts use qcow2 overlays of it)."""
        return self.directory / "dom0.img"

    @property
    def guest_python(self) -> Path:
        """Python and ``cryptography`` for guests, an initramfs piece to append."""
        return self.directory / "guest-python.cpio.gz"

    @property
    def ssh_key(self) -> Path:
        """The lab's private ssh key (generated per build)."""
        return self.directory / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """known_hosts naming the dom0s' host key under the alias ``xenwam-lab``."""
        return self.directory / "known_hosts"

    @property
    def manifest(self) -> Path:
        """JSON record of the inputs and the build time."""
        return self.directory / "manifest.json"

    def complete(self) -> bool:
        """True when every artifact is present."""
        return all(p.exists() for p in (self.xen, self.kernel, self.initrd, self.dom0_image,
                                        self.guest_python, self.ssh_key, self.known_hosts,
                                        self.manifest))


# ---------------------------------------------------------------- the build

@dataclass
class Builder:
    """Builds the lab into ``cache_dir``; every command goes through ``runner``."""

    cache_dir: Path
    runner: Runner = default_runner
    progress: Progress = print

    def build(self, *, force: bool = False) -> Artifacts:
        """Return the cached build for the current inputs, building it if needed."""
        if os.geteuid() != 0:
            raise LabError("`xenwam lab build` needs root (debootstrap, chroot); run it as root")
        try:
            inputs = resolve_inputs(self.runner)
        except LabError:
            # A fresh machine may have no package lists yet.
            self.progress("apt knows none of the lab's packages; running apt-get update")
            self.runner.run(["apt-get", "update", "-q"], timeout=600)
            inputs = resolve_inputs(self.runner)
        arts = Artifacts(self.cache_dir / inputs.key)
        if arts.complete() and not force:
            self.progress(f"lab build {inputs.key} is cached in {arts.directory}")
            return arts
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Several labs (and test sessions) share the cache: one build per key at a time,
        # and a finished build is never replaced under a running lab (its ssh keys and
        # dom0 image are in use).
        with open(self.cache_dir / f"{inputs.key}.lock", "w") as lock:
            if not _try_lock(lock):
                self.progress(f"another process is building {inputs.key}; waiting for it")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if arts.complete() and not force:
                self.progress(f"lab build {inputs.key} is cached in {arts.directory}")
                return arts
            return self._build_locked(inputs, arts)

    def _build_locked(self, inputs: BuildInputs, arts: Artifacts) -> Artifacts:
        work = self.cache_dir / f"tmp-{inputs.key}-{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        start = time.monotonic()
        try:
            self._build_into(work, inputs)
            (work / "manifest.json").write_text(json.dumps(
                {**asdict(inputs), "key": inputs.key,
                 "build_seconds": round(time.monotonic() - start, 1)}, indent=2) + "\n")
            if arts.directory.exists():
                # Only reached with --force: move the old build aside rather than delete
                # files a running lab may still have open.
                arts.directory.rename(self.cache_dir / f"old-{inputs.key}-{int(time.time())}")
            work.rename(arts.directory)
        finally:
            self._umount_all(work / "rootfs")
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        self.progress(f"lab build {inputs.key} done in {time.monotonic() - start:.0f} s: "
                      f"{arts.directory}")
        return arts

    # The steps, in order.

    def _build_into(self, work: Path, inputs: BuildInputs) -> None:
        debs = work / "debs"
        extract = work / "extract"
        debs.mkdir()
        extract.mkdir()
        self.progress("downloading Xen, kernel and busybox packages")
        packages = [f"{XEN_PACKAGE}={inputs.xen_version}",
                    f"{inputs.kernel_package}={inputs.kernel_version}",
                    f"{BUSYBOX_PACKAGE}={inputs.busybox_version}"]
        # apt's sandbox user cannot write into root's directory; let it.
        os.chmod(debs, 0o777)
        self.runner.run(["apt-get", "download", "-q", *packages], cwd=str(debs), timeout=600)
        for deb in sorted(debs.glob("*.deb")):
            self.runner.run(["dpkg-deb", "-x", str(deb), str(extract)], timeout=300)

        xen_gz = extract / "boot" / "xen-4.17-amd64.gz"
        with gzip.open(xen_gz, "rb") as src, open(work / "xen", "wb") as dst:
            shutil.copyfileobj(src, dst)
        kver = inputs.kernel_package.removeprefix("linux-image-")
        vmlinuz = extract / "boot" / f"vmlinuz-{kver}"
        shutil.copy(vmlinuz, work / "vmlinuz")
        self.runner.run(["depmod", "-b", str(extract), kver], timeout=300)
        moddir = extract / "lib" / "modules" / kver
        deps = parse_modules_dep((moddir / "modules.dep").read_text())
        busybox = (extract / "bin" / "busybox").read_bytes()

        self.progress("making the dom0 and guest initramfs")
        (work / "initrd.gz").write_bytes(self._initramfs(
            busybox, moddir, load_order(deps, DOM0_INITRAMFS_MODULES), guest=False))
        guest_initrd = self._initramfs(
            busybox, moddir, load_order(deps, GUEST_INITRAMFS_MODULES), guest=True)

        rootfs = work / "rootfs"
        self._debootstrap(rootfs)
        self._provision(rootfs)
        self.progress("installing kernel modules, init scripts and ssh keys")
        self._install_modules(moddir, rootfs / "lib" / "modules" / kver)
        self.runner.run(["depmod", "-b", str(rootfs), kver], timeout=300)
        python_piece = self._guest_python(rootfs)
        (work / "guest-python.cpio.gz").write_bytes(python_piece)
        self._install_files(rootfs, work, guest_initrd)
        put_python = rootfs / "var" / "lib" / "xenwam-lab" / "guest-python.cpio.gz"
        put_python.write_bytes(python_piece)
        self.progress(f"making the {DOM0_IMAGE_SIZE} dom0 image")
        self._umount_all(rootfs)
        self.runner.run(["mkfs.ext4", "-q", "-F", "-L", "xwdom0", "-E", "root_owner=0:0",
                         "-d", str(rootfs), str(work / "dom0.img"), DOM0_IMAGE_SIZE],
                        timeout=900)
        shutil.rmtree(rootfs)
        shutil.rmtree(extract)
        shutil.rmtree(debs)

    def _initramfs(self, busybox: bytes, moddir: Path, modules: list[str], *,
                   guest: bool) -> bytes:
        entries: list[tuple[str, int, bytes]] = []
        dirs = ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"]
        for d in dirs:
            entries.append((d, stat.S_IFDIR | 0o755, b""))
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox))
        entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
        entries.append(("init", stat.S_IFREG | 0o755,
                        (FILES_DIR / "initramfs-init.sh").read_bytes()))
        if guest:
            entries.append(("guest-init.sh", stat.S_IFREG | 0o755,
                            (FILES_DIR / "guest-init.sh").read_bytes()))
        names = []
        for path in modules:
            flat = path.rsplit("/", 1)[-1]
            entries.append((f"lib/modules/{flat}", stat.S_IFREG | 0o644,
                            (moddir / path).read_bytes()))
            names.append(flat)
        entries.append(("modules.list", stat.S_IFREG | 0o644,
                        ("\n".join(names) + "\n").encode()))
        return gzip.compress(newc_archive(entries), compresslevel=6)

    def _guest_python(self, rootfs: Path) -> bytes:
        self.progress("packing Python, cryptography, pyroute2 and iproute2 for guests")
        files: dict[str, tuple[int, bytes]] = {}
        objects = ["/usr/bin/python3.11"]
        stdlib = rootfs / "usr/lib/python3.11"
        # Pure-Python modules go into python311.zip (on the default sys.path): a guest
        # unpacks its initramfs into RAM, and the zip is a quarter of the plain files.
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(stdlib.rglob("*.py")):
                rel = path.relative_to(stdlib)
                if any(part in GUEST_PYTHON_SKIPPED for part in rel.parts[:-1]):
                    continue
                # Bytecode only: zipimport cannot cache what it compiles.
                try:
                    compiled = bytecode(path.read_bytes(), f"/usr/lib/python3.11/{rel}")
                except SyntaxError:  # never imported (templates, test data)
                    continue
                zf.writestr(str(rel)[:-3] + ".pyc", compiled)
        files["usr/lib/python311.zip"] = (stat.S_IFREG | 0o644, zipped.getvalue())
        # getpath looks for os.py to find the standard library's prefix.
        files["usr/lib/python3.11/os.py"] = (stat.S_IFREG | 0o644,
                                             (stdlib / "os.py").read_bytes())
        for ext in sorted((stdlib / "lib-dynload").glob("*.so")):
            if ext.name.startswith(GUEST_PYTHON_EXTENSIONS):
                ext_rel = str(ext.relative_to(rootfs))
                files[ext_rel] = (stat.S_IFREG | 0o644, ext.read_bytes())
                objects.append("/" + ext_rel)
        crypto = rootfs / "usr/lib/python3/dist-packages"
        for path in sorted((crypto / "cryptography").rglob("*")):
            if "__pycache__" in path.parts or path.is_symlink() or not path.is_file():
                continue
            crypto_rel = str(path.relative_to(rootfs))
            files.update(_installed_module(path, crypto_rel))
            if path.name.endswith(".so"):
                objects.append("/" + crypto_rel)
        for name in GUEST_PYTHON_PACKAGES:
            tops = [crypto / name, *crypto.glob(f"{name}-*.dist-info"),
                    *crypto.glob(f"{name}-*.egg-info")]
            for top in tops:
                for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
                    if "__pycache__" in path.parts or not path.is_file():
                        continue
                    files.update(_installed_module(path, str(path.relative_to(rootfs))))
        # iproute2's ip: busybox's has no `ip xfrm`, which hipd's kernel data plane uses.
        files["usr/bin/ip"] = (stat.S_IFREG | 0o755, _read_in_root(rootfs, "/usr/bin/ip"))
        objects.append("/usr/bin/ip")
        for cffi in crypto.glob("_cffi_backend*.so"):
            cffi_rel = str(cffi.relative_to(rootfs))
            files[cffi_rel] = (stat.S_IFREG | 0o644, cffi.read_bytes())
            objects.append("/" + cffi_rel)
        # cryptography asks OpenSSL for its legacy provider and fails if it cannot load.
        for provider in sorted((rootfs / "usr/lib/x86_64-linux-gnu/ossl-modules").glob("*.so")):
            provider_rel = str(provider.relative_to(rootfs))
            files[provider_rel] = (stat.S_IFREG | 0o644, provider.read_bytes())
        if (rootfs / "etc/ssl/openssl.cnf").is_file():
            files["etc/ssl/openssl.cnf"] = (stat.S_IFREG | 0o644,
                                            (rootfs / "etc/ssl/openssl.cnf").read_bytes())
        res = self.runner.run(["chroot", str(rootfs), "ldd", *objects], check=False,
                              timeout=300)
        for lib in sorted(parse_ldd(res.stdout)):
            files[lib.lstrip("/")] = (stat.S_IFREG | 0o755, _read_in_root(rootfs, lib))
        files["usr/bin/python3.11"] = (stat.S_IFREG | 0o755,
                                       (rootfs / "usr/bin/python3.11").read_bytes())
        entries = with_parents(files)
        entries.append(("usr/bin/python3", stat.S_IFLNK | 0o777, b"python3.11"))
        return gzip.compress(newc_archive(entries), compresslevel=6)

    def _debootstrap(self, rootfs: Path) -> None:
        sources = parse_apt_sources(self._host_sources_text())
        mirror = main_mirror(sources)
        self.progress(f"debootstrap {SUITE} (minbase) from {mirror}, about a minute")
        self.runner.run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
                        timeout=1200)
        (rootfs / "etc" / "apt" / "sources.list.d").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text(
            chroot_sources(sources))
        legacy = rootfs / "etc" / "apt" / "sources.list"
        if legacy.exists():
            legacy.unlink()

    @staticmethod
    def _host_sources_text() -> str:
        parts = []
        legacy = Path("/etc/apt/sources.list")
        if legacy.exists():
            parts.append(legacy.read_text())
        d = Path("/etc/apt/sources.list.d")
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.suffix in (".sources", ".list"):
                    parts.append(f.read_text())
        return "\n\n".join(parts)

    def _provision(self, rootfs: Path) -> None:
        self.progress("installing Xen tools, DRBD, sshd, python3 in the dom0 image "
                      "(provision-dom0.sh), a minute or two")
        shutil.copy("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
        script = rootfs / "tmp" / "provision-dom0.sh"
        shutil.copy(FILES_DIR / "provision-dom0.sh", script)
        self.runner.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")])
        try:
            self.runner.run(["chroot", str(rootfs), "/bin/sh", "/tmp/provision-dom0.sh"],
                            env={"XENWAM_PROVISION_MODE": "image"}, timeout=1800)
        finally:
            self._umount_all(rootfs)
        script.unlink()

    def _umount_all(self, rootfs: Path) -> None:
        proc = rootfs / "proc"
        if os.path.ismount(proc):
            self.runner.run(["umount", "-l", str(proc)], check=False)

    @staticmethod
    def _install_modules(src: Path, dst: Path) -> None:
        skipped = {src / d for d in MODULE_DIRS_SKIPPED}

        def ignore(directory: str, names: list[str]) -> list[str]:
            return [n for n in names if Path(directory) / n in skipped]

        shutil.copytree(src, dst, ignore=ignore, symlinks=True)

    def _install_files(self, rootfs: Path, work: Path, guest_initrd: bytes) -> None:
        def put(rel: str, data: bytes, mode: int = 0o644) -> None:
            path = rootfs / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, mode)

        put("usr/local/sbin/xenwam-dom0-start",
            (FILES_DIR / "dom0-start.sh").read_bytes(), 0o755)
        put("etc/inittab", (FILES_DIR / "dom0-inittab").read_bytes())
        put("etc/profile.d/xenwam.sh", (FILES_DIR / "profile-xenwam.sh").read_bytes())
        # dom0 has a fixed dom0_mem; ballooning it would only slow guest creation.
        put("etc/xen/xl.conf", b'autoballoon="off"\n')
        put("var/lib/xenwam-lab/vmlinuz", (work / "vmlinuz").read_bytes())
        put("var/lib/xenwam-lab/guest-initrd.gz", guest_initrd)

        # Fresh keys for every build: nothing fixed ships in the image.
        host_key = rootfs / "etc" / "ssh" / "ssh_host_ed25519_key"
        for p in (host_key, host_key.with_suffix(".pub")):
            if p.exists():
                p.unlink()
        self.runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenwam-lab-host",
                         "-f", str(host_key)])
        self.runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenwam-lab",
                         "-f", str(work / "id_ed25519")])
        host_pub = host_key.with_suffix(".pub").read_text().split()
        client_pub = (work / "id_ed25519.pub").read_text()
        put("etc/ssh/sshd_config.d/xenwam-lab-hostkey.conf",
            b"HostKey /etc/ssh/ssh_host_ed25519_key\n")
        put("root/.ssh/authorized_keys", client_pub.encode(), 0o600)
        # dom0s migrate to each other over ssh with the same key.
        put("root/.ssh/id_ed25519", (work / "id_ed25519").read_bytes(), 0o600)
        put("root/.ssh/known_hosts", f"* {host_pub[0]} {host_pub[1]}\n".encode())
        put("root/.ssh/config",
            b"Host *\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n")
        (work / "known_hosts").write_text(f"xenwam-lab {host_pub[0]} {host_pub[1]}\n")


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_in_root(rootfs: Path, path: str) -> bytes:
    """Read ``path`` as seen from inside ``rootfs`` (symlinks resolved within it)."""
    current = rootfs / path.lstrip("/")
    for _ in range(40):
        if not current.is_symlink():
            return current.read_bytes()
        target = os.readlink(current)
        current = (rootfs / target.lstrip("/")) if target.startswith("/") \
            else current.parent / target
    raise LabError(f"too many symlinks resolving {path} in the dom0 image")


def check_build_tools() -> None:
    """Raise :class:`LabError` naming the Debian packages missing for a build."""
    needed = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "depmod": "kmod",
              "ssh-keygen": "openssh-client", "dpkg-deb": "dpkg", "apt-get": "apt"}
    missing = sorted({pkg for tool, pkg in needed.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(f"the lab build needs these Debian packages: {' '.join(missing)}; "
                       f"run `apt-get install -y --no-install-recommends {' '.join(missing)}`")


