"""Synthetic patients and their clinical course: which findings each study shows, and how they change.

Each patient gets a clinical profile (healthy, cardiac, infection, critical
care, oncology, trauma, chronic), the conditions that profile makes likely,
and 1-4 studies in time order. A condition evolves from study to study as a
small Markov chain: acute ones appear, grow or shrink and resolve; chronic ones
(cardiomegaly, a lung mass, a pacemaker, a healed fracture) stay once present.
The attributes of an episode (side, zone, lobe, rib numbers, shape seed) stay
fixed while it lasts, so a finding looks the same in consecutive studies
except for its grade. Reports then describe each study relative to the
patient's previous one, which is what the stage-2 reference report carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from s2d_align.data.phantom.anatomy import Anatomy, sample_anatomy

# Drawn finding kinds, the CheXpert observation each one is, in the order reports and tables list them.
OBSERVATION_OF = {
    "device": "Support Devices",
    "cardiomegaly": "Cardiomegaly",
    "mediastinum": "Enlarged Cardiomediastinum",
    "consolidation": "Consolidation",
    "opacity": "Lung Opacity",
    "atelectasis": "Atelectasis",
    "edema": "Edema",
    "lesion": "Lung Lesion",
    "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "thickening": "Pleural Other",
    "fracture": "Fracture",
}
DEVICES = ("et_tube", "ng_tube", "central_line", "pacemaker", "chest_tube")
# Devices that make a study a portable (AP) film.
BEDSIDE_DEVICES = ("et_tube", "ng_tube", "central_line", "chest_tube")
MAX_FINDINGS = 5  # non-device findings per study, so a report stays within ~70 words
UNCERTAIN_KINDS = ("effusion", "pneumothorax", "consolidation", "opacity", "atelectasis", "edema", "lesion", "fracture")


@dataclass(frozen=True)
class Finding:
    """One finding on one study. ``grade`` is size or severity: 1 small/mild, 2 moderate, 3 large/severe."""

    kind: str
    grade: int = 1  # fractures: 1 acute, 2 healing
    side: str | None = None  # "right" | "left" | "bilateral"
    zone: str | None = None  # "upper" | "mid" | "lower"
    variant: str | None = None  # atelectasis plate|lobar, lesion nodule|mass, a device name
    route: str | None = None  # central line: jugular|subclavian|picc
    measure_cm: int | None = None  # lesion diameter; endotracheal tube tip above the carina
    ribs: tuple[int, ...] = ()  # fracture: rib numbers (6 = sixth rib)
    seed: int = 0  # shape details that persist across an episode
    uncertain: bool = False  # reported as possible, drawn subtle

    @property
    def key(self) -> str:
        """What identifies the same finding on two studies of a patient."""
        return f"device:{self.variant}" if self.kind == "device" else self.kind


@dataclass(frozen=True)
class StudyPlan:
    index: int
    time: datetime
    view: str
    findings: tuple[Finding, ...]

    def get(self, key: str) -> Finding | None:
        return next((f for f in self.findings if f.key == key), None)


@dataclass(frozen=True)
class Patient:
    index: int
    profile: str
    anatomy: Anatomy
    studies: tuple[StudyPlan, ...] = field(default=())


@dataclass(frozen=True)
class Course:
    """How one condition behaves over a patient's studies (probabilities per study)."""

    chronic: bool
    first: float  # present on the first study
    onset: float  # appears on a later study
    resolve: float  # an acute finding disappears
    worsen: float
    improve: float


COURSES = {
    "cardiomegaly": Course(True, 0.85, 0.4, 0.0, 0.15, 0.05),
    "mediastinum": Course(True, 0.85, 0.4, 0.0, 0.1, 0.0),
    "lesion": Course(True, 0.85, 0.4, 0.0, 0.2, 0.0),
    "fracture": Course(True, 0.85, 0.4, 0.0, 0.0, 0.0),
    "thickening": Course(True, 0.9, 0.3, 0.0, 0.0, 0.0),
    "effusion": Course(False, 0.65, 0.35, 0.35, 0.2, 0.25),
    "pneumothorax": Course(False, 0.75, 0.3, 0.35, 0.15, 0.35),
    "consolidation": Course(False, 0.7, 0.3, 0.4, 0.2, 0.3),
    "opacity": Course(False, 0.65, 0.3, 0.45, 0.2, 0.3),
    "atelectasis": Course(False, 0.6, 0.35, 0.4, 0.15, 0.25),
    "edema": Course(False, 0.65, 0.35, 0.4, 0.2, 0.3),
    "et_tube": Course(False, 0.8, 0.3, 0.3, 0.0, 0.0),
    "ng_tube": Course(False, 0.75, 0.3, 0.3, 0.0, 0.0),
    "central_line": Course(False, 0.75, 0.35, 0.25, 0.0, 0.0),
    "pacemaker": Course(True, 0.9, 0.3, 0.0, 0.0, 0.0),
}


@dataclass(frozen=True)
class Profile:
    weight: float
    conditions: dict[str, float]  # condition -> probability that the patient has it at all
    study_counts: tuple[float, float, float, float]  # P(1..4 studies)
    days_between: tuple[float, float]


