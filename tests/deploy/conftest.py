"""Fixtures of the deploy tests live in tests/fixtures/deploy.py; imported here for this folder only."""

from tests.fixtures.deploy import redis_process

__all__ = ["redis_process"]
