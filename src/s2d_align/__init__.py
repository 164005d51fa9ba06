"""S2D-Align: shallow-to-deep auxiliary learning for radiology report generation.

The package is a model library (``models``), data builders (``data``), the
curriculum trainer (``training``), image-only generation (``inference``) and
the field's metrics (``evaluation``); ``cli`` wires them to the ``s2d-align``
command. Importing it has no side effects.
"""

__version__ = "0.1.0"
