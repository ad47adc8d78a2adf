#!/usr/bin/env bash
# The labeled images' view side by side (benchmarks/README.md, "The labeled images' view"):
# `augment.labeled=weak` (the papers) against `augment.labeled=simclr` (practical runs), each
# pair run at the same time on one thread each, same seed, same split, same steps (or budget).
#
# Usage: bash benchmarks/labeled_view.sh WORK   (run from the repository root). WORK holds the
# folders `benchmarks/practical.py --build-only` makes (shapes-seedS, cifar10-4x10-seedS,
# cifar10-25x10-seedS) and gets the runs under WORK/labeled-view; MNIST comes from
# ../shared/datasets. Prints one line per run: name, seed, test accuracy % (EMA model), steps.
set -euo pipefail
work=$1
export OMP_NUM_THREADS=1
cnn32=(model.name=cnn model.width=32)
cnn16=(model.name=cnn model.width=16)

one() {  # one VIEW NAME SEED ARGS...: ARGS go to `semisup train`, then the global $extra sets
    local view=$1 name=$2 seed=$3
    shift 3
    local out=$work/labeled-view/$name-$view/seed$seed
    if [ ! -f "$out/summary.json" ]; then
        mkdir -p "$(dirname "$out")"
        python -m semisup train "$@" --seed "$seed" --out "$out" --no-report \
            --set train.progress=false "augment.labeled=$view" "${extra[@]}" >"$out.log" 2>&1
    fi
    python -c "import json, sys; s = json.load(open(sys.argv[1]))
print(sys.argv[2], round(100 * s['test_accuracy'], 2), s['steps'])" \
        "$out/summary.json" "$name-$view seed$seed"
}

pair() {  # both views of one cell, side by side
    one weak "$@" &
    one simclr "$@" &
    wait
}

for seed in 1 2; do
    folder=(--dataset folder --data-dir "$work/shapes-seed$seed")
    extra=()
    pair shapes-supervised "$seed" "${folder[@]}" --algorithm supervised --time 3m
    folder=(--dataset folder --data-dir "$work/cifar10-4x10-seed$seed")
    extra=("${cnn32[@]}")
    pair cifar4-supervised "$seed" "${folder[@]}" --algorithm supervised --steps 2000
    extra=("${cnn16[@]}")
    pair cifar4-flexmatch "$seed" "${folder[@]}" --algorithm flexmatch --steps 600
    folder=(--dataset folder --data-dir "$work/cifar10-25x10-seed$seed")
    extra=("${cnn32[@]}")
    pair cifar25-supervised "$seed" "${folder[@]}" --algorithm supervised --steps 2000
    mnist=(--dataset mnist --data-dir ../shared/datasets)
    pair mnist100-supervised "$seed" "${mnist[@]}" --num-labels 100 --algorithm supervised \
        --steps 2000
    pair mnist40-flexmatch "$seed" "${mnist[@]}" --num-labels 40 --algorithm flexmatch \
        --steps 400
done
