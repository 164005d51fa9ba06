"""Time from ``train`` start to its first step on a large manifest of MIMIC-size JPEGs.

Writes ``--distinct`` different 2544 x 3056 JPEGs and hard-links them to
``--images`` paths (one image per study, so the disk holds little), builds tiny
base models, and runs the real ``train`` until its first step (the step itself
is cut off): cold (no ``image_checks.json`` or ``report_tokens.json`` in the
run folder) and warm (the resume case; ``--profile N`` breaks a further warm
start down by function). "Before" is the check ``train`` used to run: a serial full
decode of every image on the main process, timed on ``--before-sample`` images
and extrapolated to the manifest (say so when quoting it).

The hard links share ``--distinct`` inodes, so after the first reads the
files sit in the page cache: a cold run here measures the check's CPU cost,
not a cold disk's seeks.

    PYTHONPATH=src python benchmarks/bench_startup.py --work /tmp/bench-startup --images 300000 --workers 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from s2d_align.data.manifest import Study, write_manifest

WIDTH, HEIGHT = 2544, 3056  # MIMIC-CXR's most common JPEG size


class FirstStep(Exception):
    pass


def write_sources(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 180, WIDTH, dtype=np.float32)[None, :] + np.linspace(0, 60, HEIGHT, dtype=np.float32)[:, None]
    paths = []
    for i in range(count):
        path = folder / f"source_{i}.jpg"
        if not path.is_file():
            noise = rng.normal(0, 12, (HEIGHT // 8, WIDTH // 8)).astype(np.float32).repeat(8, 0).repeat(8, 1)
            Image.fromarray(np.clip(ramp + noise + i % 10, 0, 255).astype(np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


def write_manifest_of_links(root: Path, sources: list[Path], count: int) -> Path:
    manifest = root / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    studies = []
    for i in range(count):
        relative = f"images/d{i // 1000}/s{i}.jpg"
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(sources[i % len(sources)], target)
        split = "val" if i % 50 == 0 else "train"
        findings = "The lungs are clear. " * (1 + i % 7) + "No pleural effusion."
        studies.append(Study(id=f"s{i}", split=split, subject_id=f"p{i}", study_id=f"s{i}", images=(relative,), findings=findings))
    write_manifest(manifest, studies)
    return manifest


def time_to_first_step(config, out: Path) -> float:
    from s2d_align.training import loop

    real = loop._pick_context

    def stop(*args, **kwargs):
        raise FirstStep

    loop._pick_context = stop
    started = time.perf_counter()
    try:
        loop.train(config, out)
    except FirstStep:
        return time.perf_counter() - started
    finally:
        loop._pick_context = real
    raise RuntimeError("train ended without a step")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-startup"))
    parser.add_argument("--images", type=int, default=300_000)
    parser.add_argument("--distinct", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--level", default="header", choices=["none", "header", "full"])
    parser.add_argument("--before-sample", type=int, default=100)
    parser.add_argument("--warm-only", action="store_true", help="keep the run folder's cache and time the warm start only")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile the last warm start with cProfile and print its N costliest calls (cumulative)")
    args = parser.parse_args(argv)
    from s2d_align.config import load_config
    from s2d_align.data.images import find_unreadable
    from s2d_align.models.tiny import TinySizes, build_tiny_models

    t = time.perf_counter()
    sources = write_sources(args.work / "sources", args.distinct)
    root = args.work / f"data_{args.images}"
    manifest = write_manifest_of_links(root, sources, args.images)
    print(f"dataset: {args.images} images ({args.distinct} distinct {WIDTH}x{HEIGHT} JPEGs, "
          f"{sources[0].stat().st_size / 1e6:.1f} MB each) ready in {time.perf_counter() - t:.0f} s")
    base = args.work / "base_models"
    if not (base / "llm" / "config.json").is_file():
        small = args.work / "small_manifest.jsonl"
        shutil.copy(manifest, small) if args.images <= 2000 else small.write_text("".join(manifest.open().readlines()[:2000]))
        build_tiny_models(base, small, 0, TinySizes(llm_pretrain_steps=0))
    config = load_config("demo", [
        f"model.vision.name_or_path={base / 'vision'}", f"model.text.name_or_path={base / 'text'}",
        f"model.llm.name_or_path={base / 'llm'}", f"data.manifest={manifest}",
        f"data.image_check={args.level}", f"data.image_check_workers={args.workers}",
        "train.stages=[{name: s1, contexts: [image], epochs: 1}]", "train.batch_size=8",
    ])
    out = args.work / "run"
    print(f"\nimages: {args.images}; check level {args.level}; {args.workers} threads; {os.cpu_count()} CPU cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    sample = [(f"s{i}", root / f"images/d{i // 1000}/s{i}.jpg") for i in range(min(args.before_sample, args.images))]
    t = time.perf_counter()
    find_unreadable(sample)
    per_image = (time.perf_counter() - t) / len(sample)
    print(f"before: serial full decode on the main process, {per_image * 1000:.1f} ms/image measured on "
          f"{len(sample)} images, extrapolated to {args.images}: {per_image * args.images:.0f} s "
          f"= {per_image * args.images / 3600:.1f} h for the check alone", flush=True)
    if not args.warm_only:
        shutil.rmtree(out, ignore_errors=True)
        cold = time_to_first_step(config, out)
        print(f"after, cold (no cache):   {cold:8.1f} s to the first step", flush=True)
    warm = time_to_first_step(config, out)
    print(f"after, warm (cache):      {warm:8.1f} s to the first step", flush=True)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        again = time_to_first_step(config, out)
        profiler.disable()
        print(f"after, warm, profiled:    {again:8.1f} s to the first step (profiling adds its own cost)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
