#!/usr/bin/env bash
# One-shot GPU check (issue 4: generator throughput on CUDA), for a session lent the device
# machine (one H200, Python 3.12 with torch, lightning, torchvision, timm, pandas, pyarrow;
# no network). Prepare here, run there in one call, read the figures:
#
#   make gpu-wheels          # here: the packages the device lacks, as cp312 wheels in .whl/ (~41 MB)
#   device run: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 540
#
# It prints the GPU and library versions, then runs benchmarks/bench_generate.py on CUDA
# (bf16 + channels-last vs plain fp32 / batch-1; target >= 2x) and writes
# bench_generate_cuda.{json,txt} to $OUT (the JSON is rewritten after each generator kind, so
# a run cut short by the time limit keeps what it measured). Then benchmarks/learning_curves.py
# trains the `full` preset's generators (256 px, a 2048 px sample world) for CURVE_SECONDS
# each (default 60) and prints label fidelity / FD per evaluation (learning_curves.{txt,json}).
# With the default budgets the whole script stays under about 8 minutes.
set -uo pipefail
OUT=${OUT:-.gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 - <<'PY' | tee -a "$OUT/gpu.txt" || exit 1
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "lightning", "diffusers", "rasterio", "fpng", "segmentation_models_pytorch"):
    mod = importlib.import_module(name)
    print(name, getattr(mod, "__version__", "?"))
import torch
print("cuda available:", torch.cuda.is_available(), torch.version.cuda)
PY
timeout "${BENCH_SECONDS:-240}" python3 benchmarks/bench_generate.py --device "${DEVICE:-cuda}" --repeats "${REPEATS:-3}" \
    --json "$OUT/bench_generate_cuda.json" 2>&1 | tee "$OUT/bench_generate_cuda.txt"
echo "bench_generate exit status: ${PIPESTATUS[0]}"
timeout "$(( ${CURVE_SECONDS:-60} * 3 + 120 ))" python3 benchmarks/learning_curves.py --device "${DEVICE:-cuda}" \
    --preset full --seconds "${CURVE_SECONDS:-60}" --eval-every "${CURVE_EVERY:-200}" \
    --out /tmp/gs_learning_curves 2>&1 | tee "$OUT/learning_curves.txt"
echo "learning_curves exit status: ${PIPESTATUS[0]}"
# the curves, plots and last sample grids come back; checkpoints stay there
(cd /tmp/gs_learning_curves && find . -name 'curves.*' -o -name 'learning_curves.json' -o -path '*/samples/*' \
    | tar -cf - -T - | tar -xf - -C "$OUT") 2>/dev/null || true
