"""The destination's finishing script (one ssh round trip: check, write the network,
unpause), run by a real shell against stand-ins for ``xl`` and ``xenstore-write`` and a
/proc/drbd text: it never unpauses a guest whose disk pair is not connected and in sync
(found by the fault matrix: a link lost during the move can leave the destination's copy
without writes the guest made on the source meanwhile)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from xenwam.migrate.orchestrator import FINISH_SCRIPT

pytestmark = pytest.mark.unit

IN_SYNC = ("version: 8.4.11 (api:1/proto:86-101)\n"
           " 1: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate C r-----\n"
           "    ns:692 nr:448 dw:6380 dr:198 al:10 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n")
PARTED = ("version: 8.4.11 (api:1/proto:86-101)\n"
          " 1: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----\n"
          "    ns:188 nr:0 dw:5316 dr:996 al:10 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n")
LAGGING = IN_SYNC.replace("cs:Connected", "cs:SyncTarget").replace(
    "ds:UpToDate/UpToDate", "ds:Inconsistent/UpToDate")
#: The source's copy comes back after a crash and lags this one: this one is current.
RESYNCING_PEER = IN_SYNC.replace("cs:Connected", "cs:SyncSource").replace(
    "ds:UpToDate/UpToDate", "ds:UpToDate/Inconsistent").replace("oos:0", "oos:4096")

XL = """#!/bin/sh
echo "$@" >> "$LOG"
case "$1" in
  list) printf 'Name ID Mem VCPUs State Time\\n'
        [ $# -eq 1 ] && printf 'Domain-0 0 512 1 r----- 1.0\\n'
        printf 'g1 7 96 1 --p--- 0.0\\n' ;;
  domid) echo 7 ;;
esac
"""


def finish(tmp_path: Path, proc_drbd: str) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("xl", XL), ("xenstore-write", '#!/bin/sh\necho "w $@" >> "$LOG"\n')):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "drbd").write_text(proc_drbd)
    log = tmp_path / "log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log),
           "XENWAM_PROC_DRBD": str(tmp_path / "drbd")}
    res = subprocess.run(["sh", "-c", FINISH_SCRIPT, "xenwam-finish", "g1", "1",
                          "xenwam/network", "1", "address", "10.2.0.11/24"],
                         env=env, capture_output=True, text=True, timeout=60)
    return res, log.read_text()


@pytest.mark.parametrize("proc_drbd", [IN_SYNC, RESYNCING_PEER])
def test_a_current_copy_is_unpaused_after_the_network_is_written(tmp_path: Path,
                                                                 proc_drbd: str) -> None:
    res, log = finish(tmp_path, proc_drbd)
    assert res.returncode == 0 and res.stdout.strip() == "7", res.stderr
    assert "w /local/domain/7/xenwam/network/address 10.2.0.11/24" in log
    assert log.strip().endswith("unpause g1")


@pytest.mark.parametrize("proc_drbd", [PARTED, LAGGING, "version: 8.4.11\n"])
def test_a_pair_not_connected_and_in_sync_is_never_unpaused(tmp_path: Path,
                                                            proc_drbd: str) -> None:
    res, log = finish(tmp_path, proc_drbd)
    assert res.returncode == 4
    assert "DRBD minor 1 is not connected with its disk up to date here" in res.stderr
    assert "unpause" not in log and "w /local" not in log
