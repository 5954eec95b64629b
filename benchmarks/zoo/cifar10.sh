#!/usr/bin/env bash
# Rebuild the shipped model "cifar10" from its recipe and data (benchmarks/zoo/cifar10.json), then pack it into
# the package. Resumable: stop it with Ctrl-C and run it again; finished steps are skipped.
#   benchmarks/zoo/cifar10.sh DATA [WORK]     (DATA: see "hint" in cifar10.json; WORK defaults to runs/zoo/cifar10)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DATA=${1:?usage: benchmarks/zoo/cifar10.sh DATA [WORK]}
WORK=${2:-runs/zoo/cifar10}
"$PY" benchmarks/zoo/zoo.py train cifar10 --data "$DATA" --work "$WORK"
"$PY" benchmarks/zoo/zoo.py pack cifar10 --work "$WORK"
