#!/usr/bin/env bash
# One check of phi_jax on a lent NVIDIA GPU machine, in at most about 14 minutes (the parts' timeouts):
#
#   kernels    the Pallas kernel tests (tests/phi_jax/kernels) on the GPU, compiled by Triton
#   attention  bench/attention.py at phi-1 shapes: phi_jax Pallas vs jax's Pallas, cuDNN, XLA,
#              then with attention dropout 0.1 (pallas, xla); the fastest of each situation
#              go to $OUT/attention_choices.json (the repository's phi_jax/attention_choices.json
#              with this device kind's entries added: copy it back to make them 'auto''s)
#   tune       bench/attention.py --tune: phi_jax Pallas tiles per length, with and without
#              dropout, into the same $OUT/attention_choices.json
#   train      bench/train.py: the phi-1 train step (tokens/s, MFU) at a batch that fits
#   generate   bench/generate.py: phi-1-size greedy decoding, phi_jax vs transformers
#
# Each part runs in its own process under its own timeout; a part that fails or times
# out is recorded as FAIL/TIMEOUT with the tail of its log, and the others still run.
# At the end it prints one summary table. Everything goes to the output folder:
# summary.md (the table and error tails), benchmarks_rows.md (the rows the benchmarks
# appended, under their BENCHMARKS.md section headings, to copy into BENCHMARKS.md) and
# one <part>.log each.
#
#   bash bench/device_check.sh                 # on the GPU machine; output to $OUT
#   bash bench/device_check.sh --dry           # tiny shapes on the CPU (CI runs this)
#   bash bench/device_check.sh --parts=train,generate --out=/tmp/check
#   bash bench/device_check.sh --prepare       # here, before a run: copy ml_collections
#
# Only what the machines' image has is imported (jax with CUDA, flax, optax, orbax,
# torch, transformers, pytest; see bench/device_image.py): every part runs through
# bench/device_image.py, which hides the project's other requirements in both modes, so
# an import that would fail there fails in the dry mode first. bench/train.py reads the
# run configs, which need ml_collections (pure Python, not in the image): `--prepare`
# copies it from the local virtualenv into .device_site/ (git-ignored through
# .git/info/exclude); carry that folder along (device `run` with carry=[".device_site"]).
#
# Environment: PYTHON (default: python3; .venv/bin/python in the dry mode when present),
# DRY=1 (same as --dry), OUT (the output folder when --out is not given), DEVICE_SITE
# (default .device_site), TIMEOUT_<PART> (seconds), TRAIN_ARGS / GENERATE_ARGS /
# ATTENTION_ARGS / DROPOUT_ATTENTION_ARGS / TUNE_ARGS (replace a part's benchmark arguments).

set -u
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 1

ALL_PARTS="kernels,attention,train,tune,generate"
DRY="${DRY:-0}"
PARTS="$ALL_PARTS"
OUT_DIR="${OUT:-}"
PREPARE=0
SITE="${DEVICE_SITE:-$REPO_ROOT/.device_site}"

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
  case "$arg" in
    --dry) DRY=1 ;;
    --prepare) PREPARE=1 ;;
    --parts=*) PARTS="${arg#--parts=}" ;;
    --out=*) OUT_DIR="${arg#--out=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
for part in ${PARTS//,/ }; do
  case ",$ALL_PARTS," in
    *",$part,"*) ;;
    *) echo "device_check.sh: --parts: unknown part '$part'; known: $ALL_PARTS" >&2; exit 2 ;;
  esac
done

LOCAL_PYTHON=python3
[[ -x "$REPO_ROOT/.venv/bin/python" ]] && LOCAL_PYTHON="$REPO_ROOT/.venv/bin/python"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3  # the lent machine's image: the interpreter that holds jax, torch, ...
  [[ "$DRY" == 1 || "$PREPARE" == 1 ]] && PYTHON="$LOCAL_PYTHON"
fi

# --- --prepare: the pure-Python packages the image lacks, copied to carry along ---------
if [[ "$PREPARE" == 1 ]]; then
  source_dir="$("$PYTHON" -c 'import os, ml_collections; print(os.path.dirname(ml_collections.__file__))')" || {
    echo "device_check.sh --prepare: $PYTHON cannot import ml_collections" >&2; exit 1; }
  mkdir -p "$SITE" && rm -rf "$SITE/ml_collections.tmp" &&
    cp -r "$source_dir" "$SITE/ml_collections.tmp" &&
    find "$SITE/ml_collections.tmp" -name __pycache__ -prune -exec rm -rf {} + &&
    rm -rf "$SITE/ml_collections" && mv "$SITE/ml_collections.tmp" "$SITE/ml_collections" || {
      echo "device_check.sh --prepare: copying $source_dir to $SITE failed" >&2; exit 1; }
  exclude="$(git rev-parse --git-path info/exclude 2>/dev/null)"
  relative="${SITE#"$REPO_ROOT"/}"
  if [[ -n "$exclude" && "$relative" != "$SITE" ]]; then
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$relative/" "$exclude" 2>/dev/null || echo "/$relative/" >> "$exclude"
  fi
  echo "copied ml_collections ($source_dir) to $SITE; carry \"$relative\" to the device"
  exit 0
