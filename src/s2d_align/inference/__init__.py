"""Report generation from the image alone."""
