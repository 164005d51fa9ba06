"""One study's radiograph: the patient's anatomy on this day's pose and exposure, with its findings drawn in.

Drawing order follows what overlies what on a film: body, abdomen, aerated
lung (with a pneumothorax's air space cut out of the vessels), mediastinum and
heart, lung and pleural findings, bones over everything anatomical, devices
on top; then a slight blur (focal spot), quantum noise and a random window.
"""

from __future__ import annotations

import numpy as np

from s2d_align.data.phantom import findings as draw
from s2d_align.data.phantom.anatomy import Anatomy, Chest, Geometry, draw_body, draw_bones, draw_lungs, draw_mediastinum
from s2d_align.data.phantom.patients import StudyPlan

# Cardiothoracic ratio of each cardiomegaly grade (normal hearts are sampled at 0.41-0.47).
CARDIOTHORACIC_RATIO = {1: 0.56, 2: 0.61, 3: 0.66}
MEDIASTINUM_WIDENING = {1: 1.55, 2: 1.85, 3: 2.1}

_LUNG_ORDER = ("edema", "opacity", "consolidation", "atelectasis", "effusion", "lesion", "thickening")


def geometry_for(anatomy: Anatomy, plan: StudyPlan) -> Geometry:
    """The study's anatomy changes: heart size, mediastinal width, volume loss, AP projection."""
    heart, mediastinum, lift_right, lift_left, breath = 1.0, 1.0, 0.0, 0.0, 0.0
    for finding in plan.findings:
        if finding.kind == "cardiomegaly":
            heart = CARDIOTHORACIC_RATIO[finding.grade] / anatomy.heart_ratio
        elif finding.kind == "mediastinum":
            mediastinum = MEDIASTINUM_WIDENING[finding.grade]
        elif finding.kind == "atelectasis" and finding.variant == "lobar":
            if finding.side == "left":
                lift_left = 0.07
            else:
                lift_right = 0.04
    if plan.view == "AP":
        heart *= 1.05
        breath = 0.04
    return Geometry(heart, mediastinum, lift_right, lift_left, breath)


def render(anatomy: Anatomy, plan: StudyPlan, size: int, rng: np.random.Generator) -> np.ndarray:
    """The study's 8-bit grayscale image, ``(size, size)``."""
    pose = (rng.uniform(-0.025, 0.025), rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), rng.uniform(0.98, 1.02))
    chest = Chest(anatomy, geometry_for(anatomy, plan), size, pose)
    image = np.full((size, size), 0.03, dtype=np.float32)
    draw_body(chest, image)
    by_kind = {f.kind: f for f in plan.findings if f.kind != "device"}
    airless = np.zeros_like(image)
    pneumothorax = by_kind.get("pneumothorax")
    if pneumothorax is not None:
        airless, edge = draw.pneumothorax_space(chest, pneumothorax)
    edema = by_kind.get("edema")
    draw_lungs(chest, image, airless, 1.0 + (0.4 * edema.grade if edema and not edema.uncertain else 0.0))
    if pneumothorax is not None:
        draw.draw_pneumothorax(chest, image, pneumothorax, airless, edge)
    for kind in _LUNG_ORDER:
        if kind in by_kind and not (kind == "atelectasis" and by_kind[kind].variant == "lobar"):
            getattr(draw, f"draw_{kind}")(chest, image, by_kind[kind])
    draw_mediastinum(chest, image)
    if "atelectasis" in by_kind and by_kind["atelectasis"].variant == "lobar":
        draw.draw_atelectasis(chest, image, by_kind["atelectasis"])  # a collapsed lobe shows through the heart
    fractures = (draw.rib_fracture(chest, by_kind["fracture"]),) if "fracture" in by_kind else ()
    draw_bones(chest, image, fractures)
    for finding in plan.findings:
        if finding.kind == "device":
            draw.draw_device(chest, image, finding)
    image = _blur(image)
    image += rng.normal(0.0, rng.uniform(0.008, 0.014), size=image.shape).astype(np.float32)
    low, high, gamma = rng.uniform(0.0, 0.03), rng.uniform(0.94, 1.0), rng.uniform(0.94, 1.06)
    image = np.clip((image - low) / (high - low), 0.0, 1.0) ** gamma
    return np.round(image * 255.0).astype(np.uint8)


def _blur(image: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 binomial blur along both axes, edges repeated."""
    padded = np.pad(image, 1, mode="edge")
    rows = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return 0.25 * rows[:, :-2] + 0.5 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
