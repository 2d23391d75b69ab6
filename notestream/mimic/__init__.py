"""MIMIC-III / MIMIC-IV file reading, shared by replay and training."""
