"""A synthetic patient's chest: persistent anatomy, its geometry on one study, and the normal layers.

Every drawn quantity lives in normalised body coordinates: ``x`` runs from the
image's left edge (-1) to its right edge (+1) and ``y`` from top (-1) to bottom
(+1). Radiographs are read as if facing the patient, so the patient's *right*
side is on the image's *left* (``x < 0``). A side is therefore written as a sign
``s`` (``-1`` patient right, ``+1`` patient left) and ``t = s * x`` is the
distance from the midline towards that side's chest wall.

:class:`Anatomy` is sampled once per patient and never changes, so a patient's
studies differ only by findings, positioning and exposure: that is what makes
the previous study a meaningful stage-2 reference report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIDE_SIGN = {"right": -1, "left": 1}


@dataclass(frozen=True)
class Anatomy:
    """Per-patient constants (body habitus, lung shape, heart baseline, ribs), sampled by :func:`sample_anatomy`."""

    width: float  # lateral lung edge at the costophrenic angle (t units)
    chest_wall: float  # soft tissue outside the lungs
    apex_y: float
    apex_t: float  # horizontal position of the lung apex
    medial_t: float  # medial lung edge at the base (behind the heart)
    angle_y: float  # right costophrenic angle; the left one is lower by left_drop
    left_drop: float
    dome_rise: float  # how far each dome rises above its costophrenic angle
    dome_t: float  # where the dome peaks
    mediastinum: float  # half-width of the upper mediastinum
    heart_ratio: float  # cardiothoracic ratio at baseline
    heart_height: float  # half-height of the cardiac ellipse
    heart_right: float  # x of the right heart border
    heart_tilt: float
    rib_start: float
    rib_spacing: float
    rib_thickness: float  # fraction of the spacing a rib occupies
    rib_rise: float  # posterior ribs rise, then fall towards the chest wall
    rib_fall: float
    rib_density: float
    clavicle_y: float
    clavicle_tilt: float
    spine: float  # half-width
    lung_value: float  # how dark aerated lung is
    tissue_value: float  # soft tissue brightness
    vessel_count: int
    vessel_phase: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    u = rng.uniform
    angle_y = u(0.52, 0.58)
    return Anatomy(
        width=u(0.76, 0.82),
        chest_wall=u(0.08, 0.13),
        apex_y=u(-0.80, -0.71),
        apex_t=u(0.30, 0.36),
        medial_t=u(0.06, 0.09),
        angle_y=angle_y,
        left_drop=u(0.02, 0.05),
        dome_rise=u(0.15, 0.19),
        dome_t=u(0.40, 0.48),
        mediastinum=u(0.10, 0.125),
        heart_ratio=u(0.42, 0.46),
        heart_height=u(0.29, 0.33),
        heart_right=u(-0.16, -0.12),
        heart_tilt=u(-0.35, -0.2),
        rib_start=u(-0.86, -0.80),
        rib_spacing=u(0.130, 0.150),
        rib_thickness=u(0.30, 0.38),
        rib_rise=u(0.42, 0.55),
        rib_fall=u(0.85, 1.1),
        rib_density=u(0.04, 0.055),
        clavicle_y=u(-0.78, -0.71),
        clavicle_tilt=u(0.06, 0.12),
        spine=u(0.060, 0.075),
        lung_value=u(0.11, 0.15),
        tissue_value=u(0.62, 0.67),
        vessel_count=int(rng.integers(9, 14)),
        vessel_phase=u(0.0, 2 * np.pi),
    )


def ramp(distance: np.ndarray | float, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance (positive inside), ``width`` wide at the edge."""
    return np.clip(np.asarray(distance, dtype=np.float32) / width + 0.5, 0.0, 1.0)


