"""dylora-moe: Dynamic LoRA Mixture-of-Experts training with exact, artifact-based resumption."""

__version__ = "0.1.0"
