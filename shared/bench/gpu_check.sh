#!/usr/bin/env bash
# The GPU part of the performance issue in one short run (at most 10 minutes, about 6 expected, on one H200), for a
# session that is lent a GPU machine: the model-step table of bench_core.py on CUDA with bf16
# autocast (ours, ours with flash attention forced, with torch.compile, with checkpointing, and the
# Hugging Face and MONAI peers at identical configs), the pure-torch point ops on CUDA tensors, then
# `maecore pretrain` end to end on the GPU (bf16-mixed chosen automatically), eager and compiled.
#
# Run from the repository root on the GPU machine; results go to $OUT (default /tmp/gpu_check):
#   bash shared/bench/gpu_check.sh
# Each part has its own time limit, so the whole script ends within 600 s (one device call's limit:
# give the call timeout_s 600); a part cut short leaves its log, and bench_core's rows are in its log.
# The machine's own python3 (its torch, lightning, transformers) is used; maecore comes from this
# checkout through PYTHONPATH, so nothing needs installing. MONAI is not in that image: for the
# MONAI rows carry its wheel (downloaded here, pure Python):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl monai==1.6.1
# and name .whl in the call's carry; without it those rows say "No module named 'monai'".
set -uo pipefail
python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
    || { echo "gpu_check.sh: torch sees no CUDA device; this script is for a GPU machine" >&2; exit 2; }
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/packages/maecore/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'lightning', lightning.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.txt"

# 1. model steps at batch 64 (3D rows at batch 8, 128^3), 10 timed steps each, bf16 autocast
rows=matmul,ours_vitb,ours_vitb_flash,ours_vitb_compile,ours_vitb_ckpt,hf_vitmae,hf_vitmae_fused
rows=$rows,ours_3d@8,ours_3d_flash@8,ours_3d_ckpt@8,monai_3d@8
timeout 260 python3 shared/bench/bench_core.py --device cuda --batch 64 --steps 10 --vol 128 --rows "$rows" \
    --json "$OUT/bench_core_gpu.json" 2>&1 | tee "$OUT/bench_core_gpu.log" | grep '^{"row"'
# MONAI's MaskedAutoEncoderViT fails under bf16 autocast (its decoder's index_put mixes fp32 mask
# tokens with bf16 activations; seen on the CPU with monai 1.6.1), so the 3D peer pair also runs in fp32
timeout 75 python3 shared/bench/bench_core.py --device cuda --precision fp32 --steps 10 --vol 128 \
    --rows matmul,ours_3d@8,monai_3d@8,monai_3d_fused@8 --json "$OUT/bench_core_gpu_3d_fp32.json" 2>&1 \
    | tee "$OUT/bench_core_gpu_3d_fp32.log" | grep '^{"row"'

# 2. the pure-torch point ops on the GPU (pytorch3d is not in that image: torch rows only), 1k-32k points
timeout 90 python3 shared/bench/bench_pointops.py --device cuda --repeats 5 --json "$OUT/bench_pointops_gpu.json" \
    >"$OUT/bench_pointops_gpu.log" 2>&1; echo "bench_pointops: exit $?"

# 3. the CLI end to end on the GPU (bf16-mixed chosen by precision=auto): ViT-B/16 MAE, 224 px chips
# of the bundled Landsat crop, batch 64, 4 loader workers, 200 steps; eager, then compiled (its
# compile time falls inside the run). Its samples/s beside bench_core's ours_vitb row says whether
# the data path keeps the GPU busy.
for compile in false true; do
    limit=$([ "$compile" = true ] && echo 100 || echo 60)
    timeout "$limit" python3 -c "from maecore.cli.demo import main; main()" pretrain --max-steps 200 \
        --set model.name=mae_vit_base --set model.patch_size=16 --set data.chip_size=224 \
        --set data.holdout_fraction=0.0 --set train.batch_size=64 --set train.num_workers=4 \
        --set train.progress=false --set train.compile=$compile --out "$OUT/run_compile_$compile" \
        >"$OUT/pretrain_compile_$compile.log" 2>&1
    echo "pretrain compile=$compile: exit $?"; grep -E "pretrain done|Error" "$OUT/pretrain_compile_$compile.log" | tail -3
done
rm -rf "$OUT"/run_compile_*/checkpoints  # too large to bring back; metrics, figure and export stay
