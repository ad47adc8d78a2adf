#!/usr/bin/env bash
# Supervised-only training first, then FixMatch and FlexMatch from its weights (`--init-from`)
# (benchmarks/README.md, "A harder shapes folder, and supervised training first", compares them
# with `practical.py`'s runs of the whole budget). Each phase gets half the budget; both use the
# small CNN (width 16), the model the practical defaults choose for the semi-supervised runs.
# `train.supervised_first=0`: each half is one plain run (the practical default now puts such a
# phase inside one run: docs/practical.md, "Supervised training first").
# Seeds 1 and 2 run side by side on one thread each.
#
# Usage: bash benchmarks/supervised_first.sh WORK NAME HALF   (from the repository root), e.g.
#   bash benchmarks/supervised_first.sh /tmp/practical shapes-posed 2m
#   bash benchmarks/supervised_first.sh /tmp/practical cifar10-25x10 5m
# WORK holds the folders `benchmarks/practical.py` makes (NAME-seedS); the runs go to
# WORK/supervised-first/NAME-HALF. Prints one line per run: name, seed, test accuracy %, steps.
set -euo pipefail
work=$1 name=$2 half=$3
export OMP_NUM_THREADS=1

run() {  # run OUT SEED ARGS...: one `semisup train` on NAME-seedSEED, skipped when done
    local out=$1 seed=$2
    shift 2
    if [ ! -f "$out/summary.json" ]; then
        mkdir -p "$(dirname "$out")"
        python -m semisup train --dataset folder --data-dir "$work/$name-seed$seed" \
            --seed "$seed" --time "$half" --out "$out" --no-report "$@" \
            --set train.progress=false model.name=cnn model.width=16 \
            train.supervised_first=0 >"$out.log" 2>&1
    fi
    python -c "import json, sys; s = json.load(open(sys.argv[1]))
print(sys.argv[2], round(100 * s['test_accuracy'], 2), s['steps'])" \
        "$out/summary.json" "$(basename "$out") seed$seed"
}

both_phases() {  # both_phases SEED
    local root=$work/supervised-first/$name-$half/seed$1
    run "$root/supervised" "$1" --algorithm supervised
    for algorithm in fixmatch flexmatch; do
        run "$root/$algorithm-after-supervised" "$1" --algorithm "$algorithm" \
            --init-from "$root/supervised"
    done
}

both_phases 1 &
both_phases 2 &
wait
