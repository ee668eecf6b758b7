#!/usr/bin/env bash
# profile.sh — where the meshd daemons spend their CPU while they carry one TCP flow.
#
#   sudo ./scripts/profile.sh [--out DIR]
#   ./scripts/profile.sh --report DIR
#
# Two hosts md-prof-h1 / md-prof-h2 (network namespaces) on a veth underlay (10.203.0.1 <->
# 10.203.0.2, MTU 1500) form a meshd pair as bench.sh does (`meshd init` on h1, `meshd invite` on
# h1, `meshd join` inside h2; TAP in `address` mode, 10.93.0.1 -> 10.93.0.2, offloads on). Then:
#
#   1. baseline: one iperf3 TCP flow h1 -> h2 for 5 s, nothing attached;
#   2. profile: one iperf3 TCP flow h1 -> h2 for SECS seconds; from 3 s in, for SECS - 5 seconds,
#      `perf record -e cpu-clock -F FREQ -g --call-graph CALLGRAPH` runs on each daemon (one perf
#      per daemon, both at once): h1 is the sending side (TAP read -> segment -> seal -> GSO send),
#      h2 the receiving side (recvmmsg/GRO -> open -> coalesce -> TAP write).
#
# The report (also written to DIR/summary.md) gives, per side, the share of samples by where the
# sampled instruction is (self time): kernel, split by the system call it runs under; ChaCha20-
# Poly1305 (ring); meshd's own code by module; memcpy by caller; tokio; the rest. Then the share by
# stage of the data path (self and callees), the top 10 symbols, and the throughput and CPU with
# and without perf attached. DIR keeps perf.data, `perf report` output, folded stacks and, when
# inferno-flamegraph or flamegraph.pl is on PATH, flame graph SVGs (h1.svg, h2.svg).
# --report DIR redoes the analysis of an earlier run's DIR (no namespaces; perf needs to read it).
#
# Environment: SECS (iperf3 seconds of the profiled run, default 15, at least 8), FREQ (sampling
# rate in Hz, default 1999), CALLGRAPH (dwarf, dwarf,STACK_BYTES or fp; default dwarf, which copies
# 8 KiB of stack per sample; fp needs a binary built with RUSTFLAGS=-Cforce-frame-pointers=yes),
# MESHD_BIN (use this binary instead of building target/release/meshd; the release profile has
# debug = 1, so either has the symbols and unwind tables perf needs).

set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

