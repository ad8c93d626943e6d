# Shared set-up of scripts/edit_table.sh and scripts/edit_sweep.sh (sourced, not run):
# given CASES CORPUS OUT DEVICE and GEN (fluency tokens), defines N (cases in CASES), WB (the
# workbench command), LAYERS (the edited layers, EDIT_LAYERS), COMMON (flags of every run), and warms the
# caches once (dequantized model, covariance of LAYERS) before the processes share them.
N=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$CASES")
WB=(python3 -m workbench.cli)
LAYERS=()   # EDIT_LAYERS="1 2 ... 8": the edited layers of MEMIT / AlphaEdit (default 1-5)
for l in ${EDIT_LAYERS:-1 2 3 4 5}; do LAYERS+=(--layer "$l"); done
COMMON=(--cases "$CASES" --device "$DEVICE" --dtype float32 --stats-corpus "$CORPUS"
        --stats-tokens "${STATS_TOKENS:-50000}" --gen-tokens "$GEN" --no-progress)
mkdir -p "$OUT"
# WARM_STATS="50000 200000": also warm the covariance of other --stats-tokens a variant overrides
for t in ${WARM_STATS:-${STATS_TOKENS:-50000}}; do
  "${WB[@]}" edit "${COMMON[@]}" --stats-tokens "$t" --n 1 --method memit "${LAYERS[@]}" --no-capability \
      --out "${SWEEP_WORK:-$OUT}/warm-$t" > "$OUT/warm-$t.log" 2>&1 || { tail -20 "$OUT/warm-$t.log"; exit 1; }
done
