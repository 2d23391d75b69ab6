PY ?= python3
SRC = notestream models stream training tests benchmarks scripts

.PHONY: setup format lint typecheck test check bench demo

setup:
	bash scripts/setup.sh

format:
	$(PY) -m ruff format $(SRC)
	$(PY) -m ruff check --fix $(SRC)

lint:
	$(PY) -m ruff check $(SRC)
	$(PY) -m ruff format --check $(SRC)
	lint-imports

typecheck:
	$(PY) -m mypy

test:
	bash scripts/test.sh

check: lint typecheck test

bench:
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/prepare.py

demo:
	notestream demo --out demo-out
