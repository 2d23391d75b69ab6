"""Project-wide fixtures, one file per concern under tests/fixtures/.

- tests/fixtures/models.py: a tiny BERT model folder with a WordPiece vocabulary built in the test run.
- tests/fixtures/redis.py: a real redis-server started on a free port (never a server we did not start).
- tests/fixtures/redis_ha.py: a Redis Cluster and a Sentinel-managed primary with a replica (same binaries).
- tests/fixtures/kafka.py: librdkafka's mock cluster (the Kafka wire protocol, in process).
"""

import os

from hypothesis import settings

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# property tests assert what holds, never how fast: no per-example deadline on a busy CI machine
settings.register_profile("notestream", deadline=None, print_blob=True)
settings.load_profile("notestream")

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.redis",
    "tests.fixtures.redis_ha",
    "tests.fixtures.kafka",
]
