"""One radiograph from whatever a user hands over: a path, bytes, a PIL image or an array.

Files go through the same reader as training (:func:`s2d_align.data.images.load_image`),
so a PNG or JPEG reports exactly as ``generate`` would. DICOM is read as
MIMIC-CXR-JPG was made (:mod:`s2d_align.inference.dicom`). Uploads (bytes)
are refused with an :class:`ImageError` that says what is wrong: an empty
file, something that is not an image, a decompression bomb (a tiny file
declaring a huge canvas, refused from its header before any pixel is
decoded), or a compressed DICOM without its decoder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from s2d_align.data.images import MAX_PIXELS, ImageError, _grayscale, _rescale_to_uint8, is_dicom, load_image
from s2d_align.inference.dicom import read_dicom

__all__ = ["ImageError", "read_image", "MAX_PIXELS"]


def _is_dicom_bytes(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_image(source, max_pixels: int | None = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """One image as 8-bit grayscale PIL (``L``), or :class:`ImageError` naming the problem."""
    if isinstance(source, Image.Image):
        _check(source.size, max_pixels, name or "image")
        return _grayscale(source)[0]
    if isinstance(source, np.ndarray):
        return _from_array(source, name or "array")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), max_pixels, name or "upload")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"missing file {path}", "missing_file")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: the file is empty (zero bytes)", "empty")
        if is_dicom(path):
            return read_dicom(path, str(path), max_pixels)
        return load_image(path, max_pixels)
    raise TypeError(f"cannot read an image from {type(source).__name__}: give a path, bytes, a PIL image or an array")


def _check(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name}: declares {width} x {height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            "(a corrupt file or a decompression bomb)",
            "too_large",
        )


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return _grayscale(Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)))[0]
    if array.ndim != 2:
        raise ImageError(f"{name}: an image array must be (H, W) or (H, W, 3), got shape {array.shape}", "unreadable")
    if array.dtype == np.uint8:
        return Image.fromarray(array, mode="L")
    return _rescale_to_uint8(np.asarray(array, dtype=np.float64))


def _from_bytes(data: bytes, max_pixels: int | None, name: str) -> Image.Image:
    if not data:
        raise ImageError(f"{name}: the file is empty (zero bytes)", "empty")
    if _is_dicom_bytes(data):
        return read_dicom(data, name, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check(image.size, max_pixels, name)
            image.load()
            return _grayscale(image)[0]
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: larger than Pillow's decompression-bomb limit: {err}", "too_large") from err
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image (PNG, JPEG or DICOM expected)", "unreadable") from err
    except Exception as err:  # truncated data, broken chunks ...
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        raise ImageError(f"{name}: unreadable image: {err}", reason) from err
