#!/bin/sh
# The wheels the engine's process needs on a GPU machine that has torch, Triton, numpy, scipy, pandas,
# scikit-learn and numba but not the rest of evo's dependencies (the lent H100/H200 image, 2026-12: Python 3.12).
# Writes them to ${1:-.whl}; there: python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
# and PYTHONPATH=/tmp/site. GPU workers need none of them.
set -e
out=${1:-.whl}
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$out" \
    faiss-cpu ribs numpy-groupies sortedcontainers array-api-compat threadpoolctl \
    deap moocore cffi pycparser platformdirs \
    httpx2 httpcore2 anyio idna truststore typing-extensions \
    pydantic pydantic-core annotated-types typing-inspection
ls "$out" | wc -l
du -sh "$out"
