#!/usr/bin/env bash
# GPU acceptance check of distillbench: one command on a fresh CUDA machine that holds this repository.
#   install     a virtual environment with distillbench (pip install -e ".[dev]"; --wheels DIR: offline, from DIR)
#   device      torch sees a CUDA GPU (or the CPU, with GPU_CHECK_DEVICE=cpu)
#   cuda_tests  the tests marked cuda (pytest -m cuda)
#   bench       scripts/bench.py: the plain loop, the reference path (paper precision) and trainer=fast, with and
#               without torch.compile and the teacher-output cache, and with the whole step compiled
#               (trainer.compile_scope=step), timed interleaved, host ops counted
#   training    two epochs of CRD resnet32x4 -> resnet8x4 (reference settings) on generated CIFAR-100 files
# then writes everything to results/bench/gpu_<date>.json (scripts/gpu_check_report.py). Sized to finish in
# under 8 minutes on one H200. A failing part does not stop the later ones (except install and device, which
# they need); the exit status is 0 only when every part passed.
#
#   scripts/gpu_check.sh                           # pip from the package index
#   scripts/gpu_check.sh --wheels /path/to/wheels  # offline: pip --no-index --find-links /path/to/wheels
#   scripts/gpu_check.sh --no-venv                 # the python on PATH, with distillbench installed
#   GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh --no-venv --tiny --out /tmp/check.json   # every part, CPU-sized
#
# Options: --wheels DIR, --venv DIR (default: in the scratch folder), --no-venv, --tiny (CPU-sized parts),
# --out FILE, --keep (keep the scratch folder and print it). Environment: GPU_CHECK_DEVICE (cuda|cpu),
# GPU_CHECK_BENCH_ARGS (replaces the benchmark's size and path arguments).
# The venv sees the system's packages, so a CUDA torch already installed there is used, not downloaded again.
# An offline --wheels folder must hold every missing dependency and setuptools (the build backend of -e .).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
WHEELS=""
VENV=""
MAKE_VENV=1
TINY=0
OUT=""
KEEP=0

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) WHEELS="${2:?--wheels needs a folder of wheels}"; shift 2 ;;
    --venv) VENV="${2:?--venv needs a folder}"; shift 2 ;;
    --no-venv) MAKE_VENV=0; shift ;;
    --tiny) TINY=1; shift ;;
    --out) OUT="${2:?--out needs a file name}"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1'. Run scripts/gpu_check.sh --help for the options." >&2; exit 2 ;;
  esac
done
if [[ "$DEVICE" != cuda && "$DEVICE" != cpu ]]; then
  echo "gpu_check.sh: GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'." >&2
  exit 2
fi
if [[ -n "$WHEELS" && ! -d "$WHEELS" ]]; then
  echo "gpu_check.sh: --wheels $WHEELS is not a folder; give the folder that holds the .whl files." >&2
  exit 2
fi
DATE="$(date +%Y-%m-%d)"
if [[ -z "$OUT" ]]; then
  if [[ "$DEVICE" == cuda ]]; then OUT="$REPO/results/bench/gpu_$DATE.json"; else OUT="$REPO/results/bench/cpu_check_$DATE.json"; fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/distillbench-gpu-check.XXXXXX")"
