"""notestream: streaming ClinicalBERT risk scores from a live feed of clinical notes.

Everything is imported as ``notestream.*``; the layers, lowest first (checked by ``lint-imports``):

- ``notestream.core``     the error root, the settings object, logging and the topic names;
- ``notestream.models``   the ClinicalBERT core: cleaning, chunking, the admission ledger and score,
  model folders, the batching inference engine (the ``models/`` folder);
- ``notestream.mimic``    MIMIC-III / MIMIC-IV file reading, for replay, training and offline scoring;
- ``notestream.stream``   the Kafka/Faust service, the risk store, replay and alerts (``stream/``), and
  ``notestream.training``  cohorts, labels, pre-training, fine-tuning, evaluation (``training/``),
  which never import each other;
- ``notestream.cli``      the command line and the demo, which join the others.
"""

__version__ = "0.1.0"
