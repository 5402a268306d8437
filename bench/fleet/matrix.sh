#!/usr/bin/env bash
# bench/fleet/matrix.sh: the runs behind BENCHMARKS.md's fleet tables, in the order they were
# made (the Ansible rows of iteration 1 at RTT 0, N = 10 and 100, came from an earlier
# invocation of run.sh with the same harness and versions). chom and pyinfra: 3 runs of
# every cell; tuned Ansible: 3 runs at N = 10 and 100; default Ansible and N = 500: one run
# (an Ansible first run plus steady state at N = 500 takes about 12 minutes here). The
# last line adds N = 200, where the targets of the fleet issue are set.
set -euo pipefail
cd "$(dirname "$0")"
./run.sh --tools chom,chom-tuned,pyinfra --ns "10 100 500" --rtts "0 50" --iters 3
./run.sh --tools ansible-tuned --ns "10 100" --rtts 0 --iters 2 --first-iter 2
./run.sh --tools ansible-tuned --ns "10 100" --rtts 50 --iters 3
./run.sh --tools ansible-default --ns "10 100" --rtts 50 --iters 1
./run.sh --tools ansible-tuned --ns 500 --rtts "0 50" --iters 1
./run.sh --tools ansible-default --ns 500 --rtts 0 --iters 1
./run.sh --tools chom,pyinfra,ansible-tuned --ns 200 --rtts 0 --iters 1
