"""The demonstration: generated spreads, a small model trained on them, the demo run."""
