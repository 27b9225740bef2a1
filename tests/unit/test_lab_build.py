"""Lab build logic: apt output parsing, sources for the image, module order, cpio, cache key."""

from __future__ import annotations

import gzip
import importlib.util
import io
import stat
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from xenwam.errors import LabError
from xenwam.lab.build import (
    AptSource,
    BuildInputs,
    bytecode,
    chroot_sources,
    load_order,
    main_mirror,
    module_name,
    newc_archive,
    package_piece,
    parse_apt_sources,
    parse_candidate_version,
    parse_kernel_package,
    parse_modules_dep,
    precompile_tree,
)

pytestmark = pytest.mark.unit

DEPENDS = """\
linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""

POLICY = """\
xen-hypervisor-4.17-amd64:
  Installed: (none)
  Candidate: 4.17.7+13-g2445b30a44-0+deb12u1
  Version table:
     4.17.7+13-g2445b30a44-0+deb12u1 500
        500 http://mirror.example/debian-security bookworm-security/main amd64 Packages
     4.17.5+72-g01140da4e8-1 500
        500 http://mirror.example/debian bookworm/main amd64 Packages
busybox-static:
  Installed: (none)
  Candidate: 1:1.35.0-4+deb12u1+b1
  Version table:
gone-package:
  Installed: (none)
  Candidate: (none)
"""

SOURCES = """\
Types: deb
# http://snapshot.mirror.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: https://example.invalid/node
Suites: nodistro
Components: main

Enabled: no
Types: deb
URIs: http://disabled.invalid/debian
Suites: bookworm
"""


def test_kernel_package_from_apt_cache_depends() -> None:
    assert parse_kernel_package(DEPENDS) == "linux-image-6.1.0-56-amd64"
    with pytest.raises(LabError, match="apt-get update"):
        parse_kernel_package("linux-image-amd64\n")


def test_candidate_versions() -> None:
    assert parse_candidate_version(POLICY, "xen-hypervisor-4.17-amd64") == \
        "4.17.7+13-g2445b30a44-0+deb12u1"
    assert parse_candidate_version(POLICY, "busybox-static") == "1:1.35.0-4+deb12u1+b1"
    with pytest.raises(LabError, match="gone-package"):
        parse_candidate_version(POLICY, "gone-package")
    with pytest.raises(LabError, match="absent"):
        parse_candidate_version(POLICY, "absent")


def test_apt_sources_deb822_and_one_line() -> None:
    sources = parse_apt_sources(SOURCES + "\ndeb [arch=amd64] http://x.invalid/d bookworm main\n")
    uris = [s.uri for s in sources]
    assert uris == ["http://mirror.example/debian", "http://mirror.example/debian-security",
                    "https://example.invalid/node", "http://x.invalid/d"]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert main_mirror(sources) == "http://mirror.example/debian"


def test_image_sources_keep_only_debian_suites() -> None:
    text = chroot_sources(parse_apt_sources(SOURCES))
    assert "debian-security" in text and "Suites: bookworm bookworm-updates" in text
    assert "example.invalid" not in text and "disabled.invalid" not in text
    with pytest.raises(LabError, match="bookworm"):
        chroot_sources([AptSource("http://x", ("sid",), ("main",))])


MODULES_DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/block/xen-blkfront.ko:
"""


def test_load_order_puts_dependencies_first_once() -> None:
    deps = parse_modules_dep(MODULES_DEP)
    order = load_order(deps, ["virtio_blk", "ext4", "jbd2"])
    assert order == ["kernel/drivers/virtio/virtio.ko", "kernel/drivers/block/virtio_blk.ko",
                     "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko",
                     "kernel/fs/ext4/ext4.ko"]


def test_module_names_treat_dash_and_underscore_alike() -> None:
    assert module_name("kernel/drivers/block/xen-blkfront.ko") == "xen_blkfront"
    assert module_name("a/b/c.ko.xz") == "c"
    assert load_order(parse_modules_dep(MODULES_DEP), ["xen_blkfront"]) == [
        "kernel/drivers/block/xen-blkfront.ko"]


