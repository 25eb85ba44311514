#!/bin/sh
# SPDX-License-Identifier: MIT
# usage: refused.sh NAME WANT COMMAND [ARGS...]
#
# Runs COMMAND under uhmm-run --device opencl and expects its launch to be
# refused, cleanly: the program's OpenCL call fails (it exits non-zero),
# and the runtime said why in one line containing WANT.
set -eu
name=$1 want=$2
shift 2
: "${UHMM_RUN:?set UHMM_RUN to the uhmm-run to test}"
err=$(mktemp)
trap 'rm -f "$err"' EXIT
if "$UHMM_RUN" --device opencl "$@" >/dev/null 2>"$err"; then
	echo "$name: FAIL: the program ran to the end; its launch should have been refused"
	exit 1
fi
grep -q "$want" "$err" || {
	echo "$name: FAIL: no line saying \"$want\":"
	cat "$err"
	exit 1
}
echo "$name: refused as it should be: $(grep "$want" "$err" | head -1)"
