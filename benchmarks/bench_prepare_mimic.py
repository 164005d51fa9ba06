"""How fast is ``prepare mimic-cxr``? Builds a generated MIMIC-shaped tree and times the builder.

Usage::

    python benchmarks/bench_prepare_mimic.py [--studies 20000] [--workers N] [--keep DIR]

The tree has the real layout (split and metadata tables as ``.csv.gz``,
``files/pXX/pSUBJECT/sSTUDY/<dicom>.jpg``, ``files/pXX/pSUBJECT/sSTUDY.txt``)
with generated reports (MIMIC-style headers, addenda, studies without
FINDINGS), tiny JPEGs, and a generated RadGraph file covering 90 % of the
studies with FINDINGS (about 77 % of all studies). Nothing in it comes from MIMIC-CXR. The figure is studies per second
of the whole ``prepare_mimic_cxr`` call (tables, reports, image checks at the
default ``header`` level, key phrases with the ``none`` refiner, prior-study
references, the leakage guards, writing the manifest), once without and once
with RadGraph. The files were just written, so the page cache is warm: on a
cold network disk the figure is lower and bounded by the disk.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from s2d_align.data.mimic_cxr import prepare_mimic_cxr

# (sentence, [(token index, label, relations as (type, token index))]) -- invented text
SENTENCES = [
    ("There is a small left pleural effusion .",
     [(3, "OBS-DP", [("modify", 6)]), (4, "ANAT-DP", [("modify", 5)]), (5, "ANAT-DP", []), (6, "OBS-DP", [("located_at", 5)])]),
    ("The cardiac silhouette is mildly enlarged .",
     [(1, "ANAT-DP", [("modify", 2)]), (2, "ANAT-DP", []), (4, "OBS-DP", [("modify", 5)]), (5, "OBS-DP", [("located_at", 2)])]),
    ("No pneumothorax is seen .", [(1, "OBS-DA", [])]),
    ("There is patchy opacity in the right lower lobe .",
     [(2, "OBS-DP", [("modify", 3)]), (3, "OBS-DP", [("located_at", 8)]), (6, "ANAT-DP", [("modify", 8)]),
      (7, "ANAT-DP", [("modify", 8)]), (8, "ANAT-DP", [])]),
    ("The lungs are clear .", [(1, "ANAT-DP", []), (3, "OBS-DP", [("located_at", 1)])]),
    ("Mild pulmonary vascular congestion is present .",
     [(0, "OBS-DP", [("modify", 3)]), (1, "ANAT-DP", [("modify", 2)]), (2, "ANAT-DP", []), (3, "OBS-DP", [("located_at", 2)])]),
    ("Possible early pneumonia at the left base .",
     [(2, "OBS-U", [("located_at", 6)]), (5, "ANAT-DP", [("modify", 6)]), (6, "ANAT-DP", [])]),
    ("No focal consolidation .", [(1, "OBS-DA", [("modify", 2)]), (2, "OBS-DA", [])]),
]
HEADER = "                                 FINAL REPORT\n"


def _report(rng: random.Random) -> tuple[str, list[int] | None]:
    chosen = rng.sample(range(len(SENTENCES)), rng.randint(2, 5))
    findings = "  ".join(SENTENCES[i][0].replace(" .", ".") for i in chosen)
    lines = [HEADER, " EXAMINATION:  CHEST (PA AND LAT)\n \n", " INDICATION:  ___ with cough.\n \n",
             " COMPARISON:  ___\n \n"]
    kind = rng.random()
    if kind < 0.15:  # impression only: skipped for lack of FINDINGS
        lines.append(f" IMPRESSION:  {findings}\n")
        return "".join(lines), None
    lines.append(f" FINDINGS:  \n \n {findings}\n \n IMPRESSION:  \n \n No acute process.\n")
    if kind > 0.9:
        lines.append(" \n ADDENDUM:  Findings called to the team.\n \n IMPRESSION:  Reviewed.\n")
    return "".join(lines), chosen


def _radgraph(chosen: list[int]) -> dict:
    tokens, entities, offset = [], {}, 0
    for index in chosen:
        words = SENTENCES[index][0].split()
        for position, label, relations in SENTENCES[index][1]:
            entities[str(offset + position)] = {
                "tokens": words[position], "label": label, "start_ix": offset + position, "end_ix": offset + position,
                "relations": [[kind, str(offset + target)] for kind, target in relations],
            }
        tokens += words
        offset += len(words)
    return {"text": " ".join(tokens), "entities": entities}


def generate(root: Path, studies: int, seed: int = 0) -> tuple[Path, Path, Path]:
    rng = random.Random(seed)
    jpg, reports = root / "jpg", root / "reports"
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    split_rows, metadata_rows, radgraph = [], [], {}
    study, subject = 50_000_000, 10_000_000
    made = 0
    while made < studies:
        subject += 1
        split = rng.choices(["train", "validate", "test"], weights=[90, 5, 5])[0]
        day = 0
        for _ in range(min(rng.randint(1, 7), studies - made)):
            study += rng.randint(1, 50)
            made += 1
            day += rng.randint(1, 400)
            group = f"p{str(subject)[:2]}"
            text, chosen = _report(rng)
            report_dir = reports / "files" / group / f"p{subject}"
            report_dir.mkdir(parents=True, exist_ok=True)
            (report_dir / f"s{study}.txt").write_text(text)
            if chosen is not None and rng.random() < 0.9:
                radgraph[f"{group}/p{subject}/s{study}.txt"] = _radgraph(chosen)
            image_dir = jpg / "files" / group / f"p{subject}" / f"s{study}"
            image_dir.mkdir(parents=True, exist_ok=True)
            date = f"2180{1 + day // 28 % 12:02d}{1 + day % 28:02d}"
            clock = f"{rng.randint(0, 23)}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}.{rng.randint(0, 999)}"
            for view in rng.choice([["PA"], ["PA", "LATERAL"], ["AP"], ["AP", "LL", "PA"]]):
                dicom = f"{rng.getrandbits(128):032x}"
                (image_dir / f"{dicom}.jpg").write_bytes(jpeg)
                split_rows.append([dicom, study, subject, split])
                metadata_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, 3056, 2544, date, clock])
    for name, header, rows in (
        ("mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows),
        ("mimic-cxr-2.0.0-metadata.csv.gz",
         ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
          "Columns", "StudyDate", "StudyTime"], metadata_rows),
    ):
        with gzip.open(jpg / name, "wt", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    radgraph_file = root / "radgraph.json"
    radgraph_file.write_text(json.dumps(radgraph))
    return jpg, reports, radgraph_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", help="generate into this folder and keep it")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-mimic-"))
    try:
        start = time.perf_counter()
        jpg, reports, radgraph = generate(root / "tree", args.studies)
        print(f"generated {args.studies} studies in {time.perf_counter() - start:.1f} s under {root}")
        for label, files in (("without RadGraph", []), ("with RadGraph", [radgraph])):
            start = time.perf_counter()
            _, report = prepare_mimic_cxr(jpg, reports, root / f"out-{len(files)}", radgraph=files, workers=args.workers)
            seconds = time.perf_counter() - start
            print(
                f"prepare mimic-cxr {label}: {args.studies} studies in {seconds:.1f} s = "
                f"{args.studies / seconds:,.0f} studies/s (kept {report.kept}, skipped {report.skipped})"
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
