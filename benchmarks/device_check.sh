#!/usr/bin/env bash
# Every GPU check of vae_lab in one run of under 10 minutes, on a machine with one CUDA GPU:
#   1. `make bench` on CUDA (training steps/s against the bare loop, IW samples/s at K = 5000
#      and the decoder against the GPU's matmul peak, q* and AIS throughput, peak memory)
#   2. several jobs sharing the GPU (benchmarks/sharing.py): jobs/hour for n_jobs = 1, 4, 8, 16
#      and the inference_gap preset's wall time predicted from the best
#   3. the default test suite with CUDA visible (the tests marked `gpu` among them), 8 workers
# The timings come first, alone on the machine; the tests last.
#
#   bash benchmarks/device_check.sh OUT_DIR        (OUT_DIR: where the logs and JSON go)
#
# Each part has a time limit (seconds): BENCH_S=150, SHARING_S=180, TESTS_S=210 by default.
# PHASES (default "bench sharing tests") picks the parts, SHARING_JOBS (default "1 4 8 16") the
# n_jobs of the sharing part. A device command may run 600 s at most, and on an H200 the waves
# of n_jobs 1, 4, 8 and 16 take about 30, 40, 70 and 130 s (n_jobs 8 and 16 did not fit in
# 150 s), so all of them fit only in two calls on the warm machine, e.g.
#   PHASES="bench sharing" SHARING_S=330 bash benchmarks/device_check.sh OUT   (~480 s)
#   PHASES=tests bash benchmarks/device_check.sh OUT                           (~230 s)
#
# Data: $VAE_LAB_DATA (MNIST at least; the tests' $VAE_LAB_TEST_DATA defaults to it). Python
# packages the machine lacks may lie as wheels in .whl/ (hydra-core, omegaconf, wandb, the
# launchers, arviz-stats): they are installed into /tmp/site first.
set -u
OUT=${1:?usage: bash benchmarks/device_check.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
export VAE_LAB_TEST_DATA=${VAE_LAB_TEST_DATA:-${VAE_LAB_DATA:-}}
phase() { echo "== $(date +%T) $1" | tee -a "$OUT/phases.log"; }

PHASES=${PHASES:-bench sharing tests}
wants() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

phase "machine"
{ nvidia-smi; python3 -c "import torch, pytorch_lightning as pl, hydra, wandb
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())
print('lightning', pl.__version__, 'hydra', hydra.__version__, 'wandb', wandb.__version__)"
} >"$OUT/machine.txt" 2>&1
tail -2 "$OUT/machine.txt"

if wants bench; then
  phase "bench (timeout ${BENCH_S:=150} s)"
  timeout "$BENCH_S" python3 -m benchmarks.run --out "$OUT/bench.json" >"$OUT/bench.log" 2>&1
  echo "bench exit $?" | tee -a "$OUT/phases.log"; tail -40 "$OUT/bench.log"
fi

if wants sharing; then
  phase "sharing (timeout ${SHARING_S:=180} s)"
  # shellcheck disable=SC2086  # SHARING_JOBS is a list of numbers
  timeout "$SHARING_S" python3 -m benchmarks.sharing --n-jobs ${SHARING_JOBS:-1 4 8 16} \
    --epochs 2 --override trainer=gpu --out "$OUT/sharing.json" >"$OUT/sharing.log" 2>&1
  echo "sharing exit $?" | tee -a "$OUT/phases.log"; tail -6 "$OUT/sharing.log"
fi

if wants tests; then
  phase "tests (timeout ${TESTS_S:=210} s)"
  # fashion_mnist is not carried to the device: its one count test runs on the CPU machines
  OMP_NUM_THREADS=2 timeout "$TESTS_S" python3 -m pytest -v -n 8 --durations=15 \
    --deselect "tests/test_data.py::test_idx_datasets_have_the_real_counts[fashion_mnist]" \
    --junitxml="$OUT/tests.xml" >"$OUT/tests.log" 2>&1
  echo "pytest exit $?" | tee -a "$OUT/phases.log"; tail -3 "$OUT/tests.log"
fi

nvidia-smi --query-gpu=memory.used,memory.total --format=csv >>"$OUT/machine.txt" 2>&1
phase "done"
