#!/usr/bin/env bash
# The GPU benchmark in one run: install the wheels brought along, build (or take) the model,
# sweep the raw engine, then the same sweep through `voxws serve --engine nanovllm` driven by
# `voxws-bench`, and write both into one results file. See bench/gpu/README.md.
#
#   bash bench/gpu/run.sh            # full run: 1,8,32,64,128 (+256 overload), 3 bursts each
#   bash bench/gpu/run.sh --smoke    # a quick pass through every stage (levels 1,8; 2 bursts)
#
# Environment (all optional):
#   MODEL=/path/to/VoxCPM1.5   real weights instead of the random model (then steps are natural,
#                              unless BENCH_STEPS is set)
#   WHEELS=.whl                wheels to install (pip --no-index --no-deps --target)
#   WORK=/tmp/voxws-gpu        scratch: site-packages, model, logs
#   RESULTS=bench/results      where the results file goes (also copied to $OUT when set)
#   UTIL=0.4 SEQS=128 LEN=2048 STEPS=63 ROUNDS=3 DEVICES=0 PORT=18081
#   FLASH_ATTN=auto|stub|real  auto: the stand-in only when flash_attn is not importable
#   REUSE_MODEL=1              keep a random model already built in $WORK/model
#   VAES="engine batched"      voxws runs, one per VOXWS_ENGINE_VAE (compare.py each against the raw sweep)
#   RAW_LEVELS=$LEVELS         the raw sweep's levels; OVERLOAD_ALL=1 runs the overload level for every VAE
#   KILL_TEST=1                after the sweep, SIGKILL the engine worker under load and time the
#                              server's reaction (engine_error to clients, non-zero exit)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
WORK=${WORK:-/tmp/voxws-gpu}
WHEELS=${WHEELS:-.whl}
RESULTS=${RESULTS:-bench/results}
UTIL=${UTIL:-0.4} SEQS=${SEQS:-128} LEN=${LEN:-2048} STEPS=${STEPS:-63} DEVICES=${DEVICES:-0}
PORT=${PORT:-18081}
if ((SMOKE)); then LEVELS=${LEVELS:-1,8}; OVERLOAD=${OVERLOAD:-16}; ROUNDS=${ROUNDS:-2}; KILL_TEST=${KILL_TEST:-1}
else LEVELS=${LEVELS:-1,8,32,64,128}; OVERLOAD=${OVERLOAD:-256}; ROUNDS=${ROUNDS:-3}; KILL_TEST=${KILL_TEST:-0}; fi
RAW_LEVELS=${RAW_LEVELS:-$LEVELS}    # the raw engine at 256 on seqs 128 is known to stall half its streams
VAES=${VAES:-engine batched}          # voxws runs: VOXWS_ENGINE_VAE=engine, then =batched
PY=${PYTHON:-python3}
mkdir -p "$WORK" "$RESULTS"
LOG=$WORK/run.log
exec > >(tee "$LOG") 2>&1
t_all=$SECONDS
stage() { echo; echo "=== [$((SECONDS - t_all)) s] $*"; }
save_out() {  # what comes back from a lent GPU machine ($OUT: at most 8 files)
  [[ -n "${OUT:-}" && -d "${OUT:-}" ]] || return 0
  cp -f "$LOG" "$OUT/run.log" 2>/dev/null || true
  for f in "$WORK/server-batched.log" "$WORK/kill-server.log" "$WORK/vae.json" "$WORK/stages.json" \
           "$WORK/cmp-engine.json" "$WORK/cmp-batched.json"; do
    [[ -f $f ]] && cp -f "$f" "$OUT/"; done
  [[ -n "${RESULT_FILE:-}" && -f "${RESULT_FILE:-}" ]] && cp -f "$RESULT_FILE" "$OUT/"
  return 0
}
trap save_out EXIT

stage "machine"
nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version --format=csv,noheader
$PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'

stage "install: wheels from $WHEELS, voxws from this checkout"
SITE=$WORK/site
rm -rf "$SITE"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
fi
if ! $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" . 2>"$WORK/pip-voxws.err"; then
  echo "pip could not build voxws here ($(tail -1 "$WORK/pip-voxws.err")): using the checkout"
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PATH=$SITE/bin:$PATH
if ! command -v voxws >/dev/null || ! command -v voxws-bench >/dev/null; then
  # pip --target does not always write console scripts: these do what they would.
  mkdir -p "$SITE/bin"
  printf '#!/bin/sh\nexec %s -c "import sys; sys.argv[0] = \\"voxws\\"; from voxws.cli import app; app()" "$@"\n' "$PY" >"$SITE/bin/voxws"
  printf '#!/bin/sh\nexec %s -m voxws.bench "$@"\n' "$PY" >"$SITE/bin/voxws-bench"
  chmod +x "$SITE/bin/voxws" "$SITE/bin/voxws-bench"
