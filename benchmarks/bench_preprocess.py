"""Time to turn one MIMIC-size radiograph into Rad-DINO's input tensor, three ways, side by side.

* **RGB first**: ``load_image`` then the processor on the RGB image (the
  processor resizes three identical channels), as the trainer did before;
* **grayscale first**: ``ImagePreprocessor`` (``models/vision.py``) resizes the
  single channel, then makes it RGB (same tensor);
* **resized copy**: the PNG that ``prepare ... --image-size 518`` writes, read
  by the same ``ImagePreprocessor`` (same tensor again: checked here).

The images are ``--images`` distinct 2544 x 3056 JPEGs (quality 95, noisy
ramps, as ``bench_startup.py`` writes them), the processor is Rad-DINO's
``preprocessor_config.json`` (BitImageProcessor, shortest edge 518, bicubic).
Each figure is the median over images of the best of ``--repeats`` timings,
in one process, one thread. It also prints what writing a copy costs once,
at prepare time, and the files' sizes.

    PYTHONPATH=src python benchmarks/bench_preprocess.py --work /tmp/bench-preprocess --images 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench_startup import write_sources
from s2d_align.data.images import load_image
from s2d_align.data.resized import resized
from s2d_align.models.standins import RAD_DINO_PREPROCESSOR
from s2d_align.models.vision import ImagePreprocessor


def best(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-preprocess"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=518, help="--image-size of the copies (default: Rad-DINO's 518)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoImageProcessor

    folder = args.work / "rad-dino"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(RAD_DINO_PREPROCESSOR))
    processor = AutoImageProcessor.from_pretrained(folder)
    preprocess = ImagePreprocessor(processor)
    sources = write_sources(args.work / "sources", args.images)

    rows: dict[str, list[float]] = {"rgb_first": [], "gray_first": [], "copy": [], "write_copy": []}
    sizes = {"jpeg": [], "png": []}
    equal = True
    for source in sources:
        copy_path = args.work / "copies" / f"{source.stem}.png"
        copy_path.parent.mkdir(parents=True, exist_ok=True)
        seconds, _ = best(lambda: resized(load_image(source), args.size).save(copy_path, format="PNG"), args.repeats)
        rows["write_copy"].append(seconds)
        seconds, old = best(
            lambda: processor(images=[load_image(source).convert("RGB")], return_tensors="pt")["pixel_values"],
            args.repeats,
        )
        rows["rgb_first"].append(seconds)
        seconds, new = best(lambda: preprocess([load_image(source)]), args.repeats)
        rows["gray_first"].append(seconds)
        seconds, copied = best(lambda: preprocess([load_image(copy_path)]), args.repeats)
        rows["copy"].append(seconds)
        equal &= bool(torch.equal(old, new) and torch.equal(new, copied))
        sizes["jpeg"].append(source.stat().st_size)
        sizes["png"].append(copy_path.stat().st_size)

    median = {name: statistics.median(values) * 1000 for name, values in rows.items()}
    print(f"{args.images} images of 2544 x 3056, copies at {args.size} px; median of per-image best of {args.repeats}, 1 thread")
    print(f"  RGB first (before)             {median['rgb_first']:7.1f} ms per image")
    print(f"  grayscale first (now)          {median['gray_first']:7.1f} ms per image  "
          f"({median['rgb_first'] / median['gray_first']:.1f}x faster)")
    print(f"  resized copy (--image-size)    {median['copy']:7.1f} ms per image  "
          f"({median['rgb_first'] / median['copy']:.1f}x faster than before, "
          f"{median['gray_first'] / median['copy']:.1f}x than now)")
    print(f"  writing one copy, once         {median['write_copy']:7.1f} ms per image (prepare time)")
    print(f"  files: JPEG {statistics.median(sizes['jpeg']) / 1e6:.2f} MB, PNG copy {statistics.median(sizes['png']) / 1e6:.2f} MB (medians)")
    print(f"  all three tensors bitwise equal: {equal}")


if __name__ == "__main__":
    main()
