#!/usr/bin/env bash
# test.sh — every check CI runs, in order; the first failing step stops the run with a non-zero exit.
#
#   sudo ./scripts/test.sh
#
#   1. cargo fmt --all -- --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. cargo test --workspace --no-fail-fast
#      (as root: the integration tests build hosts out of network namespaces, TAP devices, bridges)
#   4. a short cargo-fuzz run of every target that `cargo fuzz list` names (installs cargo-fuzz
#      when missing; RUSTC_BOOTSTRAP=1 lets the stable toolchain build with sanitizers)
#   then a summary: time per step, the cargo test results, fuzz executions per target.
#
# Environment:
#   FUZZ_SECS=30      seconds per fuzz target (0 skips fuzzing)
#   TEST_PROFILE=dev  dev: meshd's own crates unoptimised with debug assertions and overflow checks,
#                     dependencies (tokio, ring, snow, ...) built with opt-level 2 so the namespace
#                     tests' 50 MB transfer and the handshakes run at a realistic speed;
#                     release: everything as `cargo build --release` builds it.
#   Missing Debian packages the tests need are installed with apt-get when running as root.

set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FUZZ_SECS=${FUZZ_SECS:-30}
[[ $FUZZ_SECS =~ ^[0-9]+$ ]] || md_die "FUZZ_SECS must be a number of seconds"
TEST_PROFILE=${TEST_PROFILE:-dev}
case $TEST_PROFILE in
dev) PROFILE_ARGS=(--config 'profile.dev.package."*".opt-level=2') ;;
release) PROFILE_ARGS=(--release) ;;
*) md_die "TEST_PROFILE must be dev or release" ;;
esac

LOGS=$(mktemp -d /tmp/meshd-test.XXXXXX)
declare -a STEP_LINES=()
CURRENT_STEP=''
STEP_START=0
RUN_START=$SECONDS

step() { # NAME: starts a step (and closes the previous one)
	step_done
	CURRENT_STEP=$1
	STEP_START=$SECONDS
	md_section "$1"
}
step_done() {
	[[ -n $CURRENT_STEP ]] || return 0
	STEP_LINES+=("$(printf 'ok    %-58s %5ss' "$CURRENT_STEP" $((SECONDS - STEP_START)))")
	CURRENT_STEP=''
}

