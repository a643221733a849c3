#!/usr/bin/env bash
# The GPU checks, run once on a lent H200 (see README "Model"): step cost in bf16 on a ~1B-parameter-shaped
# Llama, and a bf16 CUDA training run whose checkpoint is brought back to be resumed on CPU in fp32.
# Expects wheels for packages missing on the device in .whl/ and writes results under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/tests HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -c "import torch, transformers, peft, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'datasets', datasets.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$OUT/versions.txt"
python3 benchmarks/step_cost.py --device cuda --dtype bf16 --hidden 2048 --layers 8 --vocab 32000 --seq 1024 --batch 8 --steps 20 2>&1 | grep -v Warning | tee "$OUT/step_cost_bf16_h2048.txt"
python3 benchmarks/step_cost.py --device cuda --dtype fp32 --steps 20 2>&1 | grep -v Warning | tee "$OUT/step_cost_fp32_h512.txt"
# QLoRA: peak torch.cuda.max_memory_allocated of one step, bf16 base vs 4-bit NF4 base (~0.94B), and the step time
# ratio (needs bitsandbytes, from .whl/ when the device lacks it)
python3 benchmarks/memory.py --device cuda --seq 1024 --batch 4 2>&1 | grep -v Warning | tee "$OUT/memory_qlora_cuda.txt"
mkdir -p /tmp/gpu
python3 -c "from micro import save_micro_base; save_micro_base('/tmp/gpu/base')"
python3 -m dylora_moe train --model_name /tmp/gpu/base --bf16 --output_dir /tmp/gpu/out --datasets stdlib:text \
  --max_examples_per_dataset 200 --max_seq_length 128 --max_steps 6 --save_steps 3 --logging_steps 1 \
  --report_to none 2>&1 | tr '\r' '\n' | grep -E "^\[|\{'loss|error|Error|Traceback" | tee "$OUT/train_bf16_cuda.txt"
python3 -m dylora_moe train --model_name /tmp/gpu/base --output_dir /tmp/gpu/out --datasets stdlib:text \
  --max_examples_per_dataset 200 --max_seq_length 128 --max_steps 8 --save_steps 3 --logging_steps 1 \
  --report_to none --resume_from_checkpoint latest 2>&1 | tr '\r' '\n' | grep -E "^\[|\{'loss|error|Error|Traceback" | tee "$OUT/resume_fp32_cuda.txt"
tar -C /tmp/gpu -cf "$OUT/gpu_run.tar" base out/checkpoint-6
ls -la "$OUT"
