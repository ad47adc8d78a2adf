#!/usr/bin/env bash
# Transfer at CPU scale (benchmarks/README.md, "Starting from pretrained weights"): supervised
# pretraining on CIFAR-10 classes 0-4 (all 25,000 labels), then classes 5-9 with 4 labels per
# class: FixMatch from the pretrained weights, supervised-only from them, FixMatch from scratch,
# at equal wall-time budgets, seeds 1 and 2. The budgets are step counts from measured step
# times (reproducible on a shared machine, unlike `--time`, whose step count follows the load).
#
# Usage: bash benchmarks/transfer.sh MODEL OUT   (MODEL: cnn or resnet10t; run from the
# repository root in the environment that has timm for resnet10t). Reads the CIFAR-10 JPEG zip
# from ../shared/datasets (or $CIFAR_ZIP); writes the class folders, weights and runs under OUT.
set -euo pipefail
model=$1
out=$2
zip=${CIFAR_ZIP:-../shared/datasets/cifar10-jpeg/cifar10_jpeg_q75.zip}
export OMP_NUM_THREADS=1  # one thread: far faster than two on a shared, busy 2-core machine
mkdir -p "$out/$model"

# Step counts: a budget of 60 s of steps at the step times measured on this machine while it
# was idle (1 thread, batch 16, 32x32): cnn width 32: supervised 0.055 s, FixMatch (mu 3) 0.53 s;
# resnet10t: supervised 0.105 s, FixMatch 0.44 s. SUP_STEPS / FIX_STEPS override them.
case $model in
    cnn) spec=(model.name=cnn model.width=32 model.bn_momentum=0.01)
        pretrain_steps=800 sup_steps=${SUP_STEPS:-1090} fix_steps=${FIX_STEPS:-114} ;;
    resnet10t) spec=(model.name=timm:resnet10t)
        pretrain_steps=250 sup_steps=${SUP_STEPS:-570} fix_steps=${FIX_STEPS:-135} ;;
    *) echo "MODEL must be cnn or resnet10t" >&2; exit 2 ;;
esac

# Class folders (layout B) of classes 0-4 and 5-9, extracted from the zip.
for part in 0to4:airplane,automobile,bird,cat,deer 5to9:dog,frog,horse,ship,truck; do
    folder=$out/c10-${part%%:*}
    if [ ! -d "$folder/train" ]; then
        IFS=, read -ra classes <<< "${part#*:}"
        for c in "${classes[@]}"; do unzip -q -o "$zip" "train/$c/*" "test/$c/*" -d "$folder"; done
    fi
done

common=(data.image_size=32 train.ema_warmup=true train.precision=fp32 train.tensorboard=false
    train.progress=false)
train() { python -m semisup train --dataset folder --no-report "$@"; }

# 1. Supervised pretraining on classes 0-4, every training image labeled.
pre=$out/$model/pretrain
[ -f "$pre/summary.json" ] || train --data-dir "$out/c10-0to4" --algorithm supervised \
    --num-labels 25000 --steps $pretrain_steps --seed 0 --out "$pre" \
    --set "${spec[@]}" "${common[@]}" train.batch_size=32 train.eval_every=$pretrain_steps
# 2. Its EMA backbone as a plain weights file (the classifier left out: the classes change).
weights=$out/$model/backbone.pth
python - "$pre" "$weights" <<'EOF'
import sys
import torch
import semisup
model = semisup.load(sys.argv[1], "cpu").model
net = getattr(model, "net", model)  # a timm model's own state dict, as timm would save it
head = {f"{name}." for name, module in net.named_modules() if module is model.head}
torch.save({k: v for k, v in net.state_dict().items() if not k.startswith(tuple(head))}, sys.argv[2])
EOF

# 3. Classes 5-9, 4 labels per class, equal wall-time budgets.
for seed in 1 2; do
    ssl=(--data-dir "$out/c10-5to9" --num-labels 20 --seed "$seed")
    run() { [ -f "$out/$model/$1/summary.json" ] || train "${ssl[@]}" --out "$out/$model/$1" "${@:2}"; }
    run "fixmatch_pretrained_seed$seed" --algorithm fixmatch --steps $fix_steps --set "${spec[@]}" \
        "${common[@]}" train.batch_size=16 algorithm.mu=3 train.eval_every=$fix_steps \
        model.pretrained="$weights"
    run "supervised_pretrained_seed$seed" --algorithm supervised --steps $sup_steps --set \
        "${spec[@]}" "${common[@]}" train.batch_size=16 train.eval_every=$sup_steps \
        model.pretrained="$weights"
    run "fixmatch_scratch_seed$seed" --algorithm fixmatch --steps $fix_steps --set "${spec[@]}" \
        "${common[@]}" train.batch_size=16 algorithm.mu=3 train.eval_every=$fix_steps
done
for summary in "$out/$model"/*/summary.json; do
    python -c "import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-2], s['steps'], f\"{100*s['test_accuracy']:.1f}\", s['wall_seconds'])" "$summary"
done
