#!/bin/sh
# Packet-rate benchmark: quiverd against DPDK's vhost PMD, same run, same generator.
#   sudo scripts/bench.sh                      # 3 runs, all tests, 64 and 1500 bytes
#   sudo scripts/bench.sh --runs 5 --window 10 --tests vm2vm --sizes 64
# Arguments go to quiver-bench (see `target/release/quiver-bench --help`).
# Results: target/bench-results/<UTC timestamp>/ (table.txt, samples.tsv, summary.tsv,
# ratios.svg, logs/).
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p quiver-quiverd -p quiver-bench
exec target/release/quiver-bench --quiverd target/release/quiverd "$@"
