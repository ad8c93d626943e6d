#!/usr/bin/env bash
# Settings of MEMIT and AlphaEdit chosen on cases the README table never uses: each variant below
# edits the same CounterFact-*train* cases (scripts/usable_cases.py), side by side on one GPU,
# then scripts/pick_edit_settings.py applies a fixed rule to the summaries and writes the chosen
# flags to OUT/pick.env (MEMIT_ARGS=..., AE_ARGS=...) for scripts/edit_table.sh.
#   [SWEEP_WORK=DIR] [WARM_STATS="N ..."] scripts/edit_sweep.sh CASES CORPUS OUT [DEVICE] [LIMIT_S]
set -uo pipefail
CASES=$1 CORPUS=$2 OUT=$3 DEVICE=${4:-cuda} LIMIT=${5:-520}
WORK=${SWEEP_WORK:-$OUT}   # SWEEP_WORK=/tmp/sweep: per-case rows and HTML stay there
GEN=0
# shellcheck source=scripts/edit_common.sh
. "$(dirname "$0")/edit_common.sh"
# name | flags   (MEMIT: one batch of all cases; AlphaEdit: 10 sequential batches)
VARIANTS=(   # at most four side by side on one H200 (docs/GPU.md, session 14)
  # session 23 (layers 1-5, CASES .carry/p3/cft1k.json, STATS_TOKENS=200000): z*'s clamp on
  # |delta| / |h| at MEMIT's published GPT-J setting (0.75) against ROME's 4.0 (our default), with
  # session 18's recipe (stop NLL 0.05, 2 repair rounds). Session 18's variants were
  # memit-l15000-s0.05-r2, memit-l15000-s0.05-t200k, memit-l15000-s0.05-r2-t200k,
  # memit-l10000-s0.05-r2-t200k; session 17's alphaedit-e0.1-l3000-r1, alphaedit-e0.1-l3000-r2,
  # alphaedit-e0.1-l10000-r2, memit-l15000-s0.05-r2.
  "memit-l15000-s0.05-r2-c4|--method memit --batch $N --lam 15000 --stop-nll 0.05 --repair-rounds 2"
  "memit-l15000-s0.05-r2-c0.75|--method memit --batch $N --lam 15000 --stop-nll 0.05 --repair-rounds 2 --clamp 0.75"
  "memit-l7500-s0.05-r2-c0.75|--method memit --batch $N --lam 7500 --stop-nll 0.05 --repair-rounds 2 --clamp 0.75"
)
pids=()
for v in "${VARIANTS[@]}"; do
  name=${v%%|*} flags=${v#*|}
  # shellcheck disable=SC2086
  timeout "$LIMIT" "${WB[@]}" edit "${COMMON[@]}" "${LAYERS[@]}" --n "$N" $flags --out "$WORK/$name" \
      > "$OUT/$name.log" 2>&1 & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
if [ "$WORK" != "$OUT" ]; then   # only the summaries come back from the device (it returns few files)
  for v in "${VARIANTS[@]}"; do
    name=${v%%|*}; [ -f "$WORK/$name/summary.json" ] && mkdir -p "$OUT/$name" \
      && cp "$WORK/$name/summary.json" "$OUT/$name/"
  done
fi
python3 scripts/pick_edit_settings.py "$OUT" "${VARIANTS[@]}"
