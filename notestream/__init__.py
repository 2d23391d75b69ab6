"""notestream: streaming ClinicalBERT risk scores from a live feed of clinical notes.

The distribution holds four top-level packages:

- ``models``   the ClinicalBERT core (cleaning, chunking, aggregation, checkpoints, inference engine);
- ``training`` MIMIC cohorts, synthetic data, pre-training, fine-tuning and evaluation;
- ``stream``   the Kafka/Faust service, the risk store, replay and alerts;
- ``notestream`` (this one) the project-wide error root, the settings object and the CLI that wires
  the others together. ``models`` imports nothing from ``stream`` or ``training``.
"""

__version__ = "0.1.0"