fi
case ${FLASH_ATTN:-auto} in
  stub) export PYTHONPATH=$ROOT/bench/gpu/stubs:$PYTHONPATH ;;
  real) ;;
  *) $PY -c 'import flash_attn' 2>/dev/null || export PYTHONPATH=$ROOT/bench/gpu/stubs:$PYTHONPATH ;;
esac
$PY -c 'import flash_attn, nanovllm_voxcpm, voxws; print("flash_attn", flash_attn.__version__, "| nano-vllm-voxcpm", nanovllm_voxcpm.__version__, "| voxws", voxws.__version__)'
if [[ $($PY -c 'import flash_attn; print(flash_attn.__version__)') == *stub* ]]; then
  $PY bench/gpu/check_stub.py
fi

if [[ -n "${MODEL:-}" ]]; then
  stage "model: $MODEL (given)"
else
  stage "model: full-size VoxCPM 1.5, random weights, stop head off"
  MODEL=$WORK/model
  if [[ ${REUSE_MODEL:-0} == 1 && -f $MODEL/model.safetensors && -f $MODEL/audiovae.pth ]]; then
    echo "reusing $MODEL (REUSE_MODEL=1)"
  else
    $PY bench/gpu/build_model.py --out "$MODEL"
  fi
  BENCH_STEPS=${BENCH_STEPS:-$STEPS}
fi

STAGES=$WORK/stages
rm -rf "$STAGES"; mkdir -p "$STAGES"

stage "VAE decode: voxws's batched decoder against the engine's (exactness over >= 200 steps, time, memory)"
$PY bench/gpu/vae_exact.py --config bench/gpu/voxcpm15-config.json --seqs "$SEQS" --out "$WORK/vae.json" \
  || echo "vae_exact.py exited $?"

stage "raw engine sweep: C=$RAW_LEVELS x $ROUNDS bursts, util $UTIL seqs $SEQS len $LEN steps $STEPS"
(cd bench/gpu && $PY sweep_raw.py --model "$MODEL" --out "$WORK/raw.json" --devices "$DEVICES" \
  --util "$UTIL" --seqs "$SEQS" --len "$LEN" --steps "$STEPS" --concurrency "$RAW_LEVELS" --rounds "$ROUNDS" \
  --stage-log "$STAGES/raw")

wait_ready() {  # $1 pid, $2 log: seconds until /readyz answers 200; exits if the server dies
  local t0=$SECONDS
  until $PY -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$PORT/readyz', timeout=2).status == 200 else 1)" 2>/dev/null; do
    if ! kill -0 "$1" 2>/dev/null; then echo "voxws serve exited during start-up:"; tail -20 "$2"; exit 1; fi
    (( SECONDS - t0 > 300 )) && { echo "voxws serve not ready after 300 s"; tail -20 "$2"; exit 1; }
    sleep 0.5
  done
  echo $((SECONDS - t0))
}

start_server() {  # $1 log, $2 VOXWS_ENGINE_VAE, $3 stage log prefix; sets SPID (a child of this shell)
  VOXWS_ENGINE=nanovllm VOXCPM_MODEL_PATH=$MODEL VOXCPM_DEVICES=$DEVICES VOXCPM_GPU_MEMORY_UTILIZATION=$UTIL \
  VOXCPM_MAX_NUM_SEQS=$SEQS VOXCPM_MAX_MODEL_LEN=$LEN VOXWS_HOST=127.0.0.1 VOXWS_PORT=$PORT \
  VOXWS_LOG_FORMAT=json VOXWS_BENCH_STEPS=${BENCH_STEPS:-} VOXWS_ENGINE_VAE=${2:-batched} VOXWS_STAGE_LOG=${3:-} \
    voxws serve --engine nanovllm --port "$PORT" >"$1" 2>&1 &
  SPID=$!
}

