"""``s2d-align reader-study``: the paper's human evaluation (Table 5), blinded, on one self-contained page.

``make`` draws ``n`` test studies present in every predictions file, and for
each a report per system (and the radiologist's own when asked), shuffles all
of them with the seed and gives each an opaque code. The page
(``STUDY/index.html``) embeds the images and the reports and needs nothing
else: no server, no CDN. It shows one report at a time with two 0-2 scales,
their definitions on the page, keeps progress in the browser's
``localStorage`` and exports the ratings as CSV. Which code is which system
is kept in ``STUDY/key.json``, never in the page.

``score`` unblinds: per system, the mean of each scale over its reports and
raters with a percentile bootstrap interval over cases, and the agreement
between raters on each scale: quadratic-weighted Cohen's kappa
(scikit-learn) for two raters, Krippendorff's alpha at the *ordinal* level
(the ``krippendorff`` package) for more, since 0-1-2 are ordered categories
whose spacing nobody vouches for.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from s2d_align import atomic
SCALES = ("fluency", "factual")
REFERENCE = "reference"


def _read_predictions(path: Path) -> dict[str, dict]:
    records = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["id"]] = record
    return records


def _system_names(paths: Sequence[Path]) -> list[str]:
    names = [Path(p).stem for p in paths]
    if len(set(names)) < len(names):  # predictions.jsonl in several run folders: name them by folder
        names = [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
    if len(set(names)) < len(names) or REFERENCE in names:
        raise ValueError(f"systems need distinct names other than {REFERENCE!r}: {names}")
    return names


def _image_data_url(path: Path, largest: int = 512) -> str:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("L")
        image.thumbnail((largest, largest))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def make_study(predictions: Sequence[Path], manifest: Path, out: Path, n: int = 50, seed: int = 0,
               include_reference: bool = False) -> dict:
    """Write ``out/index.html`` (the page) and ``out/key.json`` (the unblinding key); return the key."""
    from s2d_align.data.manifest import image_path, read_manifest

    names = _system_names(predictions)
    systems = {name: _read_predictions(path) for name, path in zip(names, predictions)}
    studies = {s.id: s for s in read_manifest(manifest)}
    shared = sorted(set.intersection(*(set(r) for r in systems.values())) & set(studies))
    if len(shared) < n:
        raise ValueError(f"only {len(shared)} studies are in every predictions file and the manifest; asked for {n}")
    rng = random.Random(seed)
    cases = rng.sample(shared, n)
    entries = [(case, name, systems[name][case]["prediction"]) for case in cases for name in names]
    if include_reference:
        entries += [(case, REFERENCE, systems[names[0]][case]["reference"]) for case in cases]
    rng.shuffle(entries)
    study_id = hashlib.sha256(json.dumps([seed, cases, names, include_reference]).encode()).hexdigest()[:12]
    case_number = {case: f"case{index + 1:03d}" for index, case in enumerate(cases)}
    items, key = [], {}
    for index, (case, name, text) in enumerate(entries):
        code = f"R{index + 1:04d}"
        items.append({"code": code, "case": case_number[case], "text": text})
        key[code] = {"study": case, "system": name}
    images = {case_number[c]: _image_data_url(image_path(manifest, studies[c].images[0])) for c in cases}
    page = resources.files("s2d_align.experiments").joinpath("reader_page.html").read_text(encoding="utf-8")
    data = json.dumps({"id": study_id, "items": items, "images": images}).replace("</", "<\\/")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "index.html", page.replace("__STUDY__", data))
    record = {"id": study_id, "seed": seed, "systems": names, "include_reference": include_reference,
              "cases": cases, "items": key}
    atomic.write_json(out / "key.json", record)
    return record


def read_ratings(paths: Sequence[Path], study_id: str) -> list[dict]:
    rows = []
    for path in paths:
        with Path(path).open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                if row["study"] != study_id:
                    raise ValueError(f"{path}: ratings of study {row['study']}, not of this one ({study_id})")
                rows.append({"rater": row["rater"], "item": row["item"],
                             **{s: int(row[s]) if row[s] != "" else None for s in SCALES}})
    return rows


def agreement(rows: list[dict], scale: str, domain: Sequence[int] = (0, 1, 2)) -> dict:
    """Quadratic-weighted kappa (two raters) or ordinal Krippendorff's alpha (more)."""
    raters = sorted({r["rater"] for r in rows})
    items = sorted({r["item"] for r in rows})
    table = {(r["rater"], r["item"]): r[scale] for r in rows if r[scale] is not None}
    if len(raters) < 2:
        return {"raters": len(raters), "statistic": None, "value": None}
    if len(raters) == 2:
        from sklearn.metrics import cohen_kappa_score

        both = [i for i in items if (raters[0], i) in table and (raters[1], i) in table]
        value = cohen_kappa_score([table[raters[0], i] for i in both], [table[raters[1], i] for i in both],
                                  weights="quadratic", labels=list(domain))
        return {"raters": 2, "statistic": "quadratic-weighted Cohen's kappa", "value": float(value), "items": len(both)}
    try:
        import krippendorff
    except ImportError as err:
        raise ImportError("Krippendorff's alpha needs the 'reader-study' extra: pip install 's2d-align[reader-study]'") from err
    data = np.array([[table.get((r, i), np.nan) for i in items] for r in raters], dtype=float)
    value = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=list(domain))
    return {"raters": len(raters), "statistic": "Krippendorff's alpha (ordinal)", "value": float(value),
            "items": len(items)}


