"""Reading radiographs: every image becomes an 8-bit grayscale PIL image, or an :class:`ImageError`.

Training reads images lazily in data-loader workers, so a broken file would
otherwise surface mid-epoch; :func:`find_unreadable` checks every image of a
manifest up front so a run is refused before it starts, and the dataset
builders call :func:`check_image` on every image they list.

What real archives contain, and what happens to it:

* PNG/JPEG in 8 or 16 bits, grayscale, RGB or with an alpha channel: 16-bit
  data is min-max rescaled to 8 bits (not clipped), alpha is composited onto
  black, colour is converted to luminance. Each repair is reported as a *fix*.
* DICOM (needs the ``dicom`` extra, pydicom): the modality LUT (rescale
  slope/intercept) and then the VOI LUT or window are applied, as a viewer
  would, and MONOCHROME1 (white = low values) is inverted so bone is bright.
* Truncated files, files Pillow cannot identify, missing files and images
  above :data:`MAX_PIXELS` (decompression bombs: a tiny file declaring a huge
  canvas) raise :class:`ImageError` with a ``reason`` slug the builders count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

from PIL import Image
from tqdm.auto import tqdm

# The largest chest radiographs are about 4,300 x 3,500 (15 MP); a limit well
# above that and below Pillow's own bomb threshold (about 89 MP) rejects
# forged canvases before any pixel is decoded.
MAX_PIXELS = 50_000_000

CheckLevel = Literal["none", "header", "full"]


class ImageError(ValueError):
    """An image that cannot be used; the message says why, ``reason`` is a slug for counting.

    Reasons: ``missing_file``, ``too_large``, ``truncated``, ``unreadable``,
    ``dicom_unsupported``.
    """

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


def load_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Open an image file (PNG, JPEG, DICOM, ...) as 8-bit grayscale (``L``)."""
    return read_image(path, max_pixels)[0]


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> tuple[Image.Image, tuple[str, ...]]:
    """Like :func:`load_image`, and also say which repairs were needed (``16bit_rescaled`` ...)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"missing file {path}", "missing_file")
    if is_dicom(path):
        return _read_dicom(path, max_pixels)
    try:
        with Image.open(path) as image:
            _check_size(path, image.size, max_pixels)
            image.load()
            return _grayscale(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"image {path} is larger than Pillow's decompression-bomb limit: {err}", "too_large") from err
    except Exception as err:  # a malformed file makes Pillow raise OSError, SyntaxError, EOFError, struct.error ...
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        raise ImageError(f"unreadable image {path}: {err}", reason) from err


def check_image(path: str | Path, level: CheckLevel = "header", max_pixels: int | None = MAX_PIXELS) -> tuple[str, ...]:
    """Vet one image for a manifest and return the repairs loading it will need.

    ``full`` decodes every pixel (sure, and slow for 377,000 MIMIC JPEGs).
    ``header`` reads the header (size limit, format) and the file's last 4 KB
    (a JPEG's EOI marker, a PNG's IEND chunk must be there), which catches
    truncated downloads at the cost of two small reads. ``none`` only checks
    that the file exists. Raises :class:`ImageError`.
    """
    path = Path(path)
    if level == "full":
        return read_image(path, max_pixels)[1]
    if level == "none":
        if not path.is_file():
            raise ImageError(f"missing file {path}", "missing_file")
        return ()
    if is_dicom(path):
        if not path.is_file():
            raise ImageError(f"missing file {path}", "missing_file")
        return _check_dicom_header(path, max_pixels)
    try:
        with path.open("rb") as handle:  # one open for the header and the tail
            with Image.open(handle) as image:
                _check_size(path, image.size, max_pixels)
                image_format, mode = image.format, image.mode
            complete = _has_complete_tail(handle, image_format)
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"missing file {path}", "missing_file") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"image {path} is larger than Pillow's decompression-bomb limit: {err}", "too_large") from err
    except Exception as err:  # see read_image
        raise ImageError(f"unreadable image {path}: {err}", "unreadable") from err
    if not complete:
        raise ImageError(f"image {path} is truncated (no end marker); download it again", "truncated")
    return _mode_fixes(mode)


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


_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def is_dicom(path: Path) -> bool:
    """By extension, or by the ``DICM`` magic at byte 128 (many archives drop the extension)."""
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom"):
        return True
    if suffix in _RASTER_SUFFIXES:
        return False
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


# --------------------------------------------------------------------------- internals


def _check_size(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"image {path} declares {width} x {height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (a corrupt file or a decompression bomb)",
            "too_large",
        )


# Some writers append bytes after a JPEG's EOI marker (padding, vendor trailers); readers ignore them.
# The marker cannot occur inside entropy-coded scan data (0xFF is byte-stuffed there), so finding it
# near the end means the scan is complete, and a download cut short has none there.
_TAIL_BYTES = 4096


def _has_complete_tail(handle, image_format: str | None) -> bool:
    if image_format not in ("JPEG", "PNG"):
        return True
    handle.seek(0, 2)
    size = handle.tell()
    handle.seek(max(0, size - _TAIL_BYTES))
    tail = handle.read()
    if image_format == "JPEG":
        return b"\xff\xd9" in tail
    return b"IEND" in tail


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _mode_fixes(mode: str) -> tuple[str, ...]:
    if mode in _SIXTEEN_BIT:
        return ("16bit_rescaled",)
    if mode in ("RGBA", "LA", "PA"):
        return ("alpha_flattened",)
    if mode in ("RGB", "CMYK", "YCbCr", "P"):
        return ("colour_to_grayscale",)
    return ()


def _grayscale(image: Image.Image) -> tuple[Image.Image, tuple[str, ...]]:
    fixes = _mode_fixes(image.mode)
    if image.mode in _SIXTEEN_BIT:
        import numpy as np

        return _rescale_to_uint8(np.asarray(image, dtype=np.float64)), fixes
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L"), fixes


def _rescale_to_uint8(array) -> Image.Image:
    import numpy as np

    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(scaled.round().astype("uint8"), mode="L")


def _import_pydicom():
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - pydicom is in the dev extra
        raise ImageError("reading DICOM needs pydicom: pip install 's2d-align[dicom]'", "dicom_unsupported") from err
    return pydicom


def _check_dicom_header(path: Path, max_pixels: int | None) -> tuple[str, ...]:
    pydicom = _import_pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except Exception as err:  # pydicom raises many types for a broken file
        raise ImageError(f"unreadable DICOM {path}: {err}", "unreadable") from err
    _check_size(path, (columns, rows), max_pixels)
    return _dicom_fixes(ds)


def _dicom_fixes(ds) -> tuple[str, ...]:
    fixes = ["dicom_decoded"]
    if str(getattr(ds, "PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        fixes.append("dicom_monochrome1_inverted")
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        fixes.append("dicom_voi_lut_applied")
    return tuple(fixes)


def _read_dicom(path: Path, max_pixels: int | None) -> tuple[Image.Image, tuple[str, ...]]:
    import numpy as np

    pydicom = _import_pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        _check_size(path, (int(ds.Columns), int(ds.Rows)), max_pixels)
        pixels = ds.pixel_array
    except ImageError:
        raise
    except Exception as err:  # missing pixel handler, truncated pixel data, broken header ...
        message = str(err)
        reason = "dicom_unsupported" if "handler" in message.lower() or "plugin" in message.lower() else "unreadable"
        raise ImageError(
            f"cannot decode DICOM {path}: {message} (compressed DICOM may need pylibjpeg or gdcm)", reason
        ) from err
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        array = np.asarray(Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L"), dtype=np.float64)
        return _rescale_to_uint8(array), ("dicom_decoded", "colour_to_grayscale")
    array = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
    if photometric == "MONOCHROME1":
        array = array.max() + array.min() - array
    return _rescale_to_uint8(array), _dicom_fixes(ds)
