"""The PAG curriculum: what trains in each stage, the accelerate training loop, checkpoints."""
