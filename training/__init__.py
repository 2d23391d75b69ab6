"""The training toolkit: MIMIC cohorts, synthetic data, pre-training, fine-tuning, evaluation."""
