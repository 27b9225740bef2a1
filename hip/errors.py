"""The one exception tree of the ``hip`` package.

Every error the package raises derives from :class:`HIPError`, with one subclass
per subsystem.  Errors caused by a *peer* never escape the receive path (they are
turned into NOTIFY packets, drops with a counted reason, or events); errors caused
by our own misuse of the API raise.
"""


class HIPError(Exception):
    """Root of every error raised by the ``hip`` package."""


class ParseError(HIPError):
    """A packet or parameter could not be decoded (malformed wire data)."""


class CryptoError(HIPError):
    """A cryptographic operation failed (bad key, bad MAC, bad signature, bad padding)."""


class IdentityError(HIPError):
    """A host identity could not be created, loaded or saved."""


class ProtocolError(HIPError):
    """The protocol core was used in a way the current state does not allow."""


class StateTransitionError(ProtocolError):
    """An illegal state transition was requested; the state is left unchanged."""


class DataPlaneError(HIPError):
    """The ESP data plane (kernel XFRM or userspace) could not be set up or used."""


class DaemonError(HIPError):
    """hipd or hipctl failed (socket, configuration, permissions)."""


class NetlinkError(DaemonError):
    """A netlink request to the kernel failed, or it sent a message hipd cannot read."""


class CommandError(HIPError):
    """An external command (``ip``, ``ip xfrm``) failed, timed out or could not be started."""
