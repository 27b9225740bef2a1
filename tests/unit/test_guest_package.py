"""The guest's distribution (guest/, scripts/guest-wheel) and its systemd units.

The wheel is built once by the real script (pip and setuptools, offline) and installed
once with the real pip (``--no-deps --no-index``: nothing from the network), then run
from there in an
interpreter that sees only the installed packages, the standard library and the host's
third-party packages: a guest's view, where ``xenwam`` does not exist.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import json
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenwam.lab.lab import GUEST_SERVICES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "guest"
UNITS = GUEST / "systemd"
SCRIPT = ROOT / "scripts" / "guest-wheel"
PACKAGES = {"hip", "xenwam_guest"}
SCRIPTS = {"hipd": "hip.daemon:main", "hipctl": "hip.ctl:main",
           "xenwam-guest-agent": "xenwam_guest.agent:main"}
BENCHMARKS = {"hip/bench.py", "hip/cryptobench.py", "hip/daemon_bench.py", "hip/pcap.py"}
#: Import name -> distribution, for every third-party package the guest code may use.
DISTRIBUTIONS = {"cryptography": "cryptography", "pyroute2": "pyroute2", "pyxs": "pyxs"}
#: What hipd's kernel data plane needs loaded (docs/hip-daemon.md, issue 10 finding 3).
KERNEL_MODULES = {"xfrm_user", "esp4", "authenc", "echainiv", "seqiv", "dummy", "tun"}


def _requirement(text: str) -> tuple[str, str]:
    name, _, minimum = text.partition(">=")
    return name.strip(), minimum.strip()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guest-package")


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    """The wheel scripts/guest-wheel builds from this tree."""
    res = subprocess.run([str(SCRIPT), "--out", str(workdir / "dist")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path.parent == workdir / "dist"
    assert path.name == "xenwam_guest-0.1.0-py3-none-any.whl"
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, workdir: Path) -> Path:
    """The wheel installed by pip into a directory of its own."""
    target = workdir / "target"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-compile", "--disable-pip-version-check", "--root-user-action=ignore",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return target


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A copy of the parts of the source tree scripts/guest-wheel reads, to change."""
    root = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for path in ("scripts/guest-wheel", "guest/pyproject.toml"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, root / path)
    yield root


