"""No file in the repository names the host of a package mirror or registry.

Test data and docs use ``mirror.example`` instead: a real mirror's name in a test invites
traffic to it and ties the data to one mirror.  The domains below are assembled from parts
so that this file does not name them either.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

#: Registrable domains of package mirrors and registries (name, top-level domain).
REGISTRY_DOMAINS = (
    ("debian", "org"), ("ubuntu", "com"), ("pypi", "org"), ("pythonhosted", "org"),
    ("npmjs", "org"), ("alpinelinux", "org"), ("fedoraproject", "org"), ("centos", "org"),
    ("rubygems", "org"), ("crates", "io"), ("archlinux", "org"),
)
PATTERN = re.compile(
    r"(?<![\w-])(?:[\w-]+\.)*(?:" + "|".join(f"{n}\\.{t}" for n, t in REGISTRY_DOMAINS)
    + r")(?![\w-])", re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    """Every file git tracks in this tree (plus those added but not committed)."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_pattern_finds_a_mirror_host() -> None:
    host = ".".join(("deb", *REGISTRY_DOMAINS[0]))
    assert PATTERN.search(f"URIs: http://{host}/debian")
    assert not PATTERN.search("URIs: http://mirror.example/debian")


def test_no_file_names_a_mirror_or_registry_host() -> None:
    found = []
    for path in tracked_text_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if m := PATTERN.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {m.group(0)}")
    assert not found, "use mirror.example instead of:\n" + "\n".join(found)
