#!/usr/bin/env bash
# rtt.sh — the round-trip time meshd adds, against the raw veth and the plaintext relay, with
# enough samples to compare two builds on a noisy machine.
#
#   sudo ./scripts/rtt.sh [ROUNDS] MESHD_BIN [MESHD_BIN...]
#
# One pair of network namespaces per system, all up at once: md-rtt-0h1/h2 the raw veth
# (10.220.0.1 <-> .2), md-rtt-1h1/h2 the relay (scripts/bench-relay.c, TAP 10.93.0.1 <-> .2),
# then one pair per meshd binary given (md-rtt-Kh1/h2, underlay 10.22K.0.0/24, overlay
# 10.9K.0.0/24, formed by init/invite/join as bench.sh does; K = 2, 3, ...). Each round pings every
# system in turn from h1 (COUNT pings, default 40, 5 ms apart), so a slow moment of the machine
# hits all systems alike; ROUNDS (default 25) rounds. Prints, per system, the median, mean and
# 90th percentile of all samples, then the median RTT each meshd build adds over the raw veth
# against what the relay adds, and their ratio (the fast-path issue's RTT target is a ratio of
# at most 1.25). bench.sh's RTT column is the mean of 100 pings after an iperf3 run, which moves
# by tens of microseconds between rounds here; this script is for comparing builds.
#
# Needs root, iproute2, iputils-ping, a C compiler and python3.

set -euo pipefail
MD_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$MD_REPO/scripts/lib.sh"

ROUNDS=25
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
	ROUNDS=$1
	shift
fi
(($# > 0)) || md_die "usage: $0 [ROUNDS] MESHD_BIN [MESHD_BIN...]"
BINS=("$@")
COUNT=${COUNT:-40}
PREFIX=md-rtt-
md_require_root "$@"
md_ensure_tools ip:iproute2 ping:iputils-ping python3:python3 cc:build-essential

WORK=$(mktemp -d /tmp/md-rtt.XXXXXX)
cleanup() {
	local status=$?
	set +e
	md_run_cleanup "$status" "$WORK" "$PREFIX"
}
trap cleanup EXIT

pair() { # K: namespaces PREFIX K h1/h2 on a veth underlay 10.22K.0.0/24
	md_underlay_pair "${PREFIX}${1}h1" "${PREFIX}${1}h2" "10.22$1.0"
}

md_destroy_prefix "$PREFIX"
md_section "Topology: raw veth, relay, and ${#BINS[@]} meshd pair(s)"
pair 0
pair 1
cc -O2 -o "$WORK/relay" "$MD_REPO/scripts/bench-relay.c" || md_die "building scripts/bench-relay.c failed"
for i in 1 2; do
	md_spawn "${PREFIX}1h$i" "$WORK/relay-h$i.log" "$WORK/relay" mdrelay 6656 "10.221.0.$((3 - i))" 6656
	md_wait_until 5 ip -n "${PREFIX}1h$i" link show mdrelay || md_die "bench-relay did not create its TAP"
	ip -n "${PREFIX}1h$i" addr add "10.93.0.$i/24" dev mdrelay
	ip -n "${PREFIX}1h$i" link set mdrelay up
done
TARGETS=("0:10.220.0.2:raw" "1:10.93.0.2:relay")
k=2
for bin in "${BINS[@]}"; do
	((k <= 9)) || md_die "at most 8 meshd binaries"
	pair "$k"
	MD_PAIR_OVERLAY=10.9$k.0 md_meshd_pair_setup "$bin" "$WORK/meshd$k" "${PREFIX}${k}h1" "${PREFIX}${k}h2" "10.22$k.0"
	MD_PAIR_OVERLAY=10.9$k.0 md_meshd_pair_up "$bin" "$WORK/meshd$k" "${PREFIX}${k}h1" "${PREFIX}${k}h2"
	TARGETS+=("$k:10.9$k.0.2:meshd$((k - 1)) ($bin)")
	k=$((k + 1))
done
md_wait_until 10 ip netns exec "${PREFIX}1h1" ping -c 1 -W 1 10.93.0.2 || md_die "relay: 10.93.0.2 does not answer"

md_section "Measuring: $ROUNDS rounds of $COUNT pings 5 ms apart per system, interleaved"
for ((r = 1; r <= ROUNDS; r++)); do
	for t in "${TARGETS[@]}"; do
		IFS=: read -r idx ip name <<<"$t"
		ip netns exec "${PREFIX}${idx}h1" ping -c "$COUNT" -i 0.005 "$ip" 2>/dev/null |
			awk -v n="$name" -F'time=' '/time=/ { split($2, a, " "); print n "\t" a[1] }' >>"$WORK/samples.tsv"
	done
done
python3 - "$WORK/samples.tsv" <<'PY'
import collections, statistics as st, sys
samples = collections.OrderedDict()
for line in open(sys.argv[1]):
    name, ms = line.rstrip("\n").split("\t")
    samples.setdefault(name, []).append(float(ms))
print(f"| system | samples | median ms | mean ms | p90 ms |")
print(f"|---|---:|---:|---:|---:|")
for name, v in samples.items():
    q = sorted(v)
    print(f"| {name} | {len(v)} | {st.median(v):.3f} | {st.mean(v):.3f} | {q[int(len(q) * 0.9)]:.3f} |")
raw = st.median(samples["raw"])
relay = st.median(samples["relay"]) - raw
print()
for name, v in samples.items():
    if name in ("raw", "relay"):
        continue
    added = st.median(v) - raw
    print(f"{name}: adds {added:+.3f} ms over raw; the relay adds {relay:+.3f} ms; ratio {added / relay:.2f}")
PY
