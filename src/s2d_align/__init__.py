"""S2D-Align: shallow-to-deep auxiliary learning for radiology report generation.

The package is a model library (``models``), data builders (``data``), the
curriculum trainer (``training``), image-only generation (``inference``) and
the field's metrics (``evaluation``); ``cli`` wires them to the ``s2d-align``
command. Importing it has no side effects, and imports nothing heavy:
``ReportGenerator`` (the Python API, :mod:`s2d_align.inference.api`) is
loaded on first use.
"""

__version__ = "0.1.0"
__all__ = ["ReportGenerator", "Report", "SentenceMap", "__version__"]


def __getattr__(name: str):
    if name in ("ReportGenerator", "Report", "SentenceMap"):
        from s2d_align.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 's2d_align' has no attribute {name!r}")
