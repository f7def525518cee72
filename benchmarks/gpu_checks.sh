#!/bin/bash
# Every GPU check in one go, for a short lease on a CUDA machine with this package's dependencies:
# the kernel benchmark and the NanoChat step benchmark through `mlflow run` (root MLproject), then
# tests/kernels on CUDA. Logs and the runs' metrics land in $OUT (default ./gpu_results); each step
# has its own time limit (BENCH_S, STEP_S, TEST_S seconds) so one hang does not eat the lease.
set -u
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
stamp() { echo "=== $1 at +$(( $(date +%s) - T0 )) s"; }
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python -c "import sys, torch, triton, numpy, mlflow; print('python', sys.version.split()[0], 'torch', \
torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'numpy', numpy.__version__, \
'mlflow', mlflow.__version__)"
} 2>&1 | tee "$OUT/env.txt"
stamp kernel-bench
timeout "${BENCH_S:-240}" mlflow run . -e kernel-bench --env-manager local 2>&1 | tee "$OUT/kernel_bench.log"
stamp nanochat-step
timeout "${STEP_S:-150}" mlflow run . -e nanochat-step --env-manager local 2>&1 | tee "$OUT/nanochat_step.log"
python - <<'PY' > "$OUT/metrics.json"
import json, mlflow
runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
print(json.dumps([{"run_id": r.info.run_id, "status": r.info.status, "params": r.data.params,
                   "metrics": r.data.metrics} for r in runs], indent=1))
PY
stamp pytest
timeout "${TEST_S:-150}" python -m pytest -q -n 4 -p no:cacheprovider tests/kernels -k "not compile_for_hopper" \
  2>&1 | tee "$OUT/pytest_gpu.log" | tail -25
stamp done
