#!/usr/bin/env bash
# Rebuild the shipped model "photo": benchmarks/zoo/photo.sh DATA [WORK] (see benchmarks/zoo/build.sh).
exec "$(dirname "$0")/build.sh" photo "$@"
