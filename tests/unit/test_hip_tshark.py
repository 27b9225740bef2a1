"""An independent decoder as oracle: every HIP packet type we emit, written to a pcap and
dissected by tshark (Wireshark's HIP dissector).

tshark must report no malformed packet, a good checksum, and read the same packet type,
HITs, parameter TLVs and fields as we do.  Where tshark 4.0 still reads a field the HIPv1
(RFC 5201) way, the RFC 7401 layout wins; each such difference is listed in
``KNOWN_DIFFERENCES`` with its RFC section and checked to be exactly that difference.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hip_pcap import PcapRecord, ip_datagram, pcap_bytes

from hip import params as P
from hip.packet import HIPPacket, PacketType, integrity_bytes, parse, serialize

pytestmark = pytest.mark.unit

TSHARK = shutil.which("tshark")

# Differences between tshark 4.0 (HIPv1-era dissector) and RFC 7401/7402/8046.  Each entry
# says what tshark does and which section defines what we send; the test checks them.
KNOWN_DIFFERENCES = {
    P.ParamType.R1_COUNTER: "RFC 7401 5.2.3 moved R1_COUNTER to type 129; tshark knows only "
                            "HIPv1's 128 and shows 'Unknown'",
    P.ParamType.DH_GROUP_LIST: "RFC 7401 5.2.6 DH_GROUP_LIST (511) is shown as 'Unknown'",
    P.ParamType.TRANSPORT_FORMAT_LIST: "RFC 7401 5.2.11 TRANSPORT_FORMAT_LIST (2049) is "
                                       "shown as 'Unknown'",
    P.ParamType.HOST_ID: "RFC 7401 5.2.9 puts a 16-bit Algorithm before the Host Identity; "
                         "tshark reads an RFC 5201 DNSKEY-style header there and warns "
                         "'Unknown algorithm type'",
    P.ParamType.HIP_SIGNATURE: "RFC 7401 5.2.14 SIG alg is 16 bits; tshark reads 8 bits, so "
                               "its 'signature' starts with our algorithm's low byte",
    P.ParamType.HIP_SIGNATURE_2: "RFC 7401 5.2.15: same 8-bit SIG alg reading as "
                                 "HIP_SIGNATURE",
}
# The only expert messages allowed, and the parameter they may come from.  Both come from
# tshark reading HOST_ID with the RFC 5201 layout: the Algorithm field looks like an unknown
# DNSKEY algorithm, and what it takes for the key's end leaves the FQDN "stray".
ALLOWED_EXPERT_MESSAGES = {
    "Unknown algorithm type": P.ParamType.HOST_ID,
    "Trailing stray characters": P.ParamType.HOST_ID,
}

HIT_SUITE_ECDSA = 2  # RFC 7401 5.2.10: ECDSA host identities, SHA-384 RHASH
RHASH_LEN = 48  # SHA-384
DH_NIST_P256 = 7  # RFC 7401 5.2.7 Group ID
CIPHER_AES_256_CBC = 4  # RFC 7401 5.2.8
ESP_AES_256_CBC_HMAC_SHA_256 = 9  # RFC 7402 5.1.2 suite id
HI_ALGORITHM_ECDSA = 7  # RFC 7401 5.2.9
ECC_CURVE_NIST_P256 = 1  # RFC 7401 5.2.9 ECDSA curve id


@dataclass(frozen=True)
class Host:
    """A realistic host: ECDSA P-256 identity, its HIT, an ECDH P-256 key."""

    key: ec.EllipticCurvePrivateKey
    host_id: P.HostId
    hit: bytes
    dh_public: bytes

    @classmethod
    def make(cls, fqdn: bytes) -> Host:
        key = ec.generate_private_key(ec.SECP256R1())
        point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        # RFC 7401 5.2.9 ECDSA Host Identity: curve label, then 0x04 || x || y (as
        # hip.identity sends it).
        host_identity = ECC_CURVE_NIST_P256.to_bytes(2, "big") + point
        host_id = P.HostId(HI_ALGORITHM_ECDSA, host_identity, di_type=1, domain_identifier=fqdn)
        # ORCHIDv2-shaped HIT (2001:20::/28, OGA id in the next nibble); the exact ORCHID
        # construction belongs to hip.orchid and does not matter to the dissector.
        digest = hashlib.sha384(host_identity).digest()
        hit = int("2001002" + format(HIT_SUITE_ECDSA, "x"), 16).to_bytes(4, "big") + digest[:12]
        dh = ec.generate_private_key(ec.SECP256R1()).public_key()
        # DIFFIE_HELLMAN carries x || y without the SEC1 0x04 octet, as hip.crypto does.
        dh_public = dh.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        return cls(key, host_id, hit, dh_public)

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA384())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _hmac(data: bytes) -> bytes:
    mac = hmac.HMAC(b"\x42" * RHASH_LEN, hashes.SHA384())
    mac.update(data)
    return mac.finalize()


def _signed(pkt: HIPPacket, host: Host, *, mac: type[P.HipMac] | type[P.HipMac2] | None,
            mac_extra: tuple[P.Param, ...] = (), sig2: bool = False,
            after: tuple[P.Param, ...] = ()) -> HIPPacket:
    """``pkt`` with a real HIP_MAC/HIP_MAC_2 and ECDSA signature added as RFC 7401 6.4."""
    if mac is not None:
        covered = integrity_bytes(pkt, mac.TYPE, extra_params=mac_extra)
        pkt = HIPPacket(pkt.packet_type, pkt.sender_hit, pkt.receiver_hit,
                        (*pkt.params, mac(_hmac(covered))))
    sig_type = P.HipSignature2 if sig2 else P.HipSignature
    sig = sig_type(HI_ALGORITHM_ECDSA, host.sign(integrity_bytes(pkt, sig_type.TYPE)))
    return HIPPacket(pkt.packet_type, pkt.sender_hit, pkt.receiver_hit,
                     (*pkt.params, sig, *after))


def _encrypted_host_id(host: Host) -> P.Encrypted:
    plain = P.encode_param(host.host_id)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    iv = bytes(range(16))
    enc = Cipher(algorithms.AES(b"\x24" * 32), modes.CBC(iv)).encryptor()
    return P.Encrypted(iv + enc.update(padded) + enc.finalize())


@dataclass(frozen=True)
class Sent:
    packet: HIPPacket
    src: IPv4Address | IPv6Address
    dst: IPv4Address | IPv6Address


def exchange() -> list[Sent]:
    """One packet of every type, with realistic sizes and real signatures and MACs."""
    i, r = Host.make(b"initiator.example"), Host.make(b"responder.example")
    i6, r6 = IPv6Address("2001:db8:1::10"), IPv6Address("2001:db8:2::20")
    i4, r4 = IPv4Address("192.0.2.10"), IPv4Address("198.51.100.20")
    moved4 = IPv4Address("203.0.113.30")
    sent: list[Sent] = []

    i1 = HIPPacket(PacketType.I1, i.hit, bytes(16), (P.DHGroupList((DH_NIST_P256, 8, 9)),))
    sent.append(Sent(i1, i6, r6))

    r1_body = HIPPacket(PacketType.R1, r.hit, i.hit, (
        P.R1Counter(17),
        P.Puzzle(10, 37, b"\x3a\x5c", hashlib.sha384(b"I").digest()),
        P.DHGroupList((DH_NIST_P256, 8)),
        P.DiffieHellman(DH_NIST_P256, r.dh_public),
        P.HipCipher((CIPHER_AES_256_CBC, 2)),
        r.host_id,
        P.HitSuiteList.of_suites(HIT_SUITE_ECDSA, 1),
        P.TransportFormatList((P.TransportFormat.ESP,)),
    ))
    r1 = _signed(r1_body, r, mac=None, sig2=True,
                 after=(P.EchoRequestUnsigned(b"\x01\x02\x03\x04\x05\x06\x07\x08"),))
    sent.append(Sent(r1, r6, i6))

    i2_body = HIPPacket(PacketType.I2, i.hit, r.hit, (
        P.EspInfo(0, 0, 0x1A2B3C4D),
        P.R1Counter(17),
        P.Solution(10, b"\x3a\x5c", hashlib.sha384(b"I").digest(),
                   hashlib.sha384(b"J").digest()),
        P.DiffieHellman(DH_NIST_P256, i.dh_public),
        P.HipCipher((CIPHER_AES_256_CBC,)),
        _encrypted_host_id(i),
        P.TransportFormatList((P.TransportFormat.ESP,)),
        P.EspTransform((ESP_AES_256_CBC_HMAC_SHA_256,)),
    ))
    i2 = _signed(i2_body, i, mac=P.HipMac,
                 after=(P.EchoResponseUnsigned(b"\x01\x02\x03\x04\x05\x06\x07\x08"),))
    sent.append(Sent(i2, i4, r4))

    r2_body = HIPPacket(PacketType.R2, r.hit, i.hit, (
        P.EspInfo(0, 0, 0x5E6F7081), P.EspTransform((ESP_AES_256_CBC_HMAC_SHA_256,)),
    ))
    sent.append(Sent(_signed(r2_body, r, mac=P.HipMac2, mac_extra=(r.host_id,)), r4, i4))

    update = HIPPacket(PacketType.UPDATE, i.hit, r.hit, (
        P.EspInfo(1, 0x1A2B3C4D, 0x1A2B3C4E),
        P.LocatorSet((
            P.Locator(P.TrafficType.BOTH, P.LocatorType.ESP_SPI_IPV6, True, 600, moved4,
                      0x1A2B3C4E),
            P.Locator(P.TrafficType.HIP_SIGNALING, P.LocatorType.IPV6, False, 300,
                      IPv6Address("2001:db8:3::30")),
        )),
        P.Seq(1),
        P.EchoRequestSigned(hashlib.sha256(b"nonce").digest()[:16]),
    ))
    sent.append(Sent(_signed(update, i, mac=P.HipMac), moved4, r4))

    update_ack = HIPPacket(PacketType.UPDATE, r.hit, i.hit, (
        P.Seq(1), P.Ack((1,)), P.EchoResponseSigned(hashlib.sha256(b"nonce").digest()[:16]),
    ))
    sent.append(Sent(_signed(update_ack, r, mac=P.HipMac), r4, moved4))

    notify = HIPPacket(PacketType.NOTIFY, r.hit, i.hit, (
        P.Notification(P.NotifyType.UNSUPPORTED_CRITICAL_PARAMETER_TYPE,
                       (1001).to_bytes(2, "big")),
    ))
    sent.append(Sent(_signed(notify, r, mac=None), r6, i6))

    close = HIPPacket(PacketType.CLOSE, i.hit, r.hit,
                      (P.EchoRequestSigned(b"\x99" * 16),))
    sent.append(Sent(_signed(close, i, mac=P.HipMac), i6, r6))
    close_ack = HIPPacket(PacketType.CLOSE_ACK, r.hit, i.hit,
                          (P.EchoResponseSigned(b"\x99" * 16),))
    sent.append(Sent(_signed(close_ack, r, mac=P.HipMac), r6, i6))
    return sent


# --- reading tshark's PDML ---------------------------------------------------------------


@dataclass
class Dissected:
    """What tshark read from one frame."""

    hip: ET.Element
    malformed: bool
    expert_messages: list[str]

    def fields(self, name: str, root: ET.Element | None = None) -> list[ET.Element]:
        return [f for f in (root if root is not None else self.hip).iter("field")
                if f.get("name") == name]

    def show(self, name: str, root: ET.Element | None = None) -> list[str]:
        return [f.get("show", "") for f in self.fields(name, root)]

    def one(self, name: str, root: ET.Element | None = None) -> str:
        (value,) = self.show(name, root)
        return value


def dissect(pcap: Path) -> list[Dissected]:
    assert TSHARK is not None
    # The HIP dissector always verifies the checksum (it has no preference to turn off).
    result = subprocess.run([TSHARK, "-r", str(pcap), "-T", "pdml"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    frames = []
    for packet in ET.fromstring(result.stdout).iter("packet"):
        protos = {p.get("name", ""): p for p in packet.iter("proto")}
        assert "hip" in protos, f"tshark did not see HIP: {sorted(protos)}"
        messages = [f.get("show", "") for f in packet.iter("field")
                    if f.get("name") == "_ws.expert.message"]
        frames.append(Dissected(protos["hip"], "_ws.malformed" in protos
                                or any(f.get("name") == "_ws.malformed"
                                       for f in packet.iter("field")), messages))
    return frames


def _int(text: str) -> int:
    return int(text, 0)


def _tlv_elements(d: Dissected) -> list[ET.Element]:
    return d.fields("hip.type")


# --- the test ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dissected(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Sent, bytes, Dissected]]:
    if TSHARK is None:
        pytest.skip("tshark is not installed (Debian package tshark)")
    sent = exchange()
    wires = [serialize(s.packet, s.src, s.dst) for s in sent]
    pcap = tmp_path_factory.mktemp("tshark") / "hip-every-packet-type.pcap"
    pcap.write_bytes(pcap_bytes(
        PcapRecord(ip_datagram(w, s.src, s.dst), 1_700_000_000 + n * 0.25)
        for n, (s, w) in enumerate(zip(sent, wires, strict=True))
    ))
    frames = dissect(pcap)
    assert len(frames) == len(sent)
    return list(zip(sent, wires, frames, strict=True))


def test_every_packet_type_is_in_the_capture(
    dissected: list[tuple[Sent, bytes, Dissected]],
) -> None:
    assert {s.packet.packet_type for s, _w, _d in dissected} == set(PacketType)


def test_our_packets_parse_back(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    for s, wire, _d in dissected:
        assert parse(wire, s.src, s.dst) == s.packet


def test_no_malformed_packet_and_good_checksum(
    dissected: list[tuple[Sent, bytes, Dissected]],
) -> None:
    for s, wire, d in dissected:
        name = s.packet.packet_type.name
        assert not d.malformed, f"tshark reports {name} as malformed"
        assert not d.fields("hip.bad_checksum"), f"tshark reports a bad checksum on {name}"
        assert d.one("hip.checksum.status") == "1", f"{name}: checksum not verified as good"
        assert _int(d.one("hip.checksum")) == int.from_bytes(wire[4:6], "big")


def test_expert_infos_are_only_the_known_differences(
    dissected: list[tuple[Sent, bytes, Dissected]],
) -> None:
    for s, _w, d in dissected:
        inside = []
        for element, param in zip(_tlv_elements(d), s.packet.params, strict=True):
            for message in d.show("_ws.expert.message", element):
                assert ALLOWED_EXPERT_MESSAGES.get(message) == param.param_type, (
                    f"{s.packet.packet_type.name}: unexpected tshark expert info {message!r} "
                    f"in parameter type {param.param_type}"
                )
                inside.append(message)
        # Every expert info of the frame sits inside one of those parameters.
        assert sorted(inside) == sorted(d.expert_messages), s.packet.packet_type.name
        if s.packet.get(P.HostId) is not None:
            assert inside, "the known HOST_ID difference vanished: update KNOWN_DIFFERENCES"


def test_header_fields_equal_ours(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    for s, wire, d in dissected:
        pkt = s.packet
        assert _int(d.one("hip.packet_type")) == pkt.packet_type
        assert _int(d.one("hip.version")) == pkt.version
        assert _int(d.one("hip.proto")) == pkt.next_header
        assert (_int(d.one("hip.hdr_len")) + 1) * 8 == len(wire)
        assert d.one("hip.shim6_fixed_p") == "0" and d.one("hip.shim6_fixed_s") == "1"
        assert _int(d.one("hip.controls")) == pkt.controls
        assert bytes.fromhex(d.fields("hip.hit_sndr")[0].get("value", "")) == pkt.sender_hit
        assert bytes.fromhex(d.fields("hip.hit_rcvr")[0].get("value", "")) == pkt.receiver_hit


def test_parameter_tlvs_equal_ours(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    """tshark finds the same parameters, in order, with byte-identical type/length/contents."""
    for s, _w, d in dissected:
        ours = [P.encode_param(p) for p in s.packet.params]
        ours_unpadded = [w[:4 + int.from_bytes(w[2:4], "big")] for w in ours]
        theirs = [bytes.fromhex(e.get("value", "")) for e in _tlv_elements(d)]
        assert theirs == ours_unpadded, s.packet.packet_type.name
        for element, param in zip(_tlv_elements(d), s.packet.params, strict=True):
            if param.param_type in KNOWN_DIFFERENCES and "Unknown" in element.get("showname", ""):
                continue
            assert "Unknown" not in element.get("showname", ""), element.get("showname")


def _params_with_elements(
    dissected: list[tuple[Sent, bytes, Dissected]], cls: type,
) -> list[tuple[P.Param, ET.Element, Dissected]]:
    out = []
    for s, _w, d in dissected:
        for element, param in zip(_tlv_elements(d), s.packet.params, strict=True):
            if isinstance(param, cls):
                out.append((param, element, d))
    assert out, f"no {cls.__name__} in the capture"
    return out


def test_negotiation_fields(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    for dh, el, d in _params_with_elements(dissected, P.DiffieHellman):
        assert isinstance(dh, P.DiffieHellman)
        assert _int(d.one("hip.tlv.dh_group_id", el)) == dh.group_id == DH_NIST_P256
        assert _int(d.one("hip.tlv.dh_pv_length", el)) == len(dh.public_value) == 64
        value = d.fields("hip.tlv.dh_public_value", el)[0].get("value", "")
        assert bytes.fromhex(value) == dh.public_value
    for cipher, el, d in _params_with_elements(dissected, P.HipCipher):
        assert isinstance(cipher, P.HipCipher)
        assert tuple(_int(v) for v in d.show("hip.tlv.cipher_id", el)) == cipher.cipher_ids
    for suites, el, d in _params_with_elements(dissected, P.HitSuiteList):
        assert isinstance(suites, P.HitSuiteList)
        # RFC 7401 5.2.10: the 4-bit HIT Suite ID is the high nibble of each 8-bit ID.
        assert tuple(_int(v) for v in d.show("hip.tlv.hit_suite_id", el)) == suites.hit_suites
    for esp, el, d in _params_with_elements(dissected, P.EspTransform):
        assert isinstance(esp, P.EspTransform)
        assert tuple(_int(v) for v in d.show("hip.tlv.trans_id", el)) == esp.suite_ids
    for puzzle, el, d in _params_with_elements(dissected, P.Puzzle):
        assert isinstance(puzzle, P.Puzzle)
        assert _int(d.one("hip.tlv_puzzle_k", el)) == puzzle.k
        assert _int(d.one("hip.tlv_puzzle_lifetime", el)) == puzzle.lifetime
        assert _int(d.one("hip.tlv_puzzle_opaque", el)) == int.from_bytes(puzzle.opaque, "big")
    for sol, el, d in _params_with_elements(dissected, P.Solution):
        assert isinstance(sol, P.Solution)
        assert _int(d.one("hip.tlv_solution_k", el)) == sol.k
        assert bytes.fromhex(d.fields("hip.tlv_solution_j", el)[0].get("value", "")) == (
            sol.solution_j)


def test_host_id_known_difference(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    """RFC 7401 5.2.9: tshark agrees on HI Length, DI-Type and DI Length; only the
    Algorithm field is read with the RFC 5201 layout (see KNOWN_DIFFERENCES)."""
    for host_id, el, d in _params_with_elements(dissected, P.HostId):
        assert isinstance(host_id, P.HostId)
        assert _int(d.one("hip.tlv.host_id_length", el)) == len(host_id.host_identity)
        assert _int(d.one("hip.tlv.host_domain_id_type", el)) == host_id.di_type
        assert _int(d.one("hip.tlv.host_domain_id_length", el)) == len(
            host_id.domain_identifier)
        # tshark's 32-bit "flags" word is our Algorithm (16 bits) and the curve id (16 bits).
        flags = _int(d.one("hip.tlv.host_id_hdr", el))
        assert flags >> 16 == host_id.hi_algorithm
        assert flags & 0xFFFF == int.from_bytes(host_id.host_identity[:2], "big")


def test_signature_known_difference(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    """RFC 7401 5.2.14/5.2.15: 16-bit SIG alg; tshark reads 8 bits (KNOWN_DIFFERENCES)."""
    for cls in (P.HipSignature, P.HipSignature2):
        for sig, el, d in _params_with_elements(dissected, cls):
            assert isinstance(sig, P.HipSignature | P.HipSignature2)
            assert _int(d.one("hip.tlv.sig_alg", el)) == sig.algorithm >> 8
            value = bytes.fromhex(d.fields("hip.tlv.sig", el)[0].get("value", ""))
            assert value == bytes([sig.algorithm & 0xFF]) + sig.signature
            assert len(sig.signature) == 64  # ECDSA P-256 r||s


def test_mac_and_echo_fields(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    for cls in (P.HipMac, P.HipMac2):
        for mac, el, d in _params_with_elements(dissected, cls):
            assert isinstance(mac, P.HipMac | P.HipMac2)
            assert bytes.fromhex(d.fields("hip.tlv.hmac", el)[0].get("value", "")) == mac.hmac
            assert len(mac.hmac) == RHASH_LEN
    echo_classes = (P.EchoRequestSigned, P.EchoResponseSigned, P.EchoRequestUnsigned,
                    P.EchoResponseUnsigned)
    for echo_cls in echo_classes:
        for echo, el, d in _params_with_elements(dissected, echo_cls):
            value = d.fields("hip.tlv.opaque_data", el)[0].get("value", "")
            assert bytes.fromhex(value) == echo.opaque  # type: ignore[union-attr]


def test_mobility_fields(dissected: list[tuple[Sent, bytes, Dissected]]) -> None:
    for seq, el, d in _params_with_elements(dissected, P.Seq):
        assert isinstance(seq, P.Seq)
        assert _int(d.one("hip.tlv_seq_update_id", el)) == seq.update_id
    for ack, el, d in _params_with_elements(dissected, P.Ack):
        assert isinstance(ack, P.Ack)
        assert tuple(_int(v) for v in d.show("hip.tlv_ack_updid", el)) == ack.update_ids
    for info, el, d in _params_with_elements(dissected, P.EspInfo):
        assert isinstance(info, P.EspInfo)
        assert _int(d.one("hip.tlv_esp_info_key_index", el)) == info.keymat_index
        assert _int(d.one("hip.tlv_esp_info_old_spi", el)) == info.old_spi
        assert _int(d.one("hip.tlv_esp_info_new_spi", el)) == info.new_spi
    for ls, el, d in _params_with_elements(dissected, P.LocatorSet):
        assert isinstance(ls, P.LocatorSet)
        # tshark repeats each address as the subtree's label: take the labels.
        labels = [f for f in el if f.get("name") == "hip.tlv.locator_address"]
        assert len(labels) == len(ls.locators)
        for label, loc in zip(labels, ls.locators, strict=True):
            address = IPv6Address(label.get("show", ""))
            assert (address.ipv4_mapped or address) == loc.address
            assert _int(d.one("hip.tlv.locator_traffic_type", label)) == loc.traffic_type
            assert _int(d.one("hip.tlv.locator_type", label)) == loc.locator_type
            assert _int(d.one("hip.tlv.locator_len", label)) == (5 if loc.spi is not None
                                                                 else 4)
            # RFC 8046 4: the P bit is the last bit of the byte tshark calls "Reserved".
            assert _int(d.one("hip.tlv.locator_reserved", label)) & 1 == loc.preferred
            assert _int(d.one("hip.tlv.locator_lifetime", label)) == loc.lifetime
            spis = d.show("hip.tlv.locator_spi", label)
            assert [_int(v) for v in spis] == ([loc.spi] if loc.spi is not None else [])
    for note, el, d in _params_with_elements(dissected, P.Notification):
        assert isinstance(note, P.Notification)
        assert _int(d.one("hip.tlv.notification_type", el)) == note.notify_type
        value = d.fields("hip.tlv.notification_data", el)[0].get("value", "")
        assert bytes.fromhex(value) == note.data
