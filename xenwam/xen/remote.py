"""Commands on the other dom0, over ssh as root, the way ``xl migrate`` reaches it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xenwam.runner import DEFAULT_TIMEOUT, CommandResult, Runner, default_runner

#: Where ssh keeps its shared connections to other dom0s (one per host).
CONTROL_DIR = "/run/xenwam/ssh"
#: Batch mode: never ask for a password; the dom0s trust each other's keys, as for xl.
#: One shared connection per destination: a migration runs dozens of short commands there,
#: and each new ssh handshake costs seconds on a slow host (17 s in the TCG lab).
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=10",
               "-o", "ControlMaster=auto", "-o", f"ControlPath={CONTROL_DIR}/%C",
               "-o", "ControlPersist=60", "-T")


def ensure_control_dir() -> None:
    """Create the directory of shared ssh connections (root only)."""
    os.makedirs(CONTROL_DIR, mode=0o700, exist_ok=True)


def ssh_argv(host: str, argv: Sequence[str], ssh: Sequence[str] = ("ssh",)) -> list[str]:
    """``ssh HOST -- 'ARGV'``: the remote shell gets one quoted command line."""
    return [*ssh, *SSH_OPTIONS, host, "--", shlex.join(argv)]


@dataclass(frozen=True)
class SshRunner:
    """A :class:`~xenwam.runner.Runner` whose commands run on ``host``."""

    host: str
    local: Runner = field(default=default_runner)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the remote host (``env`` and ``cwd`` are applied there)."""
        ensure_control_dir()
        remote = list(argv)
        if env:
            remote = ["env", *(f"{k}={v}" for k, v in env.items()), *remote]
        if cwd:
            remote = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *remote]
        return self.local.run(ssh_argv(self.host, remote), timeout=timeout, check=check,
                              input=input)