OUT=''
REPORT_ONLY=0
ORIG_ARGS=("$@")
while (($#)); do
	case $1 in
	--out | --report)
		[[ $# -ge 2 ]] || usage
		[[ $1 == --report ]] && REPORT_ONLY=1
		OUT=$2
		shift 2
		;;
	-h | --help) usage ;;
	*) usage ;;
	esac
done
SECS=${SECS:-15}
FREQ=${FREQ:-1999}
CALLGRAPH=${CALLGRAPH:-dwarf}
if ! [[ $SECS =~ ^[0-9]+$ ]] || ((SECS < 8)); then md_die "SECS must be a whole number of seconds, at least 8"; fi
[[ $FREQ =~ ^[1-9][0-9]*$ ]] || md_die "FREQ must be a positive number (Hz)"
[[ $CALLGRAPH =~ ^(dwarf(,[0-9]+)?|fp)$ ]] || md_die "CALLGRAPH must be dwarf, dwarf,STACK_BYTES or fp"
WARMUP=3
PROFILE_SECS=$((SECS - 5))
BASELINE_SECS=5

PREFIX=md-prof-
H1=${PREFIX}h1
H2=${PREFIX}h2
TARGET=10.93.0.2
IPERF_PORT=5201
WORK=''
MESHD=''
declare -a DAEMON_PIDS=() PERF_PIDS=()

# -------------------------------------------------------------------------------------------------
# Analysis: reads DIR/h1.perf.data and DIR/h2.perf.data, writes DIR/summary.md and prints it.

analyse() {
	local dir=$1 side flamegraph=''
	if command -v inferno-flamegraph >/dev/null 2>&1; then
		flamegraph=inferno-flamegraph
	elif command -v flamegraph.pl >/dev/null 2>&1; then
		flamegraph=flamegraph.pl
	fi
	for side in h1 h2; do
		[[ -s $dir/$side.perf.data ]] || md_die "no $dir/$side.perf.data"
		md_info "\$ perf report -i $side.perf.data --stdio --no-children --sort dso,symbol -g none"
		perf report -i "$dir/$side.perf.data" --stdio --no-children --sort dso,symbol -g none \
			>"$dir/$side.report.txt" 2>/dev/null
		# --no-inline: one frame per return address, named by the function the code was compiled
		# into (perf's inline frames come from addr2line and are not named consistently).
		md_info "\$ perf script -i $side.perf.data --no-inline -F comm,tid,period,ip,sym,dso"
		perf script -i "$dir/$side.perf.data" --no-inline -F comm,tid,period,ip,sym,dso \
			>"$dir/$side.script.txt" 2>/dev/null
		# With inline frames, only to find samples in the inlined checksum loop (sum_be_words).
		md_info "\$ perf script -i $side.perf.data -F comm,ip,sym"
		perf script -i "$dir/$side.perf.data" -F comm,ip,sym >"$dir/$side.inline.txt" 2>/dev/null
	done
	python3 - "$dir" <<'PY'
import collections, json, os, re, sys

d = sys.argv[1]
SIDES = {"h1": "sender (h1)", "h2": "receiver (h2)"}

def is_kernel(dso):
    """[kernel.kallsyms] and modules ([tun], [veth], ...)."""
    return dso.startswith("[") and dso not in ("[unknown]", "[vdso]", "[vsyscall]", "[heap]", "[stack]")

def syscall(names):
    """The system call a kernel sample runs under: the frame do_syscall_64 called, or None."""
    if "do_syscall_64" not in names:
        return None
    i = names.index("do_syscall_64")
    if i == 0:
        return "entry and exit"
    f = names[i - 1]
    if f == "exit_to_user_mode_loop":
        return "return to user space (preempted, rescheduled)"
    name = re.sub(r"^(__x64_sys_|__ia32_sys_|__se_sys_|__do_sys_|_*sys_|ksys_|do_)", "", f)
    if name in ("read", "readv", "write", "writev") and any(n.startswith("tun_") for n in names):
        name += " (TAP)"
    return f"`{name}`"

MESHD_MODULES = [
    ("meshd::core::frames::segment", "segmenter (TSO cut, checksums inlined)"),
    ("meshd::core::frames::coalesce", "coalescer"),
    ("meshd::wire::checksum", "checksums"),
    ("meshd::core::frames", "frames (other)"),
    ("meshd::core::switch", "FDB / switch"),
    ("meshd::core::node", "node (encap/decap, sessions, queues)"),
    ("meshd::core::peer", "node (encap/decap, sessions, queues)"),
    ("meshd::core::buffer", "buffer pool"),
    ("meshd::wire", "wire parsing"),
    ("meshd::io::worker", "I/O worker (loops, TAP write, inlined read paths)"),
    ("meshd::io::udp", "UDP socket wrapper"),
    ("meshd::io::wait", "wait loop (ppoll)"),
    ("meshd::", "other meshd"),
]
COPIERS = [
    ("Segmenter::", "in the segmenter (super-frame into wire frames)"),
    ("Worker::flush", "in flush (sealed datagrams into the GSO buffer, before 2026-12-07)"),
    ("Coalescer", "in the coalescer (segments into one TAP write)"),
    ("meshd::core::node", "in the node"),
    ("Worker::run", "in the worker loop (the coalescer's staging copy, inlined there)"),
]

def category(names, dsos):
    """(category, detail) of a sample by its leaf frame (self time)."""
    sym, dso = names[0], dsos[0]
    if is_kernel(dso):
        return "kernel", syscall(names) or "interrupts while in user space (timer softirqs, IPIs)"
    if "ring_core_" in sym or sym.startswith("ring::") or "meshd_crypto::" in sym:
        aead = any(k in sym.lower() for k in ("chacha", "poly1305", "aes", "gcm", "ghash"))
        return "crypto", "AEAD seal/open (ring)" if aead else "ring / meshd_crypto (other)"
    if re.match(r"^_*mem(cpy|move)", sym):
        for n in names[1:]:
            for key, label in COPIERS:
                if key in n:
                    return "memcpy", label
        return "memcpy", "elsewhere"
    if re.match(r"^<?(tokio|mio)::", sym):
        return "tokio", ""
    if re.match(r"^<?(quinn_udp|tun_rs|socket2)::", sym):
        return "io crates", ""
    if "meshd::" in sym:
        for prefix, label in MESHD_MODULES:
            if prefix in sym:
                return "meshd", label
    if os.path.basename(dso).startswith(("libc.so", "libc-", "ld-linux")):
        return "libc (other)", ""
    if re.match(r"^<?(core|alloc|std|hashbrown)::", sym):
        for n in names[1:]:
            if "meshd::" in n:
                for prefix, label in MESHD_MODULES:
                    if prefix in n:
                        return "Rust std (slices, hashing, alloc)", f"called from the {label}"
        return "Rust std (slices, hashing, alloc)", "called from elsewhere"
    return "other", ""

# Stages: the first frame from the leaf up that names one; samples interrupted in user space are
# counted apart, not in the stage they interrupted.
STAGES = [
    (("DeferredTransmit::seal", "aes_gcm_seal", "chacha20_poly1305_seal"), "seal (AEAD, outside the node's lock)"),
    (("OpenJob::open", "Opener::open_in_place", "aes_gcm_open", "chacha20_poly1305_open"), "open (AEAD, outside the node's lock)"),
    (("Worker::send_outbox", "Worker::flush", "send_counted", "Udp::send_parts", "quinn_udp::imp::send"), "UDP send (GSO sendmsg)"),
    (("handle_tap_frame", "handle_tap_segments"), "switch + frame (node, under the lock)"),
    (("Segmenter::",), "segment super-frames (Segmenter)"),
    (("Worker::read_tap", "tun_do_read", "tun_chr_read_iter"), "TAP read (read of super-frames)"),
    (("Coalescer", "write_tap_vnet", "write_tap", "tun_get_user", "tun_chr_write_iter"), "coalesce + TAP write"),
    (("begin_datagram", "finish_datagram", "Node::handle_datagram"), "check + deliver (node, under the lock)"),
    (("UdpSocketState::recv", "recvmmsg"), "UDP receive (recvmmsg)"),
    (("Readiness::wait", "ppoll", "park", "epoll_wait", "tokio::runtime"), "wait loop (ppoll; before: tokio, epoll_wait)"),
    (("Worker::run",), "worker loop (inlined reads, batches, counters)"),
]

def stage(names, dsos):
    if is_kernel(dsos[0]) and "do_syscall_64" not in names:
        return "interrupts while in user space (timer softirqs, IPIs)"
    for n in names:
        for keys, label in STAGES:
            if any(k in n for k in keys):
                return label
    return "other"

KCOPY = re.compile(r"copy_user|rep_movs|copy_to_iter|copy_from_iter|copy_page|^memcpy|^memmove|csum_partial_copy")
RX_STACK = ("net_rx_action", "tcp_v4_rcv", "udp_queue_rcv_skb", "process_backlog", "netif_receive_skb")

def checksum_samples(path):
    """(samples, samples whose leaf address is checksum summing, sum_be_words, inlined or not)."""
    n = hits = 0
    leaf, in_leaf = None, False
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            if not line[0].isspace():
                n += 1
                leaf, in_leaf = None, False
                continue
            m = re.match(r"\s*([0-9a-f]+)\s+(.*)$", line)
            if not m:
                continue
            if leaf is None:
                leaf, in_leaf = m.group(1), True
            elif m.group(1) != leaf:
                in_leaf = False
            if in_leaf and "sum_be_words" in m.group(2):
                hits += 1
                leaf = ""  # count a sample once
    return n, hits

def parse(path):
    """Yields (period, chain) per sample; chain = [(symbol, dso)], leaf first."""
    period, chain = None, []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            if not line[0].isspace():
                if period is not None:
                    yield period, chain
                nums = [int(p) for p in line.split() if p.isdigit()]
                period, chain = (nums[-1] if len(nums) > 1 else 1), []
            else:
                m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
                chain.append((m.group(1), m.group(2)) if m else (line.strip(), "[unknown]"))
    if period is not None:
        yield period, chain

res = {}
for side in SIDES:
    r = dict(total=0, samples=0, cat=collections.Counter(), sub=collections.Counter(),
             stg=collections.Counter(), sym=collections.Counter(), kcopy=0, rx=0, whole=0)
    folded = collections.Counter()
    for period, chain in parse(os.path.join(d, f"{side}.script.txt")):
        chain = [(re.sub(r"::h[0-9a-f]{16}$", "", s), o) for s, o in chain]
        while chain and chain[-1][1] == "[unknown]":
            chain.pop()
        if not chain:
            continue
        names = [s for s, _ in chain]
        dsos = [o for _, o in chain]
        r["samples"] += 1
        r["total"] += period
        c, detail = category(names, dsos)
        r["cat"][c] += period
        r["sub"][(c, detail)] += period
        r["stg"][stage(names, dsos)] += period
        r["sym"][(names[0], os.path.basename(dsos[0]))] += period
        if is_kernel(dsos[0]) and KCOPY.search(names[0]):
            r["kcopy"] += period
        if "do_syscall_64" in names and any(k in n for n in names for k in RX_STACK):
            r["rx"] += period
        if any("Worker::run" in n for n in names):
            r["whole"] += period
        folded[";".join(["meshd-" + side] + [n.replace(" ", "_").replace(";", ",") for n in reversed(names)])] += 1
    with open(os.path.join(d, f"{side}.folded"), "w") as f:
        for stack, n in sorted(folded.items()):
            f.write(f"{stack} {n}\n")
    r["cs_samples"], r["cs_hits"] = checksum_samples(os.path.join(d, f"{side}.inline.txt"))
    res[side] = r

def pct(side, n):
    t = res[side]["total"]
    return f"{100 * n / t:.1f}" if t else "-"

def row(label, h1, h2):
    return f"| {label} | {pct('h1', h1)} | {pct('h2', h2)} |"

out = []
try:
    meta = json.load(open(os.path.join(d, "meta.json")))
    out += [f"- {meta[k]}" for k in ("machine", "command", "perf", "throughput", "cpu")]
except (OSError, ValueError, KeyError):
    pass
out.append(f"- samples: sender {res['h1']['samples']}, receiver {res['h2']['samples']}; stacks unwound up "
           f"to the worker loop: {pct('h1', res['h1']['whole'])}% / {pct('h2', res['h2']['whole'])}%")
out.append("")
out.append("Where the sampled instruction is (self time; % of each daemon's samples):")
out.append("")
out.append(f"| where | {SIDES['h1']} % | {SIDES['h2']} % |")
out.append("|---|---:|---:|")
order = ["kernel", "crypto", "meshd", "memcpy", "tokio", "io crates", "Rust std (slices, hashing, alloc)",
         "libc (other)", "other"]
labels = {"kernel": "kernel, by system call", "crypto": "crypto", "meshd": "meshd's own code",
          "memcpy": "memcpy / memmove in user space", "tokio": "tokio / mio",
          "io crates": "quinn-udp, tun-rs, socket2"}
for c in order:
    a, b = res["h1"]["cat"][c], res["h2"]["cat"][c]
    if not (a or b):
        continue
    out.append(row(f"**{labels.get(c, c)}**", a, b))
    if c in ("kernel", "crypto", "meshd", "memcpy", "Rust std (slices, hashing, alloc)"):
        details = {k[1] for s in SIDES for k in res[s]["sub"] if k[0] == c}
        small = {"h1": 0, "h2": 0}
        for k in sorted(details, key=lambda k: -(res["h1"]["sub"][(c, k)] + res["h2"]["sub"][(c, k)])):
            a, b = res["h1"]["sub"][(c, k)], res["h2"]["sub"][(c, k)]
            if max(a / res["h1"]["total"], b / res["h2"]["total"]) < 0.001:
                small["h1"] += a
                small["h2"] += b
                continue
            out.append(row(f"&nbsp;&nbsp;{k}", a, b))
        if max(small["h1"] / res["h1"]["total"], small["h2"] / res["h2"]["total"]) >= 0.0005:
            out.append(row("&nbsp;&nbsp;rest (each under 0.1%)", small["h1"], small["h2"]))
    if c == "meshd":
        cs = {s: (f"{100 * res[s]['cs_hits'] / res[s]['cs_samples']:.1f}" if res[s]["cs_samples"] else "-") for s in SIDES}
        out.append(f"| &nbsp;&nbsp;*of all samples: in checksum summing (`sum_be_words`, inlined into its callers)* | {cs['h1']} | {cs['h2']} |")
    if c == "kernel":
        out.append(row("&nbsp;&nbsp;*of the kernel: copies to and from user space*", res["h1"]["kcopy"], res["h2"]["kcopy"]))
        out.append(row("&nbsp;&nbsp;*of the kernel: receive path of a network stack run inside a system call*",
                       res["h1"]["rx"], res["h2"]["rx"]))
out.append("")
out.append("By stage (the first frame from the leaf up that names a stage; self and callees, kernel included):")
out.append("")
out.append(f"| stage | {SIDES['h1']} % | {SIDES['h2']} % |")
out.append("|---|---:|---:|")
stages = {k for s in SIDES for k in res[s]["stg"]}
for k in sorted(stages, key=lambda k: -(res["h1"]["stg"][k] + res["h2"]["stg"][k])):
    out.append(row(k, res["h1"]["stg"][k], res["h2"]["stg"][k]))
for side in SIDES:
    out.append("")
    out.append(f"Top 10 symbols, {SIDES[side]} (self):")
    out.append("")
    out.append("| % | symbol | object |")
    out.append("|---:|---|---|")
    for (s, o), n in res[side]["sym"].most_common(10):
        s = s if len(s) <= 80 else s[:77] + "..."
        out.append(f"| {pct(side, n)} | `{s}` | {o} |")
text = "\n".join(out) + "\n"
with open(os.path.join(d, "summary.md"), "w") as f:
    f.write(text)
print(text)
PY
	for side in h1 h2; do
		rm -f "$dir/$side.script.txt" "$dir/$side.inline.txt"
		if [[ -n $flamegraph ]]; then
			"$flamegraph" --title "meshd $side, one TCP flow (cpu-clock)" <"$dir/$side.folded" \
				>"$dir/$side.svg" 2>/dev/null && md_info "flame graph: $dir/$side.svg"
		fi
	done
	[[ -n $flamegraph ]] || md_info "no inferno-flamegraph or flamegraph.pl on PATH: no SVG (folded stacks in $dir/h*.folded)"
}

if ((REPORT_ONLY)); then
	md_ensure_tools perf:linux-perf python3:python3
	md_section "Analysing $OUT"
	analyse "$OUT"
	exit 0
fi

# -------------------------------------------------------------------------------------------------

cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	local pid
	for pid in "${PERF_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null; done
	md_run_cleanup "$status" "$WORK" "$PREFIX" "${DAEMON_PIDS[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

md_require_root "${ORIG_ARGS[@]}"
md_ensure_tools ip:iproute2 ss:iproute2 ping:iputils-ping iperf3:iperf3 python3:python3 perf:linux-perf

md_section "Building meshd (release)"
if [[ -n ${MESHD_BIN:-} ]]; then
	MESHD=$MESHD_BIN
	md_info "using MESHD_BIN=$MESHD"
else
	md_info '$ cargo build --release'
	md_cargo build --release
	MESHD=$(md_target_bin release meshd)
fi
[[ -x $MESHD ]] || md_die "no meshd binary at $MESHD (set MESHD_BIN)"

md_destroy_prefix "$PREFIX"
WORK=$(mktemp -d /tmp/md-prof-work.XXXXXX)
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/md-profile.XXXXXX)
mkdir -p "$OUT"

