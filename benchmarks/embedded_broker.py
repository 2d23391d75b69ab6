"""What the embedded broker (tansu, in-memory) costs per byte it keeps. One JSON line.

Produces ``--mb`` MiB of note-sized messages (``--note-bytes`` each, keyed over 4 partitions, as fast
as an idempotent librdkafka producer sends them) into a fresh :class:`EmbeddedBroker`, then reads every
message back with a consumer and reports:

- ``kept``: messages read back / messages acknowledged (must be 1.0: nothing dropped);
- ``rss_mb_idle`` / ``rss_mb_full``: the broker's resident memory before and after;
- ``rss_per_stored_mb``: (full - idle) / MiB produced;
- ``mimic_iii_gb_estimate``: that ratio times MIMIC-III's NOTEEVENTS as events (``--mimic-gb``, about
  4 GB of JSON for 2.08 M notes), the memory a full replay into the embedded broker would take.

    python benchmarks/embedded_broker.py [--mb 200] [--note-bytes 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from notestream.core.settings import Settings  # noqa: E402
from notestream.stream.embedded import EmbeddedBroker, resident_mb  # noqa: E402
from notestream.stream.topics import create_topics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="MiB of messages to produce.")
    parser.add_argument("--note-bytes", type=int, default=2000, help="Bytes per message.")
    parser.add_argument("--mimic-gb", type=float, default=4.0, help="GB of MIMIC-III note events.")
    args = parser.parse_args()

    import confluent_kafka
    from rich.progress import Progress

    count = args.mb * 1024 * 1024 // args.note_bytes
    value = b"n" * args.note_bytes
    with EmbeddedBroker() as broker:
        settings = Settings(broker=broker.url, topic_prefix="bench.", partitions=4)
        asyncio.run(create_topics(settings, wait_s=30))
        topic = settings.topic("notes")
        pid = broker.pid
        assert pid is not None
        idle = resident_mb(pid) or 0.0
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": broker.address, "enable.idempotence": True, "linger.ms": 20, "log_level": 3}
        )
        started = time.monotonic()
        with Progress(transient=True) as progress:
            task = progress.add_task("produce", total=count)
            for i in range(count):
                while True:
                    try:
                        producer.produce(topic, value, key=str(i % 997).encode())
                        break
                    except BufferError:
                        producer.poll(0.05)
                if i % 1000 == 0:
                    producer.poll(0)
                    progress.update(task, completed=i)
            left = producer.flush(120)
        produce_s = time.monotonic() - started
        full = resident_mb(pid) or 0.0
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": broker.address,
                "group.id": "bench",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        consumer.subscribe([topic])
        read, deadline = 0, time.monotonic() + 600
        while read < count - left and time.monotonic() < deadline:
            read += sum(1 for m in consumer.consume(5000, timeout=1.0) if m.error() is None)
        consumer.close()
    per_mb = (full - idle) / args.mb
    print(
        json.dumps(
            {
                "benchmark": "embedded_broker",
                "messages": count,
                "note_bytes": args.note_bytes,
                "produced_mb": args.mb,
                "kept": round(read / max(1, count - left), 4),
                "undelivered": left,
                "produce_mb_per_s": round(args.mb / produce_s, 1),
                "rss_mb_idle": round(idle, 1),
                "rss_mb_full": round(full, 1),
                "rss_per_stored_mb": round(per_mb, 3),
                "mimic_iii_gb_estimate": round(per_mb * args.mimic_gb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
