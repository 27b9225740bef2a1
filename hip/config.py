"""Policy of a HIP host: what it negotiates, how hard its puzzles are, how it retries.

A :class:`HIPConfig` is checked when it is built; a bad one is refused with
:class:`ConfigError` before any association uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hip.crypto import ESP_SUITES, DHGroup, HipCipherId
from hip.errors import HIPError

#: DH group ids (RFC 7401 section 5.2.7; 12 is Curve25519 per RFC 9374 / IANA).
DH_NIST_P256 = 7
DH_NIST_P384 = 8
DH_CURVE25519 = 12
#: HIP_CIPHER ids (RFC 7401 section 5.2.8).
CIPHER_NULL = 1
CIPHER_AES_128_CBC = 2
CIPHER_AES_256_CBC = 4
#: ESP transform suite ids (RFC 7402 section 5.1.2).
ESP_NULL_HMAC_SHA256 = 7
ESP_AES_128_CBC_HMAC_SHA256 = 8
ESP_AES_256_CBC_HMAC_SHA256 = 9

#: What hip.crypto can do.  SECP160R1 (group 10) is assigned but not implemented.
KNOWN_DH_GROUPS = frozenset(int(g) for g in DHGroup if g is not DHGroup.SECP160R1)
KNOWN_CIPHERS = frozenset(int(c) for c in HipCipherId)
KNOWN_ESP_TRANSFORMS = frozenset(int(t) for t in ESP_SUITES)


class ConfigError(HIPError):
    """A HIP configuration value is invalid; nothing was changed."""


@dataclass(frozen=True)
class HIPConfig:
    """Everything a HIP host may be tuned by.  Times are seconds, sizes bytes.

    The defaults offer what deployed HIPv2 peers pick first (DH group 7, HIP cipher 4,
    ESP transform 9), so the common case interoperates.
    """

    #: DH groups in order of preference (first preferred).
    dh_groups: tuple[int, ...] = (DH_NIST_P256, DH_CURVE25519, DH_NIST_P384)
    #: HIP_CIPHER ids in order of preference; NULL (1) is refused unless allowed below.
    ciphers: tuple[int, ...] = (CIPHER_AES_256_CBC, CIPHER_AES_128_CBC)
    #: ESP transform suites in order of preference; NULL suites need allow_null_cipher.
    esp_transforms: tuple[int, ...] = (ESP_AES_256_CBC_HMAC_SHA256, ESP_AES_128_CBC_HMAC_SHA256)
    #: Permit the NULL HIP cipher and NULL-encryption ESP (for debugging only).
    allow_null_cipher: bool = False
    #: Puzzle difficulty K (bits) offered when the host is not under load.
    puzzle_difficulty: int = 1
    #: Highest difficulty the host raises K to under an I1 flood.
    puzzle_difficulty_max: int = 20
    #: I1s per ``i1_rate_window`` above which K rises (one bit per doubling of the rate).
    i1_rate_threshold: int = 64
    i1_rate_window: float = 1.0
    #: Hardest R1 puzzle we solve as Initiator (a peer asking more is given up on).
    puzzle_solve_max: int = 24
    #: Puzzle lifetime exponent (RFC 7401 5.2.4: lifetime = 2^(value-32) seconds).
    puzzle_lifetime_exponent: int = 37
    #: How long one R1 generation (its DH keys, puzzle secret, R1 counter) is used.
    r1_generation_lifetime: float = 120.0
    #: First retransmission timeout; each retry doubles it, up to the maximum.
    retransmit_initial: float = 1.0
    retransmit_max: float = 16.0
    #: Retries (after the first transmission) before giving up.
    i1_retries_max: int = 4
    i2_retries_max: int = 4
    update_retries_max: int = 5
    close_retries_max: int = 4
    #: R2-SENT moves to ESTABLISHED after this long without traffic (RFC 7401 4.4.2).
    r2_sent_timeout: float = 10.0
    #: Close an ESTABLISHED association after this long without traffic (RFC 7401
    #: 4.4.2 "timeout: send CLOSE"); None leaves that decision to the driver.
    idle_timeout: float | None = None
    #: CLOSED and E-FAILED state is kept this long (UAL + 2 MSL) before it is discarded.
    closed_linger: float = 15.0
    #: Credit-based authorization (RFC 8046 section 5.5 / RFC 4225): at most this many
    #: bytes may be owed to unverified peer locators.
    credit_limit: int = 65536
    #: Credit is halved every ``credit_aging_interval`` seconds (credit aging).
    credit_aging_interval: float = 1.0
    #: Lifetime announced for our locators in LOCATOR_SET.
    locator_lifetime: int = 600
    #: Length of the nonces in ECHO_REQUEST_SIGNED.
    echo_nonce_length: int = 16
    #: Bytes of KEYMAT derived at the base exchange (rekeys draw further along it).
    keymat_length: int = 1024
    #: Signed NOTIFYs answering an unsupported critical parameter (RFC 7401 5.2.1) are
    #: rate-limited by a token bucket: ``notify_rate`` per second, bursts of
    #: ``notify_burst`` (0 never answers).  Each costs a signature, so unbounded answers
    #: would let spoofed packets spend our CPU.
    notify_rate: float = 10.0
    notify_burst: int = 20
    #: A replayed UPDATE (a SEQ already processed, with a valid MAC and signature) is
    #: answered with our last reply again (RFC 7401 6.12.1), at most ``reack_rate`` per
    #: second per association in bursts of ``reack_burst``: a peer's retransmissions
    #: need about one a second, a replay flood would make both ends work for every copy.
    reack_rate: float = 4.0
    reack_burst: int = 4
    #: I1s from one source address are answered at most ``i1_source_rate`` per second, in
    #: bursts of ``i1_source_burst``; the rest are dropped before they are parsed.  An
    #: Initiator sends one I1 and retransmits it about once a second; a flood from one
    #: host must not take the time that peers' UPDATEs, I2s and CLOSEs need.
    i1_source_rate: float = 10.0
    i1_source_burst: int = 20

    def __post_init__(self) -> None:
        def refuse(name: str, value: object, hint: str) -> None:
            raise ConfigError(f"HIPConfig.{name}={value!r} is invalid: {hint}")

        for name, values, known in (
            ("dh_groups", self.dh_groups, KNOWN_DH_GROUPS),
            ("ciphers", self.ciphers, KNOWN_CIPHERS),
            ("esp_transforms", self.esp_transforms, KNOWN_ESP_TRANSFORMS),
        ):
            if not values:
                refuse(name, values, "give at least one id")
            unknown = [v for v in values if v not in known]
            if unknown:
                refuse(name, values, f"unsupported ids {unknown}; choose from {sorted(known)}")
            if len(set(values)) != len(values):
                refuse(name, values, "list each id once")
        if not self.allow_null_cipher:
            if CIPHER_NULL in self.ciphers:
                refuse("ciphers", self.ciphers, "NULL (1) needs allow_null_cipher=True")
            if ESP_NULL_HMAC_SHA256 in self.esp_transforms:
                refuse("esp_transforms", self.esp_transforms,
                       "NULL encryption (7) needs allow_null_cipher=True")
        if not 0 <= self.puzzle_difficulty <= self.puzzle_difficulty_max <= 255:
            refuse("puzzle_difficulty", self.puzzle_difficulty,
                   "need 0 <= puzzle_difficulty <= puzzle_difficulty_max <= 255")
        for name in ("retransmit_initial", "retransmit_max", "r2_sent_timeout",
                     "closed_linger", "i1_rate_window", "credit_aging_interval",
                     "r1_generation_lifetime", "notify_rate", "reack_rate",
                     "i1_source_rate"):
            value = getattr(self, name)
            if not value > 0:
                refuse(name, value, "must be a positive number of seconds")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            refuse("idle_timeout", self.idle_timeout, "must be positive seconds, or None")
        if self.retransmit_max < self.retransmit_initial:
            refuse("retransmit_max", self.retransmit_max, "must be >= retransmit_initial")
        for name in ("i1_retries_max", "i2_retries_max", "update_retries_max",
                     "close_retries_max", "credit_limit", "i1_rate_threshold",
                     "notify_burst", "reack_burst", "i1_source_burst"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                refuse(name, value, "must be a non-negative integer")
        if not 0 <= self.puzzle_solve_max <= 40:
            refuse("puzzle_solve_max", self.puzzle_solve_max,
                   "use 0 to 40 bits (2^40 hashes is already hours of work)")
        if not 8 <= self.echo_nonce_length <= 64:
            refuse("echo_nonce_length", self.echo_nonce_length, "use 8 to 64 bytes")
        if not 256 <= self.keymat_length <= 65535:
            refuse("keymat_length", self.keymat_length, "use 256 to 65535 bytes")
        if not 0 <= self.puzzle_lifetime_exponent <= 255:
            refuse("puzzle_lifetime_exponent", self.puzzle_lifetime_exponent, "one octet")

    def offered_ciphers(self) -> tuple[int, ...]:
        """HIP_CIPHER ids to offer, NULL appended last only when explicitly allowed."""
        if self.allow_null_cipher and CIPHER_NULL not in self.ciphers:
            return (*self.ciphers, CIPHER_NULL)
        return self.ciphers

    def retransmit_timeout(self, retries_done: int) -> float:
        """Timeout before the next retry after ``retries_done`` retries (exponential backoff)."""
        return min(self.retransmit_initial * (2 ** retries_done), self.retransmit_max)
