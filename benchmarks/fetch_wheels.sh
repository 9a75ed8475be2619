#!/usr/bin/env bash
# Download the wheels of benchmarks/wheels.txt for the GPU machine (CPython 3.12, manylinux x86_64) into .whl/
# (ignored by git), from the repository root:  bash benchmarks/fetch_wheels.sh   (about 45 MiB; pip needs PyPI)
# Then on the GPU machine: python3 benchmarks/gpu_suite.py --install-wheels .whl --out $OUT   (carry .whl there)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$(dirname "$0")/../.whl" -r "$(dirname "$0")/wheels.txt"
