"""``s2d-align report``: one study's report from its images, with its labels and grounding overlays on disk.

The JSON written by ``--output`` is ``{"report", "labels", "model",
"settings"}`` -- the text, the 14 CheXpert labels of the text (rules
labeler), what model produced it and with which generation settings -- so a
saved report can be traced back to the model folder it came from.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Sequence

from s2d_align import atomic


def report_study(
    model: str | Path,
    images: Sequence[str | Path],
    device: str = "cpu",
    settings: dict | None = None,
    output: str | Path | None = None,
    heatmaps: str | Path | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Load ``model``, report the study made of ``images``; write ``output`` JSON and ``heatmaps`` PNGs if asked."""
    from s2d_align.inference.api import ReportGenerator

    started = time.perf_counter()
    generator = ReportGenerator.from_pretrained(model, device=device, trust_remote_code=trust_remote_code, **(settings or {}))
    loaded = time.perf_counter()
    report = generator([Path(p) for p in images], heatmaps=heatmaps is not None)
    done = time.perf_counter()
    info = generator.info
    result = {
        "report": report.text,
        "labels": report.labels,
        "model": {k: v for k, v in info.items() if k != "settings"},
        "settings": info["settings"],
        "timing_s": {"load": round(loaded - started, 3), "generate": round(done - loaded, 3)},
    }
    if heatmaps is not None:
        result["heatmaps"] = write_overlays(generator, images, report.heatmaps, Path(heatmaps))
    if output is not None:
        output = Path(output)
        atomic.write_json(output, result)
    return result


def write_overlays(generator, images: Sequence[str | Path], maps, folder: Path) -> list[dict]:
    """One PNG per sentence and view: the map stretched over the view as read (square crops: as the model saw it)."""
    from s2d_align.inference.grounding import overlay

    folder.mkdir(parents=True, exist_ok=True)
    views = generator.read_views([Path(p) for p in images])
    written, sentence_index = [], -1
    for item in maps:  # sentence by sentence, views 0..I-1 within each
        if item.view == 0:
            sentence_index += 1
        path = folder / f"sentence-{sentence_index:02d}-view{item.view}.png"
        buffer = io.BytesIO()
        overlay(views[item.view], item.map).save(buffer, format="PNG")
        atomic.write_bytes(path, buffer.getvalue())
        written.append({"file": path.name, "sentence": item.sentence, "view": item.view})
    atomic.write_json(folder / "heatmaps.json", written)
    return written
