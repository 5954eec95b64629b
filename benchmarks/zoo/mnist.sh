#!/usr/bin/env bash
# Rebuild the shipped model "mnist" from its recipe and data (benchmarks/zoo/mnist.json), then pack it into
# the package. Resumable: stop it with Ctrl-C and run it again; finished steps are skipped.
#   benchmarks/zoo/mnist.sh DATA [WORK]     (DATA: see "hint" in mnist.json; WORK defaults to runs/zoo/mnist)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DATA=${1:?usage: benchmarks/zoo/mnist.sh DATA [WORK]}
WORK=${2:-runs/zoo/mnist}
"$PY" benchmarks/zoo/zoo.py train mnist --data "$DATA" --work "$WORK"
"$PY" benchmarks/zoo/zoo.py pack mnist --work "$WORK"