def score_study(study: Path, ratings: Sequence[Path], resamples: int = 1000, seed: int = 0) -> dict:
    key = json.loads((Path(study) / "key.json").read_text(encoding="utf-8"))
    rows = read_ratings(ratings, key["id"])
    unknown = sorted({r["item"] for r in rows} - set(key["items"]))
    if unknown:
        raise ValueError(f"ratings name items the key does not know: {unknown[:10]}")
    systems = key["systems"] + ([REFERENCE] if key["include_reference"] else [])
    cases = key["cases"]
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.integers(0, len(cases), size=(resamples, len(cases)))
    result: dict = {"raters": sorted({r["rater"] for r in rows}), "systems": {}, "agreement": {}}
    for name in systems:
        result["systems"][name] = {}
        for scale in SCALES:
            # per case: the mean over its raters; the bootstrap resamples cases
            per_case = np.full(len(cases), np.nan)
            for index, case in enumerate(cases):
                values = [r[scale] for r in rows if r[scale] is not None
                          and key["items"][r["item"]] == {"study": case, "system": name}]
                if values:
                    per_case[index] = np.mean(values)
            rated = ~np.isnan(per_case)
            if not rated.any():
                result["systems"][name][scale] = {"mean": None, "ci95": None, "cases": 0}
                continue
            boot = np.nanmean(per_case[draws], axis=1)
            low, high = np.nanpercentile(boot, [2.5, 97.5])
            result["systems"][name][scale] = {"mean": float(np.nanmean(per_case)), "ci95": [float(low), float(high)],
                                              "cases": int(rated.sum())}
    for scale in SCALES:
        result["agreement"][scale] = agreement(rows, scale)
    return result


def format_scores(result: dict) -> str:
    lines = ["| system | fluency (0-2) [95 %] | factual correctness (0-2) [95 %] | cases |", "|---|---|---|---:|"]
    for name, scales in result["systems"].items():
        cells = []
        for scale in SCALES:
            s = scales[scale]
            cells.append("—" if s["mean"] is None else f"{s['mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {scales[SCALES[0]]['cases']} |")
    lines.append("")
    for scale, a in result["agreement"].items():
        if a["value"] is None:
            lines.append(f"{scale}: one rater, no agreement to measure")
        else:
            lines.append(f"{scale}: {a['statistic']} = {a['value']:.3f} ({a['raters']} raters, {a['items']} items)")
    return "\n".join(lines)
