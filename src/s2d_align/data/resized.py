"""Resized copies of a manifest's images (``prepare ... --image-size N``): decode each source image once, at prepare time.

Training decodes every image at every epoch. A MIMIC-CXR-JPG file is about
2544 x 3056, and the vision encoder sees 518 x 518 (Rad-DINO), so most of
the decode is thrown away by the resize that follows. With ``--image-size N``
prepare writes each image once more, as the 8-bit grayscale PNG that
:func:`s2d_align.data.images.load_image` would return, its shorter side
resized to ``N`` with the vision processor's own filter (bicubic) and target
size, and the manifest names the copies instead of the originals.

The trade-off (figures in ``docs/data.md``):

* ``N`` equal to the encoder's ``shortest_edge`` (518 for Rad-DINO): the
  pixels the model sees are *bitwise* those it sees from the originals, since
  the processor's own resize then finds nothing to do (tested).
* ``N`` larger keeps room for another encoder, at a second resize: close
  to the originals' pixels, not equal (a mean of 3.4 grey levels apart on
  per-pixel noise, the worst case, at 560 px), and more disk.
* ``N`` smaller saves more time and disk, and throws away resolution the
  encoder would have used: the model sees an upsampled image.
* The copies are lossless PNGs (a JPEG re-encode would change pixels), an
  extra folder of about a sixth of the originals' pixels. Images whose shorter
  side is already ``<= N`` are copied at their own size, never upsampled.

Copies are written atomically and kept across reruns: a copy newer than its
source is reused, so an interrupted prepare resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from PIL import Image
from tqdm.auto import tqdm

from s2d_align import atomic
from s2d_align.data.images import ImageError, load_image
from s2d_align.data.manifest import Study
from s2d_align.data.prepare_report import PrepareReport

RESAMPLE = Image.Resampling.BICUBIC  # the filter of Rad-DINO's BitImageProcessor (resample=3)


def shortest_edge_size(size: tuple[int, int], edge: int) -> tuple[int, int]:
    """(width, height) after resizing ``size`` so its shorter side is ``edge``, as transformers' processors round it."""
    import numpy as np
    from transformers.image_transforms import get_resize_output_image_size

    width, height = size
    h, w = get_resize_output_image_size(
        np.zeros((height, width, 1), dtype=np.uint8), edge, default_to_square=False, input_data_format="channels_last"
    )
    return int(w), int(h)


def resized(image: Image.Image, edge: int) -> Image.Image:
    """The image with its shorter side at ``edge`` (never enlarged)."""
    if min(image.size) <= edge:
        return image
    return image.resize(shortest_edge_size(image.size, edge), resample=RESAMPLE)


def check_resize(edge: int | None) -> None:
    """Refuse a bad ``--image-size`` before any long step."""
    if edge is not None and (isinstance(edge, bool) or not isinstance(edge, int) or edge < 1):
        raise ValueError(f"--image-size must be a positive number of pixels, got {edge!r}")


def copy_folder_name(edge: int) -> str:
    return f"images_{edge}"


def write_resized_copies(
    studies: Sequence[Study],
    out: Path,
    edge: int,
    report: PrepareReport,
    source_root: Path,
    workers: int | None = None,
) -> list[Study]:
    """Write ``OUT/images_N/<path under source_root>.png`` for every image; return the studies naming them.

    ``source_root`` is the folder the builder read the images from (the
    MIMIC-CXR-JPG root, the Open-i PNG folder), so the copies keep the
    source's layout; should an image lie outside it, the images' common
    folder is used instead.

    The manifest's paths to the copies are relative to ``OUT`` (the manifest's
    folder), so training needs no ``data.image_root``. An image that fails to
    decode here drops out as in :func:`s2d_align.data.assembly.vet_images`
    (``image_dropped:<reason>``), and a study left with none is skipped.
    """
    from s2d_align.data.assembly import keep_images, threaded

    check_resize(edge)
    out = Path(out)
    folder = out / copy_folder_name(edge)
    resolved = {p: str(Path(p).resolve()) for s in studies for p in s.images}  # once per path: resolve() stats the disk
    sources = sorted(set(resolved.values()))
    if not sources:
        return list(studies)
    root = str(Path(source_root).resolve())
    if any(os.path.commonpath([root, p]) != root for p in sources):
        root = os.path.commonpath([os.path.dirname(p) for p in sources])
    targets = {p: folder / Path(os.path.relpath(p, root)).with_suffix(".png") for p in sources}

    def write(source: str) -> str | ImageError:
        target = targets[source]
        try:
            if target.is_file() and target.stat().st_mtime >= os.stat(source).st_mtime:
                return "reused"
            copy = resized(load_image(source), edge)
        except ImageError as err:
            return err
        with atomic.atomic_open(target, "wb") as handle:
            copy.save(handle, format="PNG")
        return "written"

    started = time.perf_counter()
    progress = tqdm(threaded(write, sources, workers), total=len(sources), desc=f"resizing images to {edge} px", unit="img")
    outcomes: dict[str, str | ImageError] = dict(zip(sources, progress))

    def kept_path(study: Study, index: int) -> str | ImageError:
        source = resolved[study.images[index]]
        outcome = outcomes[source]
        return outcome if isinstance(outcome, ImageError) else os.path.relpath(targets[source], out)

    kept = keep_images(studies, kept_path, report, why_none="no image could be resized")
    counts = [o for o in outcomes.values() if isinstance(o, str)]
    report.notes["resized_copies"] = {
        "image_size": edge,
        "folder": copy_folder_name(edge),
        "source_root": root,
        "resample": "bicubic",
        "written": counts.count("written"),
        "reused": counts.count("reused"),
        "failed": len(outcomes) - len(counts),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return kept
