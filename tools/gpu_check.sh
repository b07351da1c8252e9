#!/usr/bin/env bash
# GPU check, run on a CUDA machine from the repository root (the device machine of our workplace):
#   1. the library's tests with SB3's default ``device="auto"`` (= cuda there): every model the tests build
#      trains, saves, loads and resumes on the GPU (Flower, W&B and rl-zoo tests are left out: their
#      packages are not on that machine, and they add no device code of their own);
#   2. tools/device_parity.py: the same identity-env configurations learn alike on the CPU and the GPU;
#   3. benchmarks/ppo_speed.py with both models on cuda, then on the CPU of the same machine.
# Dependencies missing there travel as wheels in .whl/ (see docs/gpu.md). Writes its logs and JSON to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# The source tree imports as installed (setup.cfg maps envs/ to sb3_fedpg.envs), also in the tests' subprocesses.
[ -e sb3_fedpg/envs ] || ln -s ../envs sb3_fedpg/envs
export PYTHONPATH="$PWD:/tmp/site" OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
python3 -P -c "import torch, sb3_fedpg; print('torch', torch.__version__, torch.cuda.get_device_name(), sb3_fedpg.__file__)" \
    || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
timeout "${PARITY_SECONDS:-240}" python3 -P tools/device_parity.py --output "$OUT/parity" > "$OUT/parity.log" 2>&1 &
parity=$!
timeout "${TEST_SECONDS:-240}" python3 -P -m pytest -m "not slow" -n 12 -p no:cacheprovider -q -rfE --timeout 200 \
    tests/common tests/fedpg tests/ppo tests/lqr tests/tabular tests/envs \
    --ignore=tests/common/test_wandb_logger.py --ignore=tests/common/test_fuzz_entry_points.py \
    --ignore=tests/common/test_hyperparams.py > "$OUT/tests.log" 2>&1
echo "pytest exit: $?"
tail -n 40 "$OUT/tests.log"
wait $parity
echo "parity exit: $?"
cat "$OUT/parity.log"
for device in cuda cpu; do
    timeout "${SPEED_SECONDS:-120}" python3 -P benchmarks/ppo_speed.py --device $device --repeats 3 --iterations 1 \
        --output "$OUT/ppo_speed_$device" > "$OUT/speed_$device.log" 2>&1
    echo "speed $device exit: $?"
    tail -n 6 "$OUT/speed_$device.log"
done
