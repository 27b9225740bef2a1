"""hipd's event journal, its ``events`` control command, and hipctl events / wait-rebound."""

from __future__ import annotations

import asyncio
import io
import json
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from hip.ctl import run
from hip.daemon.control import ControlRequest
from hip.daemon.eventlog import EventJournal, event_fields
from hip.daemon.hipd import DaemonOptions, Hipd
from hip.errors import DaemonError
from hip.events import (
    LocatorVerified,
    Mover,
    PacketDropped,
    Rebound,
    SAChangeReason,
    SecurityAssociationsChanged,
)
from hip.hosts import HostsFile
from hip.identity import HostIdentity
from hip.random import SeededRandom

pytestmark = pytest.mark.unit

OUR, PEER, OTHER = (IPv6Address("2001:2a::1"), IPv6Address("2001:2a::2"),
                    IPv6Address("2001:2a::3"))
L1, L2 = IPv4Address("10.1.0.2"), IPv4Address("10.3.0.2")
KEY = bytes(range(32))


def _rebound(peer: IPv6Address = PEER) -> Rebound:
    return Rebound(OUR, peer, Mover.LOCAL, L1, L2)


def _sa_changed() -> SecurityAssociationsChanged:
    return SecurityAssociationsChanged(OUR, PEER, SAChangeReason.LOCAL_MOVED, 9, 0x11, 0x22,
                                       KEY, KEY, KEY, KEY, L1, L2, (L1,), (L2,))


def test_journal_records_events_without_keys_or_drops() -> None:
    journal = EventJournal()
    assert journal.append(PacketDropped("bad HIP_MAC"), 1.0) is None
    sa = journal.append(_sa_changed(), 2.0)
    rebound = journal.append(_rebound(), 3.0)
    assert sa is not None and rebound is not None
    assert (sa.id, rebound.id, journal.last_id) == (1, 2, 2)
    text = json.dumps(sa.as_dict())
    assert KEY.hex() not in text and "enc_key" not in text and "auth_key" not in text
    assert sa.fields["spi_in"] == 0x11 and sa.fields["reason"] == "our locator changed"
    assert rebound.as_dict() == {
        "id": 2, "time": 3.0, "event": "Rebound", "our_hit": str(OUR), "peer_hit": str(PEER),
        "mover": "we moved", "local_locator": "10.1.0.2", "peer_locator": "10.3.0.2"}
    with pytest.raises(DaemonError):
        event_fields("not an event")


def test_journal_filters_and_reports_what_it_forgot() -> None:
    journal = EventJournal(capacity=3)
    journal.append(_rebound(), 1.0)
    journal.append(LocatorVerified(OUR, PEER, L2), 2.0)
    journal.append(_rebound(OTHER), 3.0)
    records, lost = journal.after(0, names=["Rebound"])
    assert [r.id for r in records] == [1, 3] and lost == 0
    records, _ = journal.after(0, peer_hit=str(OTHER))
    assert [r.id for r in records] == [3]
    assert journal.after(3) == ([], 0)
    journal.append(_rebound(), 4.0)  # id 1 falls out
    records, lost = journal.after(0)
    assert [r.id for r in records] == [2, 3, 4] and lost == 1
    with pytest.raises(DaemonError):
        EventJournal(capacity=0)


def _hipd() -> Hipd:
    identity = HostIdentity.generate("ed25519", SeededRandom(b"eventlog"))
    hipd = Hipd(DaemonOptions(), identity, HostsFile())
    hipd.wall_clock = lambda: 1000.0
    return hipd


