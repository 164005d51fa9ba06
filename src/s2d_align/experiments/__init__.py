"""Experiments on the phantom: the paper's ablation tables as one command."""
