"""How each finding looks: drawing functions that change one study's image, one per finding kind.

The downstream model sees these images through a tiny random, frozen ViT at
about 112 px (8 x 8 patches of 14 px), so every finding is drawn large and
with a signature no other finding shares: effusion a bright meniscus at the
base, pneumothorax a black rim without vessels and a white pleural edge,
consolidation a dense, homogeneous zone with air bronchograms, lung opacity
many small blotches, plate-like atelectasis straight bright bands, lobar
collapse a sharp triangle, edema a symmetric perihilar haze with septal
lines, a nodule or mass a round disc, pleural thickening a bright apical
cap, rib fractures a broken, stepped rib with callus, devices very bright
lines and boxes. Uncertain ("possible") findings are drawn smaller and at
about 60% of the contrast. Shapes come from the episode's ``seed`` so a finding
keeps its shape across a patient's studies.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from s2d_align.data.phantom.anatomy import Chest, RibFracture, lerp_into, ramp, rib_point
from s2d_align.data.phantom.patients import Finding

BRIGHT = 0.97  # metal and contrast-filled tubing


def sides_of(finding: Finding) -> tuple[str, ...]:
    return ("right", "left") if finding.side == "bilateral" else (finding.side,)


def _strength(finding: Finding) -> float:
    return 0.6 if finding.uncertain else 1.0


def pneumothorax_space(chest: Chest, finding: Finding) -> tuple[np.ndarray, np.ndarray]:
    """The pleural air space (apical and lateral, bigger with grade) and the visceral pleural edge around it."""
    lung = chest.lungs[finding.side]
    fraction = 0.13 if finding.uncertain else {1: 0.24, 2: 0.42, 3: 0.62}[finding.grade]
    medial, lateral = lung.span(lung.v)
    edge_u = 1.0 - fraction * (1.0 - 0.55 * lung.v)
    height = lung.angle_y - lung.apex_y
    distance = np.maximum((lung.u - edge_u) * (lateral - medial), (0.55 * fraction - lung.v) * height)
    space = ramp(distance, chest.pixel) * lung.mask
    edge = np.exp(-((distance / (1.1 * chest.pixel)) ** 2)) * ramp(lung.inside - 2 * chest.pixel, chest.pixel)
    return space, edge


def draw_pneumothorax(chest: Chest, image: np.ndarray, finding: Finding, space: np.ndarray, edge: np.ndarray) -> None:
    strength = _strength(finding)
    lung = chest.lungs[finding.side]
    image += 0.05 * (lung.mask - space)
    lerp_into(image, 0.02, space * (0.9 * strength))
    image += 0.45 * strength * edge * (1.0 - space)


def draw_effusion(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """Fluid in the dependent hemithorax: blunts the costophrenic angle, rises laterally as a meniscus."""
    tissue = chest.anatomy.tissue_value
    for side in sides_of(finding):
        lung = chest.lungs[side]
        fraction = 0.16 if finding.uncertain else {1: 0.2, 2: 0.34, 3: 0.52}[finding.grade]
        height = (lung.angle_y - lung.apex_y) * fraction
        surface = lung.angle_y - height * (0.35 + 0.75 * lung.u**2)
        depth = np.clip((chest.y - surface) / 0.06, 0.0, 1.0)
        lerp_into(image, tissue + 0.05, depth * lung.mask * (0.95 * _strength(finding)))


def draw_consolidation(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """Dense, homogeneous airspace filling across a zone's width, with an irregular edge and air bronchograms.

    It conforms to the lung (unlike a round lesion), is uniform (unlike patchy
    opacity) and leaves the costophrenic angle clear (unlike an effusion).
    """
    rng = np.random.default_rng(finding.seed)
    lung = chest.lungs[finding.side]
    wobble = 0.2 * (_smooth_noise(rng, 7, image.shape) - 0.5)
    top, bottom = {"upper": (0.0, 0.34), "mid": (0.36, 0.6), "lower": (0.56, 0.86)}[finding.zone]
    grow = -0.04 if finding.uncertain else {1: 0.0, 2: 0.05, 3: 0.1}[finding.grade]
    if finding.zone != "upper":
        top -= grow
    if finding.zone != "lower":
        bottom += grow
    low_u, high_u = (0.22, 0.82) if finding.uncertain or finding.grade == 1 else (0.1, 0.92)
    low_u = min(max(low_u, chest.clear_u(lung, 0.5 * (top + bottom)) + 0.03), high_u - 0.3)
    inside = np.minimum.reduce([lung.v - top, bottom - lung.v, lung.u - low_u, high_u - lung.u]) + wobble
    blob = ramp(inside, 0.04) * lung.mask
    strength = _strength(finding)
    lerp_into(image, chest.anatomy.tissue_value - 0.02, blob * (0.9 * strength))
    hx, hy = chest.hilum(lung.sign)
    cx, cy = lung.point(0.5 * (low_u + high_u), 0.5 * (top + bottom))
    for turn in (-0.2, 0.25):
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        start = np.array([hx, hy]) + rotation @ np.array([cx - hx, cy - hy]) * 0.6
        end = np.array([hx, hy]) + rotation @ np.array([cx - hx, cy - hy]) * 1.2
        bronchus = chest.stroke([tuple(start), tuple(end)], 0.01)
        image -= 0.13 * strength * bronchus * blob


def _smooth_noise(rng: np.random.Generator, cells: int, shape: tuple[int, int]) -> np.ndarray:
    """Smooth random values in [0, 1]: a ``cells`` x ``cells`` grid of uniform noise, resized bicubically."""
    low = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(low, mode="F").resize(shape[::-1], Image.BICUBIC))


def draw_opacity(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """Patchy, mottled opacities: many small blotches (thresholded fine noise) confined to one zone."""
    rng = np.random.default_rng(finding.seed)
    patches = np.clip((_smooth_noise(rng, 24, image.shape) - 0.42) * 5.0, 0.0, 1.0)
    amount = 0.5 if finding.uncertain else {1: 0.75, 2: 0.85, 3: 0.95}[finding.grade]
    centre_v = {"upper": 0.27, "mid": 0.52, "lower": 0.78}[finding.zone]
    for side in sides_of(finding):
        lung = chest.lungs[side]
        clear = max(chest.clear_u(lung, v) for v in (centre_v - 0.1, centre_v, centre_v + 0.1))
        zone = np.exp(-(((lung.v - centre_v) / 0.17) ** 4)) * ramp(lung.u - max(0.12, clear + 0.05), 0.1)
        lerp_into(image, chest.anatomy.tissue_value + 0.05, amount * patches * zone * lung.mask)


def draw_atelectasis(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """Plate-like: straight bright bands at the base. Lobar: a sharp triangle with the diaphragm raised."""
    rng = np.random.default_rng(finding.seed)
    tissue = chest.anatomy.tissue_value
    if finding.variant == "lobar":
        lung = chest.lungs[finding.side]
        s = lung.sign
        if finding.side == "left":
            corners = [(0.06, chest.hilum_y + 0.03), (0.06, lung.dome_y + 0.06), (0.5, lung.dome_y + 0.08)]
        else:
            corners = [(0.06, lung.apex_y + 0.05), (0.12, chest.hilum_y + 0.02), (0.62, chest.hilum_y - 0.16)]
        triangle = _triangle(chest, [(s * t, y) for t, y in corners])
        lerp_into(image, tissue, 0.8 * triangle * lung.mask * (1.0 - chest.cover))
        image += 0.16 * triangle
        return
    bands = 1 if finding.uncertain else finding.grade
    for side in sides_of(finding):
        lung = chest.lungs[side]
        for k in range(bands):
            v = 0.66 + 0.1 * k + rng.uniform(-0.03, 0.03)
            while chest.clear_u(lung, v) > 0.45 and v > 0.45:
                v -= 0.05  # beside a big heart, move up to where the band can be seen
            start_u = max(rng.uniform(0.15, 0.3), chest.clear_u(lung, v) + 0.03)
            start = lung.point(start_u, v + rng.uniform(-0.03, 0.03))
            end = lung.point(rng.uniform(0.75, 0.9), v + rng.uniform(-0.03, 0.03))
            band = chest.stroke([start, end], 0.032) * lung.mask
            lerp_into(image, tissue + 0.18, band * (0.95 * _strength(finding)))


def _triangle(chest: Chest, corners: list[tuple[float, float]]) -> np.ndarray:
    """Soft mask of a triangle given by three corners (any winding)."""
    (x0, y0), (x1, y1), (x2, y2) = corners
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    inside = []
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y1)), ((x1, y1), (x2, y2)), ((x2, y2), (x0, y0))):
        length = np.hypot(bx - ax, by - ay)
        inside.append(np.sign(area) * ((bx - ax) * (chest.y - ay) - (by - ay) * (chest.x - ax)) / length)
    return ramp(np.minimum.reduce(inside), 1.5 * chest.pixel)


def draw_edema(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """Symmetric perihilar ("bat-wing") haze; from moderate on, short horizontal septal lines at both bases."""
    grade = 1 if finding.uncertain else finding.grade
    amount = 0.14 if finding.uncertain else {1: 0.24, 2: 0.32, 3: 0.4}[grade]
    for lung in chest.lungs.values():
        hx, hy = chest.hilum(lung.sign)
        dt = (chest.side_t(lung.sign) - abs(hx) - 0.04) / (0.2 + 0.04 * grade)
        dy = (chest.y - hy - 0.06) / (0.27 + 0.04 * grade)
        image += amount * np.exp(-(dt * dt + dy * dy)) * lung.mask
        if not finding.uncertain:
            for v in np.linspace(0.62, 0.9, 2 + 2 * grade):
                medial, lateral = lung.span(v)
                y = lung.apex_y + v * (lung.angle_y - lung.apex_y)
                line = [(lung.sign * (lateral - 0.015), y), (lung.sign * (lateral - 0.09), y)]
                image += 0.3 * chest.stroke(line, 0.014) * lung.mask


def draw_lesion(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """A round nodule or a lobulated mass, sized by its reported diameter (exaggerated to stay visible)."""
    rng = np.random.default_rng(finding.seed)
    lung = chest.lungs[finding.side]
    centre_v = {"upper": 0.3, "mid": 0.52, "lower": 0.72}[finding.zone] + rng.uniform(-0.05, 0.05)
    clear = chest.clear_u(lung, centre_v)
    cx, cy = lung.point(clear + (0.85 - clear) * rng.uniform(0.3, 0.7), centre_v)
    radius = {2: 0.09, 3: 0.105, 4: 0.13, 5: 0.15, 6: 0.17}[finding.measure_cm]
    if finding.uncertain:
        radius *= 0.85
    dx, dy = chest.x - cx, chest.y - cy
    if finding.variant == "mass":
        angle = np.arctan2(dy, dx)
        phases = rng.uniform(0, 2 * np.pi, size=2)
        radius = radius * (1.0 + 0.1 * np.cos(3 * angle + phases[0]) + 0.06 * np.cos(5 * angle + phases[1]))
    disc = ramp(radius - np.hypot(dx, dy), 1.2 * chest.pixel)
    lerp_into(image, chest.anatomy.tissue_value + 0.15, disc * (0.95 * _strength(finding)))


def draw_thickening(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """An apical pleural cap: a bright crescent following the top of the lung."""
    for side in sides_of(finding):
        lung = chest.lungs[side]
        thickness = 0.1 * np.clip(1.0 - lung.v / 0.45, 0.0, 1.0)
        cap = ramp(thickness - lung.inside, chest.pixel) * lung.mask * (thickness > 0)
        lerp_into(image, chest.anatomy.tissue_value + 0.1, 0.95 * cap)


def rib_fracture(chest: Chest, finding: Finding) -> RibFracture:
    """Breaks of the reported ribs at the lateral chest wall; healing ones (grade 2) carry callus."""
    a = chest.anatomy
    sign = -1 if finding.side == "right" else 1
    indices = tuple(r - 2 for r in finding.ribs)  # band 0 is the second rib, the first below the clavicle
    t = 0.6 * a.width
    step = (0.2 if finding.uncertain else 0.5) * a.rib_spacing
    calluses = tuple((sign * t, rib_point(a, i, t) + 0.5 * step) for i in indices)
    callus = 0.3 if finding.uncertain else 0.55 if finding.grade >= 2 else 0.48
    return RibFracture(sign, indices, t, step, 0.015 if finding.uncertain else 0.04, calluses, callus)


def draw_device(chest: Chest, image: np.ndarray, finding: Finding) -> None:
    """Tubes and lines as bright polylines, a pacemaker as a bright box with two leads."""
    a, px, x, y = chest.anatomy, chest.pixel, chest.x, chest.y
    carina, hilum = chest.carina_y, chest.hilum_y
    tip_svc = hilum - 0.1
    paths: list[tuple[np.ndarray, float]] = []
    if finding.variant == "et_tube":
        tip = carina - 0.035 * (finding.measure_cm or 4)
        paths.append((np.array([[-0.005, -1.1], [-0.01, -0.75], [-0.01, tip]]), 0.02))
    elif finding.variant == "ng_tube":
        dome = chest.lungs["left"].dome_y
        paths.append((np.array([[0.02, -1.1], [0.025, -0.6], [0.03, hilum + 0.2], [0.1, dome + 0.02],
                                [0.28, dome + 0.14], [0.42, dome + 0.1]]), 0.013))
    elif finding.variant == "central_line":
        route = {
            "jugular": [[-0.22, -1.1], [-0.14, -0.8], [-0.07, -0.58], [-0.06, tip_svc]],
            "subclavian": [[0.64, -0.72], [0.35, -0.69], [0.12, -0.62], [-0.04, -0.52], [-0.06, tip_svc]],
            "picc": [[-1.1, -0.6], [-0.78, -0.7], [-0.45, -0.72], [-0.16, -0.6], [-0.07, -0.46], [-0.06, tip_svc]],
        }[finding.route]
        paths.append((np.array(route), 0.012))
    elif finding.variant == "pacemaker":
        cx, cy = 0.55, a.clavicle_y + 0.17
        qx, qy = np.abs(x - cx) - 0.07, np.abs(y - cy) - 0.045
        outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0)
        lerp_into(image, BRIGHT + 0.03, ramp(0.015 - outside, px))
        heart_x, heart_y = chest.heart_x, chest.heart_y
        leads = [[cx - 0.06, cy], [0.25, cy - 0.06], [0.02, cy + 0.04], [-0.06, hilum + 0.12]]
        paths.append((np.array(leads + [[-0.07, heart_y - 0.1]]), 0.011))
        paths.append((np.array(leads + [[-0.02, heart_y], [heart_x + 0.15, heart_y + 0.12]]), 0.011))
    elif finding.variant == "chest_tube":
        s = -1 if finding.side == "right" else 1
        points = [(s * (a.width + 0.12), 0.35), (s * (a.width - 0.04), 0.2), (s * 0.55, -0.25), (s * 0.4, -0.6)]
        lerp_into(image, BRIGHT, chest.stroke(points, 0.022))
        lerp_into(image, 0.7, chest.stroke(points, 0.007))  # the tube's lumen
        return
    for points, half_width in paths:
        lerp_into(image, BRIGHT, chest.stroke(points, half_width))
