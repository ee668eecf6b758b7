#!/usr/bin/env bash
# flood-bench.sh — TCP throughput between containers on two meshd hosts, quiet and under a
# handshake flood (3,000 valid-mac1 initiations a second to each host from 256 addresses), in
# alternating rounds, printed as a ratio (issue 14's goal: at least 0.80).
#
#   ./scripts/flood-bench.sh            (as root; FLOOD_BENCH_ROUNDS=3 by default)
#
# It runs the ignored benchmark test `containers::flood::throughput_under_a_handshake_flood` with
# meshd built in release mode; the hosts, containers and flooder are network namespaces made and
# removed by the test.

set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

md_require_root "$@"
md_ensure_tools ip:iproute2 ping:iputils-ping iperf3:iperf3 cc:build-essential
md_section "throughput under a handshake flood (release build)"
md_cargo test --release --test it containers::flood::throughput_under_a_handshake_flood \
	-- --ignored --nocapture --test-threads=1
