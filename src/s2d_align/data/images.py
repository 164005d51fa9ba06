"""Reading radiographs: every image becomes an 8-bit grayscale PIL image, or an :class:`ImageError`.

Training reads images lazily in data-loader workers, so a broken file would
otherwise surface mid-epoch; :func:`find_unreadable` checks every image of a
manifest up front so a run is refused before it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm


class ImageError(ValueError):
    """An image that cannot be used; the message says why."""


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit grayscale (``L``)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"missing file {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return to_grayscale(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"unreadable image {path}: {err}") from err


def to_grayscale(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit grayscale; 16-bit data is rescaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.round().astype("uint8"), mode="L")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L")


def find_unreadable(items: Iterable[tuple[str, Path]], desc: str = "checking images") -> list[tuple[str, Path, str]]:
    """Open every ``(record_id, path)``; return ``(record_id, path, reason)`` for each that fails."""
    items = list(items)
    problems = []
    for record_id, path in tqdm(items, desc=desc, unit="img", leave=False, disable=len(items) < 200):
        try:
            load_image(path)
        except ImageError as err:
            problems.append((record_id, path, str(err)))
    return problems
