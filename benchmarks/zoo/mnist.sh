#!/usr/bin/env bash
# Rebuild the shipped model "mnist": benchmarks/zoo/mnist.sh DATA [WORK] (see benchmarks/zoo/build.sh).
exec "$(dirname "$0")/build.sh" mnist "$@"
