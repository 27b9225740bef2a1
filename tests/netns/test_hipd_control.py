"""hipd's control socket under hostile or careless clients (issue 11, items 2, 4 and 5).

One real hipd in a throwaway namespace; the test talks to its socket directly, the way a
broken or hostile local client would, and checks that every such client costs one
answer line at most, that hipd keeps answering others, that it never logs a traceback,
and how it treats whatever it finds at its socket path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xenwam.netns import Netns, NetnsSet

from .procs import stop, wait_for

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
PEER_HIT = "2001:2a::7"


@dataclass
class OneHipd:
    """A namespace with one address, a key, and the hipd processes the test starts."""

    ns: Netns
    work: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def sock(self) -> Path:
        return self.work / "hipd.sock"

    def start(self, name: str = "hipd") -> subprocess.Popen[bytes]:
        with (self.work / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns.name, sys.executable, "-m", "hip.daemon",
                 "--config-dir", str(self.work / "cfg"), "--socket", str(self.sock),
                 "--state-dir", str(self.work / "state"), "--data-plane", "userspace", "-v"],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=ENV)
        self.procs.append(proc)
        return proc

    def log(self, name: str = "hipd") -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        wait_for(lambda: "hipd ready" in self.log() or proc.poll() is not None, 20, "hipd")
        assert proc.poll() is None, self.log()

    def ask(self, payload: bytes, *, timeout: float = 20.0) -> bytes:
        """Send ``payload`` on a new connection; everything hipd answers until it closes."""
        from hip.daemon.control import connect_unix

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            connect_unix(client, str(self.sock), time.monotonic() + timeout)  # hipctl's way
            client.sendall(payload)
            return read_all(client)

    def answer(self, payload: bytes) -> dict[str, object]:
        return dict(json.loads(self.ask(payload)))


def read_all(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def one_hipd(netns: NetnsSet, tmp_path: Path) -> Iterator[OneHipd]:
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun: the userspace data plane needs the tun driver")
    ns, other = netns.add("h"), netns.add("o")
    ifname, _ = netns.link(ns, other)
    ns.ip("addr", "add", "10.9.0.1/24", "dev", ifname)
    subprocess.run([sys.executable, "-m", "hip.ctl", "keygen", "--config-dir",
                    str(tmp_path / "cfg")], check=True, capture_output=True, cwd=REPO, env=ENV)
    setup = OneHipd(ns, tmp_path)
    try:
        yield setup
    finally:
        for proc in reversed(setup.procs):
            stop(proc)
        print(f"--- hipd log tail ---\n{setup.log()[-3000:]}")


def test_bad_input_gets_one_line_and_no_traceback(one_hipd: OneHipd) -> None:
    lab = one_hipd
    lab.wait_ready(lab.start())
    # A line over 64 KiB: one error line (the StreamReader's limit raised before).
    reply = lab.answer(b'{"command": "show", "args": {"x": "' + b"a" * 70_000 + b'"}}\n')
    assert reply == {"ok": False, "error": "request too long: over 65536 bytes"}
    # JSON nested deeper than the decoder's recursion limit.
    reply = lab.answer(b"[" * 20_000 + b"]" * 20_000 + b"\n")
    assert reply["ok"] is False and "nested too deeply" in str(reply["error"])
    # Early disconnects: in the middle of a request, and before sending anything.
    for payload in (b'{"command": "sh', b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(lab.sock))
            client.sendall(payload)
    # `connect` to places no single peer can be.
    for locator, what in (("224.0.0.1", "multicast"), ("::1", "loopback"),
                          ("255.255.255.255", "broadcast"), ("0.0.0.0", "unspecified")):
        request = {"command": "connect", "args": {"peer": PEER_HIT, "locator": locator}}
        reply = lab.answer(json.dumps(request).encode() + b"\n")
        assert reply["ok"] is False and f"is a {what} address" in str(reply["error"]), reply
    # hipd still answers, and said nothing more than a line for any of it.
    assert lab.answer(b'{"command": "show"}\n')["ok"] is True
    log = lab.log()
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]
    assert "I1" not in log  # no base exchange was started towards any of those


def test_idle_and_surplus_clients_cost_hipd_nothing_lasting(one_hipd: OneHipd) -> None:
    from hip.daemon.control_server import BACKLOG, MAX_CLIENTS, REQUEST_TIMEOUT

    lab = one_hipd
    proc = lab.start()
    lab.wait_ready(proc)
    fds = Path(f"/proc/{proc.pid}/fd")  # `ip netns exec` execs hipd: same pid
    before = len(list(fds.iterdir()))
    clients, connected = [], []
    try:
        started = time.monotonic()
        for _ in range(MAX_CLIENTS + BACKLOG + 50):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            clients.append(client)
            try:
                client.connect(str(lab.sock))
            except OSError:  # the backlog is full: refused at once
                continue
            connected.append(client)
            time.sleep(0.005)  # let hipd take what it will
        assert len(connected) >= MAX_CLIENTS
        # Silent clients hold at most MAX_CLIENTS of hipd's descriptors; the rest wait in
        # the kernel's backlog or were refused.
        assert len(list(fds.iterdir())) <= before + MAX_CLIENTS + 2
        # A real request waits its turn and is answered once silent ones are dropped.
        asked = time.monotonic()
        assert lab.answer(b'{"command": "show"}\n')["ok"] is True
        waited = time.monotonic() - asked
        assert REQUEST_TIMEOUT - 1 < waited < 3 * REQUEST_TIMEOUT, waited
        # The first silent clients were told off once their time was up.
        time.sleep(max(0.0, started + REQUEST_TIMEOUT + 1 - time.monotonic()))
        answers = []
        for client in connected[:MAX_CLIENTS]:
            client.setblocking(True)
            client.settimeout(2.0)
            answers.append(json.loads(read_all(client)))
        assert all(a == {"ok": False, "error": f"no request within {REQUEST_TIMEOUT:g} s"}
                   for a in answers), answers
    finally:
        for client in clients:
            client.close()
    assert lab.answer(b'{"command": "show"}\n')["ok"] is True
    assert "Traceback" not in lab.log()


def test_socket_path_is_never_taken_from_a_file_or_another_hipd(one_hipd: OneHipd) -> None:
    lab = one_hipd
    # A regular file at the path: left alone, hipd refuses with one line.
    lab.sock.write_text("precious\n")
    proc = lab.start()
    assert proc.wait(timeout=20) == 1
    assert lab.sock.read_text() == "precious\n"
    assert "exists and is not a socket" in lab.log() and "Traceback" not in lab.log()
    lab.sock.unlink()
    # A stale socket (its hipd died without removing it): removed, and hipd starts.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(lab.sock))
    stale.close()
    first = lab.start()
    lab.wait_ready(first)
    assert "removing the stale control socket" in lab.log()
    # A second hipd on the same path: refuses, and the first keeps its socket.
    second = lab.start("second")
    assert second.wait(timeout=20) == 1
    assert "another hipd answers on" in lab.log("second")
    assert lab.answer(b'{"command": "show"}\n')["ok"] is True
    stop(first)
    assert not lab.sock.exists()  # the first removed its own socket on the way out
