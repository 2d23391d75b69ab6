"""`notestream dlq list` and `notestream dlq redrive` against the embedded broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from typer.testing import CliRunner

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, NOTES_DLQ
from notestream.stream.cli_dlq import register_dlq
from notestream.stream.errors import EventError
from notestream.stream.events import DeadLetter, NoteEvent, admission_key
from tests.fixtures.kafka import produce, read_topic

MARKER = "SECRET-NOTE-TEXT-4471"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """notestream (test)."""

    register_dlq(app)
    return app


def letters(settings: Settings) -> tuple[list[DeadLetter], bytes]:
    """Dead letters of three reasons; one is a held note whose original is on the notes topic."""
    good = NoteEvent(note_id="n1", subject_id=1, hadm_id="V-9", text=f"{MARKER} " * 20)
    produce(settings, NOTES, [(admission_key("V-9"), good.to_bytes())])
    [on_topic] = read_topic(settings, NOTES, until=lambda m: len(m) >= 1)
    bad_json = f'{{"note_id": "x", "text": "{MARKER}",'.encode()
    early = datetime(2026, 1, 1, tzinfo=UTC)
    out = [
        DeadLetter.from_error(
            bad_json,
            EventError("invalid_json", "the message is not JSON"),
            topic=settings.topic(NOTES),
            key=b"7",
        ).model_copy(update={"at": early}),
        DeadLetter.from_error(
            b'{"kind": "admit"}',
            EventError("schema", "field 'hadm_id'"),
            topic=settings.topic(ADMISSIONS),
            key=b"8",
        ),
        DeadLetter(
            reason="admission_unknown",
            detail="no admit event",
            topic=settings.topic(NOTES),
            partition=on_topic.partition(),
            offset=on_topic.offset(),
            key=admission_key("V-9"),
            original=b"",
        ),
    ]
    produce(
        settings, NOTES_DLQ, [(letter.key, letter.to_bytes()) for letter in out] + [(None, b"not a letter")]
    )
    return out, good.to_bytes()


def test_list_shows_reasons_times_and_keys_never_text(kafka_settings: Settings) -> None:
    letters(kafka_settings)
    base = ["dlq", "list", "--broker", kafka_settings.broker, "--topic-prefix", kafka_settings.topic_prefix]
    table = CliRunner().invoke(_app(), base)
    assert table.exit_code == 0, table.output
    assert MARKER not in table.output
    for word in ("invalid_json", "schema", "admission_unknown", "V-9", "1 messages on the topic are not"):
        assert word in table.output
    rows = [json.loads(line) for line in CliRunner().invoke(_app(), [*base, "--json"]).stdout.splitlines()]
    assert [r["reason"] for r in rows] == ["invalid_json", "schema", "admission_unknown"]  # by time
    assert all(MARKER not in json.dumps(r) for r in rows)
    since = CliRunner().invoke(_app(), [*base, "--json", "--since", "2026-06-01"])
    assert [json.loads(line)["reason"] for line in since.stdout.splitlines()] == [
        "schema",
        "admission_unknown",
    ]
    bad = CliRunner().invoke(_app(), [*base, "--reason", "nonsense"])
    assert bad.exit_code != 0


def test_redrive_puts_chosen_originals_back_and_says_so(kafka_settings: Settings) -> None:
    made, note = letters(kafka_settings)
    base = [
        "dlq",
        "redrive",
        "--broker",
        kafka_settings.broker,
        "--topic-prefix",
        kafka_settings.topic_prefix,
    ]
    dry = CliRunner().invoke(_app(), [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would put back 3 messages" in dry.output
    assert len(read_topic(kafka_settings, NOTES, until=lambda m: False, timeout_s=1.0)) == 1  # nothing sent
    held = CliRunner().invoke(_app(), [*base, "--reason", "admission_unknown"])
    assert held.exit_code == 0, held.output
    assert "put back 1 message" in held.output
    notes = read_topic(kafka_settings, NOTES, until=lambda m: len(m) >= 2)
    assert [(m.key(), m.value()) for m in notes[1:]] == [(admission_key("V-9"), note)]  # re-read by offset
    rest = CliRunner().invoke(_app(), [*base, "--since", "2026-06-01", "--reason", "schema"])
    assert "put back 1 message" in rest.output
    [admission] = read_topic(kafka_settings, ADMISSIONS, until=lambda m: len(m) >= 1)
    assert (admission.key(), admission.value()) == (b"8", made[1].original)
