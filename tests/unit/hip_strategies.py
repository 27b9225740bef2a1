"""Hypothesis strategies for every HIP parameter dataclass and for whole packets.

Shared by test_hip_params.py, test_hip_packet.py and test_hip_fuzz.py.
"""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from hip import params as P
from hip.packet import HIPPacket, PacketType

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
small_bytes = st.binary(min_size=0, max_size=64)
nonempty_bytes = st.binary(min_size=1, max_size=64)
# RHASH lengths of the HIT suites: SHA-1 20, SHA-256 32, SHA-384 48.
rhash = st.sampled_from([20, 32, 48])

addresses = st.one_of(
    st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
)


@st.composite
def locators(draw: st.DrawFn) -> P.Locator:
    ltype = draw(st.sampled_from([0, 1]))
    return P.Locator(
        traffic_type=draw(st.sampled_from([0, 1, 2])),
        locator_type=ltype,
        preferred=draw(st.booleans()),
        lifetime=draw(u32),
        address=draw(addresses),
        spi=draw(u32) if ltype == 1 else None,
    )


opaque_locators = st.builds(
    P.OpaqueLocator,
    traffic_type=u8,
    locator_type=st.integers(2, 255),
    preferred=st.booleans(),
    lifetime=u32,
    data=st.integers(0, 8).map(lambda n: bytes(range(n * 4))),
)


@st.composite
def puzzles(draw: st.DrawFn) -> P.Puzzle:
    n = draw(rhash)
    return P.Puzzle(draw(u8), draw(u8), draw(st.binary(min_size=2, max_size=2)),
                    draw(st.binary(min_size=n, max_size=n)))


@st.composite
def solutions(draw: st.DrawFn) -> P.Solution:
    n = draw(rhash)
    return P.Solution(
        draw(u8),
        draw(st.binary(min_size=2, max_size=2)),
        draw(st.binary(min_size=n, max_size=n)),
        draw(st.binary(min_size=n, max_size=n)),
    )


KNOWN_TYPES = frozenset(int(t) for t in P.ParamType)

unknown_params = st.builds(
    P.UnknownParam,
    type=u16.filter(lambda t: t not in KNOWN_TYPES),
    value=small_bytes,
)

PARAM_STRATEGIES: dict[type, st.SearchStrategy[P.Param]] = {
    P.R1Counter: st.builds(P.R1Counter, st.integers(0, 2**64 - 1)),
    P.Puzzle: puzzles(),
    P.Solution: solutions(),
    P.Seq: st.builds(P.Seq, u32),
    P.Ack: st.builds(P.Ack, st.lists(u32, min_size=1, max_size=8).map(tuple)),
    P.DHGroupList: st.builds(P.DHGroupList, st.lists(u8, min_size=1, max_size=8).map(tuple)),
    P.DiffieHellman: st.builds(P.DiffieHellman, u8, st.binary(min_size=0, max_size=133)),
    P.HipCipher: st.builds(P.HipCipher, st.lists(u16, min_size=1, max_size=8).map(tuple)),
    P.Encrypted: st.builds(P.Encrypted, small_bytes),
    P.HostId: st.builds(P.HostId, u16, small_bytes, st.integers(0, 15), small_bytes),
    P.HitSuiteList: st.builds(P.HitSuiteList, st.lists(u8, min_size=1, max_size=8).map(tuple)),
    P.Cert: st.builds(P.Cert, u8, u8, u8, u8, small_bytes),
    P.Notification: st.builds(P.Notification, u16, small_bytes),
    P.EchoRequestSigned: st.builds(P.EchoRequestSigned, small_bytes),
    P.EchoResponseSigned: st.builds(P.EchoResponseSigned, small_bytes),
    P.EchoRequestUnsigned: st.builds(P.EchoRequestUnsigned, small_bytes),
    P.EchoResponseUnsigned: st.builds(P.EchoResponseUnsigned, small_bytes),
    P.TransportFormatList: st.builds(
        P.TransportFormatList, st.lists(u16, min_size=1, max_size=8).map(tuple)
    ),
    P.HipMac: st.builds(P.HipMac, nonempty_bytes),
    P.HipMac2: st.builds(P.HipMac2, nonempty_bytes),
    P.HipSignature: st.builds(P.HipSignature, u16, nonempty_bytes),
    P.HipSignature2: st.builds(P.HipSignature2, u16, nonempty_bytes),
    P.LocatorSet: st.builds(
        P.LocatorSet,
        st.lists(locators(), min_size=1, max_size=4).map(tuple),
        st.lists(opaque_locators, max_size=2).map(tuple),
    ),
    P.EspInfo: st.builds(P.EspInfo, u16, u32, u32),
    P.EspTransform: st.builds(P.EspTransform, st.lists(u16, min_size=1, max_size=8).map(tuple)),
    P.UnknownParam: unknown_params,
}

any_param = st.one_of(*PARAM_STRATEGIES.values())

param_lists = st.lists(any_param, max_size=6).map(
    lambda ps: sorted(ps, key=lambda p: p.param_type)
)

hits = st.binary(min_size=16, max_size=16)


@st.composite
def packets(draw: st.DrawFn) -> HIPPacket:
    ps = [p for p in draw(param_lists) if not (isinstance(p, P.UnknownParam) and p.critical)]
    return HIPPacket(
        packet_type=draw(st.sampled_from(list(PacketType))),
        sender_hit=draw(hits),
        receiver_hit=draw(hits),
        params=tuple(ps),
        controls=draw(u16),
    )


endpoints = st.one_of(
    st.tuples(
        st.builds(ipaddress.IPv4Address, u32), st.builds(ipaddress.IPv4Address, u32)
    ),
    st.tuples(
        st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
        st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
    ),
)
