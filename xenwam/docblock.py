"""Generated blocks in the project's Markdown documents.

Some documents carry a part written by code (the phase tables of docs/storage.md and
docs/migrate.md, the benchmark and fault-matrix results): it sits between a begin and an
end marker, HTML comments a reader does not see, and is replaced whole when regenerated.
"""

from __future__ import annotations

from xenwam.errors import ConfigError


def replace_block(text: str, begin: str, end: str, block: str, *,
                  heading: str | None = None) -> str:
    """``text`` with everything from ``begin`` through ``end`` replaced by ``block``
    (which carries the markers itself).  Without the markers, ``block`` is appended under
    ``heading`` when one is given, else it is an error naming them."""
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    if start < 0 or stop < 0:
        if heading is None:
            raise ConfigError(f"the document has no {begin!r} ... {end!r} block to replace")
        return text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    return text[:start] + block + text[stop + len(end):]
