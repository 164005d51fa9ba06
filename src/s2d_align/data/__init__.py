"""Dataset builders (one module per source), the manifest contract, and the torch datasets."""
