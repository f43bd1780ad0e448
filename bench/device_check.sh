#!/usr/bin/env bash
# One check of phi_jax on a lent NVIDIA GPU machine, most important part first:
#
#   train      bench/train.py: the phi-1 train step (tokens/s, MFU) at a batch that fits,
#              with the paper's dropout and then without (the dropout-free MFU)
#   attention  bench/attention.py at phi-1 shapes: phi_jax Pallas vs jax's Pallas, cuDNN, XLA,
#              then with attention dropout 0.1 (pallas, xla); the fastest of each situation
#              go to $OUT/attention_choices.json (the repository's phi_jax/attention_choices.json
#              with this device kind's entries added: copy it back to make them 'auto''s)
#   kernels    the Pallas kernel tests (tests/phi_jax/kernels) on the GPU, compiled by Triton
#   tune       bench/attention.py --tune: phi_jax Pallas tiles per length, with and without
#              dropout, into the same $OUT/attention_choices.json
#   generate   bench/generate.py: phi-1-size greedy decoding, phi_jax vs transformers
#
# Each part runs in its own process under its own timeout; a part that fails or times
# out is recorded as FAIL/TIMEOUT with the tail of its log, and the others still run.
# A part whose timeout does not fit in what is left of the budget (--budget, GPU default
# 540 s: one device command is at most 600 s) is SKIPPED, named in the summary with the
# command that runs it. summary.md is rewritten before and after every part, so a check
# cut off from outside still leaves the finished parts' results (and says which part was
# running). Everything goes to the output folder: summary.md (the table and error tails),
# benchmarks_rows.md (the rows the benchmarks appended, under their BENCHMARKS.md section
# headings, to copy into BENCHMARKS.md) and one <part>.log each.
#
#   bash bench/device_check.sh                 # on the GPU machine; output to $OUT
#   bash bench/device_check.sh --dry           # tiny shapes on the CPU (CI runs this)
#   bash bench/device_check.sh --parts=tune,generate --out=/tmp/check
#   bash bench/device_check.sh --budget=0      # no budget: every part runs
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
# (default .device_site), BUDGET (seconds, as --budget), TIMEOUT_<PART> (seconds), TRAIN_ARGS / GENERATE_ARGS /
# ATTENTION_ARGS / DROPOUT_ATTENTION_ARGS / TUNE_ARGS (replace a part's benchmark arguments).

set -u
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 1

ALL_PARTS="train,attention,kernels,tune,generate"
DRY="${DRY:-0}"
PARTS="$ALL_PARTS"
BUDGET="${BUDGET:-}"
OUT_DIR="${OUT:-}"
PREPARE=0
SITE="${DEVICE_SITE:-$REPO_ROOT/.device_site}"

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
  case "$arg" in
    --dry) DRY=1 ;;
    --prepare) PREPARE=1 ;;
    --parts=*) PARTS="${arg#--parts=}" ;;
    --budget=*) BUDGET="${arg#--budget=}" ;;
    --out=*) OUT_DIR="${arg#--out=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -n "$BUDGET" && ! "$BUDGET" =~ ^[0-9]+$ ]]; then
  echo "device_check.sh: --budget: '$BUDGET' is not a number of seconds (0: none)" >&2; exit 2