URL=ws://127.0.0.1:$PORT/v1/tts
BENCH_ARGS=(--url "$URL" --text-file bench/gpu/text67.txt --rounds "$ROUNDS" --no-plots --quiet --timeout 300)
declare -A READY
for VAE in $VAES; do
  stage "voxws serve --engine nanovllm, VOXWS_ENGINE_VAE=$VAE (VOXWS_BENCH_STEPS=${BENCH_STEPS:-unset})"
  start_server "$WORK/server-$VAE.log" "$VAE" "$STAGES/voxws-$VAE"
  READY[$VAE]=$(wait_ready "$SPID" "$WORK/server-$VAE.log")
  echo "voxws ready in ${READY[$VAE]} s (pid $SPID)"
  voxws-bench ttfb "${BENCH_ARGS[@]}" --concurrency "$LEVELS" --out "$WORK/vox-$VAE" || echo "voxws-bench ttfb exited $?"
  $PY bench/gpu/gpumem.py | tee "$WORK/mem-ttfb-$VAE.jsonl"
  MEMS=(ttfb="$WORK/mem-ttfb-$VAE.jsonl")
  if [[ -n "$OVERLOAD" && ( $VAE == batched || ${OVERLOAD_ALL:-0} == 1 ) ]]; then
    voxws-bench overload "${BENCH_ARGS[@]}" --rounds "${OVERLOAD_ROUNDS:-3}" --concurrency "$OVERLOAD" --out "$WORK/vox-$VAE" \
      || echo "voxws-bench overload exited $?"
    $PY bench/gpu/gpumem.py | tee "$WORK/mem-overload-$VAE.jsonl"
    MEMS+=(overload="$WORK/mem-overload-$VAE.jsonl")
  fi
  kill -TERM "$SPID" 2>/dev/null || true
  rc=0; wait "$SPID" || rc=$?
  echo "voxws serve exited $rc"
  $PY bench/gpu/compare.py --raw "$WORK/raw.json" --voxws "$WORK/vox-$VAE/ttfb.json" "$WORK/vox-$VAE/overload.json" \
    --voxws-mem "${MEMS[@]}" --voxws-ready-s "${READY[$VAE]}" --out "$WORK/cmp-$VAE.json" || echo "compare.py exited $?"
done

stage "per-stage timings (worker step, chunk received in the server, consumer back)"
SIDES=(--side raw "$STAGES/raw")
for VAE in $VAES; do SIDES+=(--side "voxws-$VAE" "$STAGES/voxws-$VAE"); done
$PY bench/gpu/stages.py "${SIDES[@]}" --raw "$WORK/raw.json" --out "$WORK/stages.json" || echo "stages.py exited $?"

stage "results"
SLUG=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z' 'a-z' | grep -oE '[a-z][0-9]{2,4}[a-z]?' | head -1)
SUFFIX=""; ((SMOKE)) && SUFFIX=-smoke
RESULT_FILE=$RESULTS/gpu-${SLUG:-gpu}-$(date -u +%F)$SUFFIX.json
$PY bench/gpu/report.py --engine "$WORK/cmp-engine.json" --batched "$WORK/cmp-batched.json" --vae "$WORK/vae.json" \
  --stages "$WORK/stages.json" --out "$RESULT_FILE"

if [[ $KILL_TEST == 1 ]]; then
  stage "liveness: SIGKILL the engine worker under load"
  start_server "$WORK/kill-server.log" batched ""
  wait_ready "$SPID" "$WORK/kill-server.log" >/dev/null
  voxws-bench ttfb --url "$URL" --text-file bench/gpu/text67.txt --concurrency 16 --rounds 1 --no-plots --quiet \
    --timeout 60 --out "$WORK/kill" >"$WORK/kill-bench.log" 2>&1 & BPID=$!
  sleep 1.5
  WPID=$(ps -o pid=,args= --ppid "$SPID" | grep -v resource_tracker | grep -E 'spawn_main|multiprocessing' | head -1 | awk '{print $1}')
  echo "server $SPID, engine worker ${WPID:-not found}"
  t_kill=$($PY -c 'import time; print(time.time())')
  [[ -n "$WPID" ]] && kill -9 "$WPID"
  rc=0; wait "$SPID" || rc=$?
  t_exit=$($PY -c 'import time; print(time.time())')
  wait "$BPID" || true
  $PY - "$WORK/kill-server.log" "$WORK/kill/ttfb.json" "$t_kill" "$t_exit" "$rc" <<'EOF'
import json, sys
from datetime import datetime
log, bench, t_kill, t_exit, rc = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
dead = None
for line in open(log):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("event") == "engine_dead":
        ts = m.get("timestamp")
        dead = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() if isinstance(ts, str) else None
        print("engine_dead:", m.get("reason"))
errors = {}
try:
    for r in json.load(open(bench))["requests"]:
        errors[r["error"] or "ok"] = errors.get(r["error"] or "ok", 0) + 1
except (OSError, ValueError, KeyError) as e:
    errors = {"unreadable": str(e)}
print(f"server exit code {rc}; exit {t_exit - t_kill:.2f} s after the kill;"
      f" engine_dead logged {('%.2f s' % (dead - t_kill)) if dead else '?'} after it; clients: {errors}")
EOF
fi
stage "done in $((SECONDS - t_all)) s"
