# shellcheck shell=bash
# scripts/lib.sh — helpers shared by demo.sh, bench.sh and test.sh. Sourced, never executed.
#
# What it owns: terminal output (section headers, errors), prerequisite checks that install missing
# Debian packages when run as root, locating and running cargo (also under `sudo` when the Rust
# toolchain lives in the invoking user's home), and the life cycle of the network namespaces and
# background processes a script creates. Every namespace a script makes carries that script's
# prefix (md-demo-, md-bench-, ...), so cleanup removes exactly what the script made and scripts
# never collide with each other or with the integration tests.

MD_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---------------------------------------------------------------------------------------------
# Output

if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
	MD_BOLD=$'\033[1m' MD_RED=$'\033[31m' MD_GREEN=$'\033[32m' MD_RESET=$'\033[0m'
else
	MD_BOLD='' MD_RED='' MD_GREEN='' MD_RESET=''
fi

md_section() { printf '\n%s==> %s%s\n' "$MD_BOLD" "$*" "$MD_RESET"; }
md_info() { printf '    %s\n' "$*"; }
md_ok() { printf '    %sok%s  %s\n' "$MD_GREEN" "$MD_RESET" "$*"; }
md_fail() { printf '    %sFAIL%s %s\n' "$MD_RED" "$MD_RESET" "$*"; }
md_warn() { printf '%swarning:%s %s\n' "$MD_BOLD" "$MD_RESET" "$*" >&2; }
md_die() {
	printf '%serror:%s %s\n' "$MD_RED" "$MD_RESET" "$*" >&2
	exit 1
}

# Prints a command (shell-quoted) before running it, so the output shows exactly what happened.
md_run() {
	printf '    $'
	printf ' %q' "$@"
	printf '\n'
	"$@"
}

# ---------------------------------------------------------------------------------------------
# Prerequisites

md_require_root() {
	[[ $(id -u) -eq 0 ]] || md_die "this script creates network namespaces and TAP devices and must run as root: sudo $0 $*"
}