# The cargo test result lines, each under the test binary it belongs to, plus totals.
test_summary() {
	local log=$LOGS/cargo-test.log
	[[ -s $log ]] || return 0
	md_section "cargo test results"
	awk '
		/^ *Running / {
			crate = $0; sub(/^.*\(/, "", crate); sub(/\).*$/, "", crate)
			sub(/^.*\//, "", crate); sub(/-[0-9a-f]+$/, "", crate)
			sub(/^ *Running /, ""); sub(/ \(.*$/, ""); bin = crate ": " $0
		}
		/^ *Doc-tests / { sub(/^ *Doc-tests /, ""); bin = "doc-tests " $0 }
		/^test result:/ {
			printf "    %-46s %s\n", bin, $0
			for (i = 1; i <= NF; i++) {
				if ($(i) ~ /^passed;?$/) passed += $(i - 1)
				if ($(i) ~ /^failed;?$/) failed += $(i - 1)
				if ($(i) ~ /^ignored;?$/) ignored += $(i - 1)
			}
		}
		END { printf "total: %d passed, %d failed, %d skipped\n", passed, failed, ignored > tally }
	' tally="$LOGS/tally.txt" "$log"
}

finish() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	if ((status == 0)); then
		step_done
	elif [[ -n $CURRENT_STEP ]]; then
		STEP_LINES+=("$(printf 'FAIL  %-58s %5ss' "$CURRENT_STEP" $((SECONDS - STEP_START)))")
	fi
	md_section "Summary"
	local line
	for line in "${STEP_LINES[@]}"; do md_info "$line"; done
	if [[ -s $LOGS/fuzz-summary.txt ]]; then
		md_info "fuzzing (${FUZZ_SECS}s per target):"
		sed 's/^/        /' "$LOGS/fuzz-summary.txt"
	fi
	test_summary
	echo
	if ((status == 0)); then
		printf '%sAll checks passed%s in %ss.\n' "$MD_GREEN" "$MD_RESET" $((SECONDS - RUN_START))
	else
		printf '%sFAILED%s: %s (exit %d). Logs: %s\n' "$MD_RED" "$MD_RESET" "${CURRENT_STEP:-setup}" "$status" "$LOGS" >&2
	fi
	# The plain tally goes last, alone on its line, for anything that reads the closing line.
	[[ -s $LOGS/tally.txt ]] && cat "$LOGS/tally.txt"
	((status == 0)) && rm -rf "$LOGS"
	exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -------------------------------------------------------------------------------------------------
step "Prerequisites"
if [[ $(id -u) -eq 0 ]]; then
	md_ensure_tools ip:iproute2 bridge:iproute2 ping:iputils-ping sysctl:procps nft:nftables \
		cc:build-essential c++:build-essential dockerd:docker.io busybox:busybox-static
else
	md_warn "not running as root: the namespace integration tests need root (sudo $0)"
fi
md_find_cargo
md_info "cargo: $MD_CARGO_DIR/cargo ($(md_cargo --version))${MD_CARGO_USER:+, builds run as $MD_CARGO_USER}"
if ! md_cargo fmt --version >/dev/null 2>&1 || ! md_cargo clippy --version >/dev/null 2>&1; then
	command -v rustup >/dev/null 2>&1 || [[ -x $MD_CARGO_DIR/rustup ]] ||
		md_die "rustfmt or clippy is missing and rustup is not available to add them"
	md_info "adding the rustfmt and clippy components"
	if [[ -n $MD_CARGO_USER ]]; then
		sudo -u "$MD_CARGO_USER" -H env "PATH=$PATH" rustup component add rustfmt clippy
	else
		rustup component add rustfmt clippy
	fi
fi

# -------------------------------------------------------------------------------------------------
step "cargo fmt --all -- --check"
md_cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
md_cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace (profile: $TEST_PROFILE)"
# Build as the toolchain's owner, run as root: under sudo, target/ stays owned by the user.
md_cargo test --workspace "${PROFILE_ARGS[@]}" --no-run
# --no-fail-fast: every test binary runs, so one failure does not hide the others; still exits non-zero.
md_cargo_here test --workspace "${PROFILE_ARGS[@]}" --no-fail-fast 2>&1 | tee "$LOGS/cargo-test.log"

# -------------------------------------------------------------------------------------------------
if ((FUZZ_SECS == 0)); then
	md_section "Fuzzing skipped (FUZZ_SECS=0)"
else
	step "cargo fuzz: every target for ${FUZZ_SECS}s"
	[[ -f $MD_REPO/fuzz/Cargo.toml ]] || md_die "fuzz/Cargo.toml is missing"
	if ! md_cargo fuzz --version >/dev/null 2>&1; then
		md_info "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
		md_cargo install cargo-fuzz --locked
	fi
	export RUSTC_BOOTSTRAP=1
	mapfile -t TARGETS < <(md_cargo fuzz list)
	((${#TARGETS[@]} > 0)) || md_die "cargo fuzz list names no targets"
	md_info "targets: ${TARGETS[*]}"
	md_info '$ cargo fuzz build'
	md_cargo fuzz build
	: >"$LOGS/fuzz-summary.txt"
	for target in "${TARGETS[@]}"; do
		md_info "\$ cargo fuzz run $target -- -max_total_time=$FUZZ_SECS"
		log=$LOGS/fuzz-$target.log
		if ! md_cargo fuzz run "$target" -- -max_total_time="$FUZZ_SECS" -print_final_stats=1 >"$log" 2>&1; then
			tail -n 60 "$log" >&2
			echo "$target: FAILED (crash input under fuzz/artifacts/$target/)" >>"$LOGS/fuzz-summary.txt"
			md_die "fuzz target $target failed; reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run $target fuzz/artifacts/$target/<crash file>"
		fi
		runs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log" | tail -n 1)
		cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
		printf '%-28s %10s executions, coverage %s\n' "$target" "${runs:-?}" "${cov:-?}" | tee -a "$LOGS/fuzz-summary.txt" | sed 's/^/    /'
	done
	unset RUSTC_BOOTSTRAP
fi
