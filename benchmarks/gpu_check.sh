#!/usr/bin/env bash
# Every GPU check in one run, for a machine with CUDA that is lent for minutes, not hours.
#
#   bash benchmarks/gpu_check.sh DATA PUBLISHED OUT [WHEELS]
#
# DATA: a copy of ../shared/data without the models (ikemoto2023/crops, ddx11);
# PUBLISHED: a folder of published SqueezeNet_N.pth files (all 30, or the ones that fit);
# OUT: where logs and JSON go; WHEELS: optional folder of wheels missing on that machine
# (pydantic, pydantic-settings, ...), installed with --no-index into /tmp/site.
# Steps, each under its own time limit so one failure does not cost the others:
#   1. the machine: GPU, torch, what torchvision finds in its cache (ImageNet weights?)
#   2. the gpu-marked tests (bf16 ensemble vs CPU; the training loop on CUDA)
#   3. benchmarks/classify.py --device cuda (chromowatch vs the torchvision loop), then
#      benchmarks/predict_pieces.py (where predict_proba's time goes; CUDA graphs on and off)
#   4. benchmarks/train.py with the default settings (goal: < 3 min on a GPU)
#   5. benchmarks/tta.py on the model trained in 4 (flips and rotations at test time)
#   6. training variants for the accuracy target, side by side, in the time left
# DEADLINE (seconds, default 500) bounds the whole script.
set -u
DATA=$(realpath "$1"); PUBLISHED=$(realpath "$2"); OUT=$(realpath "$3"); WHEELS=${4:-}
DEADLINE=${DEADLINE:-500}
START=$(date +%s)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 CHROMOWATCH_REAL_DATA="$DATA"
mkdir -p "$OUT"
left() { echo $((DEADLINE - ($(date +%s) - START))); }
step() { echo; echo "=== $1 (t=$(( $(date +%s) - START )) s, $(left) s left)"; }

if [ -n "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step "1 machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'EOF'
import os, torch, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.version.cuda, torch.cuda.get_device_name(0), os.cpu_count(), "CPUs")
hub = torch.hub.get_dir()
ck = os.path.join(hub, "checkpoints")
print("torch hub:", hub, sorted(os.listdir(ck)) if os.path.isdir(ck) else "no checkpoints")
EOF

step "2 gpu tests"
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/classify/test_ensemble.py \
    tests/training/test_training.py 2>&1 | tail -15

step "3 classify throughput"
# (the torchvision loop resizes every crop once per model with PIL: keep the counts modest)
timeout 150 "$PY" benchmarks/classify.py --device cuda --crops-ikemoto 512 \
    --crops-paper 256 --rounds 2 2>&1 | tee "$OUT/classify.txt" | grep -v '^\s*$'

timeout 90 "$PY" benchmarks/predict_pieces.py --device cuda --spreads 30 2>&1 \
    | tee "$OUT/predict_pieces.txt" | grep -v '^\s*$'

step "4 train, default settings"
KEEP=$(mktemp -d)
timeout $(( $(left) - 20 )) "$PY" benchmarks/train.py --published "$PUBLISHED" \
    --keep "$KEEP" --out "$OUT/train-default.json" >"$OUT/train-default.log" 2>&1
echo "rc $?"; grep -E "epoch|train wall|trained ens|published ik|note:|Error|error" \
    "$OUT/train-default.log" | tail -25

step "5 test-time augmentation"
timeout 90 "$PY" benchmarks/tta.py "$KEEP" --device cuda 2>&1 | tee "$OUT/tta.txt" | tail -8

step "6 variants (parallel)"
if [ "$(left)" -gt 150 ]; then
    run_variant() {  # NAME, then VAR=VALUE settings
        local name=$1; shift
        env "$@" CHROMOWATCH_TRAINING__THREADS=4 timeout $(( $(left) - 10 )) \
            "$PY" benchmarks/train.py --published "$PUBLISHED" \
            --out "$OUT/train-$name.json" >"$OUT/train-$name.log" 2>&1
        echo "variant $name rc $?"
    }
    run_variant all-layers 'CHROMOWATCH_TRAINING__UNFREEZE={"squeezenet1_1":["features","classifier"]}' \
        CHROMOWATCH_TRAINING__LR=1e-4 &
    run_variant longer CHROMOWATCH_TRAINING__MAX_EPOCHS=40 CHROMOWATCH_TRAINING__PATIENCE=8 &
    run_variant eight 'CHROMOWATCH_TRAINING__MEMBERS=["squeezenet1_1","squeezenet1_1","squeezenet1_1","squeezenet1_1","squeezenet1_1","squeezenet1_1","squeezenet1_1","squeezenet1_1"]' &
    wait
    for f in "$OUT"/train-*.log; do
        echo "--- $f"; grep -E "train wall|trained ens|published ik" "$f"
    done
else
    echo "skipped: too little time left"
fi
step "done"
