"""Torch-free helpers of every front end: atomic file writes, clean-up on signals, the checkpoint error and
the photo extensions. Colorizing with the ONNX model imports these without torch (utils re-exports them)."""
from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import threading
from typing import BinaryIO, Callable

# Photo file types read by training (dataset.find_images) and by the CLI, which also takes GIFs.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or not one of ours; the message names the file."""


@functools.lru_cache(maxsize=None)
def _new_file_mode() -> int:
    """0666 less the umask: what open() would give a new file. Read once, because reading the umask means
    setting it, which must not race threads that create files."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# Temporary files of the write_atomic calls in progress, in every thread. A signal handler
# (remove_temporaries_on_signals) deletes them; the lock keeps new ones from appearing meanwhile.
_LIVE_TEMPORARIES: set[str] = set()
_TEMPORARIES_LOCK = threading.RLock()


def _new_temporary(path: str) -> tuple[int, str]:
    """(fd, name) of a new, empty, private (0600) temporary file beside path: .tmp_<random><its extension>.

    The name is registered before the file is created, so a signal arriving at any point finds it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp_{secrets.token_hex(8)}{os.path.splitext(path)[1]}")
    with _TEMPORARIES_LOCK:
        _LIVE_TEMPORARIES.add(tmp)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600), tmp
        except BaseException:
            _LIVE_TEMPORARIES.discard(tmp)
            raise


def write_atomic(path: str, write: Callable[[BinaryIO], None], fsync: bool = False) -> None:
    """write(file) into a uniquely named temporary file beside path, then rename it over path.

    Readers never see a half-written file; a failure (full disk, read-only folder, an error in write)
    raises, removes the temporary file and leaves any previous file at path intact; so does SIGINT or
    SIGTERM inside remove_temporaries_on_signals. The result gets a normal file's permissions.
    """
    fd, tmp = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        _LIVE_TEMPORARIES.discard(tmp)


@contextlib.contextmanager
def remove_temporaries_on_signals(notice: str = "", signals: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGHUP")):
    """For the block: on any of these signals, delete the temporary files of every unfinished write_atomic
    (in any thread), write notice (its {signal} filled in) to stderr, and end the process by that signal,
    as it would have ended without us (a shell sees 130 or 143). Previous handlers come back afterwards.

    Without this, SIGTERM kills the process with no cleanup at all, and SIGINT's KeyboardInterrupt only
    reaches the main thread. Outside the main thread (which alone may set handlers) it does nothing;
    signals that are ignored (nohup) stay ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        with _TEMPORARIES_LOCK:  # held until the end: no thread starts a new temporary file meanwhile
            for tmp in list(_LIVE_TEMPORARIES):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if notice and stderr_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(stderr_fd, (notice.format(signal=signal.Signals(signum).name) + "\n").encode())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            os._exit(128 + signum)  # not reached: the default action ends the process

    try:
        stderr_fd = os.dup(2)  # the real stderr, even while a decode has fd 2 redirected (image_io)
    except OSError:
        stderr_fd = None
    previous = {}
    try:
        for name in signals:
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if stderr_fd is not None:
            os.close(stderr_fd)


