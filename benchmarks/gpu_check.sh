#!/usr/bin/env bash
# Every GPU figure of jlvm's speed benchmarks in one call, on a machine with a GPU and no
# network (such as the lent H100: Python 3.12, JAX with CUDA, flax, optax, orbax, numpyro,
# torch, matplotlib, scikit-learn and tqdm installed; distrax not).
#
#   bash benchmarks/gpu_check.sh [--table-epochs N] [--out DIR] [--quick]
#
# It needs, in the repository root and carried with the tree (both are git-ignored):
#   .whl/    wheels of what the machine lacks, fetched beforehand where there is network
#            (benchmarks/README.md, "The GPU check", has the command)
#   .data/binarized_mnist.npz, or JLVM_DATA_DIR naming a folder that holds it
# and prints, one after the other, each script's own JSON lines:
#   1. training throughput: jlvm, hand-written JAX, NumPyro and PyTorch side by side
#      (train_throughput.py, one epoch of binarized MNIST per repeat, paired ratios)
#   2. 16 vmapped seeds against one (train_throughput.py --num-seeds 16)
#   3. the importance-sampled log-likelihood of all 10,000 test images with K=5000, jlvm
#      and vectorized PyTorch (eval_throughput.py)
#   4. the binarized-MNIST table rows (binarized_mnist_table.py; --table-epochs epochs each,
#      default 10: the 1000-epoch table does not fit one 10-minute call)
# Everything printed is also kept in DIR/gpu_check.log (default runs/gpu-check-TIMESTAMP).
# --quick: tiny sizes on any device, to check the script itself (set JLVM_GPU_CHECK_CPU=1
# to allow a machine without a GPU); its figures mean nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

table_epochs=10
out=""
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --table-epochs) table_epochs=${2:?--table-epochs needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$table_epochs" in ''|*[!0-9]*|0) echo "gpu_check.sh: --table-epochs must be a positive integer, got $table_epochs" >&2; exit 2 ;; esac
out=${out:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
if [ -e "$out" ]; then echo "gpu_check.sh: $out exists; choose another --out (nothing is overwritten)" >&2; exit 2; fi
python=${PYTHON:-python3}

# what the machine lacks comes from the carried wheels; jlvm itself from this tree
if ! "$python" -c "import distrax" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check.sh: distrax is not installed and .whl/ holds no wheels (see benchmarks/README.md, The GPU check)" >&2
    exit 2
  fi
  site=$(mktemp -d)/site
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${JLVM_DATA_DIR:-}" ] && [ -f .data/binarized_mnist.npz ]; then
  export JLVM_DATA_DIR="$root/.data"
fi
export PYTHONUNBUFFERED=1
if [ ! -f "${JLVM_DATA_DIR:-/nonexistent}/binarized_mnist.npz" ]; then
  echo "gpu_check.sh: binarized MNIST not found: put binarized_mnist.npz in .data/ or set JLVM_DATA_DIR" >&2
  exit 2
fi

platform=$("$python" -c "import jax; print(jax.default_backend())")
if [ "$platform" != "gpu" ] && [ "${JLVM_GPU_CHECK_CPU:-0}" != 1 ]; then
  echo "gpu_check.sh: JAX sees no GPU (backend $platform); set JLVM_GPU_CHECK_CPU=1 to run anyway" >&2
  exit 2
fi
mkdir -p "$out"
log="$out/gpu_check.log"
say() { echo "$@" | tee -a "$log"; }
run() {  # one measurement: its command, then what it prints, into the log too
  say "\$ $*"
  "$@" 2>&1 | tee -a "$log"
}
say "# jlvm GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$python" -c "import jax, sys; print('# JAX', jax.__version__, 'devices:', jax.devices(), 'python', sys.version.split()[0])" | tee -a "$log"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/# /' | tee -a "$log"
peers=()
for peer in numpyro torch; do
  if "$python" -c "import $peer" 2>/dev/null; then peers+=("$peer"); else say "# $peer is not installed: its rows are left out"; fi
done

if [ "$quick" = 1 ]; then
  data=(--data digits); steps=(--steps 5 --repeats 1); eval_size=(--num-samples 50 --num-examples 20)
  table=(--vae-epochs 1 --iwae-epochs 1 --eval-samples 20 --eval-examples 20 --only vae,iwae5)
else
  data=(); steps=(--repeats 3); eval_size=(--num-samples 5000)
  table=(--vae-epochs "$table_epochs" --iwae-epochs "$table_epochs")
fi

say "## 1. training throughput, side by side"
run "$python" benchmarks/train_throughput.py --impl jlvm jax "${peers[@]}" "${data[@]}" "${steps[@]}"
say "## 2. 16 vmapped seeds against one"
run "$python" benchmarks/train_throughput.py --impl jlvm --num-seeds 16 "${data[@]}" "${steps[@]}"
say "## 3. importance-sampled test log-likelihood"
for impl in jlvm "${peers[@]}"; do
  [ "$impl" = numpyro ] && continue  # eval_throughput compares jlvm with PyTorch
  run "$python" benchmarks/eval_throughput.py --impl "$impl" "${data[@]}" "${eval_size[@]}"
done
say "## 4. the binarized-MNIST table"
run "$python" benchmarks/binarized_mnist_table.py "${table[@]}" --runs "$out/table"
say "# done; the log is $log"