def _run(script: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def _main_pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _main_project() -> dict:
    return _main_pyproject()["project"]


def _guest_pyproject() -> dict:
    return tomllib.loads((GUEST / "pyproject.toml").read_text())


def _guest_project() -> dict:
    return _guest_pyproject()["project"]


# ---------------------------------------------------------------- the wheel

def test_wheel_holds_hip_and_xenwam_guest_whole_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {*PACKAGES, "xenwam_guest-0.1.0.dist-info"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not BENCHMARKS & set(names)
    assert {"hip/py.typed", "xenwam_guest/py.typed"} <= set(names)
    # Every other file of the two packages, whatever hip/'s layout is by now.
    source = {p.relative_to(ROOT).as_posix() for package in PACKAGES
              for p in (ROOT / package).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert set(names) - {n for n in names if ".dist-info/" in n} == source - BENCHMARKS


def test_wheel_metadata_names_only_the_guest_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read("xenwam_guest-0.1.0.dist-info/METADATA").decode()
        entry = zf.read("xenwam_guest-0.1.0.dist-info/entry_points.txt").decode()
        tag = zf.read("xenwam_guest-0.1.0.dist-info/WHEEL").decode()
    fields = email.parser.Parser().parsestr(meta, headersonly=True)
    assert fields["Name"] == "xenwam-guest"
    assert fields["Version"] == _main_project()["version"]
    assert fields["Requires-Python"] == _main_project()["requires-python"]
    assert sorted(fields.get_all("Requires-Dist")) == [
        "cryptography>=38.0", "pyroute2>=0.7.2", "pyxs>=0.4.1"]
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.read_string(entry)
    assert dict(parser["console_scripts"]) == SCRIPTS
    assert "Root-Is-Purelib: true" in tag and "Tag: py3-none-any" in tag


def test_guest_dependencies_are_exactly_what_its_code_imports(wheel: Path) -> None:
    imported: set[str] = set()
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith(".py"):
                for node in ast.walk(ast.parse(zf.read(name), name)):
                    if isinstance(node, ast.Import):
                        imported |= {a.name.split(".")[0] for a in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - PACKAGES - {"__future__"}
    assert "xenwam" not in imported
    assert third_party <= set(DISTRIBUTIONS), f"unknown imports {third_party}"
    guest = dict(map(_requirement, _guest_project()["dependencies"]))
    assert set(guest) == {DISTRIBUTIONS[m] for m in third_party}
    main = dict(map(_requirement, _main_project()["dependencies"]))
    assert {name: main[name] for name in guest} == guest  # the same minimum versions


def test_guest_project_follows_the_main_one() -> None:
    guest, main = _guest_project(), _main_project()
    assert guest["version"] == main["version"]
    assert guest["requires-python"] == main["requires-python"]
    assert guest["scripts"] == SCRIPTS
    assert {k: main["scripts"][k] for k in SCRIPTS} == SCRIPTS


def test_guest_build_is_setuptools_with_every_package_listed() -> None:
    pyproject = _guest_pyproject()
    system = pyproject["build-system"]
    assert system["build-backend"] == "setuptools.build_meta"
    assert "backend-path" not in system
    assert sorted(_requirement(r)[0] for r in system["requires"]) == ["setuptools", "wheel"]
    # The test extra (what CI installs) brings what scripts/guest-wheel builds with.
    test_extra = {_requirement(r)[0] for r in
                  _main_pyproject()["project"]["optional-dependencies"]["test"]}
    assert {"setuptools", "wheel"} <= test_extra
    # setuptools takes the packages listed, not what it finds: a package added under hip/
    # must be added to guest/pyproject.toml, or the guest would lack it.
    found = sorted(".".join(p.parent.relative_to(ROOT).parts) for package in PACKAGES
                   for p in (ROOT / package).rglob("__init__.py")
                   if "__pycache__" not in p.parts)
    assert sorted(pyproject["tool"]["setuptools"]["packages"]) == found
    assert pyproject["tool"]["setuptools"]["package-data"] == {
        package: ["py.typed"] for package in PACKAGES}


def test_a_hip_without_the_benchmarks_still_builds(tree: Path, tmp_path: Path) -> None:
    # The hip/ re-layout moves them out; the exclusions must not then break the build.
    for path in BENCHMARKS:
        (tree / path).unlink(missing_ok=True)
    (tree / "hip" / "__pycache__").mkdir(exist_ok=True)
    (tree / "hip" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    res = _run(tree / "scripts" / "guest-wheel", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    names = zipfile.ZipFile(res.stdout.strip()).namelist()
    assert "hip/daemon/hipd.py" in names and not BENCHMARKS & set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [p for p in tree.rglob("*") if p.name in {"build", "dist"}
                or p.name.endswith(".egg-info")]  # built elsewhere, nothing left here


def test_script_refuses_a_tree_without_the_packages(tree: Path, tmp_path: Path) -> None:
    shutil.rmtree(tree / "xenwam_guest")
    res = _run(tree / "scripts" / "guest-wheel", "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"scripts/guest-wheel: {tree}/xenwam_guest is missing: "
        "this is not a xenwam source tree"]


@pytest.mark.parametrize("lacking", ["pip", "setuptools", "wheel"])
def test_script_without_a_build_tool_says_what_to_install(lacking: str,
                                                          tmp_path: Path) -> None:
    # A stock Debian 12 has python3 but none of the three: a python3 lacking one.
    asked = "-m pip" if lacking == "pip" else f"-c import {lacking}"
    shim = tmp_path / "bin" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\n[ "$1 $2" = "{asked}" ] && exit 1\n'
                    f'exec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    res = _run(SCRIPT, "--out", str(tmp_path / "out"),
               env={"PATH": f"{shim.parent}:/usr/bin:/bin"})
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        f"scripts/guest-wheel: python3 has no {lacking} to build the wheel with: "
        "apt-get install python3-pip python3-setuptools python3-wheel"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["--bogus"], ["--out"], ["--out", ""], ["extra"], ["--out", "FILE"]])
def test_script_refuses_bad_arguments_with_one_line(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    res = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                         check=False)
    assert res.returncode == 2
    assert res.stdout == ""
    assert len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("scripts/guest-wheel: ")


# ---------------------------------------------------------------- installed

_GUEST_VIEW = """\
import contextlib, io, json, runpy, sys
sys.path[:0] = [sys.argv[1]]
sys.path += sys.argv[2:]
out = {}
for module in ("hip.daemon", "hip.ctl", "xenwam_guest.agent"):
    sys.argv = [module, "--help"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code
    out[module] = [code, text.getvalue().splitlines()[0]]
import hip, xenwam_guest
out["files"] = [hip.__file__, xenwam_guest.__file__]
try:
    import xenwam
    out["xenwam"] = xenwam.__file__
except ModuleNotFoundError:
    out["xenwam"] = None
print(json.dumps(out))
"""


def test_installed_wheel_runs_where_there_is_no_xenwam(installed: Path) -> None:
    # -I -S: no PYTHONPATH, no current directory, no .pth files (this host's editable
    # xenwam is one); the path is then the target, the stdlib and the third-party packages.
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    res = subprocess.run([sys.executable, "-I", "-S", "-c", _GUEST_VIEW, str(installed),
                          *site], capture_output=True, text=True, timeout=60, check=False,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["hip.daemon"] == [0, "usage: hipd [-h] [--config-dir CONFIG_DIR] "
                                        "[--socket SOCKET]"]
    assert out["hip.ctl"] == [0, "usage: hipctl [-h] [--json] [--config-dir CONFIG_DIR] "
                                     "[--socket SOCKET]"]
    assert out["xenwam_guest.agent"] == [
        0, "usage: xenwam-guest-agent [-h] [--interface INTERFACE] [--interval INTERVAL]"]
    assert all(Path(f).is_relative_to(installed) for f in out["files"])
    if any((Path(s) / "xenwam").exists() for s in site):
        pytest.skip("xenwam is installed as a package in site-packages: cannot hide it")
    assert out["xenwam"] is None


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_console_scripts_run(installed: Path, command: str) -> None:
    res = subprocess.run([str(installed / "bin" / command), "--help"], capture_output=True,
                         text=True, timeout=60, check=False,
                         env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: {command} ")


# ---------------------------------------------------------------- systemd units

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections and keys, each key's values in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((UNITS / name).read_text())


def _words(values: list[str]) -> set[str]:
    return {w for v in values for w in v.split()}


def _lab_hipd_options() -> list[str]:
    argv = shlex.split(GUEST_SERVICES.replace("\\\n", " "), comments=True)
    start = argv.index("hip.daemon") + 1
    options = argv[start:argv.index(">", start)] if ">" in argv[start:] else argv[start:]
    return [o for o in options if o != "-v"]


def test_hipd_unit_runs_the_lab_s_command_line() -> None:
    unit = _unit("hipd.service")
    [exec_start] = unit["Service"]["ExecStart"]
    argv = exec_start.split()
    assert argv[0] == "/usr/local/bin/hipd"
    assert argv[-1] == "$HIPD_OPTS"
    assert argv[1:-1] == _lab_hipd_options()
    assert argv[argv.index("--state-dir") + 1] == "/var/lib/" + unit["Service"][
        "StateDirectory"][0]


def test_agent_unit_is_a_template_over_the_interface() -> None:
    unit = _unit("xenwam-guest-agent@.service")
    [exec_start] = unit["Service"]["ExecStart"]
    assert exec_start.split() == ["/usr/local/bin/xenwam-guest-agent", "--interface", "%i",
                                  "$XENWAM_GUEST_AGENT_OPTS"]
    assert "sys-subsystem-net-devices-%i.device" in _words(unit["Unit"]["BindsTo"])
    assert unit["Service"]["DeviceAllow"] == ["/dev/xen/xenbus rw"]
    assert "AF_PACKET" in _words(unit["Service"]["RestrictAddressFamilies"])
    assert unit["Service"]["RestartPreventExitStatus"] == ["2"]


@pytest.mark.parametrize("name", ["hipd.service", "xenwam-guest-agent@.service"])
def test_units_run_an_installed_command_confined_to_the_network(name: str) -> None:
    unit = _unit(name)
    command = Path(unit["Service"]["ExecStart"][0].split()[0])
    assert command.parent == Path("/usr/local/bin")  # where pip puts scripts on Debian 12
    assert command.name in SCRIPTS
    assert unit["Service"]["Restart"] == ["on-failure"]
    assert "network-online.target" in _words(unit["Unit"]["After"])
    assert "network-online.target" in _words(unit["Unit"]["Wants"])
    assert _words(unit["Service"]["CapabilityBoundingSet"]) == {"CAP_NET_ADMIN",
                                                                 "CAP_NET_RAW"}
    assert unit["Service"]["ProtectSystem"] == ["strict"]
    assert unit["Service"]["DevicePolicy"] == ["closed"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_modules_load_file_lists_the_kernel_data_plane_s_modules() -> None:
    text = (UNITS / "modules-load.d" / "hipd.conf").read_text()
    modules = [line.strip() for line in text.splitlines()
               if line.strip() and not line.startswith(("#", ";"))]
    assert len(modules) == len(set(modules))
    assert set(modules) >= KERNEL_MODULES
    assert all(m.replace("_", "").isalnum() for m in modules)


def test_systemd_accepts_the_units(installed: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # Point ExecStart at the scripts pip just installed, so that verify's check that the
    # command exists is a check that the unit names a script the wheel provides.
    for unit in ("hipd.service", "xenwam-guest-agent@.service"):
        text = (UNITS / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/", f"{installed}/bin/"))
    res = subprocess.run([analyze, "verify", "./hipd.service",
                          "./xenwam-guest-agent@eth0.service"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    ours = [line for line in (res.stdout + res.stderr).splitlines()
            if "hipd" in line or "xenwam-guest-agent" in line]
    assert res.returncode == 0 and not ours, res.stdout + res.stderr


# ---------------------------------------------------------------- docs

def test_guest_agent_doc_says_how_to_install_what_there_is() -> None:
    doc = (ROOT / "docs" / "guest-agent.md").read_text()
    section = doc[doc.index("## Installing on a real guest"):]
    for needed in ("scripts/guest-wheel", "xenwam_guest-0.1.0-py3-none-any.whl",
                   "guest/systemd/hipd.service", "guest/systemd/xenwam-guest-agent@.service",
                   "guest/systemd/modules-load.d/hipd.conf", "/etc/modules-load.d/",
                   "python3-cryptography", "python3-pyroute2", "pyxs",
                   "python3-setuptools", "python3-wheel",
                   "xenwam-guest-agent@", "hipctl keygen", "/etc/default/hipd",
                   "/etc/default/xenwam-guest-agent"):
        assert needed in section, needed
