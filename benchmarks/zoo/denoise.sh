#!/usr/bin/env bash
# Rebuild the shipped model "denoise": benchmarks/zoo/denoise.sh DATA [WORK] (see benchmarks/zoo/build.sh).
exec "$(dirname "$0")/build.sh" denoise "$@"
