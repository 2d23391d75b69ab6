"""One store holds one model's probabilities: a worker serving another model refuses to start."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from notestream.core.settings import Settings
from notestream.models.fingerprint import model_fingerprint
from notestream.models.spec import ModelSpec
from notestream.stream.errors import StoreModelMismatch
from notestream.stream.fate import EXIT_CONFIG
from notestream.stream.runtime import Runtime
from notestream.stream.store import MemoryRiskStore, RedisRiskStore, open_store


def test_fingerprint_follows_the_weights_not_the_folder_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "current"))
    a, b = model_fingerprint(tiny_model_dir), model_fingerprint(copy)
    assert a.split("@")[1] == b.split("@")[1]
    assert b.startswith("current@")
    ModelSpec.read(copy).model_copy(update={"threshold": 0.42, "c": 3.0}).write(copy)
    assert model_fingerprint(copy) == b, "threshold and c change how scores are read, not the probabilities"
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_fingerprint(copy).split("@")[1] != a.split("@")[1]


async def test_a_worker_refuses_a_store_of_another_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(broker="kafka://k:9092", model_dir=tiny_model_dir, devices=["cpu"])
    store = MemoryRiskStore()
    await store.claim("readmission-v0@0123456789abcdef")
    runtime = Runtime(settings, store=store)
    try:
        with pytest.raises(StoreModelMismatch, match="readmission-v0@0123456789abcdef") as info:
            await runtime.ready()
        assert "NOTESTREAM_STORE_NAMESPACE" in str(info.value)
    finally:
        await runtime.close()
    # the same model under another folder name binds to the same store
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "current"))
    fresh = MemoryRiskStore()
    await fresh.claim(model_fingerprint(tiny_model_dir))
    runtime = Runtime(settings.model_copy(update={"model_dir": copy}), store=fresh)
    try:
        assert await runtime.ready() is runtime.pipeline
    finally:
        await runtime.close()


async def test_namespaces_keep_two_models_apart_in_one_redis(redis_url: str) -> None:
    old = open_store(Settings(store=redis_url, store_namespace="v1"))
    new = open_store(Settings(store=redis_url, store_namespace="v2"))
    assert isinstance(old, RedisRiskStore)
    assert isinstance(new, RedisRiskStore)
    try:
        assert await old.claim("v1@aaaa") == "v1@aaaa"
        assert await new.claim("v2@bbbb") == "v2@bbbb"
        await old.apply_note(
            hadm_id=5, subject_id=1, note_id="n", revision=0, is_error=False, chunk_probs=[0.9]
        )
        await new.apply_note(
            hadm_id=5, subject_id=1, note_id="n", revision=0, is_error=False, chunk_probs=[0.1]
        )
        old_state, new_state = await old.state(5), await new.state(5)
        assert old_state is not None
        assert new_state is not None
        assert (old_state.p_max, new_state.p_max) == (0.9, 0.1)
    finally:
        await old.close()
        await new.close()


def test_a_store_of_another_model_ends_the_worker_with_a_config_status() -> None:
    script = (
        "import asyncio\n"
        "from notestream.stream.errors import StoreModelMismatch\n"
        "from notestream.stream.guard import until_done\n"
        "async def step():\n"
        "    raise StoreModelMismatch('The store holds the chunk probabilities of model v1@aaaa')\n"
        "asyncio.run(until_done('starting the worker', step))\n"
        "print('returned')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG
    assert "returned" not in done.stdout
    assert "model v1@aaaa" in done.stderr
