#!/usr/bin/env bash
# The GPU benchmark, on a CUDA machine as it comes, from the repository root:
#
#     bench/run_gpu.sh [--quick] [tfmm bench options, e.g. --out DIR]
#
# The machine needs no package index. Its python3 (PYTHON=... picks another) must already have CUDA builds of
# jax/jaxlib and torch, and numba, optax, pandas, pyarrow, tqdm and matplotlib. The script then
# 1. installs what that image usually lacks, array-api-compat and tomli-w (pure Python), from
#    bench/gpu-wheels/ with `pip install --no-index --find-links`. `make gpu-wheels` fills that folder, at the
#    versions of constraints.txt, on a machine that reaches an index. The folder is git-ignored (wheels are
#    not committed), so copy it to the GPU machine with the checkout;
# 2. installs tfmm from this checkout with `pip install --no-deps --no-build-isolation -e .` (needs
#    setuptools >= 69 there). Without setuptools it maps the package as pyproject.toml does
#    (tfmm.backends = backends/, tfmm.reference = reference/, tfmm._bundled = data/) in a temporary folder of
#    links on PYTHONPATH, so nothing is installed;
# 3. prints nvidia-smi;
# 4. runs `python -m tfmm.cli bench --device cuda` on a grid sized to finish in about 8 minutes (--quick:
#    about 4): 2 assets, fee 0.3%, 1- and 30-day bouts, batches 1 .. 4,096, float32 and float64, jax and
#    torch with fee_path "auto" (what each picks on the GPU) and "kernel", and the reference, then one
#    tfmm.train step per backend (2 sets x 4 bouts of 3 days). What would start after --time-budget (the grid
#    gets 75% of it), or run longer than --max-call-seconds per call, is recorded as skipped.
#    Options given to this script come after these defaults and override them.
# Results: bench/results/<gpu-model>.json, .md, -batch.png and -bout.png (<gpu-model>-quick.* with --quick).
#
# BENCH_DEVICE=cpu runs the same steps without a GPU (to check the script). TFMM_GIT_COMMIT names the commit
# in the results when the copy of the checkout has no .git.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
DEVICE=${BENCH_DEVICE:-cuda}
WHEELS=bench/gpu-wheels
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_BREAK_SYSTEM_PACKAGES=1
export PYTHONSAFEPATH=1               # import tfmm as installed, never the bare tfmm/ of the working directory
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the GPU in one process

die() { echo "run_gpu.sh: $*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "no $PY (set PYTHON to the machine's python with jax and torch)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than Python 3.11"
"$PY" -c 'import jax, torch, numba, optax, pandas, pyarrow, tqdm, matplotlib' \
    || die "$PY lacks one of jax, torch, numba, optax, pandas, pyarrow, tqdm, matplotlib"

# 1. pure-Python dependencies, from the wheels folder
missing=()
"$PY" -c 'import array_api_compat' 2>/dev/null || missing+=(array-api-compat)
"$PY" -c 'import tomli_w' 2>/dev/null || missing+=(tomli-w)
if [ ${#missing[@]} -gt 0 ]; then
    [ -d "$WHEELS" ] || die "${missing[*]} missing and no $WHEELS/: run 'make gpu-wheels' where a package" \
        "index is reachable, then copy $WHEELS/ here"
    echo "installing ${missing[*]} from $WHEELS/"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps "${missing[@]}"
fi

# 2. tfmm from this checkout
tfmm_here() {
    "$PY" -c 'import pathlib, sys, tfmm, tfmm.backends, tfmm.reference
sys.exit(pathlib.Path(tfmm.__file__).resolve().parent != pathlib.Path("tfmm").resolve())' 2>/dev/null
}
has_setuptools() {
    "$PY" -c 'import importlib.util, sys, setuptools
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
sys.exit(not (v >= (70, 1) or (v >= (69, 0) and importlib.util.find_spec("wheel"))))' 2>/dev/null
}
if tfmm_here; then
    echo "tfmm: installed from this checkout"
elif has_setuptools; then
    echo "installing tfmm from this checkout (editable, no dependencies)"
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
else
    links_root=$(mktemp -d)
    trap 'rm -rf "$links_root"' EXIT
    links="$links_root/site"
    mkdir -p "$links/tfmm"
    for entry in "$PWD"/tfmm/*; do ln -s "$entry" "$links/tfmm/"; done
    ln -s "$PWD/backends" "$links/tfmm/backends"
    ln -s "$PWD/reference" "$links/tfmm/reference"
    ln -s "$PWD/data" "$links/tfmm/_bundled"
    export PYTHONPATH="$links${PYTHONPATH:+:$PYTHONPATH}"
    echo "tfmm: no setuptools >= 69 here; importing it through $links"
fi
tfmm_here || die "tfmm does not import from this checkout"
"$PY" -c 'import tfmm; print("tfmm", tfmm.__version__, "from", tfmm.__file__)'

# 3. the GPU
if command -v nvidia-smi >/dev/null; then
    nvidia-smi
elif [ "$DEVICE" = cuda ]; then
    die "nvidia-smi not found: no GPU driver here (BENCH_DEVICE=cpu runs on the CPU)"
else
    echo "nvidia-smi: not found (BENCH_DEVICE=$DEVICE)"
fi

# 4. the benchmark
quick=0
for arg in "$@"; do
    if [ "$arg" = --quick ]; then quick=1; fi
done
if [ "$quick" = 1 ]; then
    defaults=(--backends jax:auto,torch:auto,torch:kernel,reference --batches 1,256 --dtypes float32
              --repeats 2 --time-budget 120)
else
    defaults=(--backends jax:auto,jax:kernel,torch:auto,torch:kernel,reference --batches 1,64,4096
              --dtypes float32,float64 --repeats 3 --time-budget 270)
fi
set -x
"$PY" -m tfmm.cli bench --device "$DEVICE" --assets 2 --fees 0.003 --bout-days 1,30 --max-call-seconds 10 \
    --train quick "${defaults[@]}" "$@"