fi

# --- the output folder and the environment of every part ---------------------------------
if [[ -z "$OUT_DIR" ]]; then
  OUT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")"
fi
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
ROWS_FILE="$OUT_DIR/benchmarks_rows.md"
SUMMARY_FILE="$OUT_DIR/summary.md"
rm -f "$ROWS_FILE" "$SUMMARY_FILE"

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
  TOKENIZERS_PARALLELISM=false PHI_JAX_BENCHMARKS_FILE="$ROWS_FILE"
RUNNER=("$PYTHON" "$REPO_ROOT/bench/device_image.py")
[[ -d "$SITE" ]] && RUNNER+=(--site "$SITE")
RUNNER+=(--)

if [[ "$DRY" == 1 ]]; then
  MODE="dry (CPU, tiny shapes)"
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
  KERNEL_ENV=(PHI_JAX_TEST_PLATFORM=cpu)
  # one compiled-path case, one error case: the plumbing, not the coverage (CI has that)
  KERNEL_ARGS=(-k "T17-S17-off0-B1-H2-D128-full-noseg-float32 or bad_inputs_are_named")
  default_attention="--small --repeats=1 --impls=pallas,cudnn,xla"
  default_train="--config=configs/tiny.py --batch=2 --seq=32 --steps=1"
  default_generate="--size=tiny --batch=2 --prompt_len=8 --new_tokens=4 --repeats=1 --reduced --threads=1"
  default_dropout_attention="--small --seq=128 --repeats=1 --impls=pallas"
  default_tune="--small --seq=128 --repeats=1 --tiles=32"
  : "${TIMEOUT_KERNELS:=120}" "${TIMEOUT_ATTENTION:=120}" "${TIMEOUT_TRAIN:=120}" "${TIMEOUT_GENERATE:=120}"
  : "${TIMEOUT_TUNE:=120}"
else
  MODE="GPU"
  KERNEL_ENV=(PHI_JAX_TEST_PLATFORM=gpu)
  # Every kernel test, the slow ones too; Triton compiles in 4 pytest workers when
  # pytest-xdist is there (the image has it), each taking GPU memory as it needs it.
  KERNEL_ARGS=()
  if "$PYTHON" -c "import xdist" 2>/dev/null; then
    KERNEL_ARGS=(-n 4)
    KERNEL_ENV+=(XLA_PYTHON_CLIENT_PREALLOCATE=false)
  fi
  default_attention="--seq=512,1024,2048,4096 --repeats=10"
  # phi-1 at seq 2048, 32 sequences per step.
  # The remat policy and micro-batches are chosen for the GPU as run.py chooses them
  # (phi_jax/train/fit.py: compiled, the lightest remat and fewest micro-batches that fit).
  default_train="--config=configs/phi1.py --batch=32 --seq=2048 --microbatches=0 --remat=auto --steps=5"
  default_generate="--size=phi1 --dtype=bfloat16 --batch=16 --prompt_len=512 --new_tokens=512 --repeats=5 --budgets=64,2000"
  default_dropout_attention="--seq=2048 --repeats=10 --impls=pallas,xla"
  default_tune="--seq=1024,2048 --repeats=5 --tiles=32,64,128"
  # train: the fit's search compiles the phi-1 step a few times before the timed steps
  : "${TIMEOUT_KERNELS:=140}" "${TIMEOUT_ATTENTION:=110}" "${TIMEOUT_TRAIN:=300}" "${TIMEOUT_GENERATE:=180}"
  : "${TIMEOUT_TUNE:=120}"
fi
read -r -a ATTENTION_ARGV <<< "${ATTENTION_ARGS:-$default_attention}"
read -r -a TRAIN_ARGV <<< "${TRAIN_ARGS:-$default_train}"
read -r -a GENERATE_ARGV <<< "${GENERATE_ARGS:-$default_generate}"
read -r -a DROPOUT_ATTENTION_ARGV <<< "${DROPOUT_ATTENTION_ARGS:-$default_dropout_attention}"
read -r -a TUNE_ARGV <<< "${TUNE_ARGS:-$default_tune}"
CHOICES="$OUT_DIR/attention_choices.json"

attention_and_choices() {  # the comparison, then with dropout; both write $CHOICES
  "$@" bench/attention.py "${ATTENTION_ARGV[@]}" --choices="$CHOICES" &&
    "$@" bench/attention.py "${DROPOUT_ATTENTION_ARGV[@]}" --dropout=0.1 --choices="$CHOICES"
}

tune_tiles() {  # Pallas tiles without and with dropout into $CHOICES
  "$@" bench/attention.py --tune "${TUNE_ARGV[@]}" --choices="$CHOICES" &&
    "$@" bench/attention.py --tune "${TUNE_ARGV[@]}" --dropout=0.1 --choices="$CHOICES"
}

# --- the parts ------------------------------------------------------------------------
declare -A STATUS SECONDS_TAKEN HEADLINE

