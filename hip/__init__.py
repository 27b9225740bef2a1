"""hip: a HIPv2 (RFC 7401) implementation with RFC 8046 host mobility.

The protocol core does no I/O: it is fed packets, timer expiries and user calls
with the time passed in, and it yields packets to send, the next timer and events.
``hip.daemon`` (hipd) is the thin asyncio shell that drives it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
