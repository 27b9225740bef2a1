"""Where this host's identity lives: ``host_key.pem`` in the configuration directory.

The key is created once, by ``hipctl keygen``; creating it again is refused, and hipd
never generates one on its own (a silently new identity would give the host a new HIT
and break every peer's configuration).  The directory is created mode 0700.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

from hip.errors import IdentityError
from hip.identity import IDENTITY_KINDS, HostIdentity

DEFAULT_CONFIG_DIR = "/etc/hip"
KEY_FILE = "host_key.pem"
#: Identity algorithms ``hipctl keygen`` offers (RSA generation is slow; still allowed).
ALGORITHMS = tuple(IDENTITY_KINDS)


@dataclass(frozen=True)
class IdentityInfo:
    """What ``hipctl keygen`` and ``hipctl hit`` report."""

    path: Path
    algorithm: str
    hit: IPv6Address

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {"path": str(self.path), "algorithm": self.algorithm, "hit": str(self.hit)}


def key_path(config_dir: str | os.PathLike[str]) -> Path:
    """The host key file inside ``config_dir``."""
    return Path(config_dir) / KEY_FILE


def create_identity(config_dir: str | os.PathLike[str], algorithm: str) -> IdentityInfo:
    """Generate and save a new identity; refuse if one exists already."""
    path = key_path(config_dir)
    if path.exists():
        raise IdentityError(
            f"a host identity already exists in {str(path)!r} (HIT "
            f"{_info(HostIdentity.load_pem(path), path).hit}); it is never replaced "
            "automatically. Move it away yourself if you really want a new HIT"
        )
    try:
        Path(config_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create {str(config_dir)!r}: {exc.strerror}") from exc
    identity = HostIdentity.generate(algorithm)
    identity.save_pem(path)
    return _info(identity, path)


def load_identity(config_dir: str | os.PathLike[str]) -> HostIdentity:
    """Load the host identity; say how to create it when there is none."""
    path = key_path(config_dir)
    if not path.exists():
        raise IdentityError(
            f"no host identity at {str(path)!r}; create one with `hipctl keygen"
            f"{'' if str(config_dir) == DEFAULT_CONFIG_DIR else f' --config-dir {config_dir}'}`"
        )
    return HostIdentity.load_pem(path)


def load_identity_info(config_dir: str | os.PathLike[str]) -> IdentityInfo:
    """The HIT and algorithm of the stored identity."""
    return _info(load_identity(config_dir), key_path(config_dir))


def _info(identity: HostIdentity, path: Path) -> IdentityInfo:
    return IdentityInfo(path, identity.kind, IPv6Address(identity.hit))
