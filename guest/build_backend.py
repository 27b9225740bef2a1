"""The PEP 517 build backend of the xenwam-guest distribution (``guest/pyproject.toml``).

It packs the packages that ``[tool.xenwam-guest]`` names, found in the directory it runs
in (the temporary tree ``scripts/guest-wheel`` assembles), into a pure-Python wheel, and
that tree into an sdist.  It uses nothing but the standard library: the guest wheel then
builds offline on a host with Python and pip alone (a stock Debian 12 has neither
setuptools' wheel support nor ``build``).  The same tree gives the same bytes every time
(entries sorted, timestamps fixed), so two builds can be compared.

Only what this one project uses is supported; anything else in ``[project]`` is refused
rather than silently left out of the metadata.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import os
import re
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Timestamp of every zip entry (the earliest a zip can hold) and of every tar member.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
TAR_TIME = 315532800
FILE_MODE = 0o644
BACKEND_FILES = ("pyproject.toml", "build_backend.py")

_PROJECT_KEYS = frozenset({"name", "version", "description", "requires-python", "license",
                           "authors", "classifiers", "dependencies", "scripts"})
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_ENTRY_POINT = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")


class BuildError(Exception):
    """The tree cannot make a distribution; the message says what is wrong and where."""


@dataclass(frozen=True)
class Project:
    """What ``pyproject.toml`` says about the distribution."""

    name: str
    version: str
    summary: str
    requires_python: str
    license: str
    authors: tuple[str, ...]
    classifiers: tuple[str, ...]
    dependencies: tuple[str, ...]
    #: Console scripts as (command, "module:function"), in the file's order.
    scripts: tuple[tuple[str, str], ...]
    #: Top-level packages taken whole from the tree.
    packages: tuple[str, ...]
    #: Files ("package/module.py") left out of the wheel if the tree still has them.
    exclude: frozenset[str]

    @property
    def file_name(self) -> str:
        """The name as wheel and sdist file names spell it (``xenwam_guest``)."""
        return re.sub(r"[-_.]+", "_", self.name).lower()

    @property
    def dist_info(self) -> str:
        """The wheel's metadata directory."""
        return f"{self.file_name}-{self.version}.dist-info"


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BuildError(f"pyproject.toml: {what} must be a list of strings, not {value!r}")
    return tuple(value)


