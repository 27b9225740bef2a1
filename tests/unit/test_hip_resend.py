"""Sending again after a move what the peer may have missed (issue 10, finding 6).

The pure part: :class:`hip.dataplane.resend.ResendBuffer` (what is kept, how much, what
is due) and :class:`hip.dataplane.userspace.EspEngine` (re-encapsulation with new
sequence numbers when a locator changes).  Two engines are wired together in memory;
the clock is a variable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hip.ctl import render_show
from hip.daemon.hipd import build_parser
from hip.dataplane.esp import ESP_HEADER, build_inner
from hip.dataplane.resend import (
    NO_RESEND,
    ResendBounds,
    ResendBuffer,
    worth_resending,
)
from hip.dataplane.userspace import EspDatagram, EspEngine, static_sa
from hip.errors import DataPlaneError

pytestmark = pytest.mark.unit

HIT_M = IPv6Address("2001:2a::111")
HIT_C = IPv6Address("2001:2a::222")
LOC_M, LOC_C = IPv4Address("10.1.0.2"), IPv4Address("10.3.0.3")
LOC_M_NEW, LOC_C_NEW = IPv4Address("10.2.0.2"), IPv4Address("10.1.0.3")

#: TCP header without options: ports, seq, ack, data offset, flags, window, checksum, urg.
TCP = struct.Struct("!HHIIBBHHH")
ACK, PSH, SYN, FIN, RST = 0x10, 0x08, 0x02, 0x01, 0x04


def segment(seq: int, data: bytes = b"", flags: int = ACK | PSH,
            src: IPv6Address = HIT_C, dst: IPv6Address = HIT_M) -> bytes:
    """An inner IPv6 packet carrying a TCP segment (checksum not computed: not read)."""
    header = TCP.pack(40000, 7000, seq, 1, 5 << 4, flags, 65535, 0, 0)
    return build_inner(src, dst, 6, header + data)


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Pair:
    """C (the correspondent, sending) and M (the peer that moves), wired in memory."""

    clock: Clock = field(default_factory=Clock)
    bounds: ResendBounds = field(default_factory=ResendBounds)
    c: EspEngine = field(init=False)
    m: EspEngine = field(init=False)

    def __post_init__(self) -> None:
        self.c = EspEngine(clock=self.clock, resend=self.bounds)
        self.m = EspEngine(clock=self.clock)
        self.c.install(static_sa(HIT_C, HIT_M, LOC_C, LOC_M, "k"))
        self.m.install(static_sa(HIT_M, HIT_C, LOC_M, LOC_C, "k"))

    def send(self, inner: bytes, at: float) -> EspDatagram:
        """C sends ``inner`` at ``at`` (whether it arrives is the caller's business)."""
        self.clock.now = at
        out = self.c.encapsulate(inner)
        assert isinstance(out, EspDatagram)
        return out

    def reply(self, at: float, src: IPv4Address = LOC_M) -> None:
        """M answers; C authenticates the answer at ``at``, from ``src``."""
        out = self.m.encapsulate(segment(1, b"ack", src=HIT_M, dst=HIT_C))
        assert isinstance(out, EspDatagram)
        self.clock.now = at
        assert self.c.decapsulate(out.data, src) is not None

    def move(self, at: float, own: IPv4Address = LOC_C,
             peer: IPv4Address = LOC_M_NEW) -> list[EspDatagram]:
        self.clock.now = at
        return self.c.update_locators(HIT_M, own, peer)

    def delivered(self, datagrams: list[EspDatagram]) -> list[bytes]:
        """What M makes of ``datagrams`` (each must authenticate and pass anti-replay)."""
        inners = [self.m.decapsulate(d.data) for d in datagrams]
        assert None not in inners
        return [i for i in inners if i is not None]


def seq_of(datagram: EspDatagram) -> int:
    return int(ESP_HEADER.unpack_from(datagram.data)[1])


# -- what is worth sending again -------------------------------------------------------
def test_only_segments_tcp_would_retransmit_are_kept() -> None:
    assert worth_resending(segment(1, b"data"))
    assert worth_resending(segment(1, flags=SYN))
    assert worth_resending(segment(1, flags=FIN | ACK))
    assert not worth_resending(segment(1))  # a pure ACK
    assert not worth_resending(segment(1, flags=RST))
    assert not worth_resending(build_inner(HIT_C, HIT_M, 17, bytes(30)))  # UDP
    assert not worth_resending(build_inner(HIT_C, HIT_M, 6, b"segment"))  # no TCP header
    bad_offset = bytearray(segment(1, b"data"))
    bad_offset[40 + 12] = 4 << 4  # data offset 16 bytes: below the minimum
    assert not worth_resending(bytes(bad_offset))
    bad_offset[40 + 12] = 15 << 4  # 60 bytes: beyond the segment
    assert not worth_resending(bytes(bad_offset))


def test_bounds_are_checked() -> None:
    with pytest.raises(DataPlaneError, match=r"must not be negative.*packets=0"):
        ResendBounds(packets=-1)
    with pytest.raises(DataPlaneError):
        ResendBounds(max_age=float("nan"))
    assert not NO_RESEND.enabled and ResendBounds().enabled


@given(sizes=st.lists(st.integers(0, 3000), max_size=120),
       packets=st.integers(0, 40), nbytes=st.integers(0, 20000))
def test_buffer_keeps_the_newest_within_count_and_bytes(
        sizes: list[int], packets: int, nbytes: int) -> None:
    bounds = ResendBounds(packets=packets, bytes=nbytes)
    buffer = ResendBuffer(bounds)
    sent = [segment(i, b"x" * n) for i, n in enumerate(sizes)]
    kept = [p for t, p in enumerate(sent) if buffer.record(p, float(t))]
    held = [p.inner for p in buffer.packets]
    assert len(held) <= packets and buffer.size <= nbytes
    assert buffer.size == sum(map(len, held))
    # What is held is the newest of what was kept, in order, and as much of it as fits.
    assert held == kept[len(kept) - len(held):]
    if len(held) < len(kept):
        dropped = kept[len(kept) - len(held) - 1]
        assert len(held) == packets or buffer.size + len(dropped) > nbytes
    assert all(len(p) <= nbytes for p in kept)
    assert not bounds.enabled or kept == [p for p in sent if len(p) <= nbytes and
                                          worth_resending(p)]


def test_default_bounds_hold_32_packets_and_64_kib() -> None:
    buffer = ResendBuffer()
    for i in range(40):
        buffer.record(segment(i, b"d"), float(i))
    assert len(buffer.packets) == 32
    assert buffer.packets[0].at == 8.0  # the first 8 made room
    big = ResendBuffer()  # 32 segments of 3040 bytes would be 95 KiB
    for i in range(32):
        big.record(segment(i, bytes(3000)), float(i))
    assert big.size <= 64 * 1024 and len(big.packets) == (64 * 1024) // 3040 == 21


# -- the engine: what goes out again after a move ---------------------------------------
def test_only_what_was_sent_after_the_peer_was_last_heard_is_resent() -> None:
    pair = Pair()
    early = [segment(1, b"one"), segment(4, b"two")]
    late = [segment(7, b"three"), segment(12, b"four")]
    pair.delivered([pair.send(p, at) for p, at in zip(early, (101.0, 102.0), strict=True)])
    pair.reply(103.0)
    for p, at in zip(late, (104.0, 105.0), strict=True):
        pair.send(p, at)  # lost: M is paused
    resent = pair.move(120.0)
    assert pair.delivered(resent) == late
    assert all(d.dst == LOC_M_NEW and d.src == LOC_C for d in resent)
    assert pair.c.counters()["resent_after_move"] == {str(HIT_M): 2}
    assert pair.move(121.0, peer=LOC_M) == []  # the buffer was emptied


def test_nothing_heard_yet_means_everything_kept_is_due() -> None:
    pair = Pair()
    sent = [segment(i, b"data") for i in range(3)]
    for i, p in enumerate(sent):
        pair.send(p, 101.0 + i)
    assert pair.delivered(pair.move(110.0)) == sent


def test_packets_older_than_the_age_bound_are_not_resent() -> None:
    pair = Pair(bounds=ResendBounds(max_age=60.0))
    old, young = segment(1, b"old"), segment(2, b"young")
    pair.send(old, 100.0)
    pair.send(young, 141.0)
    assert pair.delivered(pair.move(201.0)) == [young]  # 101 s and 60 s old


def test_nothing_is_resent_while_the_locators_stay() -> None:
    pair = Pair()
    lost = segment(1, b"lost")
    pair.send(lost, 101.0)
    assert pair.c.update_locators(HIT_M, LOC_C, LOC_M) == []
    assert pair.c.counters()["resent_after_move"] == {}
    # ... and it is still kept for a real move.
    assert pair.delivered(pair.move(102.0)) == [lost]


def test_our_own_move_resends_too() -> None:
    pair = Pair()
    lost = segment(1, b"lost")
    pair.send(lost, 101.0)
    resent = pair.move(102.0, own=LOC_C_NEW, peer=LOC_M)
    assert [d.src for d in resent] == [LOC_C_NEW]
    assert pair.delivered(resent) == [lost]


def test_hearing_the_peer_from_another_locator_is_not_hearing_it() -> None:
    """After its move the peer may talk from its new address before we rebind: that
    says nothing about our packets to its old address, which were lost."""
    pair = Pair()
    lost = segment(1, b"lost")
    pair.send(lost, 101.0)
    pair.reply(102.0, src=LOC_M_NEW)
    assert pair.delivered(pair.move(103.0)) == [lost]
    pair.send(lost, 104.0)
    pair.reply(105.0, src=LOC_M_NEW)  # LOC_M_NEW is the locator we send to now
    assert pair.move(106.0, peer=LOC_M) == []


def test_pure_acks_and_other_protocols_are_not_resent() -> None:
    pair = Pair()
    pair.send(segment(1), 101.0)
    pair.send(build_inner(HIT_C, HIT_M, 58, b"\x80\x00" + bytes(10)), 102.0)  # ICMPv6 echo
    assert pair.move(103.0) == []


def test_no_resend_turns_it_off() -> None:
    pair = Pair(bounds=NO_RESEND)
    pair.send(segment(1, b"lost"), 101.0)
    assert pair.move(102.0) == []
    assert not pair.c.peers[HIT_M].sent.packets


def test_order_is_kept_and_sequence_numbers_are_new() -> None:
    pair = Pair()
    sent = [segment(i, bytes([i]) * 10) for i in range(10)]
    first = [pair.send(p, 150.0 + i) for i, p in enumerate(sent)]
    resent = pair.move(200.0)
    assert pair.delivered(resent) == sent
    assert [seq_of(d) for d in first + resent] == list(range(1, 21))


#: Steps of the property test: C sends a data segment, M answers (C hears it), or one
#: end moves to the other of its two locators.
STEPS = st.lists(st.sampled_from(["send", "send", "send", "reply", "move-peer", "move-own"]),
                 max_size=80)


@settings(max_examples=150)
@given(steps=STEPS, packets=st.integers(1, 40))
def test_sequence_numbers_strictly_increase_and_are_never_reused(
        steps: list[str], packets: int) -> None:
    pair = Pair(bounds=ResendBounds(packets=packets))
    peer_locators, own_locators = [LOC_M, LOC_M_NEW], [LOC_C, LOC_C_NEW]
    emitted: list[EspDatagram] = []
    unheard: list[bytes] = []  # sent since M was last heard, in order
    now = 100.0
    for n, step in enumerate(steps):
        now += 1.0
        if step == "send":
            inner = segment(n, b"data")
            emitted.append(pair.send(inner, now))
            unheard.append(inner)
        elif step == "reply":
            pair.reply(now, src=peer_locators[0])
            unheard.clear()
        else:
            locators = peer_locators if step == "move-peer" else own_locators
            locators.reverse()
            resent = pair.move(now, own=own_locators[0], peer=peer_locators[0])
            assert pair.delivered(resent) == unheard[-packets:]
            emitted += resent
            unheard.clear()
    seqs = [seq_of(d) for d in emitted]
    assert seqs == list(range(1, len(seqs) + 1))
    spis = {ESP_HEADER.unpack_from(d.data)[0] for d in emitted}
    assert spis <= {pair.c.peers[HIT_M].outbound.spi}


def test_a_reinstall_with_the_same_spis_goes_on_counting_and_resends_on_a_move() -> None:
    """hipd re-installs the same SAs when only their encapsulation changed: sequence
    numbers must go on (the peer's anti-replay window is ahead) and the move counts."""
    pair = Pair()
    pair.delivered([pair.send(segment(1, b"a"), 101.0)])
    pair.reply(101.5)
    lost = segment(2, b"lost")
    pair.send(lost, 102.0)
    resent = pair.c.install(static_sa(HIT_C, HIT_M, LOC_C, LOC_M_NEW, "k"))
    assert [seq_of(d) for d in resent] == [3]
    assert pair.delivered(resent) == [lost]
    assert pair.c.install(static_sa(HIT_C, HIT_M, LOC_C, LOC_M_NEW, "k")) == []  # no move
    after = pair.send(segment(3, b"b"), 103.0)
    assert seq_of(after) == 4 and pair.delivered([after])


def test_a_rekey_keeps_what_the_peer_may_have_missed() -> None:
    pair = Pair()
    lost = segment(1, b"lost")
    pair.send(lost, 101.0)
    rekeyed = static_sa(HIT_C, HIT_M, LOC_C, LOC_M, "rekey")
    assert pair.c.install(rekeyed) == []  # same locators: not a move
    pair.m.install(static_sa(HIT_M, HIT_C, LOC_M, LOC_C, "rekey"))
    resent = pair.move(102.0)
    assert [seq_of(d) for d in resent] == [1]  # the new SA's first number
    assert pair.delivered(resent) == [lost]


def test_hipd_option_turns_it_off() -> None:
    assert build_parser().parse_args([]).resend_after_move is True
    assert build_parser().parse_args(["--no-resend-after-move"]).resend_after_move is False


def test_hipctl_show_says_how_many_were_resent() -> None:
    state = {"hit": str(HIT_C), "data_plane": "userspace", "locators": ["10.3.0.3"],
             "associations": [{"peer_hit": str(HIT_M), "state": "ESTABLISHED"}],
             "esp_resent_after_move": {str(HIT_M): 17}}
    assert "  ESP re-sent after moves: 17 packets" in render_show(state).splitlines()
    assert "re-sent" not in render_show({**state, "esp_resent_after_move": {}})
