"""The one rule for opening a spec file, used by every command (``check``, ``compile``, ``fmt`` ...).

A spec may come from an untrusted place, so reading one never reads, and so never
echoes, any other kind of file:

* the name must end in ``.arch``, and so must the file it finally names: a symbolic
  link is followed only to another ``.arch`` file (a link to ``/etc/passwd`` named
  ``x.arch`` is refused before anything is read); a link loop is an error;
* it must be a regular file (not a directory, device, FIFO or socket), opened without
  following a last-moment link swap (``O_NOFOLLOW`` on the resolved path) and checked
  on the open descriptor, so what is checked is what is read;
* a file with several hard links must belong to the user running the compiler: a hard
  link named ``.arch`` to somebody else's file is refused;
* its size is checked before reading (:data:`MAX_SOURCE_BYTES`), then it is decoded as
  UTF-8.

Errors are :class:`ArchError` located at the import that named the file, or naming the
file itself (``FILE: error: ...``) for the file a command was given.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .diagnostics import ArchError, Span

MAX_SOURCE_BYTES = 1_000_000
SUFFIX = ".arch"


SHOWN_HEAD, SHOWN_TAIL = 40, 77     # a name longer than 120 characters keeps these ends around "..."


def shown(name) -> str:
    """A file name as messages quote it: NUL written out, at most 120 characters. A longer one keeps its
    first 40 and its last 77 characters, so the file's own name and the root of its path stay readable."""
    name = str(name).replace("\0", "\\0")
    if len(name) <= SHOWN_HEAD + 3 + SHOWN_TAIL:
        return name
    return name[:SHOWN_HEAD] + "..." + name[-SHOWN_TAIL:]


def resolve(path: Path, span: Span | None = None, what: str = "compiled", name: str | None = None) -> Path:
    """``path`` made absolute with links followed; the link's name and its target must be ``.arch``.
    ``name`` is how messages call the file (default: ``path`` as given)."""
    name = shown(path if name is None else name)
    here = span or Span.of_file(name)
    if "\0" in str(path):
        raise ArchError(f"The spec file name '{name}' contains a NUL character.", here)
    if path.suffix != SUFFIX:
        raise ArchError(f"Only .arch spec files can be {what}, and '{name}' is not one; the file was not read.",
                        here)
    try:
        real = path.resolve(strict=False)
    except RuntimeError:        # Python 3.11 raises this for a link loop
        raise ArchError(f"The spec file '{name}' is a symbolic link loop.", here) from None
    except OSError as err:
        raise ArchError(f"The spec file '{name}' cannot be opened: {err.strerror}.", here) from None
    if real.suffix != SUFFIX:
        raise ArchError(f"The spec file '{name}' is a symbolic link to '{shown(real)}', which is not an .arch file; "
                        "the file was not read.", here)
    return real


def read_spec(path: Path, span: Span | None = None, what: str = "compiled", name: str | None = None,
              limit: int = MAX_SOURCE_BYTES) -> str:
    """The text of the spec file ``path`` under the rules of this module; ``span`` locates the import that
    named it (None: the file a command was given), ``name`` is how messages call it."""
    real = resolve(path, span, what, name)
    name = shown(path if name is None else name)
    here = span or Span.of_file(name)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise ArchError(f"The spec file '{name}' does not exist.", here) from None
    except OSError as err:
        raise ArchError(f"The spec file '{name}' cannot be read: {err.strerror}.", here) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise ArchError(f"'{name}' is {kind}; a spec must be a regular file, and this one was not read.", here)
    with os.fdopen(fd, "rb") as f:
        if st.st_nlink > 1 and hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise ArchError(f"The spec file '{name}' is a hard link to a file another user owns; copy it instead "
                            "of linking it.", here)
        if st.st_size > limit:
            raise ArchError(f"The spec file '{name}' is larger than {limit} bytes; split it into imported files.",
                            here)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ArchError(f"The spec file '{name}' is larger than {limit} bytes; split it into imported files.", here)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ArchError(f"The spec file '{name}' is not UTF-8 text (an invalid byte on line {line}); save it as "
                        "UTF-8.", here) from None
