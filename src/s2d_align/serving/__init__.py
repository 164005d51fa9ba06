"""The web app and REST API (FastAPI): :func:`s2d_align.serving.app.create_app`; needs the ``serve`` extra."""
