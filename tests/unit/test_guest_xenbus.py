"""The agent's xenstore watch: the wire format, and one watch through a socket pair
standing in for /dev/xen/xenbus (the framing only; the real device is in the lab)."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenwam_guest.xenbus import (
    HEADER,
    XS_ERROR,
    XS_WATCH,
    XS_WATCH_EVENT,
    Decoder,
    Message,
    XenbusError,
    XenbusWatch,
    encode,
)

pytestmark = pytest.mark.unit


def test_encode_matches_the_wire_format() -> None:
    raw = encode(XS_WATCH, 7, "xenwam/network/generation", "tok")
    assert raw[:HEADER.size] == bytes([4, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 30, 0, 0, 0])
    assert raw[HEADER.size:] == b"xenwam/network/generation\0tok\0"


@given(st.lists(st.tuples(st.integers(0, 20),
                          st.text(st.characters(blacklist_characters="\0",
                                                blacklist_categories=["Cs"]), max_size=40)),
                max_size=8),
       st.integers(1, 17))
def test_decoder_reassembles_messages_split_anywhere(items: list[tuple[int, str]],
                                                     chunk: int) -> None:
    stream = b"".join(encode(t, i, text) for i, (t, text) in enumerate(items))
    decoder = Decoder()
    got: list[Message] = []
    for start in range(0, len(stream), chunk):
        got.extend(decoder.feed(stream[start:start + chunk]))
    assert [(m.type, m.req_id, m.strings()) for m in got] == [
        (t, i, [text]) for i, (t, text) in enumerate(items)]


def test_decoder_refuses_an_oversized_message() -> None:
    with pytest.raises(XenbusError):
        Decoder().feed(HEADER.pack(XS_WATCH_EVENT, 0, 0, 1 << 20))
    with pytest.raises(XenbusError):
        encode(XS_WATCH, 1, "x" * 5000)


def fake_device(answer: int, events: list[tuple[str, str]],
                linger: bool = True) -> tuple[int, threading.Thread]:
    """One end of a socket pair; the other answers the watch and sends ``events``, then
    (``linger``) waits for the watch to close, or hangs up."""
    ours, theirs = socket.socketpair()
    fd = os.dup(ours.fileno())
    ours.close()

    def serve() -> None:
        with theirs:
            (request,) = Decoder().feed(theirs.recv(4096))
            assert request.type == XS_WATCH
            # An event may come before the answer; the watch keeps it.
            first, *rest = events or [("", "")]
            if events:
                theirs.sendall(encode(XS_WATCH_EVENT, 0, *first))
            reply = "OK" if answer == XS_WATCH else "EACCES"
            theirs.sendall(encode(answer, request.req_id, reply))
            for path, token in rest:
                theirs.sendall(encode(XS_WATCH_EVENT, 0, path, token))
            if linger:
                theirs.recv(1)  # until the watch closes its end
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return fd, thread


def test_watch_sees_events_before_and_after_its_answer() -> None:
    key = "xenwam/network/generation"
    fd, thread = fake_device(XS_WATCH, [(key, "tok"), ("other/key", "someone-else"),
                                        (key, "tok")])
    watch = XenbusWatch(key, "tok", opener=lambda path, flags: fd)
    seen: list[str] = []
    for _ in range(50):
        seen += watch.events()
        if len(seen) >= 2:
            break
        threading.Event().wait(0.02)
    watch.close()
    thread.join(timeout=5)
    assert seen == [key, key]  # another token's event is not ours


def test_a_refused_watch_is_an_error_and_closes_the_device() -> None:
    fd, thread = fake_device(XS_ERROR, [])
    with pytest.raises(XenbusError, match="EACCES"):
        XenbusWatch("xenwam/network/generation", "tok", opener=lambda path, flags: fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    thread.join(timeout=5)


def test_agent_without_a_watch_polls_alone(tmp_path: object) -> None:
    from xenwam_guest.agent import LinuxNetwork, _waiter
    slept: list[float] = []
    wait = _waiter(LinuxNetwork(sleep=slept.append), "/nonexistent/xenbus")
    assert wait(0.5) is False and slept == [0.5]


def test_agent_wakes_on_the_watch_and_survives_it_breaking() -> None:
    from xenwam_guest import agent as agent_module
    key = "xenwam/network/generation"
    fd, thread = fake_device(XS_WATCH, [(key, "xenwam-network"), (key, "xenwam-network")],
                             linger=False)
    real = agent_module.XenbusWatch

    def opened(path: str, token: str, device: str) -> XenbusWatch:
        return real(path, token, device, opener=lambda p, f: fd)

    agent_module.XenbusWatch = opened  # type: ignore[assignment,misc]
    try:
        wait = agent_module._waiter(agent_module.LinuxNetwork(), "/dev/xen/xenbus")
    finally:
        agent_module.XenbusWatch = real  # type: ignore[misc]
    assert wait(30.0) is True  # the events came
    thread.join(timeout=5)  # the device end is gone now
    # What is left (the second event, the hang-up) wakes the agent at most twice more:
    # how the device end's writes and its close are split between reads is a race this
    # test must not depend on.  Then the watch is gone and the agent polls alone.
    woke = [wait(0.01) for _ in range(4)]
    assert woke.count(True) <= 2 and woke[-2:] == [False, False], woke
