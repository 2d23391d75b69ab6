#!/usr/bin/env bash
# The GPU path in one call, on a machine with an NVIDIA GPU (see docs/operations.md, "Checking a GPU node").
#
#   bash benchmarks/gpu.sh                              # on the GPU machine, from the repository root
#   NOTESTREAM_GPU_DRY_RUN=1 bash benchmarks/gpu.sh     # anywhere: the same steps on CPU, tiny sizes
#
# 1. torch with CUDA: kept when the machine's torch already sees a GPU, else the CUDA build of torch 2.13
#    is installed from the PyTorch index (NOTESTREAM_TORCH_INDEX, default cu130); the project's other
#    dependencies from wheels in .whl/ when that folder exists (machines without a network), else
#    from the package index.
# 2. The GPU tests (pytest -m gpu: classifier and engine on cuda:0 in bf16, one replica per device,
#    overload and failure isolation, bf16 fine-tuning).
# 3. Figures, one JSON line each: the bf16 matrix-multiply ceiling (TFLOP/s), the engine on BERT-base at
#    512 tokens in bf16 (chunks/s, batched_vs_single) and its share of that ceiling (97 GFLOP a chunk),
#    the pipeline's own capacity with an instant scorer, and the BERT-base teacher against its
#    distilled small and tiny students (chunks/s on the device).
# Every step prints {"step": ..., "rc": ...}; the script carries on after a failed step and exits
# with the number of failed steps. Results also go to $OUT (the device tool's folder) when it is set.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
PY=${PYTHON:-python3}
DRY=${NOTESTREAM_GPU_DRY_RUN:-0}
INDEX=${NOTESTREAM_TORCH_INDEX:-https://download.pytorch.org/whl/cu130}
if [ "$DRY" = 1 ]; then RESULTS=${OUT:-$(mktemp -d)}; else RESULTS=${OUT:-benchmarks/results}; fi
mkdir -p "$RESULTS"
failed=0
step() {  # step NAME COMMAND...: run, print its JSON status line
    local name=$1
    shift
    "$@"
    local rc=$?
    echo "{\"step\": \"$name\", \"rc\": $rc}"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

if [ "$DRY" = 1 ]; then
    export NOTESTREAM_TEST_DEVICE=cpu
    DEVICE=cpu CONFIG=tiny CHUNKS=32 BATCH=8 NOTES=64 SIZE=512
    DISTILL_PATIENTS=80 DISTILL_STEPS=20 SHAPE_CHUNKS=1
else
    DEVICE=cuda:0 CONFIG=bert-base CHUNKS=4096 BATCH=128 NOTES=4000 SIZE=8192
    DISTILL_PATIENTS=400 DISTILL_STEPS=400 SHAPE_CHUNKS=256
    if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        step install_torch $PY -m pip install -q "torch==2.13.*" --index-url "$INDEX"
    fi
    if [ -d .whl ]; then
        step install_wheels $PY -m pip install -q --no-index --no-deps --find-links .whl .whl/*.whl
    else
        step install_project $PY -m pip install -q -e .
    fi
fi

$PY - <<'EOF'
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                  "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}))
EOF

step gpu_tests $PY -m pytest tests/gpu -m gpu -q -p no:cacheprovider -o addopts="" --junitxml "$RESULTS/gpu_tests.xml"

SIZE=$SIZE DEVICE=$DEVICE $PY - <<'EOF' | tee "$RESULTS/matmul_ceiling.json"
import json, os, time, torch
n, device = int(os.environ["SIZE"]), os.environ["DEVICE"]
dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
for _ in range(3):
    a @ b
sync()
reps = 50 if device.startswith("cuda") else 3
start = time.perf_counter()
for _ in range(reps):
    a @ b
sync()
tflops = 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
print(json.dumps({"benchmark": "matmul_ceiling", "device": device, "dtype": str(dtype), "n": n,
                  "tflop_per_s": round(tflops, 2)}))
EOF

step engine $PY benchmarks/engine.py --configs "$CONFIG" --chunks "$CHUNKS" --batch-size "$BATCH" \
    --rounds 2 --device "$DEVICE" --threads 4 --out "$RESULTS"

if [ -f "$RESULTS/engine.json" ] && [ -f "$RESULTS/matmul_ceiling.json" ]; then
    $PY - "$RESULTS" <<'EOF'
import json, sys
from pathlib import Path
results = Path(sys.argv[1])
engine = json.loads((results / "engine.json").read_text())["results"][0]
ceiling = json.loads((results / "matmul_ceiling.json").read_text().strip().splitlines()[-1])
rate = engine.get("engine_chunks_per_s")
share = rate * 97e9 / (ceiling["tflop_per_s"] * 1e12) if rate and engine["config"] == "bert-base" else None
print(json.dumps({"benchmark": "engine_vs_ceiling", "config": engine["config"], "chunks_per_s": rate,
                  "batched_vs_single": engine.get("batched_vs_single"),
                  "share_of_bf16_ceiling": round(share, 3) if share is not None else None}))
EOF
fi

step pipeline_capacity $PY benchmarks/pipeline.py --capacity-only --capacity-notes "$NOTES" --bert-chunks 2 \
    --out "$RESULTS"

# the teacher and its distilled students at the BERT-base shapes, timed on this device (the README's
# model-size table has a GPU column for it); the trained family stays small, as on CPU
step distill $PY benchmarks/distill.py --device "$DEVICE" --patients "$DISTILL_PATIENTS" --steps "$DISTILL_STEPS" \
    --shape-chunks "$SHAPE_CHUNKS" --shape-batch "$BATCH" --bootstrap 200 --out "$RESULTS"
exit "$failed"