# -------------------------------------------------------------------------------------------------
md_section "Topology: $H1 10.203.0.1 <-> $H2 10.203.0.2 (veth, MTU 1500)"
md_underlay_pair "$H1" "$H2" 10.203.0
md_wait_until 5 ip netns exec "$H1" ping -c 1 -W 1 10.203.0.2 || md_die "the underlay does not answer pings"

# -------------------------------------------------------------------------------------------------
# The meshd pair, formed as bench.sh forms it (scripts/lib.sh): `meshd init` on h1, whose daemon
# runs while `meshd invite` on h1 makes a token and `meshd join` inside h2 writes h2's config; then
# both daemons, logging at warn level.

MD_PAIR_OVERLAY=10.93.0
MD_PAIR_PIDS=()
md_section "meshd pair"
md_meshd_pair_setup "$MESHD" "$WORK/meshd" "$H1" "$H2" 10.203.0
md_meshd_pair_up "$MESHD" "$WORK/meshd" "$H1" "$H2"
DAEMON_PIDS+=("${MD_PAIR_PIDS[@]}")
md_info "daemons: h1 pid ${DAEMON_PIDS[0]}, h2 pid ${DAEMON_PIDS[1]}"

# -------------------------------------------------------------------------------------------------
# iperf3 runs. iperf_start starts the server in h2 and the client in h1 in the background.

