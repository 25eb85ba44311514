#!/bin/sh
# SPDX-License-Identifier: MIT
# usage: compare.sh NAME HOST_LIMIT COMMAND [ARGS...]
#
# Runs COMMAND natively, then under
#   uhmm-run --device DEVICE --host-limit HOST_LIMIT --chaos 5
# (DEVICE: $UHMM_COMPARE_DEVICE, sim when unset)
# each time in a fresh directory; with UHMM_COMPARE_PLAIN=1 also under
#   uhmm-run --device DEVICE
# alone (no limit, no chaos: the quiet path a user runs first). Passes when
# stdout and the exit status are identical in every run, and the runtime really was at work: pages went to the device
# and came back, some were evicted (the limit was below the footprint), and
# no migration failed. UHMM_COMPARE_MANAGED=0 where the program's data is
# not the runtime's to move (OpenCL's coarse mode serves the heap from the
# device's memory; clSVMAlloc'd memory is the driver's): then only
# identical output and no failed migration count. Every process of the run (children included) appends
# its counters to one stats file; they are summed here.
set -eu
name=$1 limit=$2
shift 2
: "${UHMM_RUN:?set UHMM_RUN to the uhmm-run to test}"

unset MALLOC_PERTURB_ # glibc's, for the native run only: keep both runs alike
work=$(mktemp -d "${TMPDIR:-/tmp}/uhmm-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/native" "$work/uhmm"

set +e
(cd "$work/native" && "$@" >"$work/native.out")
native_status=$?
(cd "$work/uhmm" && UHMM_STATS=1 UHMM_STATS_FILE="$work/stats" \
	"$UHMM_RUN" --device "${UHMM_COMPARE_DEVICE:-sim}" --host-limit "$limit" --chaos 5 "$@" \
	>"$work/uhmm.out")
uhmm_status=$?
plain_status=$native_status
if [ "${UHMM_COMPARE_PLAIN:-0}" = 1 ]; then
	mkdir "$work/plain"
	(cd "$work/plain" && "$UHMM_RUN" --device "${UHMM_COMPARE_DEVICE:-sim}" "$@" >"$work/plain.out")
	plain_status=$?
else
	cp "$work/native.out" "$work/plain.out"
fi
set -e

fail() {
	echo "$name: FAIL: $*"
	exit 1
}

[ "$native_status" -eq "$uhmm_status" ] ||
	fail "exit status $uhmm_status under uhmm, $native_status natively"
cmp -s "$work/native.out" "$work/uhmm.out" || {
	diff "$work/native.out" "$work/uhmm.out" | head -20
	fail "output differs"
}
[ "$native_status" -eq "$plain_status" ] ||
	fail "exit status $plain_status under uhmm without limit or chaos, $native_status natively"
cmp -s "$work/native.out" "$work/plain.out" || {
	diff "$work/native.out" "$work/plain.out" | head -20
	fail "output differs under uhmm without limit or chaos"
}
[ -s "$work/stats" ] || fail "no process reported its counters"
sum() {
	awk -F= -v k="$1" '$1 == k { s += $2 } END { printf "%d", s }' "$work/stats"
}
procs=$(grep -c '^pid=' "$work/stats")
to_device=$(sum pages_to_device)
to_host=$(sum pages_to_host)
evicted=$(sum evictions)
failed=$(sum migrations_failed)
faults=$(sum cpu_faults)
echo "$name: identical output ($(wc -c <"$work/native.out") bytes), exit $native_status;" \
	"$procs processes, $faults CPU faults, $to_device pages to the device," \
	"$to_host back, $evicted evicted"
if [ "${UHMM_COMPARE_MANAGED:-1}" != 0 ]; then
	[ "$to_device" -gt 0 ] || fail "no page went to the device"
	[ "$to_host" -gt 0 ] || fail "no page came back"
	[ "$evicted" -gt 0 ] || fail "nothing was evicted: $limit is not below the footprint"
fi
[ "$failed" -eq 0 ] || fail "$failed migrations failed"
