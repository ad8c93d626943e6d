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
  # session 17, run with EDIT_LAYERS="1 2 3 4 5 6 7 8": repair rounds (--repair-rounds N: each batch's
  # requests that did not take re-edited on the edited model, up to N rounds) on session 16's
  # AlphaEdit row (lam 3,000: 94.5 / first batch 95 at +16.0% perplexity), on the stiffer lam 10,000
  # (87.1 at +6.1%) and on MEMIT lam 15,000 (91.8 at +5.4%). Session 16's variants were
  # memit-l15000-s0.05, memit-l5000-s0.05, alphaedit-e0.1-l3000, alphaedit-e0.1-l10000.
  "alphaedit-e0.1-l3000-r1|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 3000 --repair-rounds 1"
  "alphaedit-e0.1-l3000-r2|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 3000 --repair-rounds 2"
  "alphaedit-e0.1-l10000-r2|--method alphaedit --batch $((N / 10)) --null-energy 0.1 --lam 10000 --repair-rounds 2"
  "memit-l15000-s0.05-r2|--method memit --batch $N --lam 15000 --stop-nll 0.05 --repair-rounds 2"
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
