#!/bin/sh
# SPDX-License-Identifier: MIT
# usage: tools.sh UHMM_RUN UHMM_STAT LIVE MALLOC_FAMILY
#
# uhmm-run: help, bad usage, exit status and signals passed through, a
# missing program; --stats. uhmm-stat on a live process, and refused to
# another user. The malloc family under uhmm-run. The one-line message and
# an unmanaged run when userfaultfd is not available.
set -eu
run=$1 stat=$2 live=$3 family=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/uhmm-tools.XXXXXX")
trap 'exec 3>&- 2>/dev/null; rm -rf "$work"' EXIT
failures=0

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

expect_status() { # WANT DESCRIPTION COMMAND...
	want=$1 what=$2
	shift 2
	set +e
	"$@" >"$work/out" 2>"$work/err"
	got=$?
	set -e
	[ "$got" -eq "$want" ] || fail "$what: exit $got, expected $want ($(head -c 200 "$work/err"))"
}

expect_status 0 "--help" "$run" --help
grep -q "^usage: uhmm-run" "$work/out" || fail "--help prints no usage"
expect_status 2 "unknown option" "$run" --bogus true
expect_status 2 "no program" "$run" --device sim
expect_status 2 "host limit without a device" "$run" --host-limit 8M true
expect_status 2 "bad size" "$run" --device sim --host-limit lots true
expect_status 127 "missing program" "$run" /nonexistent/program
expect_status 126 "not executable" "$run" /etc/passwd
expect_status 42 "exit status" "$run" --device sim sh -c 'exit 42'
expect_status 143 "killed by a signal" "$run" sh -c 'sh -c "kill -TERM \$\$"; exit $?'

# --stats: a summary on stderr at exit; the program's own output untouched.
expect_status 0 "--stats" "$run" --device sim --chaos 2 --stats sh -c 'echo out; sleep 0.2'
[ "$(cat "$work/out")" = out ] || fail "--stats changed the program's output"
grep -q "faults" "$work/err" || fail "--stats printed no summary: $(cat "$work/err")"

# uhmm-stat on a live process, with chaos moving its pages.
mkfifo "$work/in"
"$run" --device sim --chaos 2 "$live" <"$work/in" >"$work/live.out" &
pid=$!
exec 3>"$work/in"
for _ in $(seq 100); do grep -q ready "$work/live.out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
if "$stat" --kv "$pid" >"$work/stat" 2>"$work/err"; then
	to_device=$(sed -n 's/^pages_to_device=//p' "$work/stat")
	managed=$(sed -n 's/^managed_bytes=//p' "$work/stat")
	[ "${to_device:-0}" -gt 0 ] || fail "uhmm-stat: no pages to the device: $(cat "$work/stat")"
	[ "${managed:-0}" -ge 16777216 ] || fail "uhmm-stat: managed_bytes ${managed:-none}"
else
	fail "uhmm-stat $pid: $(cat "$work/err")"
fi
if command -v setpriv >/dev/null; then
	expect_status 1 "uhmm-stat as another user" \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$stat" "$pid"
fi
exec 3>&-
wait "$pid" || fail "the live program failed"
expect_status 1 "uhmm-stat with no process" "$stat" 999999999

# The malloc family, managed.
expect_status 0 "malloc family" "$run" --device sim "$family"
[ "$(cat "$work/out")" = "malloc-family: ok" ] || fail "malloc family: $(cat "$work/err")"

# No userfaultfd for this user: one line, and the program runs unmanaged.
if command -v setpriv >/dev/null && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd)" = 0 ]; then
	expect_status 0 "no userfaultfd" env UHMM_USERFAULTFD=kernel \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$run" sh -c 'echo still runs'
	[ "$(cat "$work/out")" = "still runs" ] || fail "no userfaultfd: the program did not run"
	[ "$(wc -l <"$work/err")" -eq 1 ] && grep -q "not available" "$work/err" ||
		fail "no userfaultfd: expected one line, got: $(cat "$work/err")"
fi

[ "$failures" -eq 0 ] || exit 1
echo "tools: ok"