# md_ensure_tools CMD:DEBIAN_PACKAGE ...
# Installs the packages of missing commands with apt-get when running as root (set MD_NO_INSTALL=1
# to forbid that); otherwise names what is missing and how to install it, and exits.
md_ensure_tools() {
	local spec cmd pkg
	local -a pkgs=() cmds=()
	for spec in "$@"; do
		cmd=${spec%%:*} pkg=${spec#*:}
		if ! command -v "$cmd" >/dev/null 2>&1; then
			cmds+=("$cmd")
			[[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
		fi
	done
	((${#cmds[@]} == 0)) && return 0
	if [[ $(id -u) -eq 0 && ${MD_NO_INSTALL:-0} != 1 ]] && command -v apt-get >/dev/null 2>&1; then
		md_info "missing: ${cmds[*]} -> apt-get install ${pkgs[*]}"
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1; then
			apt-get update -q >/dev/null 2>&1 || true
			apt-get install -y -q "${pkgs[@]}" >/dev/null ||
				md_die "apt-get install ${pkgs[*]} failed"
		fi
		for cmd in "${cmds[@]}"; do
			command -v "$cmd" >/dev/null 2>&1 || md_die "'$cmd' is still missing after installing ${pkgs[*]}"
		done
	else
		md_die "missing commands: ${cmds[*]}; install them with: sudo apt-get install -y ${pkgs[*]}"
	fi
}

# ---------------------------------------------------------------------------------------------
# Cargo
#
# Under `sudo`, root often has no Rust toolchain: rustup installed it in the invoking user's home.
# Then builds run as that user (so target/ stays owned by them) and only commands that need root
# (running the namespace tests) run as root, pointed at the user's toolchain.

MD_CARGO_DIR='' # directory holding the cargo found; empty until md_find_cargo ran
MD_CARGO_USER='' # user to build as, or empty to build as ourselves

md_find_cargo() {
	local c home
	if c=$(command -v cargo 2>/dev/null); then
		MD_CARGO_DIR=$(dirname "$c")
		return 0
	fi
	if [[ -x ${HOME:-/nonexistent}/.cargo/bin/cargo ]]; then
		MD_CARGO_DIR=$HOME/.cargo/bin
		export PATH="$MD_CARGO_DIR:$PATH"
		return 0
	fi
	if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
		home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
		if [[ -n $home && -x $home/.cargo/bin/cargo ]]; then
			MD_CARGO_DIR=$home/.cargo/bin
			# Build as the user only in their own checkout; otherwise root builds with their toolchain.
			[[ $(stat -c %U "$MD_REPO") == "$SUDO_USER" ]] && MD_CARGO_USER=$SUDO_USER
			export PATH="$MD_CARGO_DIR:$PATH"
			export CARGO_HOME="${CARGO_HOME:-$home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
			return 0
		fi
	fi
	md_die "cargo not found. Install Rust (https://rustup.rs): curl --proto '=https' -sSf https://sh.rustup.rs | sh"
}

# Runs cargo for work that needs no privileges (build, fmt, clippy, fuzz), as the toolchain's owner.
md_cargo() {
	[[ -n $MD_CARGO_DIR ]] || md_find_cargo
	if [[ -n $MD_CARGO_USER ]]; then
		local -a pass=("PATH=$PATH")
		local v
		for v in RUSTC_BOOTSTRAP RUSTFLAGS CARGO_TARGET_DIR CARGO_TERM_COLOR CARGO_BUILD_JOBS CARGO_INCREMENTAL RUST_BACKTRACE; do
			[[ -n ${!v:-} ]] && pass+=("$v=${!v}")
		done
		(cd "$MD_REPO" && sudo -u "$MD_CARGO_USER" -H env "${pass[@]}" cargo "$@")
	else
		(cd "$MD_REPO" && cargo "$@")
	fi
}

# Runs cargo as the current user (root), for steps that must run privileged.
md_cargo_here() {
	[[ -n $MD_CARGO_DIR ]] || md_find_cargo
	(cd "$MD_REPO" && cargo "$@")
}

# Path of a binary cargo built in PROFILE (debug|release).
md_target_bin() {
	local dir=${CARGO_TARGET_DIR:-target}
	[[ $dir == /* ]] || dir=$MD_REPO/$dir
	printf '%s/%s/%s\n' "$dir" "$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# Namespaces and processes

MD_PREFIX=${MD_PREFIX:-md-}
declare -a MD_PIDS=()

# md_ns NAME: a fresh network namespace with loopback up.
md_ns() {
	ip netns add "$1"
	ip -n "$1" link set lo up
}

md_ns_list() { ip netns list 2>/dev/null | awk -v p="$1" 'index($1, p) == 1 { print $1 }'; }

# md_veth NS_A IF_A NS_B IF_B: a veth pair created inside NS_A with its peer end placed in NS_B,
# so interface names never clash with the root namespace's.
md_veth() {
	ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
}

# md_underlay_pair NS1 NS2 NET: two fresh namespaces joined by a veth `u0` (MTU 1500, up), with
# NET.1/24 in NS1 and NET.2/24 in NS2: the two-host underlay the measurement scripts use.
md_underlay_pair() {
	local i ns
	md_ns "$1"
	md_ns "$2"
	md_veth "$1" u0 "$2" u0
	for i in 1 2; do
		ns=$1
		((i == 2)) && ns=$2
		ip -n "$ns" link set u0 mtu 1500 up
		ip -n "$ns" addr add "$3.$i/24" dev u0
	done
}

# md_spawn NS LOGFILE CMD...: starts CMD inside NS in the background and remembers its pid (in
# MD_LAST_PID). `ip netns exec` execs CMD, so the pid is CMD's own.
md_spawn() {
	local ns=$1 log=$2
	shift 2
	ip netns exec "$ns" "$@" >"$log" 2>&1 </dev/null &
	MD_LAST_PID=$!
	MD_PIDS+=("$MD_LAST_PID")
}

# md_stop PID [SECS]: SIGTERM, wait up to SECS (default 5) for a clean exit, then SIGKILL. Sets
# MD_STOP_STATUS to the exit status (meaningful when PID is a child of this shell).
MD_STOP_STATUS=''
md_stop() {
	local pid=$1 secs=${2:-5} i
	MD_STOP_STATUS=''
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < secs * 10; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			md_warn "pid $pid did not exit within ${secs}s of SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	# shellcheck disable=SC2034 # read by the scripts that source this file
	if wait "$pid" 2>/dev/null; then MD_STOP_STATUS=0; else MD_STOP_STATUS=$?; fi
	return 0
}

md_stop_all() {
	local pid
	for pid in "${MD_PIDS[@]}"; do md_stop "$pid" 5; done
	MD_PIDS=()
}

# md_destroy_prefix PREFIX: kills whatever still runs inside our namespaces (iperf3 servers,
# leftovers of an interrupted run) and deletes every namespace whose name starts with PREFIX.
md_destroy_prefix() {
	local ns pid
	local -a pids=()
	for ns in $(md_ns_list "$1"); do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do pids+=("$pid"); done
	done
	if ((${#pids[@]})); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		sleep 0.5
		kill -KILL "${pids[@]}" 2>/dev/null || true
	fi
	for ns in $(md_ns_list "$1"); do ip netns del "$ns" 2>/dev/null || true; done
}

# md_wait_until SECS CMD...: polls CMD every 0.2 s until it succeeds; fails after SECS seconds.
md_wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	while ((SECONDS < deadline)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	"$@" >/dev/null 2>&1
}

# md_wait_tcp_listen NS PORT: waits until something listens on TCP PORT inside NS.
md_wait_tcp_listen() {
	md_wait_until 10 md__listening "$1" "$2"
}
md__listening() { [[ -n $(ip netns exec "$1" ss -Hltn "sport = :$2") ]]; }

# md_cpu_ticks PID...: user+system CPU time of the processes (all their threads), in clock ticks.
# Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
md_cpu_ticks() {
	local pid total=0 rest
	local -a f
	for pid in "$@"; do
		rest=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		rest=${rest##*) }
		read -r -a f <<<"$rest"
		total=$((total + f[11] + f[12]))
	done
	echo "$total"
}

# ---------------------------------------------------------------------------------------------
# meshd

# md_meshd_set CONFIG KEY VALUE: sets a top-level string key in a config written by `meshd init`
# (replacing the line when present, else inserting it before the first [table]).
md_meshd_set() { md__meshd_set str "$@"; }

# md_meshd_set_int CONFIG KEY N: the same for an integer key, written bare (`key = N`) as TOML
# wants integers; md_meshd_set would write the string "N", which meshd rejects for such a key.
md_meshd_set_int() {
	[[ $3 =~ ^(0|-?[1-9][0-9]*)$ ]] || md_die "md_meshd_set_int: '$3' is not an integer (key $2 in $1)"
	md__meshd_set int "$@"
}

md__meshd_set() { # str|int CONFIG KEY VALUE
	python3 - "$@" <<'PY'
import json, re, sys
kind, path, key, value = sys.argv[1:]
lines = open(path).read().splitlines(keepends=True)
line = f"{key} = {value if kind == 'int' else json.dumps(value)}\n"
pat = re.compile(rf"^\s*#?\s*{re.escape(key)}\s*=")
for i, l in enumerate(lines):
    if l.lstrip().startswith("["):
        while i > 0 and not lines[i - 1].strip():
            i -= 1
        lines.insert(i, line)
        break
    if pat.match(l):
        lines[i] = line
        break
else:
    lines.append(line)
open(path, "w").write("".join(lines))
PY
}

# md_meshd_peers MESHD CONFIG: prints "UP TOTAL" peer counts from `meshd status --json`.
md_meshd_peers() {
	"$1" status --config "$2" --json 2>/dev/null | python3 -c '
import json, sys
peers = json.load(sys.stdin).get("peers", [])
print(sum(1 for p in peers if p.get("state") == "up"), len(peers))'
}

md__all_peers_up() {
	local counts
	counts=$(md_meshd_peers "$1" "$2") || return 1
	[[ $counts == "$3 $3" ]]
}

# md_meshd_wait_up MESHD CONFIG EXPECTED_PEERS SECS: waits until every peer of the node is up.
md_meshd_wait_up() {
	md_wait_until "$4" md__all_peers_up "$1" "$2" "$3"
}

# md_meshd_formed MESHD CONFIG: prints "ALIVE UP": how many other members the node lists as alive,
# and how many sessions are up, from `meshd status --json`.
md_meshd_formed() {
	"$1" status --config "$2" --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
me = s.get("name")
alive = sum(1 for m in s.get("members", []) if m.get("name") != me and m.get("state") == "alive")
up = sum(1 for p in s.get("peers", []) if p.get("state") == "up")
print(alive, up)'
}

md__formed() {
	local counts
	counts=$(md_meshd_formed "$1" "$2") || return 1
	[[ $counts == "$3 $3" ]]
}

# md_meshd_wait_formed MESHD CONFIG EXPECTED_OTHERS SECS: waits until the node lists every other
# node as an alive member and has a session up with each (a mesh formed by invite/join and gossip).
md_meshd_wait_formed() {
	md_wait_until "$4" md__formed "$1" "$2" "$3"
}

# md_meshd_mesh_setup MESHD DIR NET OVERLAY NS1 NS2 [NS...]: the operator's way to a mesh of hosts
# for the measurement scripts. Node I (counting the namespaces from 1) is named hI, listens on
# NET.I:6655 and has the TAP address OVERLAY.I/24 (`address` mode). `meshd init` founds the network
# on h1, h1's daemon runs while, for each other node, `meshd invite` makes a token and `meshd join`
# inside that node's namespace writes its config; then h1's setup daemon stops. Configs are
# DIR/hI.toml, with control sockets in DIR and logging at warn level.
md_meshd_mesh_setup() {
	local meshd=$1 dir=$2 net=$3 overlay=$4 pid token i others=''
	shift 4
	local -a nss=("$@")
	for ((i = 2; i <= ${#nss[@]}; i++)); do others+=" h$i"; done
	mkdir -p "$dir"
	md_info "meshd init on h1 (founds the network); for$others in turn: meshd invite on h1, meshd join inside it"
	"$meshd" init --config "$dir/h1.toml" --name h1 --listen "$net.1:6655" \
		--address "$overlay.1/24" >/dev/null 2>"$dir/h1-init.log" || {
		cat "$dir/h1-init.log" >&2
		md_die "meshd init failed on h1"
	}
	md__mesh_configure "$dir" 1
	# `meshd join` makes a round trip to the inviter's running daemon.
	md_spawn "${nss[0]}" "$dir/h1-setup.log" "$meshd" --config "$dir/h1.toml"
	pid=$MD_LAST_PID
	md_wait_until 15 "$meshd" status --config "$dir/h1.toml" || {
		tail -n 20 "$dir/h1-setup.log" >&2
		md_die "meshd h1 does not answer \`meshd status\` after 15 s"
	}
	for ((i = 2; i <= ${#nss[@]}; i++)); do
		token=$("$meshd" invite --config "$dir/h1.toml" --name "h$i" --expires 10m 2>"$dir/h$i-invite.log") || {
			cat "$dir/h$i-invite.log" >&2
			md_die "meshd invite failed on h1 (for h$i)"
		}
		ip netns exec "${nss[i - 1]}" "$meshd" join --config "$dir/h$i.toml" --name "h$i" --listen "$net.$i:6655" \
			--address "$overlay.$i/24" "$token" >/dev/null 2>"$dir/h$i-join.log" || {
			cat "$dir/h$i-join.log" >&2
			tail -n 20 "$dir/h1-setup.log" >&2
			md_die "meshd join failed on h$i"
		}
		md__mesh_configure "$dir" "$i"
	done
	md_stop "$pid" 5
}

md__mesh_configure() { # DIR I: top-level keys, so above the first [table]
	md_meshd_set "$1/h$2.toml" control_socket "$1/h$2.sock"
	md_meshd_set "$1/h$2.toml" log_level warn
}

# md_meshd_mesh_up MESHD DIR OVERLAY NS1 NS2 [NS...]: starts the daemons of a mesh made by
# md_meshd_mesh_setup, appends their pids to MD_MESH_PIDS, and waits until each lists every other
# node as an alive member with a session up and h1 reaches every other node's overlay address.
declare -a MD_MESH_PIDS=()
md_meshd_mesh_up() {
	local meshd=$1 dir=$2 overlay=$3 ns i n
	shift 3
	n=$#
	i=1
	for ns in "$@"; do
		md_spawn "$ns" "$dir/h$i.log" "$meshd" --config "$dir/h$i.toml"
		MD_MESH_PIDS+=("$MD_LAST_PID")
		i=$((i + 1))
	done
	for ((i = 1; i <= n; i++)); do
		md_meshd_wait_formed "$meshd" "$dir/h$i.toml" $((n - 1)) 30 || {
			tail -n 20 "$dir/h$i.log" >&2
			md_die "meshd h$i: not every other node is an alive member with a session up after 30 s" \
				"(alive, up: $(md_meshd_formed "$meshd" "$dir/h$i.toml" || echo '?'); expected $((n - 1)) each)"
		}
	done
	for ((i = 2; i <= n; i++)); do
		md_wait_until 10 ip netns exec "$1" ping -c 1 -W 1 "$overlay.$i" || md_die "meshd: $overlay.$i does not answer"
	done
}

# md_meshd_pair_setup MESHD DIR NS1 NS2 NET: md_meshd_mesh_setup for two hosts, with the overlay
# addresses MD_PAIR_OVERLAY (default 10.90.0) .1 and .2, /24.
md_meshd_pair_setup() {
	md_meshd_mesh_setup "$1" "$2" "$5" "${MD_PAIR_OVERLAY:-10.90.0}" "$3" "$4"
}

# md_meshd_pair_up MESHD DIR NS1 NS2: md_meshd_mesh_up for a pair made by md_meshd_pair_setup;
# appends the two daemons' pids to MD_PAIR_PIDS.
md_meshd_pair_up() {
	MD_MESH_PIDS=()
	md_meshd_mesh_up "$1" "$2" "${MD_PAIR_OVERLAY:-10.90.0}" "$3" "$4"
	MD_PAIR_PIDS+=("${MD_MESH_PIDS[@]}")
}

# md_run_cleanup STATUS WORK PREFIX [PID...]: the end of a measurement script's EXIT trap. Stops
# the given daemons, every process md_spawn started and the PREFIX namespaces; removes WORK after
# a success and keeps it (saying where) after a failure. Exits with STATUS.
md_run_cleanup() {
	local status=$1 work=$2 prefix=$3 pid
	shift 3
	for pid in "$@"; do md_stop "$pid" 5; done
	md_stop_all
	md_destroy_prefix "$prefix"
	if [[ -n $work && -d $work ]]; then
		if ((status == 0)); then rm -rf "$work"; else md_info "logs kept in $work"; fi
	fi
	exit "$status"
}
