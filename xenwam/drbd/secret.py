"""The shared secret of a DRBD resource: generated, stored at mode 0600, read back.

DRBD's ``cram-hmac-alg`` and ``shared-secret`` make both peers prove that they know the
secret when they connect.  That is all they do: the replicated data itself crosses the
link neither encrypted nor integrity-protected (see docs/storage.md).

A secret file holds one line: the secret, 8-64 printable ASCII characters (the kernel's
limit).  It must be readable by its owner only, like an ssh private key; a file that any
group or other user could read is refused, with the ``chmod`` that fixes it.  No message
here ever quotes the secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from xenwam.errors import ConfigError

#: The kernel's limit on ``shared-secret`` (SHARED_SECRET_MAX in drbd_limits.h).
SECRET_MAX = 64
SECRET_MIN = 8
#: Characters of a generated secret: letters and digits, nothing drbd.conf must escape.
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: A generated secret's length: 48 characters of 62 are about 285 bits.
GENERATED_LENGTH = 48
#: Larger than any valid secret file: refuse without reading the rest.
FILE_MAX = 4096


def generate(length: int = GENERATED_LENGTH) -> str:
    """A fresh random secret from the operating system's CSPRNG."""
    import secrets  # here: it pulls in hashlib, which most `xenwam disk` commands never use

    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def write_secret_file(path: Path, force: bool = False) -> None:
    """Write a fresh secret to ``path`` at mode 0600; refuse to replace a file unless
    ``force``.  The file is created with its final mode, never briefly readable."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; name the file to write the secret to")
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is not an existing directory; create it first")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create {tmp}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as out:
            out.write(generate() + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask did
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: never replaces a secret by accident
            except FileExistsError:
                raise ConfigError(
                    f"{path} already exists; keep it, or give --force to replace it "
                    "(then copy the new one to the peer)") from None
            except OSError as exc:
                raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_secret_file(path: Path) -> str:
    """The secret in ``path``, checked; raise :class:`ConfigError` (never quoting it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist; create one with "
                          f"`xenwam disk secret {path}`") from None
    except OSError as exc:
        raise ConfigError(f"cannot open secret file {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"secret file {path} is not a regular file; give the file "
                          "written by `xenwam disk secret`")
    if st.st_mode & 0o077:
        os.close(fd)
        raise ConfigError(
            f"secret file {path} has mode {stat.S_IMODE(st.st_mode):04o}, open to its group "
            f"or others; make it private with `chmod 600 {path}` (and check who read it)")
    with os.fdopen(fd, "rb") as f:
        data = f.read(FILE_MAX + 1)
    if len(data) > FILE_MAX:
        raise ConfigError(f"secret file {path} is over {FILE_MAX} bytes; it should hold "
                          "one line, the secret")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path} is not ASCII text; it should hold one line, "
                          "the secret") from None
    lines = text.strip().splitlines()
    if len(lines) != 1:
        raise ConfigError(f"secret file {path} holds {len(lines)} lines; it should hold one, "
                          "the secret")
    secret = lines[0].strip()
    problem = secret_problem(secret)
    if problem is not None:
        raise ConfigError(f"the secret in {path} {problem}")
    return secret


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot be a DRBD shared secret (without quoting it), or None."""
    if not SECRET_MIN <= len(secret) <= SECRET_MAX:
        return f"has {len(secret)} characters; use {SECRET_MIN}-{SECRET_MAX}"
    if not all(c.isascii() and c.isprintable() and c not in ' "\'\\' for c in secret):
        return "holds spaces, quotes, backslashes or non-ASCII characters; use printable ASCII"
    return None
