#!/usr/bin/env bash
# bench.sh — meshd against tinc 1.0 (switch mode) and the bare underlay, in one run on this machine.
#
#   sudo ./scripts/bench.sh [ROUNDS] [--out FILE]
#
# Two hosts md-bench-h1 / md-bench-h2 (network namespaces) share a veth underlay (10.202.0.1 <->
# 10.202.0.2, MTU 1500). Each round measures, one system after the other:
#   raw veth     the underlay itself                                    (target 10.202.0.2)
#   meshd        release build, TAP in `address` mode, `cipher = "auto"`  (10.90.0.1 -> 10.90.0.2)
#                (AES-256-GCM where the CPU has AES instructions), then the same pair again with
#                `cipher = "chacha20-poly1305"` (row meshd-chacha)
#   relay        scripts/bench-relay.c: a plaintext TAP<->UDP relay in C  (10.93.0.1 -> 10.93.0.2)
#   tinc 1.0     Debian `tinc`, Mode = switch, default cipher and digest  (10.91.0.1 -> 10.91.0.2)
# and for each: one iperf3 TCP flow h1 -> h2 (SECS seconds), four parallel flows (-P 4), the average
# of 100 pings 10 ms apart, and the daemons' CPU seconds (user+system of both daemons, from
# /proc/PID/stat around the single-flow run) per GB received. The VPN daemons are started before
# and stopped after their measurement, so only one runs at a time. The relay does the least any
# userspace TAP tunnel must do per packet (no crypto, no offloads, one poll loop): its RTT is the
# floor a userspace design reaches on this machine, which meshd's RTT is set against.
#
# Scaling: then, in the same round, meshd's aggregate throughput against the cores it may use. A
# third host md-bench-h3 joins h1 and h2 on a second underlay, a Linux bridge inside the namespace
# md-bench-u (10.205.0.1-3, MTU 1500), where a 3-node meshd network (10.92.0.1-3, TAP in `address`
# mode) is formed once the operator's way (init on h1, invite/join into h2 and h3). For each of
# (C cores, W workers) = (1, 1), (N, 1), (N, N) with N = min(nproc, 4), the three daemons start
# afresh with `workers = W` in every config and are confined to CPUs 0..C-1 (taskset), and 4 TCP
# flows run at once for SECS seconds: iperf3 -P 2 from h2 and -P 2 from h3, each to its own iperf3
# server on h1's overlay address (iperf3 and the kernel may use every CPU). Recorded: the sum of
# both clients' received rates, the three daemons' CPU seconds during it per GB received, the
# cores the receiving daemon (h1, which carries all 4 flows) kept busy, and the senders' TCP
# retransmits (reordering inside the tunnel shows up there first).
#
# Prints one line per system and round, then a markdown table of the medians with the ratios
# meshd/tinc, meshd/raw and meshd/relay and the RTT each adds to raw, a second table "4 flows
# between 3 hosts (h2, h3 -> h1)" with one row per (cores, workers) and their ratios to the
# one-core row, the machine and the command. --out FILE writes those tables
# into FILE between the markers `<!-- bench.sh:begin -->` and `<!-- bench.sh:end -->` (replacing
# the previous run; appended when the markers are absent; the file is created when missing).
#
# Environment: SECS (iperf3 seconds, default 5), BENCH_SKIP_MESHD=1, BENCH_SKIP_TINC=1, BENCH_SKIP_RELAY=1,
# BENCH_SKIP_SCALING=1 (leave the 3-host scaling part out; implied by BENCH_SKIP_MESHD=1),
# BENCH_NO_WORKERS_KEY=1 (for meshd builds without the key: the scaling part runs without setting
# `workers`, so both of its rows use the build's default), MESHD_BIN (use this binary instead of
# building target/release/meshd).

set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

