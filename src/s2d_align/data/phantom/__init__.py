"""The phantom dataset: procedurally drawn chest radiographs of synthetic patients, with reports.

The embedded default dataset of every demo and end-to-end test (see
``docs/phantom.md``). Modules: ``anatomy`` (a patient's chest and its normal
layers), ``patients`` (clinical course over studies), ``findings`` (how each
finding is drawn), ``radiograph`` (one study's image), ``markup`` and
``reports`` (annotated phrase templates, FINDINGS text, labels, RadGraph),
``prepare`` (writing images, manifest and summary).
"""

from s2d_align.data.phantom.prepare import prepare_phantom

__all__ = ["prepare_phantom"]
