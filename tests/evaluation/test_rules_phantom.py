"""The rule labeler reads the phantom's reports back to their true labels.

The phantom dataset (``s2d_align.data.phantom``) writes reports in standard radiology phrasing together with
the labels they were drawn from; a CheXpert-style labeler should recover them. Per observation, the share of
reports whose rule label equals the true label (1 / 0 / -1 / blank; an observation missing from the true
labels is blank) must be at least 0.98.

Both follow CheXpert's conventions (for instance "likely X" is positive, so the phantom writes its uncertain
pneumonia as "could represent", "may represent", "concerning for"...); on 4 x 600 phantom studies (seeds
0-3) every label agrees, so the second test asks for no disagreement at all.
"""

import pytest

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.data import phantom  # part of the package: an import error fails the tests, never skips them
from s2d_align.data.manifest import read_manifest
from s2d_align.evaluation.labelers.rules import RuleLabeler


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    manifest = phantom.prepare_phantom(tmp_path_factory.mktemp("phantom"), studies=200, seed=0, image_size=64)
    studies = [s for s in read_manifest(manifest) if s.labels is not None]
    return studies, RuleLabeler().label([s.findings for s in studies])


def test_per_label_agreement_with_true_labels(labeled):
    studies, predicted = labeled
    assert len(studies) >= 100
    agreement = {
        observation: sum(s.labels.get(observation) == p[observation] for s, p in zip(studies, predicted)) / len(studies)
        for observation in OBSERVATIONS
    }
    assert {k: v for k, v in agreement.items() if v < 0.98} == {}


def test_no_label_disagrees(labeled):
    studies, predicted = labeled
    disagreements = [
        (observation, s.findings, s.labels.get(observation), p[observation])
        for s, p in zip(studies, predicted)
        for observation in OBSERVATIONS
        if s.labels.get(observation) != p[observation]
    ]
    assert disagreements == []
