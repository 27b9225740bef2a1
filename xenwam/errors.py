"""The one exception tree of the ``xenwam`` package.

Messages say what failed, quote the offending input, and say what to do about it.
"""


class XenwamError(Exception):
    """Root of every error raised by ``xenwam``."""

    #: Process exit status the CLI uses when this error reaches it.
    exit_status = 1


class UsageError(XenwamError):
    """The user asked for something that cannot be done as asked (bad flags, bad config)."""

    exit_status = 2


class CommandError(XenwamError):
    """An external command failed, timed out or could not be started."""


class HostCheckError(XenwamError):
    """The host lacks something a requested operation needs."""


class XenError(XenwamError):
    """A Xen operation (xl, xenstore, hotplug) failed."""


class DrbdError(XenwamError):
    """A DRBD operation failed or DRBD reported an unexpected state."""


class ConfigError(XenwamError):
    """A configuration (resource definition, lab settings) is invalid; nothing was changed."""

    exit_status = 2


class LabError(XenwamError):
    """The QEMU lab could not be built, started, reached or stopped."""


class MigrationError(XenwamError):
    """A migration phase failed; see the message for the state it was left in."""


class BenchError(XenwamError):
    """A benchmark could not be run."""
