"""Outputs that are either whole or absent: write to a temporary file, fsync, rename.

Every command's output (predictions, metrics and their table and samples,
manifests, labels, run configs, checkpoint metadata, curves and plots) goes
through :func:`atomic_open` or one of its wrappers (:func:`save_figure` for
matplotlib figures); a folder written as a whole (a model export) goes
through :func:`atomic_folder`. The temporary file lives in the
output's own folder, so the final ``os.replace`` is a rename within one file
system: a reader sees the old file or the new one, never half of either, and
a command that fails half-way (a missing image, a bad record, Ctrl-C) leaves
the previous output exactly as it was.

The standard library has the pieces (``tempfile``, ``os.replace``) but no
function that combines them with fsync and clean-up on failure, hence this
small module. :func:`refuse_overwrite` guards the other way an output is lost:
an ``--output`` that names one of the command's own inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """A handle on a temporary sibling of ``path`` that replaces ``path`` only if the block succeeds.

    On an exception the temporary file is removed and ``path`` is left untouched.
    Parent folders are created.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode == "wb":
            handle = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            with contextlib.suppress(OSError):  # keep the old file's permissions
                os.chmod(temporary, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically."""
    with atomic_open(path) as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | Path, data: Any, indent: int | None = 2, **kwargs: Any) -> None:
    """Replace ``path`` with ``data`` as JSON (a trailing newline), atomically."""
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, **kwargs) + "\n")


def save_figure(figure: Any, path: str | Path, **kwargs: Any) -> None:
    """Replace ``path`` with a matplotlib figure rendered as PNG, atomically (``savefig`` keywords pass through)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **kwargs)
    write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary sibling folder that becomes ``path`` only if the block succeeds.

    ``path`` must not exist, or be an empty folder (which is replaced). On an
    exception the temporary folder is removed and ``path`` is left as it was.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield temporary
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def refuse_overwrite(output: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """Raise if ``output`` is (after resolving symlinks) one of ``inputs`` (``{"--predictions": path}``).

    ``evaluate --output P.jsonl --predictions P.jsonl`` would otherwise replace
    the predictions with metrics.
    """
    target = Path(output).resolve()
    for flag, value in inputs.items():
        if value is None:
            continue
        if Path(value).resolve() == target:
            raise ValueError(f"the output {output} is also the input {flag} {value}: writing it would destroy the input; "
                             "choose another output path")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