iperf_start() { # SECS OUTFILE
	md_spawn "$H2" "$WORK/iperf3-server.log" iperf3 -s -1 -B "$TARGET" -p "$IPERF_PORT"
	IPERF_SERVER=$MD_LAST_PID
	md_wait_tcp_listen "$H2" "$IPERF_PORT" || md_die "iperf3 server did not start"
	ip netns exec "$H1" iperf3 -c "$TARGET" -p "$IPERF_PORT" -t "$1" -J >"$2" 2>&1 &
	IPERF_CLIENT=$!
}

iperf_wait() {
	wait "$IPERF_CLIENT" || md_warn "iperf3 client failed"
	md_stop "$IPERF_SERVER" 2
}

# gbps FILE [FROM TO]: received Gbit/s, or the mean of the intervals that start in [FROM, TO).
gbps() {
	python3 - "$@" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
if len(sys.argv) > 2:
    lo, hi = float(sys.argv[2]), float(sys.argv[3])
    iv = [i["sum"] for i in j["intervals"] if lo - 0.01 <= i["sum"]["start"] < hi - 0.01]
    print(f"{sum(i['bytes'] for i in iv) * 8 / sum(i['seconds'] for i in iv) / 1e9:.2f}")
else:
    print(f"{j['end']['sum_received']['bits_per_second'] / 1e9:.2f}")
PY
}

