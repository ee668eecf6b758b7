#!/usr/bin/env bash
# demo.sh — meshd on three hosts of this machine, joined into one virtual Ethernet switch.
#
#   sudo ./scripts/demo.sh
#
# Builds meshd (cargo build --release), then makes everything out of network namespaces:
#
#   md-demo-ul      the underlay: bridge ul0, one port per host (the "datacenter network")
#   md-demo-hN      host N (N = 1..3): eth0 = 10.201.0.N/24 on the underlay, bridge br0, meshd
#   md-demo-hNcM    container M (M = 1..2) of host N, plugged into host N's br0 by `meshd attach`
#                   with an address of host N's range, MAC 02:77:00:00:0N:0M
#
# forms the mesh the way an operator does: `meshd init --subnet` founds the network on h1 (with the
# containers' address space) and its daemon starts; for h2 and h3, `meshd invite` on h1 prints a
# one-time token and `meshd join` inside that host (over the underlay, to h1's daemon) writes its
# config, key and certificate, which grants the host its own address range, knowing only h1; each
# daemon starts and learns the others by gossip. Then it waits until every node sees every other
# as a member with a session up, attaches the containers (`meshd attach`: an address of the host's
# range), pings across hosts over IPv4 and IPv6, prints `meshd status`, and removes everything
# again on exit, failure or Ctrl-C.
#
# Environment: RUST_LOG (meshd's log filter, default info), MESHD_BIN (skip the build and use this
# binary), DEMO_KEEP=1 (keep the work directory with configs and logs).

set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PREFIX=md-demo-
HOSTS=(1 2 3)
CONTAINERS=(1 2)
PORT=6655
WORK=''
FAILED=0

cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	md_section "Cleaning up"
	cd /
	local i
	for i in "${HOSTS[@]}"; do
		[[ -n ${NODE_PIDS[$i]:-} ]] || continue
		md_stop "${NODE_PIDS[$i]}" 5
		if [[ $MD_STOP_STATUS == 0 ]]; then
			md_info "meshd on h$i stopped (SIGTERM, exit 0)"
		else
			md_warn "meshd on h$i exited with status $MD_STOP_STATUS (log: $WORK/h$i/meshd.log)"
			[[ -n $WORK ]] && tail -n 15 "$WORK/h$i/meshd.log" >&2
		fi
	done
	md_stop_all
	md_destroy_prefix "$PREFIX"
	md_info "namespaces ${PREFIX}* removed"
	if [[ -n $WORK && -d $WORK ]]; then
		if [[ ${DEMO_KEEP:-0} == 1 || $status -ne 0 ]]; then
			md_info "configs and logs kept in $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	if ((status == 0)); then
		printf '\n%sDemo finished: all checks passed.%s\n' "$MD_GREEN" "$MD_RESET"
	elif ((status == 130 || status == 143)); then
		printf '\nDemo interrupted.\n' >&2
	else
		printf '\n%sDemo failed (exit %d).%s\n' "$MD_RED" "$status" "$MD_RESET" >&2
	fi
	exit "$status"
}

declare -A NODE_PIDS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

md_require_root "$@"
md_ensure_tools ip:iproute2 ping:iputils-ping python3:python3 cc:build-essential

# -------------------------------------------------------------------------------------------------
md_section "Building meshd"
if [[ -n ${MESHD_BIN:-} ]]; then
	MESHD=$MESHD_BIN
	md_info "using MESHD_BIN=$MESHD"
else
	md_info '$ cargo build --release'
	md_cargo build --release
	MESHD=$(md_target_bin release meshd)
fi
[[ -x $MESHD ]] || md_die "no meshd binary at $MESHD"

md_destroy_prefix "$PREFIX" # leftovers of an interrupted run
WORK=$(mktemp -d /tmp/md-demo.XXXXXX)
# Work in WORK with `meshd` on PATH, so every command printed below can be copied as it is.
mkdir -p "$WORK/bin"
ln -s "$(realpath "$MESHD")" "$WORK/bin/meshd"
export PATH="$WORK/bin:$PATH"
cd "$WORK"
md_info "working directory $WORK (meshd = $(realpath "$MESHD"))"

# -------------------------------------------------------------------------------------------------
md_section "Creating three hosts with two containers each (network namespaces)"
UL=${PREFIX}ul
md_ns "$UL"
ip -n "$UL" link add ul0 type bridge
ip -n "$UL" link set ul0 up