def _string(table: dict[str, Any], key: str, what: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise BuildError(f"pyproject.toml: {what}{key} must be a non-empty string, "
                         f"not {value!r}")
    return value


def parse_project(text: str) -> Project:
    """The project that the text of a ``pyproject.toml`` describes; :class:`BuildError`
    for anything this backend would not put in the metadata faithfully."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"pyproject.toml: {exc}") from None
    project = data.get("project")
    if not isinstance(project, dict):
        raise BuildError("pyproject.toml has no [project] table")
    unknown = sorted(set(project) - _PROJECT_KEYS)
    if unknown:
        raise BuildError(f"pyproject.toml: [project] {', '.join(unknown)} not supported by "
                         f"build_backend.py (it knows {', '.join(sorted(_PROJECT_KEYS))})")
    name = _string(project, "name", "")
    if not _NAME.fullmatch(name):
        raise BuildError(f"pyproject.toml: name {name!r} is not a distribution name")
    version = _string(project, "version", "")
    if not _VERSION.fullmatch(version):
        raise BuildError(f"pyproject.toml: version {version!r}: only release numbers "
                         "such as 1.2.3 are supported")
    license_table = project.get("license")
    if not isinstance(license_table, dict) or set(license_table) != {"text"}:
        raise BuildError("pyproject.toml: license must be { text = \"...\" }")
    authors = project.get("authors", [])
    if not isinstance(authors, list) or not all(
            isinstance(a, dict) and set(a) == {"name"} for a in authors):
        raise BuildError("pyproject.toml: authors must be a list of { name = \"...\" }")
    scripts = project.get("scripts", {})
    if not isinstance(scripts, dict):
        raise BuildError("pyproject.toml: [project.scripts] must be a table")
    for command, target in scripts.items():
        if not _NAME.fullmatch(command) or not isinstance(target, str) \
                or not _ENTRY_POINT.fullmatch(target):
            raise BuildError(f"pyproject.toml: script {command} = {target!r} is not "
                             "NAME = \"module:function\"")
    tool = data.get("tool", {}).get("xenwam-guest")
    if not isinstance(tool, dict):
        raise BuildError("pyproject.toml has no [tool.xenwam-guest] table")
    packages = _strings(tool.get("packages"), "[tool.xenwam-guest] packages")
    if not packages or not all(p.isidentifier() for p in packages):
        raise BuildError(f"pyproject.toml: packages {list(packages)} must be package names")
    exclude = _strings(tool.get("exclude", []), "[tool.xenwam-guest] exclude")
    for path in exclude:
        if path.split("/", 1)[0] not in packages or ".." in path.split("/"):
            raise BuildError(f"pyproject.toml: exclude {path!r} is not inside "
                             f"{', '.join(packages)}")
    return Project(
        name=name, version=version, summary=_string(project, "description", ""),
        requires_python=_string(project, "requires-python", ""),
        license=_string(license_table, "text", "license."),
        authors=tuple(a["name"] for a in authors),
        classifiers=_strings(project.get("classifiers", []), "classifiers"),
        dependencies=_strings(project.get("dependencies", []), "dependencies"),
        scripts=tuple(scripts.items()), packages=packages, exclude=frozenset(exclude))


def package_files(root: Path, project: Project) -> list[str]:
    """Every file of the project's packages under ``root``, as sorted "/" paths; no
    ``__pycache__``, no bytecode, none of the excluded files."""
    found = []
    for package in project.packages:
        if not (root / package / "__init__.py").is_file():
            raise BuildError(f"{root / package} is not a package (no __init__.py): "
                             "scripts/guest-wheel copies it from the source tree")
        for top, dirs, files in os.walk(root / package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                path = Path(top, name).relative_to(root).as_posix()
                if not name.endswith((".pyc", ".pyo")) and path not in project.exclude:
                    found.append(path)
    return sorted(found)


def metadata(project: Project) -> str:
    """The core metadata (METADATA in the wheel, PKG-INFO in the sdist)."""
    lines = ["Metadata-Version: 2.1", f"Name: {project.name}", f"Version: {project.version}",
             f"Summary: {project.summary}"]
    lines += [f"Author: {author}" for author in project.authors]
    lines.append(f"License: {project.license}")
    lines += [f"Classifier: {c}" for c in project.classifiers]
    lines.append(f"Requires-Python: {project.requires_python}")
    lines += [f"Requires-Dist: {d}" for d in project.dependencies]
    return "\n".join(lines) + "\n"


def entry_points(project: Project) -> str:
    """entry_points.txt: the console scripts pip makes into commands."""
    return "[console_scripts]\n" + "".join(f"{c} = {t}\n" for c, t in project.scripts)


def wheel_tag_file() -> str:
    """The WHEEL file: a pure-Python wheel for any Python 3."""
    return ("Wheel-Version: 1.0\nGenerator: xenwam-guest build_backend\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n")


def record(entries: list[tuple[str, bytes]], record_path: str) -> str:
    """RECORD: each entry's sha256 (urlsafe base64, unpadded) and size, then itself."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for path, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        writer.writerow([path, f"sha256={digest.decode()}", str(len(data))])
    writer.writerow([record_path, "", ""])
    return out.getvalue()


def wheel_name(project: Project) -> str:
    """The wheel's file name."""
    return f"{project.file_name}-{project.version}-py3-none-any.whl"


def write_wheel(root: Path, directory: Path) -> str:
    """Build the wheel of the tree at ``root`` into ``directory``; its file name."""
    project = parse_project((root / "pyproject.toml").read_text(encoding="utf-8"))
    entries = [(path, (root / path).read_bytes()) for path in package_files(root, project)]
    info = project.dist_info
    entries += [(f"{info}/METADATA", metadata(project).encode()),
                (f"{info}/WHEEL", wheel_tag_file().encode()),
                (f"{info}/entry_points.txt", entry_points(project).encode())]
    entries.append((f"{info}/RECORD", record(entries, f"{info}/RECORD").encode()))
    name = wheel_name(project)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}.partial"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in entries:
            member = zipfile.ZipInfo(path, ZIP_TIME)
            member.external_attr = (0o100000 | FILE_MODE) << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(member, data)
    partial.replace(directory / name)  # no half-written wheel under the real name
    return name


def write_sdist(root: Path, directory: Path) -> str:
    """Build the sdist of the tree at ``root`` into ``directory``: the assembled tree
    with PKG-INFO, from which this backend builds the same wheel; its file name."""
    project = parse_project((root / "pyproject.toml").read_text(encoding="utf-8"))
    top = f"{project.file_name}-{project.version}"
    members = [(path, (root / path).read_bytes()) for path in BACKEND_FILES]
    members += [(path, (root / path).read_bytes()) for path in package_files(root, project)]
    members.append(("PKG-INFO", metadata(project).encode()))
    name = f"{top}.tar.gz"
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}.partial"
    with partial.open("wb") as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(members):
            member = tarfile.TarInfo(f"{top}/{path}")
            member.size, member.mtime, member.mode = len(data), TAR_TIME, FILE_MODE
            tar.addfile(member, io.BytesIO(data))
    partial.replace(directory / name)
    return name


# ---------------------------------------------------------------- PEP 517 hooks

def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    """PEP 517: build the wheel of the current directory."""
    return write_wheel(Path.cwd(), Path(wheel_directory))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    """PEP 517: build the sdist of the current directory."""
    return write_sdist(Path.cwd(), Path(sdist_directory))


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """PEP 517: nothing beyond Python itself."""
    return []


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    """PEP 517: nothing beyond Python itself."""
    return []
