"""hipd across the QEMU Xen lab: the kernel ESP data plane (XFRM BEET) in dom0 a talks
to the userspace data plane in the correspondent's namespace on this host, whose kernel
has no ESP.  Real ESP in both directions between the two implementations.

hipd in dom0 runs from the source tree the lab shares at /opt/xenwam, with Debian's
python3-cryptography and python3-pyroute2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xenwam.lab.config import correspondent_address, link_address

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
DOM0_PY = ("env", "PYTHONPATH=/opt/xenwam", "python3")
DOM0_DIR = "/tmp/xwt-hipd"


@pytest.fixture
def hipd_pair(lab: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """hipd (kernel data plane) in dom0 a, hipd (userspace) in the correspondent."""
    corr = lab.correspondent()
    a_loc, c_loc = str(link_address("a").ip), str(correspondent_address().ip)
    lab.exec("a", ["rm", "-rf", DOM0_DIR])
    hit_a = json.loads(lab.exec("a", [*DOM0_PY, "-m", "hip.ctl", "keygen", "--json",
                                      "--config-dir", DOM0_DIR]).stdout)["hit"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cfg_c = tmp_path / "corr"
    hit_c = json.loads(subprocess.run(
        [sys.executable, "-m", "hip.ctl", "keygen", "--json", "--config-dir", str(cfg_c)],
        check=True, capture_output=True, text=True, env=env).stdout)["hit"]
    lab.exec("a", [*DOM0_PY, "-m", "hip.ctl", "peer", "add", "corr", hit_c, c_loc,
                   "--config-dir", DOM0_DIR])
    subprocess.run([sys.executable, "-m", "hip.ctl", "peer", "add", "dom0a", hit_a, a_loc,
                    "--config-dir", str(cfg_c)], check=True, capture_output=True, env=env)
    dom0_pid = lab.exec("a", ["sh", "-c",
        f"cd / && env PYTHONPATH=/opt/xenwam nohup python3 -m hip.daemon -v "
        f"--config-dir {DOM0_DIR} --socket {DOM0_DIR}/hipd.sock --data-plane kernel "
        f"--locator {a_loc} > {DOM0_DIR}/hipd.log 2>&1 < /dev/null & echo $!"]).stdout.strip()
    log_c = (tmp_path / "hipd-corr.log").open("wb")
    corr_hipd = subprocess.Popen(
        ["ip", "netns", "exec", corr.name, sys.executable, "-m", "hip.daemon", "-v",
         "--config-dir", str(cfg_c), "--socket", str(tmp_path / "corr.sock"),
         "--data-plane", "userspace", "--locator", c_loc, "--tun", "xwthip0"],
        stdout=log_c, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up_a = lab.exec("a", ["test", "-S", f"{DOM0_DIR}/hipd.sock"], check=False).ok
            if up_a and (tmp_path / "corr.sock").exists():
                break
            time.sleep(0.5)
        else:
            pytest.fail("hipd did not start: dom0 log:\n"
                        + lab.exec("a", ["cat", f"{DOM0_DIR}/hipd.log"], check=False).stdout
                        + "\ncorrespondent log:\n" + (tmp_path / "hipd-corr.log").read_text())
        yield {"corr": corr, "hit_a": hit_a, "hit_c": hit_c, "sock_c": tmp_path / "corr.sock"}
    finally:
        lab.exec("a", ["kill", dom0_pid], check=False)
        print("--- dom0 a hipd log ---\n"
              + lab.exec("a", ["cat", f"{DOM0_DIR}/hipd.log"], check=False).stdout[-3000:])
        if corr_hipd.poll() is None:
            corr_hipd.terminate()
            corr_hipd.wait(timeout=10)
        log_c.close()
        print("--- correspondent hipd log ---\n"
              + (tmp_path / "hipd-corr.log").read_text(errors="replace")[-3000:])


def test_kernel_dom0_and_userspace_correspondent_exchange_esp(
    lab: Any, hipd_pair: dict[str, Any]
) -> None:
    corr, hit_a, hit_c = hipd_pair["corr"], hipd_pair["hit_a"], hipd_pair["hit_c"]
    # Correspondent -> dom0: the first ping waits in the userspace queue for the base
    # exchange; the replies come back through dom0's kernel ESP.
    res = corr.run(["ping", "-c", "5", "-i", "0.5", "-W", "5", hit_a], check=False, timeout=60)
    print(res.stdout)
    assert res.ok and " 0% packet loss" in res.stdout, res.stdout + res.stderr
    # dom0 -> correspondent, started by the kernel side this time.
    res = lab.exec("a", ["ping", "-c", "3", "-W", "5", hit_c], check=False, timeout=60)
    assert res.ok, res.stdout + res.stderr
    states = lab.exec("a", ["ip", "-s", "xfrm", "state"]).stdout
    print(states)
    assert states.count("mode beet") == 2
    # Both kernel states carried the pings: 8 packets each way (5 + 3 echo requests and
    # replies), and the kernel rejected none of the userspace end's packets.
    counts = [int(m) for m in re.findall(r"\(bytes\), (\d+)\(packets\)", states)]
    assert len(counts) == 2 and min(counts) >= 8, counts
    assert re.findall(r"replay \d+ failed (\d+)", states) == ["0", "0"]
    show = json.loads(corr.run([sys.executable, "-m", "hip.ctl", "show", "--json",
                                "--socket", str(hipd_pair["sock_c"])]).stdout)
    esp = show["associations"][0]["esp"]
    received = sum(r["packets"] for r in esp["received"])
    assert esp["sent"]["packets"] >= 8 and received >= 8
    assert all(not r["dropped"] for r in esp["received"])
