"""The vocabulary that tests, the demo and pre-training train is the same in every process."""

from __future__ import annotations

import json
import subprocess
import sys

TRAIN = """
import json
from notestream.models.build import clinical_corpus, train_wordpiece
print(json.dumps(train_wordpiece(clinical_corpus(100, seed=0), vocab_size=400)))
"""


def test_the_same_texts_give_the_same_vocabulary_in_every_process() -> None:
    """The Hugging Face trainer alone gave a different vocabulary in each of 4 processes here (its
    hash-map order breaks ties between merges), and so a different model in each test run."""
    runs = [
        json.loads(
            subprocess.run([sys.executable, "-c", TRAIN], capture_output=True, check=True, text=True).stdout
        )
        for _ in range(3)
    ]
    assert len(runs[0]) == 400
    assert runs[1] == runs[0]
    assert runs[2] == runs[0]
