"""Userspace ESP: round trips per suite, tampering, replay, padding, BEET inner rebuild."""

from __future__ import annotations

import hmac
import shutil
import struct
import subprocess
from hashlib import sha256
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hip_pcap import PcapRecord, ip_datagram, pcap_bytes

from hip.config import HIPConfig
from hip.crypto import ESP_SUITES, EspTransform
from hip.dataplane.esp import (
    SUITES,
    InboundSA,
    InnerPacket,
    OutboundSA,
    ReplayWindow,
    build_inner,
    split_inner,
    suite_by_id,
)
from hip.errors import CryptoError, DataPlaneError

pytestmark = pytest.mark.unit

HIT_A = IPv6Address("2001:2a::1111")
HIT_B = IPv6Address("2001:2a::2222")


def _pair(suite_id: int, spi: int = 0x1234) -> tuple[OutboundSA, InboundSA]:
    suite = suite_by_id(suite_id)
    enc = bytes(range(suite.enc_key_len))
    auth = bytes(range(100, 100 + suite.auth_key_len))
    counter = iter(range(1, 1 << 20))

    def iv(n: int) -> bytes:
        return next(counter).to_bytes(n, "big") if n else b""

    out = OutboundSA(spi, suite, enc, auth, HIT_A, HIT_B, random=iv)
    inb = InboundSA(spi, suite, enc, auth, HIT_A, HIT_B)
    return out, inb


def _tcp_packet(body: bytes) -> bytes:
    return build_inner(HIT_A, HIT_B, 6, body)


@pytest.mark.parametrize("suite_id", sorted(SUITES))
@pytest.mark.parametrize("size", [0, 1, 13, 14, 15, 16, 1400])
def test_round_trip(suite_id: int, size: int) -> None:
    out, inb = _pair(suite_id)
    inner = _tcp_packet(bytes(i % 251 for i in range(size)))
    esp = out.encrypt(inner)
    assert esp[:8] == struct.pack("!II", 0x1234, 1)
    assert inb.decrypt(esp) == inner
    assert inb.counters.packets == 1 and not inb.counters.dropped


@pytest.mark.parametrize("suite_id", sorted(SUITES))
def test_ciphertext_hides_payload(suite_id: int) -> None:
    out, _ = _pair(suite_id)
    secret = b"attack at dawn, bring the HITs" * 3
    esp = out.encrypt(_tcp_packet(secret))
    if SUITES[suite_id].enc_algorithm == "null":
        assert secret in esp  # NULL encryption is integrity only, by definition
    else:
        assert secret not in esp


@pytest.mark.parametrize("suite_id", sorted(SUITES))
def test_every_flipped_byte_is_dropped_and_counted(suite_id: int) -> None:
    out, inb = _pair(suite_id)
    esp = out.encrypt(_tcp_packet(b"x" * 40))
    for i in range(len(esp)):
        tampered = bytearray(esp)
        tampered[i] ^= 0x01
        assert inb.decrypt(bytes(tampered)) is None
    reasons = inb.counters.dropped
    assert sum(reasons.values()) == len(esp)
    assert reasons["unknown-spi"] == 4  # flips inside the SPI
    assert reasons["bad-icv"] >= len(esp) - 8
    assert inb.counters.packets == 0
    # The untouched packet still decrypts: forged packets did not move the window.
    assert inb.decrypt(esp) is not None


def test_replay_is_dropped() -> None:
    out, inb = _pair(9)
    packets = [out.encrypt(_tcp_packet(bytes([i]) * 10)) for i in range(5)]
    for p in packets:
        assert inb.decrypt(p) is not None
    assert inb.decrypt(packets[2]) is None
    assert inb.counters.dropped["replay"] == 1


def test_reordered_inside_window_accepted_outside_dropped() -> None:
    out, inb = _pair(8)
    packets = [out.encrypt(_tcp_packet(b"r")) for _ in range(100)]
    assert inb.decrypt(packets[99]) is not None  # seq 100
    assert inb.decrypt(packets[50]) is not None  # seq 51: 49 behind, inside the 64 window
    assert inb.decrypt(packets[10]) is None  # seq 11: 89 behind, outside
    assert inb.decrypt(packets[50]) is None  # duplicate
    assert inb.counters.dropped["replay"] == 2


def test_replay_window_bits() -> None:
    w = ReplayWindow(size=8)
    assert not w.check(0)
    for seq in (1, 3, 2, 10):
        assert w.check(seq)
        w.accept(seq)
    assert not w.check(2)  # 8 behind 10: outside
    assert w.check(4)
    assert not w.check(10)


def test_truncated_packets_dropped() -> None:
    out, inb = _pair(9)
    esp = out.encrypt(_tcp_packet(b"hello"))
    for n in (0, 3, 8, 20, len(esp) - 17):
        assert inb.decrypt(esp[:n]) is None
    assert inb.counters.dropped["truncated"] >= 4