headline() {  # the one line of a part's log that the summary shows
  local part="$1" log="$2"
  case "$part" in
    kernels) grep -E "[0-9]+ (passed|failed|error)" "$log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//' ;;
    attention) echo "$(grep -c '^appended to' "$log") rows recorded; fwd+bwd speed-up over xla at each seq: $(
      grep -E '^ +(pallas|cudnn) \|' "$log" | awk -F'|' '{for (i = 1; i <= 7; i++) gsub(/ /, "", $i);
        if ($7 != "-") printf "%s %sx@%s ", $1, $7, $2}')" ;;
    train) grep -E "^step " "$log" | tail -1 ;;
    generate) grep -E "^ratio phi_jax" "$log" | tail -1 ;;
    tune) grep -E "^--choices: .* tiles" "$log" | sed 's/^--choices: //' | tr '\n' ';' ;;
  esac
}

run_part() {
  local part="$1" timeout_s="$2"; shift 2
  local log="$OUT_DIR/$part.log" start rc
  echo "=== $part (timeout ${timeout_s}s): $*" | tee "$log"
  start=$(date +%s)
  if declare -F "$1" > /dev/null; then  # a function of this script: in a child bash
    timeout -k 10 "$timeout_s" bash -c "$(declare -f "$1"); $(declare -p ATTENTION_ARGV \
      DROPOUT_ATTENTION_ARGV TUNE_ARGV CHOICES); \"\$@\"" _ "$@" >> "$log" 2>&1
  else
    timeout -k 10 "$timeout_s" "$@" >> "$log" 2>&1
  fi
  rc=$?
  SECONDS_TAKEN[$part]=$(( $(date +%s) - start ))
  if [[ $rc == 0 ]]; then
    STATUS[$part]=PASS
  elif [[ $rc == 124 || $rc == 137 ]]; then
    STATUS[$part]=TIMEOUT
  else
    STATUS[$part]="FAIL (exit $rc)"
  fi
  HEADLINE[$part]="$(headline "$part" "$log")"
  echo "=== $part: ${STATUS[$part]} in ${SECONDS_TAKEN[$part]}s ${HEADLINE[$part]}"
}

echo "device_check.sh: $MODE; python $PYTHON; output $OUT_DIR"
GPU_LINE="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
for part in ${PARTS//,/ }; do
  case "$part" in
    kernels) run_part kernels "$TIMEOUT_KERNELS" env "${KERNEL_ENV[@]}" \
      "${RUNNER[@]}" -m pytest tests/phi_jax/kernels -q -p no:cacheprovider "${KERNEL_ARGS[@]}" ;;
    attention) [[ -f "$CHOICES" ]] || cp phi_jax/attention_choices.json "$CHOICES"
      run_part attention "$TIMEOUT_ATTENTION" attention_and_choices "${RUNNER[@]}" ;;
    tune) [[ -f "$CHOICES" ]] || cp phi_jax/attention_choices.json "$CHOICES"
      run_part tune "$TIMEOUT_TUNE" tune_tiles "${RUNNER[@]}" ;;
    train) XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}" \
      run_part train "$TIMEOUT_TRAIN" "${RUNNER[@]}" bench/train.py "${TRAIN_ARGV[@]}" ;;
    generate) XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}" \
      run_part generate "$TIMEOUT_GENERATE" "${RUNNER[@]}" bench/generate.py "${GENERATE_ARGV[@]}" ;;
  esac
done

# --- the summary ------------------------------------------------------------------------
{
  echo "# bench/device_check.sh: $MODE, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "machine: ${GPU_LINE:-no GPU seen by nvidia-smi}; commit $(git describe --always --dirty 2>/dev/null || echo '?')"
  echo
  echo "| part | status | seconds | result |"
  echo "|---|---|---|---|"
  failed=0
  for part in ${PARTS//,/ }; do
    echo "| $part | ${STATUS[$part]} | ${SECONDS_TAKEN[$part]} | ${HEADLINE[$part]//|//} |"
    [[ "${STATUS[$part]}" == PASS ]] || failed=1
  done
  for part in ${PARTS//,/ }; do
    [[ "${STATUS[$part]}" == PASS ]] && continue
    echo
    echo "## $part: ${STATUS[$part]}, last lines of $part.log"
    echo
    echo '```'
    tail -n 25 "$OUT_DIR/$part.log"
    echo '```'
    if grep -q "No module named 'ml_collections'" "$OUT_DIR/$part.log"; then
      echo "(ml_collections is not in the image: run 'bash bench/device_check.sh --prepare' here and carry .device_site)"
    fi
  done
  echo
  if [[ -s "$ROWS_FILE" ]]; then
    echo "Rows for BENCHMARKS.md: benchmarks_rows.md (copy each row under its section)."
  else
    echo "No rows for BENCHMARKS.md were recorded."
  fi
} > "$SUMMARY_FILE"
echo
cat "$SUMMARY_FILE"
[[ -s "$ROWS_FILE" ]] && { echo; cat "$ROWS_FILE"; }
exit "$failed"
