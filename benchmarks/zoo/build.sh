#!/usr/bin/env bash
# Rebuild a shipped model from its recipe and data (benchmarks/zoo/NAME.json), then pack it into the
# package. Resumable: stop it with Ctrl-C and run it again; finished steps are skipped.
#   benchmarks/zoo/build.sh NAME DATA [WORK]   (DATA: see "hint" in NAME.json; WORK: runs/zoo/NAME)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
NAME=${1:?usage: benchmarks/zoo/build.sh NAME DATA [WORK]}
DATA=${2:?usage: benchmarks/zoo/build.sh NAME DATA [WORK]}
WORK=${3:-runs/zoo/$NAME}
"$PY" benchmarks/zoo/zoo.py train "$NAME" --data "$DATA" --work "$WORK"
"$PY" benchmarks/zoo/zoo.py pack "$NAME" --work "$WORK"