iperf_cpu() { # FILE -> "client C, server S" (iperf3's own CPU, % of one core)
	python3 - "$1" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["end"]["cpu_utilization_percent"]
print(f"client {c['host_total']:.0f}%, server {c['remote_total']:.0f}%")
PY
}

cores() { # TICKS_BEFORE TICKS_AFTER SECONDS -> CPU cores used
	python3 -c 'import sys
b, a, s, hz = map(float, sys.argv[1:])
print(f"{(a - b) / hz / s:.2f}")' "$@" "$(getconf CLK_TCK)"
}

md_section "Baseline: one TCP flow for ${BASELINE_SECS}s, no perf attached"
c1=$(md_cpu_ticks "${DAEMON_PIDS[0]}") c2=$(md_cpu_ticks "${DAEMON_PIDS[1]}")
iperf_start "$BASELINE_SECS" "$OUT/iperf3-baseline.json"
iperf_wait
base_gbps=$(gbps "$OUT/iperf3-baseline.json")
base_cpu1=$(cores "$c1" "$(md_cpu_ticks "${DAEMON_PIDS[0]}")" "$BASELINE_SECS")
base_cpu2=$(cores "$c2" "$(md_cpu_ticks "${DAEMON_PIDS[1]}")" "$BASELINE_SECS")
md_info "$base_gbps Gbit/s; daemon CPU: h1 $base_cpu1 cores, h2 $base_cpu2 cores"

