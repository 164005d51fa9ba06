"""How well does the rule labeler agree with the Open-i (IU X-Ray) MeSH annotations?

Open-i's report XMLs (Demner-Fushman et al., 2016) carry MeSH terms that NLM
indexers assigned by hand (``<MeSH><major>Pleural Effusion/left/small</major>``).
They record findings that are present -- definite or hedged -- and ``normal``
for a normal study; they never record a negation. We map them onto the 14
CheXpert observations (:data:`MESH`) and compare, per observation, "present
in MeSH" with "the labeler says positive (1) or uncertain (-1)" on the
FINDINGS + IMPRESSION text the indexers read. The MeSH terms are a different
annotation scheme, not CheXpert labels, so agreement is bounded by the
mapping (e.g. indexers rarely record a hedged pneumonia, CheXpert labels it
uncertain); the figures show where the rules stand, not a ceiling.

The XMLs ship inside the PyPI wheel ``torchxrayvision==1.5.7``
(``torchxrayvision/data/NLMCXR_reports.tgz``, CC BY-NC-ND 4.0); the wheel is
fetched with pip into a cache folder once. Run::

    PYTHONPATH=src python benchmarks/openi_agreement.py [--cache DIR] [--show OBSERVATION]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL = "torchxrayvision==1.5.7"
ARCHIVE = "torchxrayvision/data/NLMCXR_reports.tgz"


def _head(term: str) -> str:
    return term.split("/")[0]


# MeSH major term -> CheXpert observation. A term is "Heading/qualifier/qualifier...".
MESH = {
    "No Finding": lambda t: t == "normal",
    "Enlarged Cardiomediastinum": lambda t: _head(t) == "Mediastinum" and any(
        q in t for q in ("enlarged", "prominent", "widened")),
    "Cardiomegaly": lambda t: _head(t) == "Cardiomegaly" or t.startswith("Cardiac Shadow/enlarged"),
    "Lung Opacity": lambda t: _head(t) in ("Opacity", "Airspace Disease", "Infiltrate") or t.startswith("Cicatrix/lung"),
    "Lung Lesion": lambda t: _head(t) in ("Nodule", "Mass") and "calcified" not in t,
    "Edema": lambda t: _head(t) in ("Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"),
    "Consolidation": lambda t: _head(t) == "Consolidation",
    "Pneumonia": lambda t: _head(t) == "Pneumonia",
    "Atelectasis": lambda t: _head(t) == "Pulmonary Atelectasis",
    "Pneumothorax": lambda t: _head(t) == "Pneumothorax",
    "Pleural Effusion": lambda t: _head(t) == "Pleural Effusion",
    "Pleural Other": lambda t: t.startswith(("Thickening/pleura", "Cicatrix/pleura")) or _head(t) == "Pulmonary Fibrosis",
    "Fracture": lambda t: _head(t) == "Fractures, Bone",
    "Support Devices": lambda t: _head(t) in ("Catheters, Indwelling", "Implanted Medical Device", "Tube, Inserted",
                                              "Medical Device", "Stents", "Pacemaker, Artificial"),
}


@dataclass(frozen=True)
class Report:
    name: str
    text: str
    mesh: tuple[str, ...]


def default_cache() -> Path:
    return Path(os.environ.get("S2D_CACHE", Path(tempfile.gettempdir()) / "s2d-align-cache"))


def fetch_wheel(cache: Path, timeout_s: float = 300) -> Path:
    """The torchxrayvision wheel in ``cache``, downloaded with pip if absent (raises OSError when unreachable)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("torchxrayvision-1.5.7-*.whl"))
    if not found:
        command = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary=:all:",
                   "--quiet", "--disable-pip-version-check", "-d", str(cache)]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=timeout_s)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            raise OSError(f"pip could not fetch {WHEEL}: {err}") from None
        found = sorted(cache.glob("torchxrayvision-1.5.7-*.whl"))
    if not found:
        raise OSError(f"pip ran but left no {WHEEL} wheel in {cache}")
    return found[0]


def read_reports(wheel: Path) -> list[Report]:
    """Reports with FINDINGS or IMPRESSION text and at least one MeSH term (``No Indexing`` excluded)."""
    with zipfile.ZipFile(wheel) as archive:
        payload = archive.read(ARCHIVE)
    reports = []
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.name.endswith(".xml"):
                continue
            root = ET.parse(tar.extractfile(member)).getroot()
            sections = {a.get("Label"): (a.text or "").strip() for a in root.iter("AbstractText")}
            text = " ".join(t for t in (sections.get("FINDINGS"), sections.get("IMPRESSION")) if t)
            mesh = tuple(m.text.strip() for block in root.iter("MeSH") for m in block.findall("major") if m.text)
            if text and mesh and "No Indexing" not in mesh:
                reports.append(Report(Path(member.name).name, text, mesh))
    return reports


def agreement(reports: list[Report], labels: list[dict], uncertain_present: bool = True) -> dict[str, dict]:
    """Per observation: agreement, Cohen's kappa, precision and recall against MeSH, and the counts."""
    present = (1, -1) if uncertain_present else (1,)
    out = {}
    for observation, in_mesh in MESH.items():
        tp = fp = fn = tn = 0
        for report, label in zip(reports, labels):
            truth = any(in_mesh(term) for term in report.mesh)
            said = label[observation] in present
            tp += truth and said
            fp += said and not truth
            fn += truth and not said
            tn += not truth and not said
        n = tp + fp + fn + tn
        observed = (tp + tn) / n
        chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n / n
        out[observation] = {
            "agreement": observed,
            "kappa": (observed - chance) / (1 - chance) if chance < 1 else 0.0,
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
            "mesh_present": tp + fn,
            "labeler_present": tp + fp,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    from s2d_align.evaluation.labelers.rules import RuleLabeler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--show", help="print the disagreements for one observation")
    args = parser.parse_args(argv)
    reports = read_reports(fetch_wheel(args.cache))
    started = time.perf_counter()
    labels = RuleLabeler().label([r.text for r in reports])
    seconds = time.perf_counter() - started
    print(f"{len(reports)} Open-i reports labeled in {seconds:.2f} s ({len(reports) / seconds:.0f} reports/s)")
    with_uncertain = agreement(reports, labels, uncertain_present=True)
    positive_only = agreement(reports, labels, uncertain_present=False)
    print("present = positive or uncertain            | present = positive only")
    print(f"{'observation':28s} {'agree':>6s} {'kappa':>6s} {'P':>6s} {'R':>6s} {'F1':>6s} {'MeSH+':>6s} {'rules+':>6s} |"
          f" {'agree':>6s} {'kappa':>6s} {'F1':>6s} {'rules+':>6s}")
    for observation, a in with_uncertain.items():
        b = positive_only[observation]
        print(f"{observation:28s} {a['agreement']:6.3f} {a['kappa']:6.3f} {a['precision']:6.3f} {a['recall']:6.3f} {a['f1']:6.3f} "
              f"{a['mesh_present']:6d} {a['labeler_present']:6d} | {b['agreement']:6.3f} {b['kappa']:6.3f} "
              f"{b['f1']:6.3f} {b['labeler_present']:6d}")
    if args.show:
        for report, label in zip(reports, labels):
            truth = any(MESH[args.show](t) for t in report.mesh)
            said = label[args.show] in (1, -1)
            if truth != said:
                print(f"{'FN' if truth else 'FP'} {report.name}: {report.text[:300]} {list(report.mesh)}")


if __name__ == "__main__":
    main()