PROFILES = {
    "healthy": Profile(0.27, {}, (0.55, 0.3, 0.1, 0.05), (60, 900)),
    "cardiac": Profile(0.15, {"cardiomegaly": 0.95, "effusion": 0.5, "edema": 0.7, "pacemaker": 0.35,
                              "mediastinum": 0.3, "atelectasis": 0.3}, (0.2, 0.3, 0.25, 0.25), (5, 300)),
    "infection": Profile(0.14, {"consolidation": 0.8, "opacity": 0.65, "effusion": 0.3, "atelectasis": 0.3},
                         (0.25, 0.35, 0.25, 0.15), (2, 40)),
    "critical": Profile(0.16, {"et_tube": 0.8, "ng_tube": 0.7, "central_line": 0.8, "atelectasis": 0.55,
                               "edema": 0.45, "effusion": 0.4, "consolidation": 0.35, "pneumothorax": 0.35,
                               "opacity": 0.45}, (0.1, 0.25, 0.3, 0.35), (0.25, 3)),
    "oncology": Profile(0.10, {"lesion": 0.95, "mediastinum": 0.55, "effusion": 0.35, "atelectasis": 0.25,
                               "central_line": 0.3, "thickening": 0.3}, (0.2, 0.3, 0.25, 0.25), (20, 200)),
    "trauma": Profile(0.10, {"fracture": 0.95, "pneumothorax": 0.75, "opacity": 0.4, "effusion": 0.2,
                             "thickening": 0.2}, (0.2, 0.3, 0.25, 0.25), (0.5, 10)),
    "chronic": Profile(0.08, {"thickening": 0.7, "fracture": 0.35, "lesion": 0.3, "mediastinum": 0.4,
                              "cardiomegaly": 0.3}, (0.3, 0.35, 0.2, 0.15), (60, 700)),
}

def simulate_patients(studies: int, seed: int) -> list[Patient]:
    """Patients whose study counts add up to exactly ``studies``; each patient from its own random stream."""
    counts_rng = np.random.default_rng([seed, 0])
    names = list(PROFILES)
    weights = np.array([PROFILES[n].weight for n in names])
    patients: list[Patient] = []
    total = 0
    while total < studies:
        profile = names[counts_rng.choice(len(names), p=weights / weights.sum())]
        count = int(counts_rng.choice(4, p=PROFILES[profile].study_counts)) + 1
        count = min(count, studies - total)
        rng = np.random.default_rng([seed, 1, len(patients)])
        patients.append(simulate_patient(len(patients), profile, count, rng))
        total += count
    return patients


def simulate_patient(index: int, profile_name: str, count: int, rng: np.random.Generator) -> Patient:
    profile = PROFILES[profile_name]
    anatomy = sample_anatomy(rng)
    conditions = [c for c, p in profile.conditions.items() if rng.random() < p]
    if profile_name != "healthy" and not conditions:
        conditions = [max(profile.conditions, key=profile.conditions.get)]
    timelines = {c: _timeline(c, count, rng) for c in conditions}
    if "pneumothorax" in timelines:
        timelines["chest_tube"] = _chest_tube(timelines["pneumothorax"], rng)
    plans = []
    time = datetime(2012, 1, 1) + timedelta(days=float(rng.uniform(0, 2900)), hours=float(rng.uniform(7, 20)))
    previous: StudyPlan | None = None
    for k in range(count):
        if k:
            time += timedelta(days=float(rng.uniform(*profile.days_between)), hours=float(rng.uniform(0, 8)))
        findings = [f for c in conditions + (["chest_tube"] if "chest_tube" in timelines else [])
                    if (f := timelines[c][k]) is not None]
        findings = _cap(findings)
        findings = [_maybe_uncertain(f, previous, rng) for f in findings]
        bedside = any(f.kind == "device" and f.variant in BEDSIDE_DEVICES for f in findings)
        view = "AP" if bedside or rng.random() < 0.08 else "PA"
        previous = StudyPlan(k, time.replace(microsecond=0), view, tuple(findings))
        plans.append(previous)
    return Patient(index, profile_name, anatomy, tuple(plans))


def _timeline(condition: str, count: int, rng: np.random.Generator) -> list[Finding | None]:
    """The condition's finding on each study (or None), from one episode template and the course's chain."""
    course = COURSES[condition]
    template = _episode(condition, rng)
    states: list[Finding | None] = []
    current: Finding | None = None
    for k in range(count):
        if current is None:
            if rng.random() < (course.first if k == 0 else course.onset):
                current = template if k == 0 or course.chronic else replace(template, seed=int(rng.integers(1 << 30)))
        elif not course.chronic and rng.random() < course.resolve:
            current = None
        elif condition == "fracture":
            current = replace(current, grade=2)  # seen before: now healing
        elif current.variant != "lobar":  # a collapsed lobe is all or nothing
            step = rng.random()
            if step < course.worsen and current.grade < 3:
                current = _grow(current)
            elif course.worsen <= step < course.worsen + course.improve:
                current = replace(current, grade=max(current.grade - 1, 1))
        states.append(current)
    return states


