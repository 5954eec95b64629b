#!/usr/bin/env bash
# Rebuild the shipped model "cifar10": benchmarks/zoo/cifar10.sh DATA [WORK] (see benchmarks/zoo/build.sh).
exec "$(dirname "$0")/build.sh" cifar10 "$@"
