"""DICOM radiographs to 8-bit grayscale, the way MIMIC-CXR-JPG was made from MIMIC-CXR.

A model trained on MIMIC-CXR-JPG has only ever seen the JPEGs of that
release, so a DICOM given to it must be turned into the same kind of picture.
MIMIC-CXR-JPG (Johnson et al., "MIMIC-CXR-JPG, a large publicly available
database of labeled chest radiographs", arXiv:1901.07042, section "Image
processing"; PhysioNet, doi:10.13026/jsn5-t979) describes its conversion from
the MIMIC-CXR DICOMs as:

1. read the stored pixel values and apply the DICOM transforms a viewer
   applies -- the modality LUT (rescale slope/intercept) and then the VOI LUT
   or window;
2. invert images whose PhotometricInterpretation is MONOCHROME1, so that
   dense tissue is bright in every image;
3. scale linearly to the full 8-bit range [0, 255] (min-max) and round;
4. equalise the histogram (histogram equalisation, to make contrast uniform
   across devices);
5. store as JPEG at quality 95 (not repeated here: re-encoding would only add
   loss; the model reads the equalised pixels directly).

Summaries of the paper agree on the 12-to-8-bit normalisation and the
histogram equalisation; its full text could not be read from this machine,
so the order of steps 1-3 is ours to re-check against it. Steps 1 use pydicom's ``apply_modality_lut`` and ``apply_voi_lut``; step 4
uses Pillow's ``ImageOps.equalize``.

The inversion of step 2 happens on the LUT output, before any rounding, as
``max + min - value``; a MONOCHROME1 file and its MONOCHROME2 twin (stored
values inverted the same way) therefore give identical pixels.

Compressed transfer syntaxes (JPEG lossless, JPEG 2000, JPEG-LS, RLE) need a
pixel-data plugin besides pydicom; without one the error names what to
install.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from s2d_align.data.images import MAX_PIXELS, ImageError

# Transfer syntax UID -> the packages that decode it (pydicom's pixel-data plugins).
_DECODERS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg (or pillow with JPEG support)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle (or python-gdcm)",
}


def _pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise ImageError("reading DICOM needs pydicom: pip install 's2d-align[dicom]'", "dicom_unsupported") from err
    return pydicom


def read_dicom(source: str | Path | bytes, name: str = "DICOM", max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """A DICOM file (path or bytes) -> 8-bit grayscale PIL image, as MIMIC-CXR-JPG made its JPEGs."""
    pydicom = _pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        ds = pydicom.dcmread(handle)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except Exception as err:  # pydicom raises many types for a broken file
        raise ImageError(f"{name}: not a readable DICOM file: {err}", "unreadable") from err
    if max_pixels is not None and rows * columns > max_pixels:
        raise ImageError(
            f"{name}: declares {columns} x {rows} = {rows * columns:,} pixels, above the limit of {max_pixels:,} "
            "(a corrupt file or a decompression bomb)",
            "too_large",
        )
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    try:
        pixels = ds.pixel_array
    except Exception as err:
        packages = _DECODERS.get(syntax)
        if packages is None:
            raise ImageError(f"{name}: cannot decode the DICOM pixel data: {err}", "unreadable") from err
        raise ImageError(
            f"{name}: its transfer syntax {syntax} is compressed and needs a decoder pydicom does not have: "
            f"pip install {packages}",
            "dicom_unsupported",
        ) from err
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"{name}: photometric interpretation {photometric} is not a grayscale radiograph", "unreadable")
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)  # step 1
    if photometric == "MONOCHROME1":  # step 2
        values = values.max() + values.min() - values
    return equalize(to_uint8(values))  # steps 3 and 4


def to_uint8(values: np.ndarray) -> Image.Image:
    """Min-max scaling to [0, 255], rounded (MIMIC-CXR-JPG step 3)."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def equalize(image: Image.Image) -> Image.Image:
    """Histogram equalisation (MIMIC-CXR-JPG step 4)."""
    return ImageOps.equalize(image)
