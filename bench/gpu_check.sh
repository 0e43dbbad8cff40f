#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): run from the repository root on the GPU machine, unattended.
#
#   bash bench/gpu_check.sh [gpu_check.py options]     # e.g. --cpu, --parts cabb_bench,train_isus
#
# 1. Installs what the machine lacks, without a package registry: the wheels that
#    bench/gpu_wheels.sh put in bench/wheels/ (pycocotools, panopticapi-lite; carried with the
#    run), each only where its package does not import, into a private folder on PYTHONPATH.
# 2. Installs isus itself with --no-deps (editable, no build isolation, no index); where that
#    fails, isus is used from the checkout through PYTHONPATH.
#    (ISUS_GPU_CHECK_NO_INSTALL=1 skips 1 and 2: the CI test leaves its environment alone.)
# 3. Runs bench/gpu_check.py: figures to $OUT/gpu_figures.json (OUT defaults to ./gpu_check_out),
#    its output also to $OUT/gpu_check.log. About 8 minutes on one GPU; without CUDA, the CPU
#    fallback in under a minute.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
SITE="${TMPDIR:-/tmp}/isus_gpu_check_site"

{
  echo "gpu_check.sh: $($PY --version 2>&1) at $(command -v "$PY"), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  if [ -n "${ISUS_GPU_CHECK_NO_INSTALL:-}" ]; then
    # (tests/test_gpu_check.py: the environment is left as it is)
    echo "  ISUS_GPU_CHECK_NO_INSTALL set: nothing installed"
  elif ls bench/wheels/*.whl >/dev/null 2>&1; then
    missing=()
    for whl in bench/wheels/*.whl; do
      # the import name: the first line of the wheel's top_level.txt, else its distribution name
      mod=$("$PY" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
top = [n for n in z.namelist() if n.endswith(".dist-info/top_level.txt")]
print(z.read(top[0]).decode().split()[0] if top else sys.argv[1].split("/")[-1].split("-")[0].lower())' "$whl")
      if "$PY" -c "import $mod" >/dev/null 2>&1; then
        echo "  $mod: present, $(basename "$whl") not needed"
      else
        missing+=("$whl")
      fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
      echo "  installing ${missing[*]} into $SITE"
      if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target "$SITE" "${missing[@]}"; then
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
      else
        echo "  wheel install failed: the parts that need them will fail and say so"
      fi
    fi
  else
    echo "  no bench/wheels/*.whl (run bench/gpu_wheels.sh here and carry bench/wheels): nothing installed"
  fi
  here=$("$PY" -c 'import isus, pathlib; print(pathlib.Path(isus.__file__).resolve().parents[1])' 2>/dev/null)
  if [ "$here" = "$PWD" ]; then
    export ISUS_GPU_CHECK_INSTALL="already importable from this checkout"
  elif [ -n "${ISUS_GPU_CHECK_NO_INSTALL:-}" ]; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export ISUS_GPU_CHECK_INSTALL="PYTHONPATH (ISUS_GPU_CHECK_NO_INSTALL)"
  elif "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1; then
    export ISUS_GPU_CHECK_INSTALL="pip install --no-deps -e ."
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export ISUS_GPU_CHECK_INSTALL="PYTHONPATH (pip install --no-deps -e . failed)"
  fi
  echo "  isus: $ISUS_GPU_CHECK_INSTALL"
  "$PY" bench/gpu_check.py --out "$OUT" "$@"
} 2>&1 | tee "$OUT/gpu_check.log"