def test_missing_module_is_named() -> None:
    with pytest.raises(LabError, match="'nosuch'"):
        load_order(parse_modules_dep(MODULES_DEP), ["nosuch"])


def _read_newc(blob: bytes) -> list[tuple[str, int, bytes]]:
    out = []
    pos = 0
    while True:
        assert blob[pos:pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = blob[pos:pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        data = blob[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, data))


def test_newc_archive_round_trips() -> None:
    entries = [("bin", stat.S_IFDIR | 0o755, b""),
               ("bin/busybox", stat.S_IFREG | 0o755, b"\x7fELF" + b"x" * 13),
               ("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
               ("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")]
    blob = newc_archive(entries)
    assert len(blob) % 512 == 0
    assert _read_newc(blob) == entries
    assert gzip.decompress(gzip.compress(blob)) == blob


def test_cache_key_changes_with_any_input() -> None:
    base = BuildInputs("1", "1", "linux-image-6.1.0-56-amd64", "6.1.192-2", "1", "abc")
    assert len(base.key) == 16
    assert base.key == replace(base).key
    assert base.key != replace(base, kernel_version="6.1.193-1").key
    assert base.key != replace(base, files_digest="abd").key


def test_bytecode_loads_from_a_zip_without_its_source(tmp_path: Path) -> None:
    """The guests' standard library is bytecode alone in a zip: zipimport must take it."""
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("xw_sourceless.pyc", bytecode(b"ANSWER = 6 * 7\n", "/x/xw_sourceless.py"))
    (tmp_path / "lib.zip").write_bytes(zipped.getvalue())
    sys.path.insert(0, str(tmp_path / "lib.zip"))
    try:
        module = importlib.import_module("xw_sourceless")
        assert module.ANSWER == 42
        assert module.__file__.endswith("xw_sourceless.pyc")
    finally:
        sys.path.remove(str(tmp_path / "lib.zip"))
        sys.modules.pop("xw_sourceless", None)


def test_bytecode_is_unchecked_hash_based() -> None:
    blob = bytecode(b"x = 1\n", "/m.py")
    assert blob[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(blob[4:8], "little") == 0b01  # hash-based, never checked
    assert blob[8:16] == importlib.util.source_hash(b"x = 1\n")


def test_bytecode_refuses_syntax_errors() -> None:
    with pytest.raises(SyntaxError):
        bytecode(b"def (:\n", "/bad.py")


def test_package_piece_carries_bytecode(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("VALUE = 1\n")
    tag = sys.implementation.cache_tag
    with_sources = {name: data for name, mode, data in _read_newc(
        gzip.decompress(package_piece(pkg, "opt/x/pkg"))) if stat.S_ISREG(mode)}
    assert with_sources["opt/x/pkg/sub/mod.py"] == b"VALUE = 1\n"
    cached = with_sources[f"opt/x/pkg/sub/__pycache__/mod.{tag}.pyc"]
    assert cached == bytecode(b"VALUE = 1\n", "/opt/x/pkg/sub/mod.py")
    bare = {name for name, mode, _ in _read_newc(
        gzip.decompress(package_piece(pkg, "opt/x/pkg", sources=False))) if stat.S_ISREG(mode)}
    assert bare == {"opt/x/pkg/__init__.pyc", "opt/x/pkg/sub/mod.pyc"}


def test_precompile_tree_lays_out_checked_bytecode_for_the_prefix(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "xenwam" / "lab").mkdir(parents=True)
    (src / "xenwam" / "lab" / "x.py").write_text("X = 1\n")
    (src / "xenwam" / "broken.py").write_text("def (:\n")
    (src / "tests").mkdir()
    (src / "tests" / "t.py").write_text("T = 1\n")
    out = tmp_path / "out"
    assert precompile_tree(src, out) == 1
    tag = sys.implementation.cache_tag
    blob = (out / "xenwam" / "lab" / f"x.{tag}.pyc").read_bytes()
    assert int.from_bytes(blob[4:8], "little") == 0b11  # checked against the source
    assert blob == bytecode(b"X = 1\n", "/opt/xenwam/xenwam/lab/x.py", checked=True)
    assert sorted(p.name for p in out.rglob("*.pyc")) == [f"x.{tag}.pyc"]
