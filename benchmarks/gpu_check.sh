#!/usr/bin/env bash
# Every GPU measurement of the suite in one go, under 10 minutes on one H100/H200 (the time
# limits of the parts add up to 590 s):
#
#     benchmarks/gpu_check.sh [RESULTS_DIR]        (default: benchmarks/results)
#
# Needs torch with CUDA, numpy, pandas, safetensors, tqdm, PyYAML and pytest; runs from the
# source tree (no install; Hydra, Snakemake, W&B and lm-eval are not needed). Each part has its own time limit and its own Markdown + log file, so a part
# that is slow or fails costs its own table, not the others. The most wanted numbers first:
# the dense step's MFU and memory with the static-sparsity overhead, then the 2:4 kernels.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

part() {  # part LIMIT_S NAME SCRIPT ARGS...: run one benchmark into NAME.md, its stderr to NAME.log
    local limit=$1 name=$2
    shift 2
    echo "== $name (at most ${limit}s)"
    timeout "$limit" python "$@" --out "$out/$name.md" 2>"$out/$name.log"
    local rc=$?
    [ "$rc" -eq 0 ] || echo "$name: exit $rc (see $out/$name.log)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
part 180 gpu_throughput_training benchmarks/gpu_throughput.py --tables training
part 90 semi_structured benchmarks/semi_structured.py
part 50 block_sparse benchmarks/block_sparse.py
part 140 gpu_throughput_methods benchmarks/gpu_throughput.py --tables hsa mst nm
part 40 hsa_attention_cuda benchmarks/hsa_attention.py --device cuda
echo "== CUDA-only tests (at most 90s)"
timeout 90 python -m pytest -p no:cacheprovider -m gpu tests/test_gpu_throughput.py \
    tests/test_hsa.py tests/test_semi_structured.py tests/test_lm_head_loss.py \
    >"$out/gpu_tests.log" 2>&1 || echo "gpu tests: failed (see $out/gpu_tests.log)"