def test_events_command_waits_for_the_next_event_and_filters() -> None:
    async def scenario() -> None:
        hipd = _hipd()
        hipd._journal(_rebound(OTHER))  # before the request: not "to come"
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending = asyncio.ensure_future(hipd.handle_control(ControlRequest(
            "events", {"names": ["Rebound"], "peer": str(PEER), "wait": 5})))
        await asyncio.sleep(0.05)
        hipd._journal(LocatorVerified(OUR, PEER, L2))  # another name: still waiting
        hipd._journal(_rebound(OTHER))  # another peer: still waiting
        await asyncio.sleep(0.05)
        assert not pending.done()
        hipd._journal(_rebound(PEER))
        reply: Any = await asyncio.wait_for(pending, 1.0)
        assert [e["event"] for e in reply["events"]] == ["Rebound"]
        assert reply["events"][0]["peer_hit"] == str(PEER) and reply["last"] == 4
        assert loop.time() - start < 1.0
        # Nothing new: an empty answer once the wait is over; everything from id 0.
        empty: Any = await hipd.handle_control(ControlRequest("events", {"wait": 0.05}))
        assert empty["events"] == [] and empty["last"] == 4
        every: Any = await hipd.handle_control(ControlRequest("events", {"after": 0}))
        assert [e["id"] for e in every["events"]] == [1, 2, 3, 4]
        with pytest.raises(DaemonError, match="wait"):
            await hipd.handle_control(ControlRequest("events", {"wait": 3600}))
        with pytest.raises(DaemonError, match="names"):
            await hipd.handle_control(ControlRequest("events", {"names": "Rebound"}))

    asyncio.run(scenario())


class ScriptedHipd:
    """Answers ``events`` requests from a script of replies, recording the requests."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies, self.requests = replies, []  # type: ignore[var-annotated]

    def __call__(self, request: ControlRequest, socket_path: str) -> Any:
        self.requests.append(request)
        if self.replies:
            return self.replies.pop(0)
        return {"events": [], "lost": 0, "last": 9}


REBOUND_RECORD = {"id": 8, "time": 1000.0, "event": "Rebound", "our_hit": str(OUR),
                  "peer_hit": str(PEER), "mover": "we moved", "local_locator": "10.1.0.2",
                  "peer_locator": "10.3.0.2"}


def _run(argv: list[str], caller: ScriptedHipd) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(argv, out=out, err=err, caller=caller)
    return status, out.getvalue(), err.getvalue()


def test_wait_rebound_asks_again_from_the_last_id_until_the_event() -> None:
    hipd = ScriptedHipd([{"events": [], "lost": 0, "last": 7},
                         {"events": [REBOUND_RECORD], "lost": 0, "last": 8}])
    status, out, err = _run(["wait-rebound", "--peer", str(PEER), "--timeout", "10", "--json"],
                            hipd)
    assert status == 0 and not err
    assert json.loads(out) == REBOUND_RECORD
    first, second = (r.args for r in hipd.requests)
    assert "after" not in first  # only rebindings to come
    assert first["names"] == ["Rebound"] and first["peer"] == str(PEER)
    assert second["after"] == 7 and 0 < second["wait"] <= 5.0


def test_wait_rebound_times_out_with_exit_1_and_one_line() -> None:
    status, out, err = _run(["wait-rebound", "--timeout", "0"], ScriptedHipd([]))
    assert status == 1 and out == ""
    assert err.startswith("hipctl: no rebinding reported within 0 s") and err.count("\n") == 1

def test_wait_rebound_refuses_a_negative_timeout(capsys) -> None:
    status, _, _ = _run(["wait-rebound", "--timeout", "-1"], ScriptedHipd([]))
    assert status == 2 and "0-86400" in capsys.readouterr().err  # argparse writes to stderr


def test_events_print_json_lines() -> None:
    other = {**REBOUND_RECORD, "id": 9, "event": "LocatorVerified", "locator": "10.3.0.2"}
    del other["mover"]
    hipd = ScriptedHipd([{"events": [REBOUND_RECORD, other], "lost": 0, "last": 9}])
    status, out, _ = _run(["events", "--json"], hipd)
    assert status == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == [8, 9]
    assert hipd.requests[0].args == {"after": 0, "names": [], "peer": None, "wait": 0.0}
    status, out, _ = _run(["events"], ScriptedHipd([{"events": [REBOUND_RECORD], "last": 8}]))
    assert status == 0 and "Rebound peer 2001:2a::2 mover=we moved" in out
