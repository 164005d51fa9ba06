"""The rule labeler reads the phantom's reports back to their true labels.

The phantom dataset (``s2d_align.data.phantom``) writes reports in standard radiology phrasing together with
the labels they were drawn from; a CheXpert-style labeler should recover them. Per observation, the share of
reports whose rule label equals the true label (1 / 0 / -1 / blank; an observation missing from the true
labels is blank) must be at least 0.98. Skipped until the phantom generator is part of the package.
"""

import pytest

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.data.manifest import read_manifest
from s2d_align.evaluation.labelers.rules import RuleLabeler

phantom = pytest.importorskip("s2d_align.data.phantom", reason="the phantom generator has not landed yet")


def test_per_label_agreement_with_true_labels(tmp_path):
    manifest = phantom.prepare_phantom(tmp_path / "phantom", studies=200, seed=0, image_size=32)
    studies = [s for s in read_manifest(manifest) if s.labels is not None]
    assert len(studies) >= 100
    predicted = RuleLabeler().label([s.findings for s in studies])
    disagreements = {}
    for observation in OBSERVATIONS:
        wrong = [(s.findings, s.labels.get(observation), p[observation])
                 for s, p in zip(studies, predicted) if s.labels.get(observation) != p[observation]]
        if 1 - len(wrong) / len(studies) < 0.98:
            disagreements[observation] = wrong[:3]
    assert not disagreements, disagreements