md_section "Profile: one TCP flow for ${SECS}s, perf on both daemons from ${WARMUP}s for ${PROFILE_SECS}s"
iperf_start "$SECS" "$OUT/iperf3-profile.json"
sleep "$WARMUP"
c1=$(md_cpu_ticks "${DAEMON_PIDS[0]}") c2=$(md_cpu_ticks "${DAEMON_PIDS[1]}")
for i in 1 2; do
	md_info "\$ perf record -e cpu-clock -F $FREQ -g --call-graph $CALLGRAPH -p ${DAEMON_PIDS[i - 1]} -o h$i.perf.data -- sleep $PROFILE_SECS"
	perf record -q -e cpu-clock -F "$FREQ" -g --call-graph "$CALLGRAPH" -p "${DAEMON_PIDS[i - 1]}" \
		-o "$OUT/h$i.perf.data" -- sleep "$PROFILE_SECS" >"$OUT/h$i.perf-record.log" 2>&1 &
	PERF_PIDS+=("$!")
done
for i in 1 2; do
	wait "${PERF_PIDS[i - 1]}" || md_die "perf record failed on h$i: $(cat "$OUT/h$i.perf-record.log")"
done
PERF_PIDS=()
prof_cpu1=$(cores "$c1" "$(md_cpu_ticks "${DAEMON_PIDS[0]}")" "$PROFILE_SECS")
prof_cpu2=$(cores "$c2" "$(md_cpu_ticks "${DAEMON_PIDS[1]}")" "$PROFILE_SECS")
iperf_wait
prof_gbps=$(gbps "$OUT/iperf3-profile.json" "$WARMUP" "$((WARMUP + PROFILE_SECS))")
md_info "$prof_gbps Gbit/s while perf ran; daemon CPU: h1 $prof_cpu1 cores, h2 $prof_cpu2 cores"