def segment_distance(x: np.ndarray, y: np.ndarray, start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """Distance from every point ``(x, y)`` to the segment ``start``-``end``."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    along = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(x - x0 - along * dx, y - y0 - along * dy)


@dataclass
class Lung:
    """One lung on one study: its outline, then (after :meth:`rasterise`) its soft mask and relative coordinates.

    ``u`` runs from the medial (0) to the lateral (1) edge and ``v`` from the
    apex (0) to the costophrenic angle (1), so findings are placed by zone and
    side without knowing the patient's size. ``inside`` is an approximate
    distance to the lung's boundary (positive inside).
    """

    sign: int
    apex_y: float
    angle_y: float
    dome_y: float
    width: float
    apex_t: float
    medial_t: float
    dome_t: float
    mask: np.ndarray = field(init=False)
    inside: np.ndarray = field(init=False)
    u: np.ndarray = field(init=False)
    v: np.ndarray = field(init=False)
    floor: np.ndarray = field(init=False)  # the hemidiaphragm's height under every pixel
    window: tuple[slice, slice] = field(init=False)  # rows and columns that hold the lung

    def rasterise(self, x: np.ndarray, y: np.ndarray, pixel: float) -> "Lung":
        t = self.sign * x
        v = (y - self.apex_y) / (self.angle_y - self.apex_y)
        medial, lateral = self.span(v)
        self.floor = self.diaphragm(t).astype(np.float32)
        self.inside = np.minimum.reduce([t - medial, lateral - t, self.floor - y, y - self.apex_y]).astype(np.float32)
        self.mask = ramp(self.inside, 1.5 * pixel)
        self.u = np.clip((t - medial) / np.maximum(lateral - medial, 1e-3), 0.0, 1.0).astype(np.float32)
        self.v = np.clip(v, 0.0, 1.0).astype(np.float32)
        rows, cols = np.nonzero(self.mask.any(axis=1))[0], np.nonzero(self.mask.any(axis=0))[0]
        empty = (slice(0), slice(0))
        self.window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if rows.size else empty
        return self

    def span(self, v: float) -> tuple[float, float]:
        """Medial and lateral ``t`` of the lung at height ``v``."""
        s = np.clip(v, 0.0, 1.0)
        grow = np.sqrt(s * (2.0 - s))  # a rounded apex, near-vertical walls at the base
        return self.apex_t - (self.apex_t - self.medial_t) * grow, self.apex_t + (self.width - self.apex_t) * grow

    def point(self, u: float, v: float) -> tuple[float, float]:
        """Body coordinates ``(x, y)`` of the lung-relative point ``(u, v)``."""
        medial, lateral = self.span(v)
        return self.sign * (medial + u * (lateral - medial)), self.apex_y + v * (self.angle_y - self.apex_y)

    def diaphragm(self, t: np.ndarray) -> np.ndarray:
        """Height of this hemidiaphragm at lateral distance ``t``: a dome falling to both angles."""
        lateral = ((t - self.dome_t) / (self.width - self.dome_t)) ** 2
        medial = 0.35 * ((self.dome_t - t) / (self.dome_t - self.medial_t)) ** 2
        return self.dome_y + (self.angle_y - self.dome_y) * np.where(t >= self.dome_t, lateral, medial)


@dataclass(frozen=True)
class Geometry:
    """What findings and the view change about a patient's anatomy on one study."""

    heart_scale: float = 1.0  # cardiothoracic ratio multiplier (cardiomegaly, AP magnification)
    mediastinum_scale: float = 1.0  # upper mediastinal width multiplier (widened mediastinum)
    dome_lift_right: float = 0.0  # volume loss raises a hemidiaphragm
    dome_lift_left: float = 0.0
    inspiration: float = 0.0  # AP films are taken with a shallower breath


class Chest:
    """One study's coordinate grid and anatomy, with the layers that findings need to know about."""

    def __init__(self, anatomy: Anatomy, geometry: Geometry, size: int, pose: tuple[float, float, float, float]):
        self.anatomy, self.geometry, self.size = anatomy, geometry, size
        self.pixel = 2.0 / size
        grid = (np.arange(size, dtype=np.float32) + 0.5) * self.pixel - 1.0
        gx, gy = np.meshgrid(grid, grid)
        self.pose = pose
        angle, dx, dy, scale = pose
        cos, sin = np.cos(angle), np.sin(angle)
        self.x = ((gx - dx) * cos + (gy - dy) * sin) / scale
        self.y = (-(gx - dx) * sin + (gy - dy) * cos) / scale
        a, g = anatomy, geometry
        self.lungs = {
            side: self._lung(SIDE_SIGN[side], a.angle_y + (a.left_drop if side == "left" else 0.0) - g.inspiration,
                             g.dome_lift_left if side == "left" else g.dome_lift_right)
            for side in ("right", "left")
        }
        self.lung_mask = np.maximum(self.lungs["right"].mask, self.lungs["left"].mask)
        half_width = anatomy.heart_ratio * geometry.heart_scale * anatomy.width
        grow = half_width - anatomy.heart_ratio * anatomy.width
        self.heart_half_width = half_width
        self.heart_half_height = anatomy.heart_height * (1.0 + 0.35 * (geometry.heart_scale - 1.0))
        self.heart_x = anatomy.heart_right - 0.3 * grow + half_width
        self.heart_y = self.lungs["left"].dome_y - 0.35 * self.heart_half_height
        self.hilum_y = anatomy.apex_y + 0.45 * (anatomy.angle_y - anatomy.apex_y)
        self.carina_y = self.hilum_y - 0.1
        self.cover = np.zeros_like(self.x)  # heart and mediastinum, once drawn

    def _lung(self, sign: int, angle_y: float, lift: float) -> Lung:
        a = self.anatomy
        lung = Lung(sign, a.apex_y, angle_y, angle_y - a.dome_rise - lift, a.width, a.apex_t, a.medial_t, a.dome_t)
        return lung.rasterise(self.x, self.y, self.pixel)

    def clear_u(self, lung: Lung, v: float) -> float:
        """The ``u`` from which the lung at height ``v`` is not hidden by the heart or the mediastinum.

        Findings are placed lateral to it: drawn behind the heart they would be
        invisible, and the report would name something the image does not show.
        """
        y = lung.apex_y + v * (lung.angle_y - lung.apex_y)
        covered = self.anatomy.mediastinum * self.geometry.mediastinum_scale + 0.05
        a, b, angle = self.heart_half_width, self.heart_half_height, self.anatomy.heart_tilt
        cos, sin, dy = np.cos(angle), np.sin(angle), y - self.heart_y
        qa = cos**2 / a**2 + sin**2 / b**2
        qb = 2.0 * dy * sin * cos * (1.0 / a**2 - 1.0 / b**2)
        qc = dy**2 * (sin**2 / a**2 + cos**2 / b**2) - 1.0
        disc = qb * qb - 4.0 * qa * qc
        if disc > 0:
            ends = self.heart_x + (-qb + lung.sign * np.sqrt(disc)) / (2.0 * qa)
            covered = max(covered, lung.sign * ends)
        medial, lateral = lung.span(max(v, 0.05))
        return float(np.clip((covered + 0.02 - medial) / max(lateral - medial, 1e-3), 0.0, 0.8))

    def side_t(self, sign: int) -> np.ndarray:
        return sign * self.x

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Row and column of the body point ``(x, y)`` (the inverse of the grid's pose)."""
        angle, dx, dy, scale = self.pose
        gx = dx + scale * (np.cos(angle) * x - np.sin(angle) * y)
        gy = dy + scale * (np.sin(angle) * x + np.cos(angle) * y)
        return (gy + 1.0) / self.pixel - 0.5, (gx + 1.0) / self.pixel - 0.5

    def stroke(self, points, half_width: float) -> np.ndarray:
        """Soft mask of a polyline ``half_width`` thick, computed only in each segment's pixel window."""
        out = np.zeros_like(self.x)
        margin = half_width * 1.1 / self.pixel + 2.0
        for start, end in zip(points[:-1], points[1:]):
            (r0, c0), (r1, c1) = self.to_pixel(*start), self.to_pixel(*end)
            rows = slice(max(int(min(r0, r1) - margin), 0), max(int(max(r0, r1) + margin) + 1, 0))
            cols = slice(max(int(min(c0, c1) - margin), 0), max(int(max(c0, c1) + margin) + 1, 0))
            window = (rows, cols)
            distance = segment_distance(self.x[window], self.y[window], start, end)
            np.maximum(out[window], ramp(half_width - distance, self.pixel), out=out[window])
        return out

    def hilum(self, sign: int) -> tuple[float, float]:
        return sign * 0.16, self.hilum_y + 0.06


def lerp_into(image: np.ndarray, value: float | np.ndarray, alpha: np.ndarray) -> None:
    """Blend ``image`` towards ``value`` by ``alpha`` in place: an opaque structure drawn over another."""
    image += (value - image) * alpha


def draw_body(chest: Chest, image: np.ndarray) -> None:
    """Soft tissue of the trunk, shoulders and neck on black air, then the abdomen under each hemidiaphragm."""
    a, x, y = chest.anatomy, chest.x, chest.y
    shoulders = 0.16 * np.clip((-0.5 - y) / 0.3, 0.0, 1.0)
    trunk = ramp(a.width + a.chest_wall + shoulders - np.abs(x), 3 * chest.pixel)
    thickness = 0.85 + 0.15 * np.clip(np.abs(x) / (a.width + a.chest_wall), 0.0, 1.0)
    lerp_into(image, a.tissue_value * thickness, trunk)
    for lung in chest.lungs.values():
        t = chest.side_t(lung.sign)
        below = ramp(chest.y - lung.floor, 1.5 * chest.pixel) * (t > -0.02) * trunk
        lerp_into(image, a.tissue_value + 0.12, below)
    stomach_y = chest.lungs["left"].dome_y + 0.1
    gas = ramp(1.0 - np.hypot((x - 0.38) / 0.12, (y - stomach_y) / 0.055), 0.25)
    lerp_into(image, a.lung_value + 0.12, gas * (y > chest.lungs["left"].diaphragm(x) + 0.02))


def draw_lungs(chest: Chest, image: np.ndarray, airless: np.ndarray, vessel_gain: float) -> None:
    """Aerated lung with vessels fanning out from each hilum; no vessels where ``airless`` (pneumothorax)."""
    a = chest.anatomy
    for lung in chest.lungs.values():
        w = lung.window
        mask = lung.mask[w]
        lerp_into(image[w], a.lung_value + 0.08 * lung.v[w], mask)
        hx, hy = chest.hilum(lung.sign)
        dx, dy = lung.sign * chest.x[w] - abs(hx), chest.y[w] - hy
        radius = np.hypot(dx, dy)
        wave = np.maximum(np.cos(a.vessel_count * np.arctan2(dy, dx) + a.vessel_phase + 4.0 * radius), 0.0)
        streaks = (wave * wave) ** 3
        vessels = (0.025 + 0.035 * streaks) * np.exp(-radius / 0.45) * vessel_gain
        hilum = 0.10 * np.exp(-((dx / 0.06) ** 2 + (dy / 0.09) ** 2))
        image[w] += (vessels + hilum) * mask * (1.0 - airless[w])


def draw_mediastinum(chest: Chest, image: np.ndarray) -> None:
    """Heart (a tilted ellipse on the left hemidiaphragm), upper mediastinum with aortic knob, trachea."""
    a, g, x, y = chest.anatomy, chest.geometry, chest.x, chest.y
    cos, sin = np.cos(a.heart_tilt), np.sin(a.heart_tilt)
    hx, hy = x - chest.heart_x, y - chest.heart_y
    ex = (hx * cos + hy * sin) / chest.heart_half_width
    ey = (-hx * sin + hy * cos) / chest.heart_half_height
    heart = ramp((1.0 - np.sqrt(ex * ex + ey * ey)) * chest.heart_half_height, 1.5 * chest.pixel)
    top = chest.heart_y - 0.6 * chest.heart_half_height
    widen = 1.0 + (g.mediastinum_scale - 1.0) * np.clip((top - y) / 0.25, 0.0, 1.0)
    knob = 0.05 * np.exp(-(((y - (chest.hilum_y - 0.22)) / 0.07) ** 2))
    right = a.mediastinum * widen + x
    left = (a.mediastinum + knob) * widen - x
    upper = ramp(np.minimum(right, left), 1.5 * chest.pixel) * (y < chest.heart_y)
    chest.cover = np.maximum(heart, upper)
    lerp_into(image, a.tissue_value + 0.04, chest.cover)
    trachea = ramp(0.032 - np.abs(x + 0.01), chest.pixel) * ramp(chest.carina_y - y, 2 * chest.pixel)
    lerp_into(image, a.lung_value + 0.18, 0.6 * trachea)
    for sign in (-1, 1):
        bronchus = [(-0.01, chest.carina_y), (sign * 0.13, chest.carina_y + 0.1)]
        lerp_into(image, a.lung_value + 0.18, 0.5 * chest.stroke(bronchus, 0.022))


@dataclass(frozen=True)
class RibFracture:
    """Where a fracture breaks posterior ribs: side, rib band indices, break position and step-off."""

    sign: int
    indices: tuple[int, ...]
    t: float
    step: float
    gap: float
    calluses: tuple[tuple[float, float], ...] = ()
    callus: float = 0.16  # brightness of the callus; healing fractures carry more


def draw_bones(chest: Chest, image: np.ndarray, fractures: tuple[RibFracture, ...] = ()) -> None:
    """Spine, posterior and anterior ribs, clavicles; fractured ribs get a gap, a step-off and callus."""
    a, x, y, px = chest.anatomy, chest.x, chest.y, chest.pixel
    image += 0.09 * ramp(a.spine - np.abs(x), 2 * px) * (0.8 + 0.2 * (np.cos(2 * np.pi * y / 0.13) > 0.3))
    ax = np.abs(x)
    reach = ramp(a.width + 0.06 - ax, 2 * px) * ramp(ax - 0.05, 2 * px)
    posterior, phase = _ribs(chest, ax, y, 0.0)
    for fracture in fractures:
        side = np.sign(x) == fracture.sign
        lateral = side & (ax > fracture.t + fracture.gap)
        in_gap = side & (np.abs(ax - fracture.t) <= fracture.gap)
        moved, moved_phase = _ribs(chest, ax, y, fracture.step)
        posterior = np.where((lateral | in_gap) & np.isin(np.floor(phase), fracture.indices), 0.0, posterior)
        posterior = np.where(lateral & np.isin(np.floor(moved_phase), fracture.indices),
                             np.maximum(posterior, moved), posterior)
    below = np.maximum.reduce([ramp(y - lung.floor, 0.1) * (np.sign(x) == lung.sign) for lung in chest.lungs.values()])
    image += a.rib_density * posterior * reach * (0.45 + 0.55 * chest.lung_mask) * (1.0 - 0.6 * below)
    for fracture in fractures:
        for cx, cy in fracture.calluses:
            image += fracture.callus * np.exp(-(((x - cx) / 0.07) ** 2 + ((y - cy) / 0.045) ** 2))
    anterior = (y - a.rib_start - 0.25 - 0.32 * (a.width - ax)) / (1.15 * a.rib_spacing)
    band = np.abs(anterior - np.floor(anterior) - 0.5)
    anterior_ribs = ramp((0.14 - band) * 1.15 * a.rib_spacing, px) * (anterior > 0) * (anterior < 6)
    image += 0.02 * anterior_ribs * ramp(a.width - 0.2 - np.abs(a.width - 0.2 - ax) + 0.05, 3 * px)
    for sign in (-1, 1):
        clavicle = [(sign * 0.07, a.clavicle_y + 0.02), (sign * 0.3, a.clavicle_y - 0.5 * a.clavicle_tilt),
                    (sign * 0.62, a.clavicle_y - a.clavicle_tilt)]
        image += 0.16 * chest.stroke(clavicle, 0.028)


def _ribs(chest: Chest, ax: np.ndarray, y: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ribs as one periodic pattern (rise from the spine, fall along the chest wall), and its phase.

    ``floor(phase)`` is the rib's band index; ``step`` moves the pattern down (a displaced fragment).
    """
    a = chest.anatomy
    phase = (y - step - a.rib_start + a.rib_rise * ax - a.rib_fall * ax * ax) / a.rib_spacing
    band = np.abs(phase - np.floor(phase) - 0.5)
    rib = ramp((0.5 * a.rib_thickness - band) * a.rib_spacing, chest.pixel)
    return rib * (phase > 0) * (phase < 10), phase


def rib_point(anatomy: Anatomy, index: int, t: float) -> float:
    """The ``y`` of the middle of posterior rib band ``index`` at lateral distance ``t``."""
    return anatomy.rib_start + (index + 0.5) * anatomy.rib_spacing - anatomy.rib_rise * t + anatomy.rib_fall * t * t