def _grow(finding: Finding) -> Finding:
    """One grade worse; a growing lesion gains a centimetre and becomes a mass from 4 cm."""
    if finding.kind != "lesion":
        return replace(finding, grade=finding.grade + 1)
    cm = min((finding.measure_cm or 2) + 1, 6)
    return replace(finding, grade=finding.grade + 1, measure_cm=cm, variant="mass" if cm >= 4 else finding.variant)


def _chest_tube(pneumothorax: list[Finding | None], rng: np.random.Generator) -> list[Finding | None]:
    """A chest tube on the pneumothorax's side from some study of the episode on, while it lasts."""
    tube: list[Finding | None] = []
    placed = False
    for state in pneumothorax:
        if state is None:
            placed = False
            tube.append(None)
            continue
        placed = placed or (state.grade >= 2 and rng.random() < 0.6)
        tube.append(Finding("device", variant="chest_tube", side=state.side, seed=state.seed) if placed else None)
    return tube


def _episode(condition: str, rng: np.random.Generator) -> Finding:
    """The fixed attributes of one episode of ``condition``."""
    pick = rng.choice
    seed = int(rng.integers(1 << 30))
    grade = int(pick([1, 2, 3], p=[0.5, 0.35, 0.15]))
    side = str(pick(["right", "left"]))
    if condition in DEVICES:
        route = None
        if condition == "central_line":
            route = str(pick(["jugular", "subclavian", "picc"], p=[0.5, 0.25, 0.25]))
        cm = int(rng.integers(3, 7)) if condition == "et_tube" else None
        return Finding("device", variant=condition, route=route, measure_cm=cm, seed=seed)
    if condition == "effusion":
        return Finding("effusion", grade, str(pick(["right", "left", "bilateral"], p=[0.4, 0.3, 0.3])), seed=seed)
    if condition == "pneumothorax":
        return Finding("pneumothorax", grade, side, seed=seed)
    if condition in ("consolidation", "lesion"):
        weights = [0.25, 0.25, 0.5] if condition == "consolidation" else [0.45, 0.3, 0.25]
        zone = str(pick(["upper", "mid", "lower"], p=weights))
        if condition == "consolidation":
            return Finding("consolidation", grade, side, zone, seed=seed)
        variant = str(pick(["nodule", "mass"], p=[0.6, 0.4]))
        cm = int(rng.integers(2, 4)) if variant == "nodule" else int(rng.integers(4, 7))
        return Finding("lesion", 1, side, zone, variant, measure_cm=cm, seed=seed)
    if condition == "opacity":
        side = str(pick(["right", "left", "bilateral"], p=[0.4, 0.35, 0.25]))
        zone = "lower" if side == "bilateral" else str(pick(["upper", "mid", "lower"], p=[0.25, 0.3, 0.45]))
        return Finding("opacity", grade, side, zone, seed=seed)
    if condition == "atelectasis":
        if rng.random() < 0.3:
            lobe_side = str(pick(["left", "right"], p=[0.65, 0.35]))
            return Finding("atelectasis", 2, lobe_side, "lower" if lobe_side == "left" else "upper", "lobar", seed=seed)
        return Finding("atelectasis", grade, str(pick(["right", "left", "bilateral"], p=[0.3, 0.3, 0.4])), "lower",
                       "plate", seed=seed)
    if condition in ("cardiomegaly", "edema", "mediastinum"):
        return Finding(condition, grade if condition != "mediastinum" else int(pick([1, 2])), seed=seed)
    if condition == "fracture":
        first = int(rng.integers(4, 8))
        return Finding("fracture", 1, side, ribs=tuple(range(first, first + int(pick([1, 2, 3], p=[0.3, 0.4, 0.3])))),
                       seed=seed)
    if condition == "thickening":
        return Finding("thickening", 1, str(pick(["right", "left", "bilateral"], p=[0.35, 0.35, 0.3])), seed=seed)
    raise ValueError(f"unknown condition {condition!r}")


_PRIORITY = ("pneumothorax", "effusion", "consolidation", "edema", "lesion", "cardiomegaly", "mediastinum",
             "atelectasis", "opacity", "fracture", "thickening")


def _cap(findings: list[Finding]) -> list[Finding]:
    """Keep at most MAX_FINDINGS non-device findings (the clinically weightiest) and at most three devices."""
    devices = [f for f in findings if f.kind == "device"][:3]
    others = sorted((f for f in findings if f.kind != "device"), key=lambda f: _PRIORITY.index(f.kind))
    return devices + others[:MAX_FINDINGS]


def _maybe_uncertain(finding: Finding, previous: StudyPlan | None, rng: np.random.Generator) -> Finding:
    """A finding seen for the first time is sometimes only 'possible': then it is drawn small and subtle."""
    if finding.kind not in UNCERTAIN_KINDS or finding.variant == "lobar":
        return finding
    before = previous.get(finding.key) if previous else None
    if before is not None and not before.uncertain:
        return finding
    if rng.random() < 0.2:
        ribs = finding.ribs[:1]
        return replace(finding, grade=1, uncertain=True, ribs=ribs)
    return finding
