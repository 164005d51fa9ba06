"""The S2D-Align model: frozen encoders, connectors (SMA and its ablations), the LoRA LLM, the assembly."""
