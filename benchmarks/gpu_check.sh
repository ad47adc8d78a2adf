#!/usr/bin/env bash
# The GPU check: one prepared script, at most 8 minutes on one CUDA GPU. From the repository root:
#
#   python benchmarks/practical.py --zip ../shared/datasets/cifar10-jpeg/cifar10_jpeg_q75.zip \
#       --work gpu-data --labels 4 --seeds 1 --build-only   # the folder to carry (about 45 MB)
#   bash benchmarks/gpu_check.sh gpu-data/cifar10-4x10-seed1
#
# It runs, each under its own time limit, writing logs and a summary to $OUT (default gpu-check/):
#   1. the CUDA tests (every test that skips without a GPU);
#   2. model speed: fp32 / bf16 / channels_last training throughput (benchmarks/model_speed.py);
#   3. a FixMatch CIFAR-10 step time with the papers' settings (WRN-28-2, 64 + 448 images);
#   4. the practitioner table's FixMatch cell (practical defaults, the CIFAR-10 folder), with a
#      4-minute budget instead of 10 so the whole script fits its 8 minutes.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 runs the same steps on a CPU in a minute (a smoke test).
set -uo pipefail
cd "$(dirname "$0")/.."
FOLDER=${1:?give the CIFAR-10 folder made by benchmarks/practical.py}
OUT=${OUT:-gpu-check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
STEPS=$([ "$QUICK" = 1 ] && echo 3 || echo 60)
BUDGET=$([ "$QUICK" = 1 ] && echo 20s || echo 4m)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "   exit $? ($(tail -n 1 "$OUT/$name.log"))"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

step cuda-tests 120 $PY -m pytest -q -p no:cacheprovider -rs -m "not slow" \
    tests/augment/test_ctaugment.py tests/augment/test_ops_parity.py tests/engine tests/models
step model-speed 90 $PY benchmarks/model_speed.py --device "$DEVICE" --reps "$([ "$QUICK" = 1 ] && echo 1 || echo 3)"
step fixmatch-steps 120 $PY -m semisup train --dataset folder --data-dir "$FOLDER" \
    --algorithm fixmatch --steps "$STEPS" --device "$DEVICE" --out "$OUT/fixmatch-steps" \
    --no-report --set train.defaults=paper model.name=wrn28_2 train.progress=false \
    "train.eval_every=$STEPS"
step practitioner-fixmatch 300 $PY -m semisup train --dataset folder --data-dir "$FOLDER" \
    --algorithm fixmatch --time "$BUDGET" --device "$DEVICE" --out "$OUT/practitioner" \
    --no-report --set train.progress=false

$PY - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("fixmatch-steps", "practitioner"):
    path = out / name / "summary.json"
    if not path.exists():
        print(f"- {name}: no summary (see {name}.log)")
        continue
    s = json.loads(path.read_text())
    print(f"- {name}: {s['steps']} steps, {s['steps_per_second']} steps/s, precision "
          f"{s['precision']}, model {s['model']['name']}, test accuracy {s['test_accuracy']:.4f}, "
          f"peak memory {s['peak_memory_gb']} GB, {s['wall_seconds']} s")
EOF
