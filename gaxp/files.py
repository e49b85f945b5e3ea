"""Writing files so that a failed write loses nothing, and says so in one line.

- ``atomic_path(path)``: write a temporary file beside ``path``, rename it over ``path`` when
  complete (``os.replace`` is atomic on POSIX), remove it on failure. A reader sees the old file
  or the new one, never half of one; a full disk leaves the old file as it was.
- ``append(fd, data, size)``: one record appended to an ``O_APPEND`` file; on failure the part
  that got written is cut off again, so the file ends with its last complete record.
- ``cause(e)``, ``is_write_error(e)``, ``failed_file(e)``: what an ``OSError`` or a TensorStore
  error (Orbax's ``ValueError: RESOURCE_EXHAUSTED ... [os_error_code='28']``) says went wrong.

Only the standard library: every layer of gaxp may import this module.
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path

from gaxp.errors import WriteFailed

# errno values that mean "this file cannot be written here" (not a bug, not a missing input)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES,
                errno.EPERM)
# ... of which these can only come from a write (EIO and EACCES can come from a read too)
ONLY_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
_OS_CODE = re.compile(r"os_error_code='?(\d+)")
_FAILED_FILE = re.compile(r'Failed writing: "([^"]+)"')  # TensorStore names the file, then its database
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


def errno_of(e: BaseException) -> int | None:
    if isinstance(e, OSError) and e.errno:
        return e.errno
    found = _OS_CODE.search(str(e))
    if found:
        return int(found.group(1))
    text = str(e)
    return next((n for n in WRITE_ERRNOS if os.strerror(n) in text), None)


def is_write_error(e: BaseException) -> bool:
    """True for a failure of the file system (full, quota, read-only, too large, I/O, denied)."""
    return errno_of(e) in WRITE_ERRNOS


def cause(e: BaseException) -> str:
    """``No space left on device`` and the like; else the first line of the message."""
    n = errno_of(e)
    if n is not None:
        return os.strerror(n)
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def failed_file(e: BaseException, default) -> str:
    """The file a failed write names (``OSError.filename``, TensorStore's quoted path)."""
    if isinstance(e, OSError) and e.filename:
        return str(e.filename)
    found = _FAILED_FILE.search(str(e)) or _QUOTED_PATH.search(str(e))
    return found.group(1) if found else str(default)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


@contextmanager
def atomic_path(path, what: str = ""):
    """Yields a temporary path beside ``path`` (same suffix, so writers that infer the format
    from it work); renamed over ``path`` on success, removed on failure. An ``OSError`` becomes
    ``WriteFailed`` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise WriteFailed(path, cause(e), what) from None
    except BaseException:
        _unlink(tmp)
        raise


def write_atomic(path, data: str | bytes, what: str = "") -> None:
    """``path`` holds ``data`` afterwards, or (on any failure) exactly what it held before."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data


def append(fd: int, data: bytes, size: int, path, what: str = "") -> int:
    """Append ``data`` to the ``O_APPEND`` file ``fd`` (``size`` bytes long); returns the new
    size. On failure the file is cut back to ``size`` bytes and ``WriteFailed`` is raised."""
    try:
        done = 0
        while done < len(data):  # a write can be short (disk filling up, file size limit)
            done += os.write(fd, data[done:])
    except OSError as e:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise WriteFailed(path, cause(e), what) from None
    return size + len(data)


def unwritable(path: Path) -> tuple[Path, str] | None:
    """Why ``path`` could not be created and written, checked on its nearest existing ancestor
    (a directory made and removed there): (that ancestor, the reason), or None when it can."""
    import tempfile

    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return probe, "not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".gaxp-write-test-"))
    except OSError as e:
        return probe, e.strerror or type(e).__name__
    return None
