#!/usr/bin/env bash
# The README's many-edits table: MEMIT (N cases, one batch), AlphaEdit (10 sequential batches of
# N/10) and ROME (one case at a time, split over SHARDS processes and merged), all on the same
# usable CounterFact cases (scripts/usable_cases.py), statistics corpus and settings.
#   scripts/edit_table.sh CASES CORPUS OUT [DEVICE] [SHARDS]
# On one GPU the processes run side by side (the model is small; they are launch-bound).
# MEMIT_ARGS / AE_ARGS: extra flags of the MEMIT / AlphaEdit runs (scripts/edit_sweep.sh picks
# them on other cases); ROME_GEN_TOKENS: fluency tokens of the ROME runs (default 0: ROME
# restores every edit, so its fluency and perplexity are the unedited model's); METHODS: which
# rows to run (default "memit alphaedit rome").
set -uo pipefail
CASES=$1 CORPUS=$2 OUT=$3 DEVICE=${4:-cuda} SHARDS=${5:-10}
GEN=${GEN_TOKENS:-50}
# shellcheck source=scripts/edit_common.sh
. "$(dirname "$0")/edit_common.sh"
METHODS=" ${METHODS:-memit alphaedit rome} "
pids=()
[[ $METHODS == *" memit "* ]] && { timeout "${LIMIT:-570}" "${WB[@]}" edit "${COMMON[@]}" --n "$N" --method memit --batch "$N" "${LAYERS[@]}" ${MEMIT_ARGS:-} \
    --out "$OUT/memit" > "$OUT/memit.log" 2>&1 & pids+=($!); }
[[ $METHODS == *" alphaedit "* ]] && { timeout "${LIMIT:-570}" "${WB[@]}" edit "${COMMON[@]}" --n "$N" --method alphaedit --batch $(( N >= 10 ? N / 10 : 1 )) "${LAYERS[@]}" ${AE_ARGS:-} \
    --out "$OUT/alphaedit" > "$OUT/alphaedit.log" 2>&1 & pids+=($!); }
[[ $METHODS == *" rome "* ]] || SHARDS=0
per=$(( SHARDS ? (N + SHARDS - 1) / SHARDS : 0 ))
for ((k = 0; k < SHARDS; k++)); do
  timeout "${LIMIT:-570}" "${WB[@]}" edit "${COMMON[@]}" --skip $((k * per)) --n "$per" --method rome --layer 4 \
      --gen-tokens "${ROME_GEN_TOKENS:-0}" --no-capability \
      --out "$OUT/rome-$k" > "$OUT/rome-$k.log" 2>&1 & pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
if ((SHARDS)); then
  "${WB[@]}" edit --merge "$OUT"/rome-*/ --out "$OUT/rome" > "$OUT/rome-merge.log" 2>&1 || fail=1
fi
for f in "$OUT"/*.log; do echo "== $f"; tail -3 "$f"; done
exit $fail