for i in "${HOSTS[@]}"; do
	h=${PREFIX}h$i
	md_ns "$h"
	md_veth "$h" eth0 "$UL" "h$i"
	ip -n "$UL" link set "h$i" master ul0 up
	ip -n "$h" addr add "10.201.0.$i/24" dev eth0
	ip -n "$h" link set eth0 up
	ip -n "$h" link add br0 type bridge
	ip -n "$h" link set br0 up
	for j in "${CONTAINERS[@]}"; do
		md_ns "${PREFIX}h${i}c$j" # empty until `meshd attach` plugs it in
	done
	md_info "host h$i  ($h): underlay 10.201.0.$i, bridge br0; containers h${i}c1, h${i}c2 (namespaces)"
done
md_info "underlay ($UL): bridge ul0 joining the three hosts' eth0"

# -------------------------------------------------------------------------------------------------
# Sockets under /run/meshd are shared by everything on this machine; keep the demo's private.
private_socket() {
	md_meshd_set "h$1/meshd.toml" control_socket "$WORK/h$1/control.sock"
	md_meshd_set "h$1/meshd.toml" subnet_env "$WORK/h$1/subnet.env"
}

start_node() { # I: starts meshd in host hI's namespace
	md_spawn "${PREFIX}h$1" "h$1/meshd.log" env RUST_LOG="${RUST_LOG:-info}" meshd --config "h$1/meshd.toml"
	NODE_PIDS[$1]=$MD_LAST_PID
	md_info "\$ ip netns exec ${PREFIX}h$1 meshd --config h$1/meshd.toml 2>h$1/meshd.log &   # pid $MD_LAST_PID"
}

show_logs() {
	local k
	for k in "${HOSTS[@]}"; do
		[[ -n ${NODE_PIDS[$k]:-} ]] || continue
		kill -0 "${NODE_PIDS[$k]}" 2>/dev/null || md_warn "meshd on h$k is not running"
		echo "--- last lines of h$k's log:" >&2
		tail -n 20 "$WORK/h$k/meshd.log" >&2
	done
}

FOUNDER=${HOSTS[0]}
md_section "Founding the network on h$FOUNDER (meshd init) and starting its daemon"
mkdir -p "h$FOUNDER"
md_info "\$ meshd init --config h$FOUNDER/meshd.toml --name h$FOUNDER --listen 10.201.0.$FOUNDER:$PORT --bridge br0 --subnet 10.77.0.0/16 --subnet6 fd77::/48"
meshd init --config "h$FOUNDER/meshd.toml" --name "h$FOUNDER" --listen "10.201.0.$FOUNDER:$PORT" --bridge br0 \
	--subnet 10.77.0.0/16 --subnet6 fd77::/48 2>&1 | sed 's/^/        /'
private_socket "$FOUNDER"
md_info "resulting h$FOUNDER/meshd.toml (control_socket and subnet_env set by this script):"
sed 's/^/        /' "h$FOUNDER/meshd.toml"
start_node "$FOUNDER"
# `meshd join` talks to the founder's running daemon; wait until it answers.
md_wait_until 15 meshd status --config "h$FOUNDER/meshd.toml" ||
	{ show_logs; md_die "meshd on h$FOUNDER does not answer \`meshd status\`"; }

for i in "${HOSTS[@]:1}"; do
	md_section "Joining h$i: a token from h$FOUNDER (meshd invite), used inside h$i (meshd join)"
	mkdir -p "h$i"
	md_info "\$ TOKEN=\$(meshd invite --config h$FOUNDER/meshd.toml --name h$i --expires 10m)"
	TOKEN=$(meshd invite --config "h$FOUNDER/meshd.toml" --name "h$i" --expires 10m 2>"h$i/invite.note")
	md_info "    $TOKEN"
	sed 's/^/        /' "h$i/invite.note"
	md_info "\$ ip netns exec ${PREFIX}h$i meshd join --config h$i/meshd.toml --name h$i --listen 10.201.0.$i:$PORT --bridge br0 \"\$TOKEN\""
	if ! ip netns exec "${PREFIX}h$i" meshd join --config "h$i/meshd.toml" --name "h$i" \
		--listen "10.201.0.$i:$PORT" --bridge br0 "$TOKEN" 2>&1 | sed 's/^/        /'; then
		show_logs
		md_die "meshd join failed on h$i"
	fi
	private_socket "$i"
	start_node "$i"
