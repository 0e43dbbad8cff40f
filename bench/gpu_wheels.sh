#!/usr/bin/env bash
# Prepares bench/wheels/ for bench/gpu_check.sh: the packages isus and its tests need that the GPU
# machine's image lacks (it has no package registry), as prebuilt CPython 3.12 x86-64 wheels.
# Run it here (where pip reaches the registry), then carry bench/wheels with the run:
#
#   bash bench/gpu_wheels.sh
#   run(command="bash bench/gpu_check.sh", carry=["bench/wheels"], timeout_s=600)
#
# The image's package list (/work/.library/device/KINDS.md) has torch, torchvision, numpy, numba,
# opencv-python-headless, pillow, matplotlib, click, scipy, hypothesis, torchmetrics, pytest and
# scikit-image, but not pycocotools (isus.eval; tests/test_eval.py) nor panopticapi (which
# tests/test_eval.py imports: without it `pytest -m cuda tests` reports a collection error).
# --no-deps: their own needs are in the image (numpy, matplotlib, pillow, scikit-image;
# pycocotools' platformdirs is not imported by the modules isus uses). One version of each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
rm -rf bench/wheels
mkdir -p bench/wheels
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d bench/wheels "pycocotools==2.0.11" "panopticapi-lite==0.2.0"
ls -l bench/wheels
