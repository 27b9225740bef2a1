"""The one exception tree of the ``xenwam_guest`` package."""


class AgentError(Exception):
    """Root of every error raised by ``xenwam_guest``."""

    #: Process exit status the agent's command line uses when this error reaches it.
    exit_status = 1


class LayoutError(AgentError):
    """Values in the guest's xenstore area do not describe a network (garbage, half
    written, out of range); nothing was applied."""


class UsageError(AgentError):
    """A bad command-line argument; nothing was started."""

    exit_status = 2


class ApplyError(AgentError):
    """Applying a network to an interface failed (netlink refused it, no such interface)."""


class StoreError(AgentError):
    """xenstore could not be read or written (xenstored gone, e.g. just after a resume)."""
