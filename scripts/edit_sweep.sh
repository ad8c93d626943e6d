#!/usr/bin/env bash
# Settings of MEMIT and AlphaEdit chosen on cases the README table never uses: each variant below
# edits the same CounterFact-*train* cases (scripts/usable_cases.py), side by side on one GPU,
# then scripts/pick_edit_settings.py applies a fixed rule to the summaries and writes the chosen
# flags to OUT/pick.env (MEMIT_ARGS=..., AE_ARGS=...) for scripts/edit_table.sh.
#   scripts/edit_sweep.sh CASES CORPUS OUT [DEVICE] [LIMIT_S]
set -uo pipefail
CASES=$1 CORPUS=$2 OUT=$3 DEVICE=${4:-cuda} LIMIT=${5:-520}
GEN=0
# shellcheck source=scripts/edit_common.sh
. "$(dirname "$0")/edit_common.sh"
# name | flags   (MEMIT: one batch of all cases; AlphaEdit: 10 sequential batches)
VARIANTS=(   # at most four side by side on one H200 (docs/GPU.md, session 14)
  # session 15: AlphaEdit's lam P C term at 1,000 edits (session 14 swept MEMIT's lam / stop NLL
  # and AlphaEdit's null_energy 0.03 / 0.1 without the term: docs/GPU.md)
  "alphaedit-e0.1-l300|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 300"
  "alphaedit-e0.1-l1000|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 1000"
  "alphaedit-e0.1-l3000|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 3000"
  "alphaedit-e0.1-l1000-s0.05|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 1000 --stop-nll 0.05"
)
pids=()
for v in "${VARIANTS[@]}"; do
  name=${v%%|*} flags=${v#*|}
  # shellcheck disable=SC2086
  timeout "$LIMIT" "${WB[@]}" edit "${COMMON[@]}" "${LAYERS[@]}" --n "$N" $flags --out "$OUT/$name" \
      > "$OUT/$name.log" 2>&1 & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
python3 scripts/pick_edit_settings.py "$OUT" "${VARIANTS[@]}"