fi
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
  default_train="--config=configs/tiny.py --batch=2 --seq=32 --steps=1 --dropout=both"
  default_generate="--size=tiny --batch=2 --prompt_len=8 --new_tokens=4 --repeats=1 --reduced --threads=1"
  default_dropout_attention="--small --seq=128 --repeats=1 --impls=pallas"
  default_tune="--small --seq=128 --repeats=1 --tiles=32"
  : "${TIMEOUT_KERNELS:=120}" "${TIMEOUT_ATTENTION:=120}" "${TIMEOUT_TRAIN:=120}" "${TIMEOUT_GENERATE:=120}"
  : "${TIMEOUT_TUNE:=120}" "${BUDGET:=0}"
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
  # The paper's dropout (attention, residual 0.1), then none: the dropout-free MFU.
  default_train="--config=configs/phi1.py --batch=32 --seq=2048 --microbatches=0 --remat=auto --steps=5 --dropout=both"
  default_generate="--size=phi1 --dtype=bfloat16 --batch=16 --prompt_len=512 --new_tokens=512 --repeats=5 --budgets=64,2000"
  default_dropout_attention="--seq=2048 --repeats=10 --impls=pallas,xla"
  default_tune="--seq=1024,2048 --repeats=5 --tiles=32,64,128"
  # train: the fit's search compiles the phi-1 step a few times before the timed steps,
  # then each dropout setting compiles once more. train + attention + kernels (and the
  # parts' start-up) fit the budget; tune and generate wait for a second command.
  : "${TIMEOUT_TRAIN:=270}" "${TIMEOUT_ATTENTION:=100}" "${TIMEOUT_KERNELS:=150}"
  : "${TIMEOUT_TUNE:=120}" "${TIMEOUT_GENERATE:=180}" "${BUDGET:=540}"
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
    train) grep -E "^step " "$log" | sed 's/  */ /g' | paste -sd ';' - | sed 's/;/; /g' ;;
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

write_summary() {  # summary.md as it stands; $1: the part now running, if any
  local running="${1:-}" part
  {
    echo "# bench/device_check.sh: $MODE, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "machine: ${GPU_LINE:-no GPU seen by nvidia-smi}; commit $(git describe --always --dirty 2>/dev/null || echo '?'); budget ${BUDGET}s (0: none)"
    echo
    echo "| part | status | seconds | result |"
    echo "|---|---|---|---|"
    for part in ${PARTS//,/ }; do
      local status="${STATUS[$part]:-}"
      if [[ -z "$status" ]]; then
        [[ "$part" == "$running" ]] && status="RUNNING (cut off if this stays)" || status="not reached"
      fi
      local headline="${HEADLINE[$part]:-}"
      echo "| $part | $status | ${SECONDS_TAKEN[$part]:-} | ${headline//|//} |"
    done
    for part in ${PARTS//,/ }; do
      case "${STATUS[$part]:-}" in PASS|SKIPPED*|"") continue ;; esac
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
    if [[ -n "$SKIPPED" ]]; then
      echo
      echo "Skipped for the budget: run them next with 'bash bench/device_check.sh --parts=${SKIPPED#,}'."
    fi
    echo
    if [[ -s "$ROWS_FILE" ]]; then
      echo "Rows for BENCHMARKS.md: benchmarks_rows.md (copy each row under its section)."
    else
      echo "No rows for BENCHMARKS.md were recorded."
    fi
  } > "$SUMMARY_FILE.tmp" && mv "$SUMMARY_FILE.tmp" "$SUMMARY_FILE"
}

timeout_of() {
  case "$1" in
    train) echo "$TIMEOUT_TRAIN" ;; attention) echo "$TIMEOUT_ATTENTION" ;;
    kernels) echo "$TIMEOUT_KERNELS" ;; tune) echo "$TIMEOUT_TUNE" ;;
    generate) echo "$TIMEOUT_GENERATE" ;;
  esac
}

echo "device_check.sh: $MODE; python $PYTHON; output $OUT_DIR; budget ${BUDGET}s (0: none)"
GPU_LINE="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
CHECK_START=$(date +%s)
SKIPPED=""
for part in ${PARTS//,/ }; do
  left=$(( BUDGET - ($(date +%s) - CHECK_START) ))
  if (( BUDGET > 0 && $(timeout_of "$part") > left )); then
    STATUS[$part]="SKIPPED (timeout $(timeout_of "$part")s > ${left}s left of the budget)"
    SKIPPED="$SKIPPED,$part"
    echo "=== $part: ${STATUS[$part]}"
    continue
  fi
  write_summary "$part"
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
  write_summary
done
write_summary

failed=0
for part in ${PARTS//,/ }; do
  case "${STATUS[$part]}" in PASS|SKIPPED*) ;; *) failed=1 ;; esac
done
echo
cat "$SUMMARY_FILE"
[[ -s "$ROWS_FILE" ]] && { echo; cat "$ROWS_FILE"; }
exit "$failed"
