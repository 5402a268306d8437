#!/usr/bin/env bash
# bench/fleet/matrix.sh: the runs behind BENCHMARKS.md's fleet tables, in the order they were
# made (the Ansible rows of iteration 1 at RTT 0, N = 10 and 100, came from an earlier
# invocation of run.sh with the same harness and versions). An Ansible first run plus
# steady state at N = 500 takes 10-15 minutes here; the whole list about 4 hours.
# The chom rows of the first block (iterations 1-3, an earlier binary) were moved to
# results/raw-previous.tsv once the final binary had run every chom cell again
# (iterations 4-9 below).
set -euo pipefail
cd "$(dirname "$0")"
./run.sh --tools chom,chom-tuned,pyinfra --ns "10 100 500" --rtts "0 50" --iters 3
./run.sh --tools ansible-tuned --ns "10 100" --rtts 0 --iters 2 --first-iter 2
./run.sh --tools ansible-tuned --ns "10 100" --rtts 50 --iters 3
./run.sh --tools ansible-default --ns "10 100" --rtts 50 --iters 1
./run.sh --tools ansible-tuned --ns 500 --rtts "0 50" --iters 1
./run.sh --tools ansible-default --ns 500 --rtts 0 --iters 1
./run.sh --tools chom,pyinfra,ansible-tuned --ns 200 --rtts 0 --iters 1
# more runs, for medians of 3 everywhere
./run.sh --tools chom,pyinfra,ansible-tuned --ns 200 --rtts 0 --iters 2 --first-iter 2
./run.sh --tools ansible-default --ns "10 100" --rtts "0 50" --iters 2 --first-iter 2
./run.sh --tools ansible-tuned --ns 500 --rtts "0 50" --iters 2 --first-iter 2
./run.sh --tools ansible-default --ns 500 --rtts 0 --iters 2 --first-iter 2
# the binary of the previous round (its chom rows are now in results/raw-previous.tsv)
./run.sh --tools chom --ns "10 100 200 500" --rtts 0 --iters 3 --first-iter 4
./run.sh --tools chom --ns "10 100 500" --rtts 50 --iters 3 --first-iter 4
./run.sh --tools chom,pyinfra --ns 200 --rtts 0 --iters 3 --first-iter 7
./run.sh --tools ansible-default --ns 500 --rtts 50 --iters 1
# this round's binary: chom and pyinfra back to back at N = 200 (twelve pairs), every other
# chom cell again
./run.sh --tools chom,pyinfra --ns 200 --rtts 0 --iters 3 --first-iter 10
./run.sh --tools chom --ns "10 100 500" --rtts 0 --iters 3 --first-iter 10
./run.sh --tools chom --ns "10 100 500" --rtts 50 --iters 3 --first-iter 10
./run.sh --tools chom,pyinfra --ns 200 --rtts 0 --iters 9 --first-iter 13
# the last cell with one run: default Ansible at N = 500, RTT 50
./run.sh --tools ansible-default --ns 500 --rtts 50 --iters 2 --first-iter 2
# 2026-12-06, explicit `chom reconcile` and the handoff to `chom daemon`: five back-to-back
# iterations at N = 200 (each tool block starts at load1 < 1.0), then tuned Ansible once
./run.sh --tools chom,pyinfra,chom-handoff,chom-handoff-default --ns 200 --rtts 0 --iters 5 --first-iter 22 --max-load 1.0
./run.sh --tools chom,ansible-tuned --ns 200 --rtts 0 --iters 1 --first-iter 27 --max-load 1.0