cleanup() { if [[ "$KEEP" == 1 ]]; then echo "scratch folder kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
: > "$WORK/parts.tsv"
export WANDB_MODE=disabled

# ---------------------------------------------------------------- sizes
if [[ "$TINY" == 1 ]]; then
  BENCH_ARGS=(--teacher resnet8 --student resnet8 --images 48 --test-images 16 --batch-size 16 --rounds 2 --steps 2
              --warmup 1 --workers 0 --count-ops --ops-steps 1 --paths reference_loop,reference,fast)
  TEACHER=resnet8
  TRAIN_IMAGES=64
  TEST_IMAGES=16
  TRAIN_OVERRIDES=(teacher=resnet8 student=resnet8 distiller.method.num_negatives=63 dataset.batch_size=16
                   dataset.num_workers=0 dataset.test_num_workers=0)
else
  # 17,000 images keep CRD's 16,384 negatives; the teacher cache then costs 2.75M teacher forwards.
  BENCH_ARGS=(--images 17000 --rounds 10 --steps 25 --warmup 10 --count-ops
              --paths reference_loop,reference,reference_compiled,fast,fast_cached,fast_cached_compiled,fast_cached_step_compiled)
  TEACHER=resnet32x4
  TRAIN_IMAGES=50000
  TEST_IMAGES=10000
  TRAIN_OVERRIDES=()
fi
if [[ -n "${GPU_CHECK_BENCH_ARGS:-}" ]]; then
  read -r -a BENCH_ARGS <<< "$GPU_CHECK_BENCH_ARGS"
fi

# ---------------------------------------------------------------- parts
run_part() {  # NAME COMMAND...: run it, append "NAME<TAB>status<TAB>seconds" to parts.tsv, never stop the script
  local name="$1" start=$SECONDS status=0
  shift
  echo "== $name"
  "$@" || status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >> "$WORK/parts.tsv"
  [[ "$status" == 0 ]] || echo "== $name FAILED (exit status $status)"
  return 0
}
passed() { grep -q "^$1	0	" "$WORK/parts.tsv"; }

install() {
  local pip_args=()
  [[ -z "$WHEELS" ]] || pip_args=(--no-index --find-links "$WHEELS")
  python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install --quiet ${pip_args[@]+"${pip_args[@]}"} -e "$REPO[dev]"
}

check_device() {
  "$PY" - "$DEVICE" <<'EOF'
import sys

import torch

device = sys.argv[1]
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); a CUDA GPU visible: {torch.cuda.is_available()}")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit(f"No CUDA GPU is visible to torch {torch.__version__} (built for CUDA {torch.version.cuda}). Install a "
             "CUDA build of torch (put its wheel in the --wheels folder, or use a machine whose python has one: the "
             "venv sees the system's packages), check nvidia-smi, or run GPU_CHECK_DEVICE=cpu for the CPU check.")
if device == "cuda":
    print(torch.cuda.get_device_name())
EOF
}

cuda_tests() {
  local files=()
  mapfile -t files < <(grep -rl --include='*.py' 'pytest.mark.cuda' "$REPO/tests")
  (cd "$REPO" && "$PY" -m pytest -q -m cuda -p no:cacheprovider --junitxml "$WORK/cuda_tests.xml" "${files[@]}")
}

bench() {
  "$PY" "$REPO/scripts/bench.py" --device "$DEVICE" "${BENCH_ARGS[@]}" --json "$WORK/bench.json" --out "$WORK/bench.txt"
}

training() {
  "$PY" "$REPO/scripts/make_fake_cifar100.py" --root "$WORK/cifar" --train "$TRAIN_IMAGES" --test "$TEST_IMAGES"
  "$PY" - "$TEACHER" "$WORK/teacher.pth" <<'EOF'
import sys

import torch

from distillbench.models import create_model

torch.manual_seed(0)  # a random teacher: the check times and runs the recipe, it does not reach its accuracy
torch.save({"model": create_model(sys.argv[1], num_classes=100).state_dict()}, sys.argv[2])
EOF
  (cd "$WORK" && "$PY" -m distillbench experiment=crd_resnet32x4_8x4 ${TRAIN_OVERRIDES[@]+"${TRAIN_OVERRIDES[@]}"} \
    dataset.root="$WORK/cifar" dataset.verify_checksums=false teacher.checkpoint="$WORK/teacher.pth" \
    teacher.expected_acc1=null trainer.epochs=2 trainer.device="$DEVICE" trainer.progress=false \
    logger.wandb.mode=disabled paths.runs="$WORK/runs" paths.cache="$WORK/cache")
}

if [[ "$MAKE_VENV" == 1 ]]; then
  VENV="${VENV:-$WORK/venv}"
  run_part install install
  PY="$VENV/bin/python"
else
  PY="$(command -v python || command -v python3 || true)"
  if [[ -z "$PY" ]]; then
    echo "gpu_check.sh: --no-venv uses the python on PATH, and there is none; drop --no-venv to create a venv." >&2
    exit 2
  fi
  printf 'install\t0\t0\n' >> "$WORK/parts.tsv"
fi
if passed install; then
  run_part device check_device
fi
if passed install && passed device; then
  run_part cuda_tests cuda_tests
  run_part bench bench
  run_part training training
fi
[[ -x "$PY" ]] || PY=python3
(cd "$REPO" && "$PY" "$REPO/scripts/gpu_check_report.py" --work "$WORK" --out "$OUT" --device "$DEVICE")
