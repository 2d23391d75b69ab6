"""The topics notestream uses: the one list of their names (before ``settings.topic_prefix``).

What travels on each, its key and its schema: docs/events.md.

>>> TOPICS
('notes', 'admissions', 'risk-updates', 'risk-alerts', 'notes-dlq', 'store-changelog')
"""

from __future__ import annotations

from typing import Final, Literal

NOTES: Final = "notes"
"""Note events: the only topic (with its dead letters) that carries note text."""
ADMISSIONS: Final = "admissions"
"""Admit and discharge events."""
RISK_UPDATES: Final = "risk-updates"
"""One risk update per change of an admission's aggregate; no note text."""
RISK_ALERTS: Final = "risk-alerts"
"""Raised and cleared alerts; no note text."""
NOTES_DLQ: Final = "notes-dlq"
"""Dead letters of the notes and admissions topics, with their reason (the original bytes included)."""

STORE_CHANGELOG: Final = "store-changelog"
"""Compacted: every change of the risk store (probabilities and content hashes, never text), keyed by
admission and note, to rebuild a store that lost its data (notestream.stream.store.heal)."""

TopicKind = Literal["notes", "admissions", "risk-updates", "risk-alerts", "notes-dlq", "store-changelog"]
TOPICS: tuple[TopicKind, ...] = (NOTES, ADMISSIONS, RISK_UPDATES, RISK_ALERTS, NOTES_DLQ, STORE_CHANGELOG)
"""Every topic notestream uses, before the prefix."""
