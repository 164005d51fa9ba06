"""One-line errors for base models that cannot be loaded (hub unreachable, gated, missing files).

``from_pretrained`` fails in many ways and with long tracebacks: an offline
machine, a gated repository, a folder without weights or tokenizer files, a
tokenizer that needs a package not installed. The user needs to know which
setting named the model and what to pass instead, so every base-model load
goes through :func:`explain_load_errors`, which turns those failures into a
:class:`ModelLoadError` (a ``ValueError``, shown by the CLI as one line).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


class ModelLoadError(ValueError):
    """A base model named by ``key`` could not be loaded; the message says what to pass instead."""


def _reason(name: str, err: BaseException) -> str:
    text = " ".join(str(err).split())
    lowered = text.lower()
    if isinstance(err, ImportError) or "requires the" in lowered or "install" in lowered and "pip" in lowered:
        return f"a package is missing: {text[:200]}"
    if "gated" in lowered or "401" in lowered or "403" in lowered or "restricted" in lowered:
        return "the repository is gated or private; accept its terms and log in, or download it"
    if not Path(name).exists() and ("/" not in name.strip("/") or name.startswith((".", "/", "~"))):
        return "no such folder"
    if Path(name).exists():
        return f"files are missing or unreadable ({text[:160]})"
    return f"the hub is unreachable or has no such repository ({text[:160]})"


@contextlib.contextmanager
def explain_load_errors(key: str, name: str) -> Iterator[None]:
    """Re-raise any failure of the enclosed ``from_pretrained`` calls as a one-line :class:`ModelLoadError`."""
    try:
        yield
    except ModelLoadError:
        raise
    except (OSError, ValueError, ImportError, KeyError, RuntimeError) as err:
        raise ModelLoadError(
            f"{key}={name!r}: cannot be loaded ({_reason(name, err)}); pass a local folder: {key}=/path/to/model"
        ) from err