def test_bad_padding_dropped() -> None:
    """A packet with a valid ICV but non-monotonic padding (RFC 4303 2.4) is refused."""
    suite = suite_by_id(9)
    enc, auth = bytes(32), bytes(range(32))
    inb = InboundSA(0x999, suite, enc, auth, HIT_A, HIT_B)
    plain = b"payload" + b"\x09" * 7 + bytes([7, 6])  # pad bytes should be 1..7
    iv = bytes(16)
    enc_ctx = Cipher(algorithms.AES(enc), modes.CBC(iv)).encryptor()
    body = struct.pack("!II", 0x999, 1) + iv + enc_ctx.update(plain) + enc_ctx.finalize()
    esp = body + hmac.new(auth, body, sha256).digest()[:16]
    assert inb.decrypt(esp) is None
    assert inb.counters.dropped["bad-padding"] == 1


def test_sa_refuses_foreign_packet_and_bad_keys() -> None:
    out, _ = _pair(9)
    with pytest.raises(DataPlaneError, match="does not belong"):
        out.encrypt(build_inner(HIT_B, HIT_A, 6, b"x"))
    with pytest.raises(CryptoError, match="32-byte encryption key"):
        OutboundSA(0x1000, suite_by_id(9), b"short", bytes(32), HIT_A, HIT_B)
    with pytest.raises(DataPlaneError, match="reserved"):
        OutboundSA(7, suite_by_id(9), bytes(32), bytes(32), HIT_A, HIT_B)
    with pytest.raises(DataPlaneError, match="not implemented"):
        suite_by_id(3)
    with pytest.raises(DataPlaneError, match="not implemented"):
        suite_by_id(13)  # AES-GCM: not in hip.crypto.ESP_SUITES, so never negotiated


def test_userspace_implements_every_negotiable_transform() -> None:
    """One table: every transform hipd may negotiate (hip.crypto) runs in userspace too."""
    assert sorted(SUITES) == sorted(int(t) for t in ESP_SUITES)
    for transform in HIPConfig().esp_transforms:
        assert suite_by_id(transform) is ESP_SUITES[EspTransform(transform)]


def test_inner_split_and_rebuild() -> None:
    pkt = build_inner(HIT_A, HIT_B, 58, b"\x80\x00abc")
    assert split_inner(pkt) == InnerPacket(HIT_A, HIT_B, 58, b"\x80\x00abc")
    with pytest.raises(DataPlaneError, match="not IPv6"):
        split_inner(b"\x45" + bytes(40))
    with pytest.raises(DataPlaneError, match="truncated"):
        split_inner(pkt[:-1])


def test_sequence_numbers_count_up_from_one() -> None:
    out, _ = _pair(9)
    seqs = [struct.unpack_from("!I", out.encrypt(_tcp_packet(b"a")), 4)[0] for _ in range(3)]
    assert seqs == [1, 2, 3]


# -- an independent decoder: tshark decrypts and authenticates what we emit ------------
#: Wireshark's names (ESP SA table, "uat:esp_sa") for each suite's cipher and integrity.
TSHARK_NAMES = {
    1: ("AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]"),
    7: ("NULL", "HMAC-SHA-256-128 [RFC4868]"),
    8: ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]"),
    9: ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]"),
}


@pytest.mark.parametrize("suite_id", sorted(SUITES))
def test_tshark_decrypts_and_authenticates_our_esp(suite_id: int, tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (Debian package tshark)")
    out, _ = _pair(suite_id, spi=0x4242)
    bodies = [b"hello world", b"", b"x" * 100]
    records = []
    for body in bodies:
        udp = struct.pack("!HHHH", 40000, 40001, 8 + len(body), 0) + body
        esp = out.encrypt(build_inner(HIT_A, HIT_B, 17, udp))
        records.append(PcapRecord(ip_datagram(esp, IPv4Address("10.0.0.1"),
                                              IPv4Address("10.0.0.2"), protocol=50)))
    pcap = tmp_path / f"esp-{suite_id}.pcap"
    pcap.write_bytes(pcap_bytes(records))
    enc_name, auth_name = TSHARK_NAMES[suite_id]
    sa = (f'"IPv4","10.0.0.1","10.0.0.2","0x00004242","{enc_name}",'
          f'"0x{out.enc_key.hex()}","{auth_name}","0x{out.auth_key.hex()}"')
    res = subprocess.run(
        ["tshark", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
         "-o", "esp.enable_authentication_check:TRUE", "-o", f"uat:esp_sa:{sa}",
         "-T", "fields", "-E", "separator=|", "-e", "esp.sequence", "-e", "esp.icv_good",
         "-e", "esp.protocol", "-e", "udp.srcport", "-e", "data.data",
         "-e", "_ws.malformed", "-e", "_ws.expert.message"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    rows = [line.split("|") for line in res.stdout.splitlines()]
    assert len(rows) == len(bodies), res.stdout + res.stderr
    for seq, (row, body) in enumerate(zip(rows, bodies, strict=True), start=1):
        sequence, icv_good, next_header, sport, data, malformed, expert = row
        assert sequence == str(seq)
        if auth_name != "NULL":
            assert icv_good == "1", f"tshark says the ICV is wrong: {row}"
        assert int(next_header, 0) == 17
        assert sport == "40000"
        assert data == body.hex()
        assert not malformed and not expert, row
