"""The guest agent's logic and the xenstore layout it shares with dom0 (no Xen: the store
and the network are in-memory stand-ins; the real ones run in the lab tests)."""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenwam_guest import layout
from xenwam_guest.agent import Agent, arp_announcement, main, run
from xenwam_guest.errors import ApplyError, LayoutError, StoreError
from xenwam_guest.layout import AgentReport, IPInterface, NetworkAssignment, Status

pytestmark = pytest.mark.unit


def assignment(generation: int = 1, address: str | None = "10.2.0.10/24") -> NetworkAssignment:
    return NetworkAssignment(
        address=ipaddress.ip_interface(address) if address else None,
        gateway=ipaddress.ip_address("10.2.0.1"), subnet=ipaddress.ip_network("10.2.0.0/24"),
        migration="20261201T120000-g1-ab12", generation=generation)


class MemoryStore:
    """A guest's xenstore area as a dict; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.down = False
        self.writes: list[tuple[str, str]] = []

    def read(self, path: str) -> str | None:
        if self.down:
            raise StoreError("xenbus: connection reset")
        return self.values.get(path)

    def write(self, path: str, value: str) -> None:
        if self.down:
            raise StoreError("xenbus: connection reset")
        self.values[path] = value
        self.writes.append((path, value))

    def put(self, a: NetworkAssignment) -> None:
        for key, value in a.to_values():
            self.values[f"{layout.NETWORK_DIR}/{key}"] = value

    def report(self) -> AgentReport:
        return AgentReport.parse({k: self.values.get(f"{layout.REPORT_DIR}/{k}")
                                  for k in layout.REPORT_KEYS})


@dataclass
class MemoryNetwork:
    have: list[IPInterface] = field(
        default_factory=lambda: [ipaddress.ip_interface("10.1.0.10/24")])
    gateway: str | None = "10.1.0.1"
    announced: list[str] = field(default_factory=list)
    fail: bool = False

    def addresses(self, interface: str) -> list[IPInterface]:
        return list(self.have)

    def apply(self, interface: str, a: NetworkAssignment) -> bool:
        if self.fail:
            raise ApplyError("netlink refused the change on eth0: (17, 'File exists')")
        assert a.address is not None
        if self.have == [a.address]:
            return False
        self.have = [a.address]
        self.gateway = str(a.gateway)
        return True

    def announce(self, interface: str, address: IPInterface) -> None:
        self.announced.append(str(address))

    def dhcp(self, interface: str) -> None:
        raise ApplyError("dom0 asked for DHCP but the agent has no --dhcp-command")


def make_agent() -> tuple[Agent, MemoryStore, MemoryNetwork]:
    store, net = MemoryStore(), MemoryNetwork()
    ticks = iter(range(1000))
    agent = Agent("eth0", store, net, clock=lambda: next(ticks) * 0.001,
                  wall_clock=lambda: 1_800_000_000.0)
    agent.start()
    return agent, store, net


# ---------------------------------------------------------------- layout

def test_assignment_round_trips_through_its_values() -> None:
    a = assignment(generation=1764590000123)
    values = dict(a.to_values())
    assert [k for k, _ in a.to_values()][-1] == "generation"  # written last
    assert NetworkAssignment.parse(values) == a
    dhcp = assignment(address=None)
    assert dict(dhcp.to_values())["address"] == "dhcp"
    assert NetworkAssignment.parse(dict(dhcp.to_values())).dhcp


@pytest.mark.parametrize(("key", "value", "says"), [
    ("address", "10.2.0.300/24", "address"),
    ("address", "10.2.0.10", "no /PREFIX"),
    ("address", "10.3.0.10/24", "not in subnet"),
    ("address", None, "missing"),
    ("gateway", "10.9.9.1", "not on the guest's link"),
    ("gateway", "10.2.0.10", "the guest's own address"),
    ("gateway", "fe80::1", "different IP versions"),
    ("subnet", "10.2.0.0/33", "subnet"),
    ("generation", "12a", "not a decimal number"),
    ("generation", "-1", "not a decimal number"),
    ("generation", "\u0661\u0662", "not a decimal number"),  # Arabic-Indic digits
    ("migration", "a b", "migration id"),
    ("migration", "x" * 300, "bytes long"),
])
def test_garbage_is_refused_naming_the_key(key: str, value: str | None, says: str) -> None:
    values: dict[str, str | None] = dict(assignment().to_values())
    values[key] = value
    with pytest.raises(LayoutError, match=says):
        NetworkAssignment.parse(values)


@given(st.dictionaries(st.sampled_from(layout.NETWORK_KEYS),
                       st.one_of(st.none(), st.text(max_size=40))))
def test_nothing_but_layout_error_escapes_parse(values: dict[str, str | None]) -> None:
    with contextlib.suppress(LayoutError):
        NetworkAssignment.parse(values)


def test_report_round_trips() -> None:
    r = AgentReport(generation="7", status=Status.APPLIED, address="10.2.0.10/24",
                    message="migration m", took_ms=12, at=1.5)
    assert AgentReport.parse(dict(r.to_values())) == r
    assert [k for k, _ in r.to_values()][-1] == "generation"
    with pytest.raises(LayoutError):
        AgentReport.parse({"generation": "7", "status": "exploded"})


# ---------------------------------------------------------------- the agent

def test_a_new_generation_is_applied_announced_and_reported() -> None:
    agent, store, net = make_agent()
    assert store.values[layout.AGENT_KEY].startswith("xenwam-guest-agent ")
    assert agent.poll() is None  # nothing written yet
    store.put(assignment(generation=5))
    report = agent.poll()
    assert report is not None and report.status is Status.APPLIED
    assert net.have == [ipaddress.ip_interface("10.2.0.10/24")] and net.gateway == "10.2.0.1"
    assert net.announced == ["10.2.0.10/24"]
    assert store.report() == report and report.address == "10.2.0.10/24"
    assert store.writes[-1] == (f"{layout.REPORT_DIR}/generation", "5")  # dom0 waits on it
    assert agent.poll() is None  # the same generation is not applied again


def test_a_moved_guest_announces_itself_again_on_its_new_host() -> None:
    """xl migrate carries none of the guest's data/ area: the key that tells the next
    xenwam migrate an agent runs must come back by itself, and with each answer."""
    store, net = MemoryStore(), MemoryNetwork()
    now = [0.0]
    agent = Agent("eth0", store, net, clock=lambda: now[0], announce_every=10.0)
    agent.start()
    store.values.clear()  # resumed on the new host: an empty data/ area
    now[0] = 5.0
    agent.poll()
    assert layout.AGENT_KEY not in store.values  # checked at most every 10 s
    now[0] = 10.5
    agent.poll()
    assert store.values[layout.AGENT_KEY].startswith("xenwam-guest-agent ")
    store.values.clear()
    store.put(assignment(generation=8))  # xenwam migrate's new network, at once
    now[0] = 11.0
    assert agent.poll() is not None
    assert store.values[layout.AGENT_KEY].startswith("xenwam-guest-agent ")


def test_polls_slowly_until_a_link_event_then_fast_for_a_while() -> None:
    agent, _store, _net = make_agent()
    now = [0.0]
    pauses: list[float] = []
    events = {3}  # the guest's link changes during the fourth wait

    def wait(timeout: float) -> bool:
        pauses.append(timeout)
        now[0] += timeout
        return len(pauses) - 1 in events

    run(agent, 0.1, idle_interval=1.0, fast_for=0.45, wait=wait, clock=lambda: now[0],
        keep_going=lambda: len(pauses) < 12)
    assert pauses == [1.0] * 4 + [0.1] * 5 + [1.0] * 3


def test_rewritten_twice_each_generation_is_answered_in_order() -> None:
    agent, store, net = make_agent()
    store.put(assignment(generation=1, address="10.2.0.10/24"))
    first = agent.poll()
    store.put(assignment(generation=2, address="10.2.0.11/24"))
    second = agent.poll()
    assert first is not None and second is not None
    assert (first.generation, second.generation) == ("1", "2")
    assert net.have == [ipaddress.ip_interface("10.2.0.11/24")]
    store.put(assignment(generation=3, address="10.2.0.11/24"))
    third = agent.poll()
    assert third is not None and third.status is Status.UNCHANGED


def test_garbage_is_reported_and_the_address_left_alone() -> None:
    agent, store, net = make_agent()
    store.put(assignment(generation=9))
    store.values[f"{layout.NETWORK_DIR}/address"] = "\x00\xffnot an address"
    report = agent.poll()
    assert report is not None and report.status is Status.ERROR
    assert "address" in report.message
    assert net.have == [ipaddress.ip_interface("10.1.0.10/24")] and not net.announced
    assert store.report().address == "10.1.0.10/24"


def test_a_refused_change_is_reported() -> None:
    agent, store, net = make_agent()
    net.fail = True
    store.put(assignment(generation=4))
    report = agent.poll()
    assert report is not None and report.status is Status.ERROR
    assert "File exists" in report.message


def test_an_agent_restart_does_not_reapply_an_answered_generation() -> None:
    agent, store, net = make_agent()
    store.put(assignment(generation=4))
    agent.poll()
    again = Agent("eth0", store, net)
    again.start()
    assert again.poll() is None
    store.put(assignment(generation=5, address="10.2.0.12/24"))
    report = again.poll()
    assert report is not None and report.generation == "5"


def test_xenstore_gone_after_resume_is_retried_until_it_answers() -> None:
    agent, store, _ = make_agent()
    store.put(assignment(generation=3))
    store.down = True
    reconnects: list[int] = []
    rounds = iter(range(6))

    def keep_going() -> bool:
        n = next(rounds, None)
        if n == 3:
            store.down = False  # xenstored is back
        return n is not None

    run(agent, 0.1, sleep=lambda s: None, reconnect=lambda: reconnects.append(1),
        keep_going=keep_going)
    assert len(reconnects) == 3
    assert store.report().status is Status.APPLIED


def test_dhcp_without_a_command_is_an_error_report() -> None:
    agent, store, _ = make_agent()
    store.put(assignment(generation=2, address=None))
    report = agent.poll()
    assert report is not None and report.status is Status.ERROR
    assert "--dhcp-command" in report.message


def test_arp_announcement_is_rfc5227_shaped() -> None:
    mac = bytes.fromhex("00163e000001")
    frame = arp_announcement(mac, ipaddress.IPv4Address("10.2.0.10"))
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == mac
    assert frame[28:32] == frame[38:42] == bytes([10, 2, 0, 10])  # sender == target
    with pytest.raises(ValueError):
        arp_announcement(b"\x00" * 5, ipaddress.IPv4Address("10.2.0.10"))


@pytest.mark.parametrize("argv", [["--interval", "0"], ["--interface", "a/b"],
                                  ["--bogus"], ["--xenbus", "/nonexistent/xenbus"]])
def test_bad_arguments_get_one_line_and_exit_2(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