ROUNDS=3
OUT=''
ORIG_ARGS=("$@")
while (($#)); do
	case $1 in
	--out)
		[[ $# -ge 2 ]] || usage
		OUT=$2
		shift 2
		;;
	--out=*)
		OUT=${1#--out=}
		shift
		;;
	-h | --help) usage ;;
	*)
		[[ $1 =~ ^[1-9][0-9]*$ ]] || usage
		ROUNDS=$1
		shift
		;;
	esac
done
SECS=${SECS:-5}
[[ $SECS =~ ^[1-9][0-9]*$ ]] || md_die "SECS must be a positive number of seconds"
SKIP_MESHD=${BENCH_SKIP_MESHD:-0}
SKIP_TINC=${BENCH_SKIP_TINC:-0}
SKIP_SCALING=${BENCH_SKIP_SCALING:-0}
SKIP_RELAY=${BENCH_SKIP_RELAY:-0}
[[ $SKIP_MESHD == 1 ]] && SKIP_SCALING=1
NO_WORKERS_KEY=${BENCH_NO_WORKERS_KEY:-0}

PREFIX=md-bench-
H1=${PREFIX}h1
H2=${PREFIX}h2
H3=${PREFIX}h3
UNDERLAY=${PREFIX}u
IPERF_PORT=5201
SCALING_PORTS=(5202 5203) # h1's iperf3 servers for the clients in h2 and h3
SCALING_MAX_CORES=$(nproc)
((SCALING_MAX_CORES <= 4)) || SCALING_MAX_CORES=4
# "CORES:WORKERS" per scaling measurement: one core, then N cores with 1 worker and with N workers.
SCALING_RUNS=("1:1")
((SCALING_MAX_CORES == 1)) || SCALING_RUNS+=("$SCALING_MAX_CORES:1" "$SCALING_MAX_CORES:$SCALING_MAX_CORES")
WORK=''
MESHD=''
declare -a DAEMON_PIDS=()

cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	md_run_cleanup "$status" "$WORK" "$PREFIX" "${DAEMON_PIDS[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

md_require_root "${ORIG_ARGS[@]}"
tools=(ip:iproute2 ss:iproute2 ping:iputils-ping iperf3:iperf3 python3:python3 cc:build-essential)
[[ $SKIP_TINC == 1 ]] || tools+=(tincd:tinc)
md_ensure_tools "${tools[@]}"

if [[ $SKIP_MESHD != 1 ]]; then
	md_section "Building meshd (release)"
	if [[ -n ${MESHD_BIN:-} ]]; then
		MESHD=$MESHD_BIN
		md_info "using MESHD_BIN=$MESHD"
	else
		md_info '$ cargo build --release'
		md_cargo build --release
		MESHD=$(md_target_bin release meshd)
	fi
	[[ -x $MESHD ]] || md_die "no meshd binary at $MESHD (set MESHD_BIN, or BENCH_SKIP_MESHD=1 to leave meshd out)"
fi

md_destroy_prefix "$PREFIX"
WORK=$(mktemp -d /tmp/md-bench.XXXXXX)
RESULTS=$WORK/results.tsv
SCALING_RESULTS=$WORK/scaling.tsv
: >"$RESULTS"
: >"$SCALING_RESULTS"

# -------------------------------------------------------------------------------------------------
md_section "Topology: $H1 10.202.0.1 <-> $H2 10.202.0.2 (veth, MTU 1500)"
md_underlay_pair "$H1" "$H2" 10.202.0
md_wait_until 5 ip netns exec "$H1" ping -c 1 -W 1 10.202.0.2 || md_die "the underlay does not answer pings"

# -------------------------------------------------------------------------------------------------
# Measurement of one system: prints and records "round system gbps_1 gbps_4 rtt_ms cpu_s_per_gb".

iperf_json() { # TARGET_IP OUTFILE [iperf3 client options...]
	local target=$1 out=$2 pid
	shift 2
	md_spawn "$H2" "$WORK/iperf3-server.log" iperf3 -s -1 -B "$target" -p "$IPERF_PORT"
	pid=$MD_LAST_PID
	md_wait_tcp_listen "$H2" "$IPERF_PORT" || { md_warn "iperf3 server did not start"; return 1; }
	local rc=0
	ip netns exec "$H1" iperf3 -c "$target" -p "$IPERF_PORT" -t "$SECS" -J "$@" >"$out" 2>&1 || rc=$?
	md_stop "$pid" 2
	return "$rc"
}

json_field() { # FILE FIELD -> end.sum_received.FIELD, or "nan"
	python3 -c '
import json, sys
try:
    print(json.load(open(sys.argv[1]))["end"]["sum_received"][sys.argv[2]])
except Exception:
    print("nan")' "$1" "$2"
}

json_retransmits() { # FILE... -> sum of end.sum_sent.retransmits over the files, or "nan"
	python3 -c '
import json, sys
try:
    print(sum(json.load(open(f))["end"]["sum_sent"]["retransmits"] for f in sys.argv[1:]))
except Exception:
    print("nan")' "$@"
}

cpu_s_per_gb() { # TICKS_BEFORE TICKS_AFTER BYTES -> CPU seconds per GB, or "nan"
	python3 -c 'import sys
t, b = (int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]), float(sys.argv[4])
print(f"{t / (b / 1e9):.2f}" if b > 0 else "nan")' "$1" "$2" "$(getconf CLK_TCK)" "$3"
}

