#!/usr/bin/env bash
# The checks that need a GPU, as one run of under 10 minutes on a lent NVIDIA machine (its
# python3 has torch, pytest and matplotlib; nothing is installed): the CUDA tests, then the
# cost benchmark on CUDA (synchronized timings, torch.cuda.max_memory_allocated) for the
# MARIGOLD presets, FAMO and BiLB4MTL against a plain loop and LS, MLP width 512 at
# m = 3, 40, 128 and the SegNet-like model.
#
# From the repository root on that machine:  scripts/device_checks.sh "$OUT"
set -uo pipefail
out=${1:?usage: scripts/device_checks.sh OUT_FOLDER}
export PYTHONPATH=src:. PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
timeout 150 python3 -m pytest -q -p no:cacheprovider -rs tests/reliability/test_mixed_precision.py \
    tests/reliability/test_trainer_contract.py benchmarks/tests/test_cli_checks.py 2>&1 | tee "$out/cuda_tests.log"
timeout 390 python3 -m benchmarks cost --device cuda --methods marigold marigold-next-batch marigold-paper \
    marigold-faithful famo bilb4mtl --models mlp scenes --tasks 3 40 128 --hidden 512 --repeats 10 --budget 8 \
    --no-progress --out "$out/cost_cuda" 2>&1 | tee "$out/cost.log"
