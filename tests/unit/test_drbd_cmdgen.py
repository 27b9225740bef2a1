"""Argv builders, checked as values and against drbdadm's own dry run (``-d``)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from xenwam.drbd import cmdgen
from xenwam.drbd.resource import Host, Resource

pytestmark = pytest.mark.unit

DRBDADM_84 = "/usr/lib/drbd/drbdadm-84"
needs_drbdadm = pytest.mark.skipif(not os.path.exists(DRBDADM_84),
                                   reason="drbd-utils (drbdadm-84) not installed")


def test_handover_and_bulk_change_protocol_and_congestion_together() -> None:
    assert cmdgen.net_options("r0", cmdgen.HANDOVER) == [
        "drbdadm", "net-options", "--protocol=C", "--allow-two-primaries=yes",
        "--on-congestion=block", "r0"]
    assert cmdgen.net_options("r0", cmdgen.BULK) == [
        "drbdadm", "net-options", "--protocol=A", "--allow-two-primaries=no",
        "--on-congestion=pull-ahead", "r0"]


def test_config_file_and_flags() -> None:
    assert cmdgen.up("r0", config=Path("/x/r.res")) == ["drbdadm", "-c", "/x/r.res", "up", "r0"]
    assert cmdgen.create_md("r0", force=True) == ["drbdadm", "create-md", "--force", "r0"]
    assert cmdgen.primary("r0") == ["drbdadm", "primary", "r0"]
    assert cmdgen.primary("r0", force=True) == ["drbdadm", "primary", "--force", "r0"]
    assert cmdgen.new_current_uuid("r0", clear_bitmap=True) == [
        "drbdadm", "new-current-uuid", "--clear-bitmap", "r0"]
    assert cmdgen.status() == ["drbdsetup", "status", "all", "--verbose", "--statistics"]
    assert cmdgen.events2_now("r0") == ["drbdsetup", "events2", "r0", "--now", "--statistics"]


@pytest.fixture
def local_res(tmp_path: Path) -> Path:
    """A resource file whose first side is this host, for drbdadm's dry runs."""
    me = os.uname().nodename
    res = Resource(
        name="r0", minor=3,
        hosts=(Host(me, "127.0.0.1", 7789, "/dev/loop6", "/dev/loop7"),
               Host("peerhost", "127.0.0.2", 7789, "/dev/loop6", "/dev/loop7")),
        shared_secret="dry-run-secret",
    )
    assert dataclasses.is_dataclass(res)
    path = tmp_path / "r0.res"
    path.write_text(res.render())
    return path


def _dry(argv: list[str]) -> str:
    assert argv[0] == "drbdadm"
    result = subprocess.run([DRBDADM_84, "-d", *argv[1:]], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_drbdadm
def test_drbdadm_turns_our_argv_into_the_expected_84_calls(local_res: Path) -> None:
    out = _dry(cmdgen.net_options("r0", cmdgen.HANDOVER, config=local_res))
    assert "drbdsetup-84 net-options ipv4:127.0.0.1:7789 ipv4:127.0.0.2:7789" in out
    assert "--protocol=C --allow-two-primaries=yes --on-congestion=block" in out
    out = _dry(cmdgen.create_md("r0", force=True, config=local_res))
    assert "drbdmeta 3 v08 /dev/loop7 flex-external create-md --force" in out
    out = _dry(cmdgen.new_current_uuid("r0", clear_bitmap=True, config=local_res))
    assert "new-current-uuid 3 --clear-bitmap" in out
    out = _dry(cmdgen.up("r0", config=local_res))
    assert "attach 3 /dev/loop6 /dev/loop7 flexible" in out
    assert "--on-congestion=pull-ahead" in out
    assert "--shared-secret=dry-run-secret" in out
    for build in (cmdgen.down, cmdgen.attach, cmdgen.detach, cmdgen.connect,
                  cmdgen.disconnect, cmdgen.secondary, cmdgen.adjust):
        assert _dry(build("r0", config=local_res)).strip()