measure() { # ROUND NAME TARGET_IP [DAEMON_PID...]
	local round=$1 name=$2 target=$3
	shift 3
	local -a pids=("$@")
	local c0 c1 bps1 bytes1 bps4 rtt cpu_per_gb retr1 retr4

	c0=$(md_cpu_ticks "${pids[@]}")
	iperf_json "$target" "$WORK/$name-1.json" || md_warn "$name: single-flow iperf3 failed (see $WORK/$name-1.json)"
	c1=$(md_cpu_ticks "${pids[@]}")
	bps1=$(json_field "$WORK/$name-1.json" bits_per_second)
	bytes1=$(json_field "$WORK/$name-1.json" bytes)

	iperf_json "$target" "$WORK/$name-4.json" -P 4 || md_warn "$name: 4-flow iperf3 failed (see $WORK/$name-4.json)"
	bps4=$(json_field "$WORK/$name-4.json" bits_per_second)
	retr1=$(json_retransmits "$WORK/$name-1.json")
	retr4=$(json_retransmits "$WORK/$name-4.json")

	rtt=$(ip netns exec "$H1" ping -c 100 -i 0.01 -q "$target" 2>/dev/null | awk -F/ '/^(rtt|round-trip)/ { print $5 }')
	rtt=${rtt:-nan}

	if ((${#pids[@]} == 0)); then
		cpu_per_gb=-
	else
		cpu_per_gb=$(cpu_s_per_gb "$c0" "$c1" "$bytes1")
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$bps1" "$bps4" "$rtt" "$cpu_per_gb" \
		"$retr1" "$retr4" >>"$RESULTS"
	python3 -c 'import sys
r, n, b1, b4, rtt, cpu, t1, t4 = sys.argv[1:]
g = lambda v: f"{float(v) / 1e9:.3f}"
print(f"    round {r}  {n:<6} gbps={g(b1)}  gbps_P4={g(b4)}  rtt_ms={rtt}  cpu_s_per_gb={cpu}  retransmits={t1}/{t4}")' \
		"$round" "$name" "$bps1" "$bps4" "$rtt" "$cpu_per_gb" "$retr1" "$retr4"
}

# -------------------------------------------------------------------------------------------------
# meshd: two nodes with `address` mode TAPs in one network, formed once per run the operator way:
# `meshd init` founds the network on h1, whose daemon then runs while `meshd invite` on h1 makes a
# token and `meshd join` inside h2 (over the underlay, to h1's daemon) writes h2's config, key and
# certificate. h1's daemon stops again; each round starts both daemons afresh.

# The meshd pair: init on h1, invite/join into h2 (scripts/lib.sh md_meshd_pair_setup), once per run.
meshd_setup() {
	md_meshd_pair_setup "$MESHD" "$WORK/meshd" "$H1" "$H2" 10.202.0
}

# Sets `cipher` in both pair configs: "auto" (AES-256-GCM where the CPU has AES instructions) or
# "chacha20-poly1305", so one run measures meshd with each cipher.
meshd_cipher() { # auto|chacha20-poly1305
	local i
	for i in 1 2; do
		md_meshd_set "$WORK/meshd/h$i.toml" cipher "$1"
	done
}

meshd_up() {
	MD_PAIR_PIDS=()
	md_meshd_pair_up "$MESHD" "$WORK/meshd" "$H1" "$H2"
	DAEMON_PIDS=("${MD_PAIR_PIDS[@]}")
}

# -------------------------------------------------------------------------------------------------
# Scaling: a 3-node meshd network on the bridge underlay (10.205.0.x, overlay 10.92.0.x), formed once
# per run like the pair above; each measurement restarts its daemons with `workers = W`.

SCALING_DIR=''
scaling_setup() {
	local i ns
	# A second underlay for the 3-host part only, so the 2-host numbers keep their plain veth.
	md_section "Topology (scaling): $H1, $H2, $H3 10.205.0.1-3 on bridge br0 in $UNDERLAY (veth, MTU 1500)"
	md_ns "$H3"
	md_ns "$UNDERLAY"
	ip -n "$UNDERLAY" link add br0 type bridge
	ip -n "$UNDERLAY" link set br0 up
	for i in 1 2 3; do
		ns=${PREFIX}h$i
		md_veth "$ns" s0 "$UNDERLAY" "h$i"
		ip -n "$UNDERLAY" link set "h$i" mtu 1500 master br0 up
		ip -n "$ns" link set s0 mtu 1500 up
		ip -n "$ns" addr add "10.205.0.$i/24" dev s0
	done
	for i in 2 3; do
		md_wait_until 5 ip netns exec "$H1" ping -c 1 -W 1 "10.205.0.$i" ||
			md_die "the scaling underlay does not answer pings (h1 -> 10.205.0.$i)"
	done
	md_wait_until 5 ip netns exec "$H2" ping -c 1 -W 1 10.205.0.3 ||
		md_die "the scaling underlay does not answer pings (h2 -> 10.205.0.3)"
	SCALING_DIR=$WORK/meshd-3
	md_meshd_mesh_setup "$MESHD" "$SCALING_DIR" 10.205.0 10.92.0 "$H1" "$H2" "$H3"
	scaling_configure 1 # a build without the key fails here, before any measurement
}

# Sets `workers = W` in the three configs (unless BENCH_NO_WORKERS_KEY=1) and checks meshd accepts them.
scaling_configure() { # WORKERS
	local i cfg
	for i in 1 2 3; do
		cfg=$SCALING_DIR/h$i.toml
		[[ $NO_WORKERS_KEY == 1 ]] || md_meshd_set_int "$cfg" workers "$1"
		# `meshd pubkey` loads the config: a build that rejects it fails here, not after 30 s of waiting.
		"$MESHD" pubkey --config "$cfg" >/dev/null 2>"$SCALING_DIR/h$i-check.log" || {
			cat "$SCALING_DIR/h$i-check.log" >&2
			md_die "meshd rejects $cfg (a build without the \`workers\` key? BENCH_NO_WORKERS_KEY=1 leaves it out)"
		}
	done
}

scaling_up() { # CORES WORKERS: the daemons run with `workers = WORKERS` on CPUs 0..CORES-1 only
	local pid
	scaling_configure "$2"
	MD_MESH_PIDS=()
	md_meshd_mesh_up "$MESHD" "$SCALING_DIR" 10.92.0 "$H1" "$H2" "$H3"
	DAEMON_PIDS=("${MD_MESH_PIDS[@]}")
	for pid in "${DAEMON_PIDS[@]}"; do # -a: every thread; threads made later inherit the mask
		taskset -a -p -c "0-$(($1 - 1))" "$pid" >/dev/null || md_die "taskset could not confine meshd (pid $pid) to $1 core(s)"
	done
}

json_sum() { # FIELD FILE... -> sum of end.sum_received.FIELD over the files, or "nan"
	python3 -c '
import json, sys
try:
    print(sum(json.load(open(f))["end"]["sum_received"][sys.argv[1]] for f in sys.argv[2:]))
except Exception:
    print("nan")' "$@"
}

# Prints and records "round cores workers bps cpu_s_per_gb h1_cores": 2 flows h2 -> h1 and 2 flows
# h3 -> h1 at once; h1_cores = the CPU seconds of h1's daemon (the first pid) per second of the flows.
measure_scaling() { # ROUND CORES WORKERS DAEMON_PID...
	local round=$1 cores=$2 w=$3 c0 c1 r0 r1 t0 t1 i bps bytes cpu_per_gb h1_cores retr
	shift 3
	local -a pids=("$@") servers=() clients=() files=()
	for i in 0 1; do
		md_spawn "$H1" "$WORK/scaling-server-$i.log" iperf3 -s -1 -B 10.92.0.1 -p "${SCALING_PORTS[i]}"
		servers+=("$MD_LAST_PID")
	done
	for i in 0 1; do
		md_wait_tcp_listen "$H1" "${SCALING_PORTS[i]}" || md_warn "scaling: iperf3 server on port ${SCALING_PORTS[i]} did not start"
	done
	c0=$(md_cpu_ticks "${pids[@]}")
	r0=$(md_cpu_ticks "${pids[0]}")
	t0=$(date +%s.%N)
	for i in 0 1; do # the clients in h2 and h3, started together
		files+=("$WORK/scaling-w$w-h$((i + 2)).json")
		md_spawn "${PREFIX}h$((i + 2))" "${files[i]}" iperf3 -c 10.92.0.1 -p "${SCALING_PORTS[i]}" -t "$SECS" -P 2 -J
		clients+=("$MD_LAST_PID")
	done
	for i in 0 1; do
		wait "${clients[i]}" || md_warn "scaling, workers=$w: iperf3 from h$((i + 2)) failed (see ${files[i]})"
	done
	c1=$(md_cpu_ticks "${pids[@]}")
	r1=$(md_cpu_ticks "${pids[0]}")
	t1=$(date +%s.%N)
	for i in 0 1; do md_stop "${servers[i]}" 2; done
	bps=$(json_sum bits_per_second "${files[@]}")
	bytes=$(json_sum bytes "${files[@]}")
	cpu_per_gb=$(cpu_s_per_gb "$c0" "$c1" "$bytes")
	retr=$(json_retransmits "${files[@]}")
	h1_cores=$(python3 -c 'import sys
ticks, secs = int(sys.argv[2]) - int(sys.argv[1]), float(sys.argv[4]) - float(sys.argv[3])
print(f"{ticks / int(sys.argv[5]) / secs:.2f}" if secs > 0 else "nan")' "$r0" "$r1" "$t0" "$t1" "$(getconf CLK_TCK)")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$cores" "$w" "$bps" "$cpu_per_gb" "$h1_cores" "$retr" >>"$SCALING_RESULTS"
	python3 -c 'import sys
r, c, w, b, cpu, h1, retr = sys.argv[1:]
print(f"    round {r}  meshd  3 hosts, 4 flows, cores={c} workers={w}  gbps={float(b) / 1e9:.3f}  "
      f"cpu_s_per_gb={cpu}  h1_daemon_cores={h1}  retransmits={retr}")' \
		"$round" "$cores" "$w" "$bps" "$cpu_per_gb" "$h1_cores" "$retr"
}

# -------------------------------------------------------------------------------------------------
# The userspace floor: scripts/bench-relay.c, built here, one relay per host on UDP port 6656 with
# a TAP `mdrelay` holding 10.93.0.I/24.

RELAY=''
relay_setup() {
	RELAY=$WORK/bench-relay
	cc -O2 -o "$RELAY" "$MD_REPO/scripts/bench-relay.c" || md_die "building scripts/bench-relay.c failed"
}

relay_up() {
	local i
	DAEMON_PIDS=()
	for i in 1 2; do
		md_spawn "${PREFIX}h$i" "$WORK/relay-h$i.log" "$RELAY" mdrelay 6656 "10.202.0.$((3 - i))" 6656
		DAEMON_PIDS+=("$MD_LAST_PID")
		md_wait_until 5 ip -n "${PREFIX}h$i" link show mdrelay || {
			cat "$WORK/relay-h$i.log" >&2
			md_die "bench-relay did not create its TAP in h$i"
		}
		ip -n "${PREFIX}h$i" addr add "10.93.0.$i/24" dev mdrelay
		ip -n "${PREFIX}h$i" link set mdrelay up
	done
	md_wait_until 10 ip netns exec "$H1" ping -c 1 -W 1 10.93.0.2 || md_die "relay: 10.93.0.2 does not answer"
}

# -------------------------------------------------------------------------------------------------
# tinc 1.0: switch mode with the package's default cipher and digest; keys made once per run.

tinc_setup() {
	local i dir
	for i in 1 2; do
		dir=$WORK/tinc/h$i
		mkdir -p "$dir/hosts"
		{
			echo "Name = h$i"
			echo "Mode = switch"
			echo "DeviceType = tap"
			echo "Interface = tinc0"
			echo "AddressFamily = ipv4"
			if ((i == 1)); then echo "ConnectTo = h2"; fi
		} >"$dir/tinc.conf"
		printf 'Address = 10.202.0.%s\nPort = 655\n' "$i" >"$dir/hosts/h$i"
		# Same overlay MTU as the peers' reference measurements (1400).
		# shellcheck disable=SC2016 # $INTERFACE is expanded by tincd's shell, not this one
		printf '#!/bin/sh\nip link set "$INTERFACE" mtu 1400 up\nip addr add 10.91.0.%s/24 dev "$INTERFACE"\n' "$i" >"$dir/tinc-up"
		chmod +x "$dir/tinc-up"
		tincd -c "$dir" -K2048 </dev/null >"$dir/keygen.log" 2>&1 || {
			cat "$dir/keygen.log" >&2
			md_die "tincd -K failed"
		}
	done
	cp "$WORK/tinc/h1/hosts/h1" "$WORK/tinc/h2/hosts/h1"
	cp "$WORK/tinc/h2/hosts/h2" "$WORK/tinc/h1/hosts/h2"
}

tinc_up() {
	local i dir
	DAEMON_PIDS=()
	for i in 1 2; do
		dir=$WORK/tinc/h$i
		md_spawn "${PREFIX}h$i" "$dir/tincd.log" tincd -c "$dir" -D --pidfile="$dir/tincd.pid"
		DAEMON_PIDS+=("$MD_LAST_PID")
	done
	md_wait_until 30 ip netns exec "$H1" ping -c 1 -W 1 10.91.0.2 || {
		tail -n 20 "$WORK/tinc/h1/tincd.log" "$WORK/tinc/h2/tincd.log" >&2
		md_die "tinc: 10.91.0.2 does not answer after 30 s"
	}
}

daemons_down() {
	local pid
	for pid in "${DAEMON_PIDS[@]}"; do md_stop "$pid" 5; done
	DAEMON_PIDS=()
	sleep 1
}

# -------------------------------------------------------------------------------------------------
[[ $SKIP_MESHD == 1 ]] || meshd_setup
[[ $SKIP_RELAY == 1 ]] || relay_setup
[[ $SKIP_TINC == 1 ]] || tinc_setup
[[ $SKIP_SCALING == 1 ]] || scaling_setup

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
md_section "Measuring: $ROUNDS round(s), iperf3 ${SECS}s per run (1 flow and -P 4), ping -c 100 -i 0.01"
if [[ $SKIP_SCALING != 1 ]]; then
	md_info "then meshd on 3 hosts, 4 flows at once (h2 -P 2 and h3 -P 2 -> h1), cores:workers = ${SCALING_RUNS[*]}"
	[[ $NO_WORKERS_KEY != 1 ]] ||
		md_warn "BENCH_NO_WORKERS_KEY=1: \`workers\` is not set, so every scaling run uses the build's default"
fi
for ((r = 1; r <= ROUNDS; r++)); do
	measure "$r" raw 10.202.0.2
	if [[ $SKIP_MESHD != 1 ]]; then
		meshd_cipher auto
		meshd_up
		# What `auto` negotiated on this machine, for the table's label.
		AUTO_CIPHER=$("$MESHD" status --config "$WORK/meshd/h1.toml" --json 2>/dev/null | python3 -c '
import json, sys
peers = json.load(sys.stdin).get("peers", [])
print(next((p["cipher"] for p in peers if p.get("cipher")), "-"))' 2>/dev/null) || AUTO_CIPHER=-
		measure "$r" meshd 10.90.0.2 "${DAEMON_PIDS[@]}"
		daemons_down
		meshd_cipher chacha20-poly1305
		meshd_up
		measure "$r" meshd-chacha 10.90.0.2 "${DAEMON_PIDS[@]}"
		daemons_down
	fi
	if [[ $SKIP_RELAY != 1 ]]; then
		relay_up
		measure "$r" relay 10.93.0.2 "${DAEMON_PIDS[@]}"
		daemons_down
	fi
	if [[ $SKIP_TINC != 1 ]]; then
		tinc_up
		measure "$r" tinc 10.91.0.2 "${DAEMON_PIDS[@]}"
		daemons_down
	fi
	if [[ $SKIP_SCALING != 1 ]]; then
		for run in "${SCALING_RUNS[@]}"; do
			scaling_up "${run%%:*}" "${run##*:}"
			measure_scaling "$r" "${run%%:*}" "${run##*:}" "${DAEMON_PIDS[@]}"
			daemons_down
		done
	fi
done

# -------------------------------------------------------------------------------------------------
meshd_version=-
if [[ -n $MESHD ]]; then
	meshd_version=$("$MESHD" --version 2>/dev/null | awk '{ print $NF; exit }') || true
	[[ -n $meshd_version ]] ||
		meshd_version=$(awk -F'"' '/^version *=/ { print $2; exit }' "$MD_REPO/Cargo.toml")
	rev=$(git -C "$MD_REPO" rev-parse --short HEAD 2>/dev/null) || rev=''
	if [[ -n $rev ]]; then
		# Only code makes the binary differ; the output file itself is often being edited meanwhile.
		git -C "$MD_REPO" diff --quiet HEAD -- . ":(exclude)docs" ":(exclude)*.md" 2>/dev/null || rev+="+dirty"
		meshd_version+=" (git $rev)"
	fi
fi
tinc_version=-
[[ $SKIP_TINC == 1 ]] || tinc_version=$(tincd --version 2>/dev/null | awk 'NR == 1 { print $3 }')
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
cmd="sudo scripts/bench.sh"
((${#ORIG_ARGS[@]})) && cmd+=$(printf ' %q' "${ORIG_ARGS[@]}")
env_note="SECS=$SECS"
[[ $SKIP_MESHD == 1 ]] && env_note+=", BENCH_SKIP_MESHD=1"
[[ $SKIP_TINC == 1 ]] && env_note+=", BENCH_SKIP_TINC=1"
[[ $SKIP_RELAY == 1 ]] && env_note+=", BENCH_SKIP_RELAY=1"
[[ ${BENCH_SKIP_SCALING:-0} == 1 ]] && env_note+=", BENCH_SKIP_SCALING=1"
[[ $SKIP_SCALING != 1 && $NO_WORKERS_KEY == 1 ]] && env_note+=", BENCH_NO_WORKERS_KEY=1"

md_section "Summary (medians of $ROUNDS round(s))"
python3 - "$RESULTS" "$OUT" "$ROUNDS" "$cmd" "$env_note" "$(nproc)" "${cpu_model:-unknown CPU}" \
	"$(uname -r)" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$meshd_version" "$tinc_version" \
	"$(iperf3 --version 2>/dev/null | awk 'NR == 1 { print $2 }')" "$LOAD_AT_START" \
	"$SCALING_RESULTS" "$SECS" "$NO_WORKERS_KEY" "${AUTO_CIPHER:--}" <<'PY'
import math, os, re, statistics, sys

(results, out, rounds, cmd, env_note, ncpu, cpu_model, kernel, date, meshd_v, tinc_v, iperf_v, load,
 scaling_results, secs, no_workers_key, meshd_auto_cipher) = sys.argv[1:]

def num(s):
    try:
        v = float(s)
    except ValueError:
        return None
    return None if math.isnan(v) else v

rows = [line.rstrip("\n").split("\t") for line in open(results) if line.strip()]
systems = [s for s in ("raw", "meshd", "meshd-chacha", "relay", "tinc") if any(r[1] == s for r in rows)]
labels = {
    "raw": ("raw veth (no VPN)", "-"),
    "meshd": (f"meshd {meshd_v}, cipher auto ({meshd_auto_cipher})", "L2, TAP (address mode)"),
    "meshd-chacha": (f"meshd {meshd_v}, chacha20-poly1305", "L2, TAP (address mode)"),
    "relay": ("plaintext relay (scripts/bench-relay.c)", "L2, TAP, no crypto: userspace floor"),
    "tinc": (f"tinc {tinc_v}", "switch (L2, TAP)"),
}
# column -> (index in a row, scale, format)
cols = {"g1": (2, 1e-9, "{:.3f}"), "g4": (3, 1e-9, "{:.3f}"), "rtt": (4, 1, "{:.3f}"), "cpu": (5, 1, "{:.1f}")}

def median(system, col):
    idx, scale, _ = cols[col]
    vals = [num(r[idx]) for r in rows if r[1] == system]
    vals = [v * scale for v in vals if v is not None]
    return statistics.median(vals) if vals else None

med = {s: {c: median(s, c) for c in cols} for s in systems}

def fmt(s, c):
    v = med[s][c]
    return "-" if v is None else cols[c][2].format(v)

def ratio(a, b, c):
    if a not in med or b not in med:
        return None
    x, y = med[a][c], med[b][c]
    return None if x is None or not y else f"{x / y:.2f}"

lines = []
lines.append("<!-- bench.sh:begin -->")
lines.append(f"### meshd vs tinc 1.0 vs raw veth — {date}")
lines.append("")
lines.append(f"- Machine: {ncpu} CPUs ({cpu_model}), Linux {kernel}, load average {load} at start; iperf3 {iperf_v}")
lines.append(f"- Command: `{cmd}` ({env_note}; medians of {rounds} round(s), each system measured in turn)")
lines.append("- Two network namespaces on a veth underlay (MTU 1500); iperf3 TCP h1 -> h2; RTT = average of "
             "`ping -c 100 -i 0.01`; CPU = user+system seconds of both daemons during the single-flow run, per GB received.")
lines.append("")
lines.append("| system | mode | TCP 1 flow Gbit/s | TCP 4 flows Gbit/s | RTT ms | daemon CPU s per GB |")
lines.append("|---|---|---:|---:|---:|---:|")
for s in systems:
    name, mode = labels[s]
    lines.append(f"| {name} | {mode} | {fmt(s, 'g1')} | {fmt(s, 'g4')} | {fmt(s, 'rtt')} | {fmt(s, 'cpu')} |")
ratios = [(f"{a} / {b}", a, b) for a in ("meshd", "meshd-chacha") for b in ("tinc", "raw", "relay")
          if a in med and b in med]
if ratios:
    lines.append("")
    lines.append("| ratio | TCP 1 flow | TCP 4 flows | RTT | CPU per GB |")
    lines.append("|---|---:|---:|---:|---:|")
    for label, a, b in ratios:
        cells = [ratio(a, b, c) or "-" for c in ("g1", "g4", "rtt", "cpu")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Throughput ratios above 1 and RTT or CPU ratios below 1 favour meshd.")
if "raw" in med and med["raw"]["rtt"] is not None:
    added = [f"{s} +{med[s]['rtt'] - med['raw']['rtt']:.3f} ms" for s in systems
             if s != "raw" and med[s]["rtt"] is not None]
    if added:
        lines.append("")
        lines.append("RTT added to the raw veth's: " + ", ".join(added) + ".")

# Scaling: rows "round cores workers bps cpu_s_per_gb h1_cores".
srows = [line.rstrip("\n").split("\t") for line in open(scaling_results) if line.strip()]
runs = []
for r in srows:
    key = (int(r[1]), int(r[2]))
    if key not in runs:
        runs.append(key)

def smedian(run, idx, scale):
    vals = [num(r[idx]) for r in srows if (int(r[1]), int(r[2])) == run]
    vals = [v * scale for v in vals if v is not None]
    return statistics.median(vals) if vals else None

smed = {run: (smedian(run, 3, 1e-9), smedian(run, 4, 1), smedian(run, 5, 1), smedian(run, 6, 1)) for run in runs}
sfmt = lambda v, f: "-" if v is None else f.format(v)
plural = lambda n, word: f"{n} {word}" + ("" if n == 1 else "s")
rlabel = lambda run: f"meshd on {plural(run[0], 'core')}, {plural(run[1], 'worker')}"
if srows:
    lines.append("")
    lines.append("#### 4 flows between 3 hosts (h2, h3 -> h1)")
    lines.append("")
    lines.append(f"Three network namespaces on a Linux bridge underlay (its own namespace, veth ports, MTU 1500), one "
                 f"meshd network of three nodes; for each row the daemons restart with `workers = W` in all three "
                 f"configs and are confined to C cores (`taskset`; iperf3 and the kernel may use every core), then "
                 f"iperf3 -P 2 from h2 and iperf3 -P 2 from h3 run at once ({secs} s) to two servers on h1. Gbit/s = sum "
                 f"of both clients' received rates; CPU = user+system seconds of the three daemons during the flows, "
                 f"per GB received; h1 cores = CPU seconds per second of h1's daemon, which carries all four flows; "
                 f"TCP retransmits = segments both clients sent again (reordering in the tunnel shows there).")
    if no_workers_key == "1":
        lines.append("")
        lines.append("**`workers` was not set (BENCH_NO_WORKERS_KEY=1, a meshd build without the key): every row ran "
                     "with the build's default worker count.**")
    lines.append("")
    lines.append("| system | TCP 4 flows Gbit/s | daemon CPU s per GB | h1 daemon cores | TCP retransmits |")
    lines.append("|---|---:|---:|---:|---:|")
    for run in runs:
        g, c, h, t = smed[run]
        lines.append(f"| {rlabel(run)} | {sfmt(g, '{:.3f}')} | {sfmt(c, '{:.1f}')} | {sfmt(h, '{:.2f}')} | {sfmt(t, '{:.0f}')} |")
    base = runs[0]
    for run in runs[1:]:
        cells = []
        for k in (0, 1, 2):
            x, y = smed[run][k], smed[base][k]
            cells.append("-" if x is None or not y else f"{x / y:.2f}")
        lines.append(f"| ratio ({run[0]} cores, {run[1]} w) / ({base[0]} core, {base[1]} w) | " + " | ".join(cells) + " | |")

lines.append("")
lines.append("<details><summary>Every round</summary>")
lines.append("")
lines.append("| round | system | TCP 1 flow Gbit/s | TCP 4 flows Gbit/s | RTT ms | CPU s per GB | TCP retransmits, 1 / 4 flows |")
lines.append("|---:|---|---:|---:|---:|---:|---:|")
for r in rows:
    g = lambda v: "-" if num(v) is None else f"{num(v) / 1e9:.3f}"
    lines.append(f"| {r[0]} | {r[1]} | {g(r[2])} | {g(r[3])} | {r[4]} | {r[5]} | {r[6]} / {r[7]} |")
if srows:
    lines.append("")
    lines.append("| round | 4 flows between 3 hosts | TCP 4 flows Gbit/s | CPU s per GB | h1 daemon cores | TCP retransmits |")
    lines.append("|---:|---|---:|---:|---:|---:|")
    for r in srows:
        g = "-" if num(r[3]) is None else f"{num(r[3]) / 1e9:.3f}"
        lines.append(f"| {r[0]} | {rlabel((int(r[1]), int(r[2])))} | {g} | {r[4]} | {r[5]} | {r[6]} |")
lines.append("")
lines.append("</details>")
lines.append("<!-- bench.sh:end -->")
section = "\n".join(lines) + "\n"
print(section)

if out:
    existed = os.path.exists(out)
    text = open(out).read() if existed else "# Performance\n\n"
    pat = re.compile(r"<!-- bench\.sh:begin -->.*?<!-- bench\.sh:end -->\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open(out, "w").write(text)
    if not existed:  # under sudo, a new file belongs to whoever owns the directory, not to root
        st = os.stat(os.path.dirname(os.path.abspath(out)))
        os.chown(out, st.st_uid, st.st_gid)
    print(f"(written to {out})")
PY
