"""One self-contained HTML page of a test set: per study the image, truth, prediction, labels and scores.

Error analysis starts from looking at cases. ``s2d-align inspect`` writes a
single file that needs no server (images are embedded as downscaled data
URLs, the sorting and filtering script is inline): per study the radiograph
-- with one grounding map per sentence when a model is given (the SMA's
memory read back through the LLM's attention; see
:mod:`s2d_align.inference.grounding`) -- the reference and the prediction,
the 14 CheXpert labels of both with disagreements marked, and the study's
per-report scores.

Scores and labels come from :func:`s2d_align.evaluation.report.score_records`,
the code behind ``metrics.samples.csv``, so the page agrees with
``s2d-align evaluate``: per-report BLEU-4, ROUGE-L and CIDEr-D (document
frequencies from this test set's references), labels by the rules labeler.
A disagreement follows the headline CE convention: uncertain (-1) counts as
positive, blank and 0 as negative.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from s2d_align import atomic
from s2d_align.chexpert import OBSERVATIONS, POSITIVE, UNCERTAIN
from s2d_align.data.images import load_image
from s2d_align.data.manifest import image_path, read_manifest
from s2d_align.evaluation.predictions import read_jsonl
from s2d_align.evaluation.report import score_records

SCORES = ("bleu4", "rouge_l", "cider")
_MAP_BATCH = 8


def _positive(value: Any) -> bool:
    return value in (POSITIVE, UNCERTAIN)


def _snake(name: str) -> str:
    return "_".join(name.lower().split())


def _data_url(image: Image.Image, size: int) -> str:
    image = image.copy()
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def study_rows(predictions: Path, manifest: Path) -> list[dict[str, Any]]:
    """Per study: id, texts, image paths, scores and labels of both sides (``score_records``' samples)."""
    records = read_jsonl(predictions)
    studies = {s.id: s for s in read_manifest(manifest)}
    missing = [r["id"] for r in records if r["id"] not in studies]
    if missing:
        raise ValueError(f"{predictions}: {len(missing)} id(s) not in {manifest}, e.g. {missing[:3]}")
    evaluation = score_records(records, metrics="bleu,rouge_l,cider,ce", labeler="rules", resamples=0)
    rows = []
    for record, sample in zip(records, evaluation.samples):
        labels = {
            name: {side: (None if sample[f"{side}_{_snake(name)}"] == "" else int(sample[f"{side}_{_snake(name)}"]))
                   for side in ("ref", "pred")}
            for name in OBSERVATIONS
        }
        rows.append({
            "id": record["id"],
            "reference": record["reference"],
            "prediction": record["prediction"],
            "images": [image_path(manifest, p) for p in studies[record["id"]].images],
            "scores": {k: float(sample[k]) for k in SCORES},
            "labels": labels,
            "disagree": [n for n, v in labels.items() if _positive(v["ref"]) != _positive(v["pred"])],
        })
    return rows


def grounding_maps(rows: Sequence[dict], model: Path, device: str, size: int) -> None:
    """Add ``maps`` (sentence, overlay data URL) to each row: the model's report of the study's images."""
    from s2d_align import ReportGenerator
    from s2d_align.inference.grounding import overlay

    generator = ReportGenerator.from_pretrained(model, device=device)
    for start in range(0, len(rows), _MAP_BATCH):
        chunk = rows[start:start + _MAP_BATCH]
        views = [[load_image(p) for p in row["images"]] for row in chunk]
        for row, images, report in zip(chunk, views, generator.batch(views, heatmaps=True)):
            row["model_report"] = report.text
            row["maps"] = [(m.sentence, _data_url(overlay(images[m.view], m.map), size)) for m in report.heatmaps]


def write_inspection(predictions: Path, manifest: Path, out: Path, model: Path | None = None, device: str = "auto",
                     image_size: int = 256) -> int:
    """Write the page; returns the number of studies on it."""
    rows = study_rows(predictions, manifest)
    for row in rows:
        row["thumbs"] = [_data_url(load_image(p), image_size) for p in row["images"]]
    if model is not None:
        from s2d_align.serving.server import resolve_device

        grounding_maps(rows, model, resolve_device(device), image_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, render_page(rows, title=f"{predictions.name} on {manifest.name}", model=model))
    return len(rows)


def _label_table(labels: dict[str, dict]) -> str:
    words = {1: "pos", 0: "neg", -1: "unc", None: "&ndash;"}
    cells = []
    for name, value in labels.items():
        mark = " disagree" if _positive(value["ref"]) != _positive(value["pred"]) else ""
        cells.append(f'<tr class="lab{mark}"><td>{html.escape(name)}</td><td>{words[value["ref"]]}</td>'
                     f'<td>{words[value["pred"]]}</td></tr>')
    return '<table class="labels"><tr><th>observation</th><th>truth</th><th>pred.</th></tr>' + "".join(cells) + "</table>"


def _row(row: dict) -> str:
    positive = {side: [n for n, v in row["labels"].items() if _positive(v[side])] for side in ("ref", "pred")}
    attributes = " ".join(f'data-{k}="{v:.6f}"' for k, v in row["scores"].items())
    images = "".join(f'<img src="{u}" alt="view {i + 1}">' for i, u in enumerate(row["thumbs"]))
    maps = "".join(f'<figure><img src="{u}" alt="map"><figcaption>{html.escape(s)}</figcaption></figure>'
                   for s, u in row.get("maps", []))
    model_report = (f'<p class="model">model now: {html.escape(row["model_report"])}</p>'
                    if "model_report" in row else "")
    scores = " ".join(f"{k} <b>{v:.3f}</b>" for k, v in row["scores"].items())
    return (
        f'<tr class="study" data-id="{html.escape(row["id"])}" {attributes} data-disagreements="{len(row["disagree"])}" '
        f"data-ref-positive='{html.escape(json.dumps(positive['ref']))}' "
        f"data-pred-positive='{html.escape(json.dumps(positive['pred']))}' "
        f"data-disagree='{html.escape(json.dumps(row['disagree']))}'>"
        f'<td class="id">{html.escape(row["id"])}</td><td class="views">{images}<div class="maps">{maps}</div></td>'
        f'<td><p class="truth"><b>truth:</b> {html.escape(row["reference"])}</p>'
        f'<p class="pred"><b>prediction:</b> {html.escape(row["prediction"])}</p>{model_report}</td>'
        f'<td>{_label_table(row["labels"])}</td>'
        f'<td class="scores">{scores}<br>disagreements <b>{len(row["disagree"])}</b></td></tr>'
    )


def render_page(rows: Sequence[dict], title: str, model: Path | None = None) -> str:
    options = "".join(f'<option value="{html.escape(n)}">{html.escape(n)}</option>' for n in OBSERVATIONS)
    sort_options = "".join(f'<option value="{k}">{k}</option>' for k in (*SCORES, "disagreements", "id"))
    source = f" &middot; grounding maps: {html.escape(str(model))}" if model else ""
    return _PAGE.format(title=html.escape(title), source=source, label_options=options, sort_options=sort_options,
                        rows="\n".join(_row(r) for r in rows), count=len(rows))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>S2D-Align inspection: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 16px; color: #1d2733; }}
#warning {{ background: #fff3cd; padding: 6px 10px; font-weight: 600; }}
#controls {{ margin: 12px 0; display: flex; gap: 16px; flex-wrap: wrap; align-items: center; }}
table.studies {{ border-collapse: collapse; width: 100%; }}
table.studies > tbody > tr > td {{ border-top: 1px solid #ccd; vertical-align: top; padding: 6px; }}
.views img {{ width: 160px; margin-right: 4px; }}
.maps figure {{ display: inline-block; width: 120px; margin: 2px; font-size: 11px; }} .maps img {{ width: 120px; }}
table.labels {{ font-size: 11px; border-collapse: collapse; }} table.labels td {{ padding: 0 4px; }}
tr.disagree {{ background: #f8c9c9; font-weight: 600; }}
.scores {{ font-size: 13px; white-space: nowrap; }}
</style></head><body>
<h1>S2D-Align inspection: {title}</h1>
<div id="warning">Research use only, not for clinical use. {count} studies{source}.
Labels: rules labeler; a red row is a disagreement (uncertain counts as positive).</div>
<div id="controls">
<label>sort by <select id="sort">{sort_options}</select></label>
<label><input type="checkbox" id="descending" checked> descending</label>
<label>observation <select id="observation"><option value="">any</option>{label_options}</select></label>
<label>where <select id="where"><option value="disagree">labels disagree</option>
<option value="ref">truth positive</option><option value="pred">prediction positive</option></select></label>
<label>min <select id="metric">{sort_options}</select> <input id="minimum" type="number" step="0.01" value="" size="5"></label>
<span id="shown"></span>
</div>
<table class="studies"><thead><tr><th>study</th><th>image</th><th>reports</th><th>labels</th><th>scores</th></tr></thead>
<tbody id="rows">
{rows}
</tbody></table>
<script>
"use strict";
const body = document.getElementById("rows");
const get = id => document.getElementById(id);
function value(row, key) {{ return key === "id" ? row.dataset.id : parseFloat(row.dataset[key]); }}
function update() {{
  const key = get("sort").value, down = get("descending").checked;
  const rows = Array.from(body.querySelectorAll("tr.study"));
  rows.sort((a, b) => {{
    const x = value(a, key), y = value(b, key);
    const order = x < y ? -1 : x > y ? 1 : 0;
    return down ? -order : order;
  }});
  const observation = get("observation").value, where = get("where").value;
  const metric = get("metric").value, minimum = get("minimum").value;
  let shown = 0;
  for (const row of rows) {{
    const lists = {{disagree: row.dataset.disagree, ref: row.dataset.refPositive, pred: row.dataset.predPositive}};
    let keep = !observation || JSON.parse(lists[where]).includes(observation);
    if (keep && minimum !== "" && metric !== "id") keep = value(row, metric) >= parseFloat(minimum);
    row.style.display = keep ? "" : "none";
    shown += keep ? 1 : 0;
    body.appendChild(row);
  }}
  get("shown").textContent = shown + " shown";
}}
for (const id of ["sort", "descending", "observation", "where", "metric", "minimum"]) {{
  get(id).addEventListener("change", update);
  get(id).addEventListener("input", update);
}}
update();
</script></body></html>
"""
