#!/usr/bin/env bash
# Settings of MEMIT and AlphaEdit chosen on cases the README table never uses: each variant below
# edits the same CounterFact-*train* cases (scripts/usable_cases.py), side by side on one GPU,
# then scripts/pick_edit_settings.py applies a fixed rule to the summaries and writes the chosen
# flags to OUT/pick.env (MEMIT_ARGS=..., AE_ARGS=...) for scripts/edit_table.sh.
#   scripts/edit_sweep.sh CASES CORPUS OUT [DEVICE] [LIMIT_S]
set -uo pipefail
CASES=$1 CORPUS=$2 OUT=$3 DEVICE=${4:-cuda} LIMIT=${5:-520}
N=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$CASES")
WB=(python3 -m workbench.cli)
LAYERS=(--layer 1 --layer 2 --layer 3 --layer 4 --layer 5)
COMMON=(--cases "$CASES" --device "$DEVICE" --dtype float32 --stats-corpus "$CORPUS"
        --stats-tokens "${STATS_TOKENS:-50000}" --gen-tokens 0 --no-progress "${LAYERS[@]}")
# name | flags   (MEMIT: one batch of all cases; AlphaEdit: 10 sequential batches)
VARIANTS=(   # at most four side by side on one H200 (docs/GPU.md, session 14)
  "memit-l15000-s0.05|--method memit --batch $N --lam 15000 --stop-nll 0.05"
  "memit-l5000-s0.05|--method memit --batch $N --lam 5000 --stop-nll 0.05"
  "alphaedit-e0.1|--method alphaedit --batch $((N / 10)) --null-energy 0.1"
  "alphaedit-e0.1-l15000|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 15000"
)
mkdir -p "$OUT"
# warm the caches once (dequantized model, covariance of the layers) before the processes share them
"${WB[@]}" edit "${COMMON[@]}" --n 1 --method memit --no-capability --out "$OUT/warm" \
    > "$OUT/warm.log" 2>&1 || { tail -20 "$OUT/warm.log"; exit 1; }
pids=()
for v in "${VARIANTS[@]}"; do
  name=${v%%|*} flags=${v#*|}
  # shellcheck disable=SC2086
  timeout "$LIMIT" "${WB[@]}" edit "${COMMON[@]}" --n "$N" $flags --out "$OUT/$name" \
      > "$OUT/$name.log" 2>&1 & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
python3 scripts/pick_edit_settings.py "$OUT" "${VARIANTS[@]}"