for pid in "${DAEMON_PIDS[@]}"; do md_stop "$pid" 5; done
DAEMON_PIDS=()

# -------------------------------------------------------------------------------------------------
rev=$(git -C "$MD_REPO" rev-parse --short HEAD 2>/dev/null) || rev='?'
git -C "$MD_REPO" diff --quiet HEAD 2>/dev/null || rev+="+dirty"
cmd="sudo scripts/profile.sh"
((${#ORIG_ARGS[@]})) && cmd+=$(printf ' %q' "${ORIG_ARGS[@]}")
python3 - "$OUT/meta.json" <<'PY' \
	"Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u '+%Y-%m-%d %H:%M UTC'), meshd git $rev, $(perf --version)" \
	"Command: \`$cmd\` (SECS=$SECS, FREQ=$FREQ, CALLGRAPH=$CALLGRAPH; binary $MESHD)" \
	"perf record -e cpu-clock -F $FREQ -g --call-graph $CALLGRAPH, one per daemon, $PROFILE_SECS s from $WARMUP s into a $SECS s iperf3 flow h1 -> h2" \
	"Throughput: $base_gbps Gbit/s without perf ($BASELINE_SECS s run), $prof_gbps Gbit/s while perf recorded; iperf3 CPU (% of one core) without perf $(iperf_cpu "$OUT/iperf3-baseline.json"), in the profiled run $(iperf_cpu "$OUT/iperf3-profile.json")" \
	"Daemon CPU (user+system, cores): without perf h1 $base_cpu1, h2 $base_cpu2; while perf recorded h1 $prof_cpu1, h2 $prof_cpu2"
import json, sys
keys = ("machine", "command", "perf", "throughput", "cpu")
json.dump(dict(zip(keys, sys.argv[2:])), open(sys.argv[1], "w"), indent=1)
PY

md_section "Analysis"
analyse "$OUT"
md_info "perf data, reports, folded stacks and iperf3 JSON in $OUT"