done
md_info "h${HOSTS[1]}/meshd.toml as join wrote it: the founder is its only (bootstrap) peer"
sed 's/^/        /' "h${HOSTS[1]}/meshd.toml"

# -------------------------------------------------------------------------------------------------
md_section "Waiting until every node lists every other as a member with a session up (gossip)"
others=$((${#HOSTS[@]} - 1))
for i in "${HOSTS[@]}"; do
	if md_meshd_wait_formed meshd "h$i/meshd.toml" "$others" "${DEMO_UP_SECS:-30}"; then
		md_ok "h$i: $others of $others members alive, sessions up"
	else
		md_fail "h$i: not formed after ${DEMO_UP_SECS:-30} s (members alive, sessions up / expected:" \
			"$(md_meshd_formed meshd "h$i/meshd.toml" || echo '?') / $others)"
		show_logs
		exit 1
	fi
done

# -------------------------------------------------------------------------------------------------
md_section "Each host's address range (from its certificate), as flannel's subnet.env"
for i in "${HOSTS[@]}"; do
	md_info "h$i/subnet.env: $(tr '\n' ' ' <"h$i/subnet.env")"
done

md_section "Plugging the containers in (meshd attach: an address of the host's range)"
declare -A ADDR4=() ADDR6=()
for i in "${HOSTS[@]}"; do
	for j in "${CONTAINERS[@]}"; do
		c=${PREFIX}h${i}c$j
		md_info "\$ meshd attach --config h$i/meshd.toml --netns $c --ifname eth0 --mac 02:77:00:00:0$i:0$j"
		if ! ip netns exec "${PREFIX}h$i" meshd attach --config "h$i/meshd.toml" --netns "$c" \
			--ifname eth0 --mac "02:77:00:00:0$i:0$j" 2>&1 | sed 's/^/        /'; then
			show_logs
			md_die "meshd attach failed for $c"
		fi
		ADDR4[$i$j]=$(ip -n "$c" -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1]; exit }')
		ADDR6[$i$j]=$(ip -n "$c" -6 -o addr show dev eth0 scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
	done
done

demo_ping() { # CONTAINER TARGET [ping options...]
	local from=$1 to=$2
	shift 2
	printf '    $ ip netns exec %s ping %s %s\n' "$from" "$*" "$to"
	ip netns exec "$from" ping "$@" "$to" | sed 's/^/        /'
}

md_section "Ping across hosts over IPv4 (h1c1 -> h2c1, h1c1 -> h3c2)"
demo_ping "${PREFIX}h1c1" "${ADDR4[21]}" -c 3 -i 0.2
demo_ping "${PREFIX}h1c1" "${ADDR4[32]}" -c 3 -i 0.2

md_section "Ping across hosts over IPv6 (h2c2 -> h3c1, h3c1 -> h1c2)"
demo_ping "${PREFIX}h2c2" "${ADDR6[31]}" -6 -c 3 -i 0.2
demo_ping "${PREFIX}h3c1" "${ADDR6[12]}" -6 -c 3 -i 0.2

md_section "Every container to every container on another host (IPv4 and IPv6)"
ok=0 total=0
for i in "${HOSTS[@]}"; do
	for j in "${CONTAINERS[@]}"; do
		line="h${i}c$j ->"
		for k in "${HOSTS[@]}"; do
			((k == i)) && continue
			for m in "${CONTAINERS[@]}"; do
				for addr in "${ADDR4[$k$m]}" "${ADDR6[$k$m]}"; do
					total=$((total + 1))
					if ip netns exec "${PREFIX}h${i}c$j" ping -c 1 -W 2 -q "$addr" >/dev/null 2>&1; then
						ok=$((ok + 1))
						line+=" $addr:ok"
					else
						line+=" $addr:FAIL"
						FAILED=1
					fi
				done
			done
		done
		md_info "$line"
	done
done
if ((FAILED)); then
	md_fail "$ok of $total cross-host pings answered"
else
	md_ok "$ok of $total cross-host pings answered"
fi

# -------------------------------------------------------------------------------------------------
md_section "meshd status on host h1"
md_run meshd status --config h1/meshd.toml

((FAILED == 0)) || exit 1
