"""View positions of chest radiographs: which count as frontal, and the order a study lists its images in.

MIMIC-CXR's ``ViewPosition`` uses the DICOM names (``PA``, ``AP``,
``LATERAL``, ``LL``, ``AP AXIAL``, decubitus ``PA LLD`` / ``AP RLD`` ...);
the Kaggle views table of IU X-Ray says ``Frontal`` / ``Lateral``. A
decubitus or axial film is still a frontal projection, so ``--views
frontal``, the frontal-first image order and the image that stands for a
study in retrieval all use the one set below.
"""

from __future__ import annotations

FRONTAL_VIEWS = ("PA", "AP", "FRONTAL", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD")
LATERAL_VIEWS = ("LATERAL", "LL", "RL", "LARGE LATERAL", "XTABLE LATERAL")

# PA, then AP, then the other frontal views, then LATERAL, LL and the other laterals, then anything else.
_RANK = {"PA": 0, "AP": 1, **{v: 2 for v in FRONTAL_VIEWS[2:]}, "LATERAL": 3, "LL": 4, **{v: 5 for v in LATERAL_VIEWS[2:]}}


def is_frontal(view: str) -> bool:
    return view.strip().upper() in FRONTAL_VIEWS


def view_rank(view: str) -> int:
    """Sort key that puts frontal images first (PA before AP), laterals next, unknown views last."""
    return _RANK.get(view.strip().upper(), 9)
