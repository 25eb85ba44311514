#!/bin/sh
# SPDX-License-Identifier: MIT
# memnode-cli.sh MEMNODE UHMM_RUN
#
# uhmm-memnode as an operator meets it: it refuses an address off loopback
# without a key, and a key file others can read; --gen-key makes a 0600
# key; --status and SIGUSR1 report what it holds; a client (sleep, under
# uhmm-run with the fabric device) holds a region while it runs, and the
# region is freed when the client is killed; SIGTERM stops the node.
set -eu
memnode=$1
uhmm_run=$2
work=$(mktemp -d)
node=""
cleanup() {
	[ -n "$node" ] && kill "$node" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
fail() {
	echo "memnode-cli.sh: FAIL: $*" >&2
	exit 1
}

# Off loopback without a key: refused, with the reason.
if "$memnode" --listen 0.0.0.0:0 --mem 64M 2>"$work/err"; then
	fail "a node on 0.0.0.0 without a key started"
fi
grep -q "key-file is required" "$work/err" || fail "no reason given: $(cat "$work/err")"

# A key, made here; one others may read is refused.
"$memnode" --gen-key "$work/key"
[ "$(stat -c %a "$work/key")" = 600 ] || fail "--gen-key made mode $(stat -c %a "$work/key")"
[ "$(stat -c %s "$work/key")" -ge 16 ] || fail "--gen-key made a short key"
cp "$work/key" "$work/open-key"
chmod 644 "$work/open-key"
if "$memnode" --listen 127.0.0.1:0 --mem 64M --key-file "$work/open-key" 2>"$work/err"; then
	fail "a key file others can read was taken"
fi
grep -q "readable by others" "$work/err" || fail "no reason given: $(cat "$work/err")"

"$memnode" --listen 127.0.0.1:0 --mem 1G --key-file "$work/key" --port-file "$work/port" \
	2>"$work/node.log" &
node=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
addr=127.0.0.1:$(cat "$work/port")
status() { "$memnode" --status "$addr" --key-file "$work/key"; }

status | grep -qx "regions=0" || fail "a new node holds regions"
if "$memnode" --status "$addr" 2>"$work/err"; then
	fail "a status query without the key was answered"
fi

# A client holds a region while it runs; killed, it leaves nothing behind.
"$uhmm_run" --device "fabric:node=$addr,key=$work/key,mem=256M" sleep 60 &
client=$!
for _ in $(seq 100); do status | grep -qx "regions=1" && break; sleep 0.1; done
status | grep -qx "used_bytes=268435456" || fail "no 256 MiB region while the client runs: $(status)"
kill -9 "$client"
wait "$client" 2>/dev/null || true
for _ in $(seq 100); do status | grep -qx "regions=0" && break; sleep 0.1; done
status | grep -qx "regions=0" || fail "the killed client's region was kept: $(status)"
status | grep -qx "regions_freed=1" || fail "$(status)"
status | grep -q "^auth_failures=" || fail "no auth_failures figure"

# SIGUSR1: the same figures on standard error.
kill -USR1 "$node"
for _ in $(seq 30); do grep -q "^regions_granted=1" "$work/node.log" && break; sleep 0.1; done
grep -q "^regions_granted=1" "$work/node.log" || fail "SIGUSR1 printed nothing"

kill -TERM "$node"
rc=0
wait "$node" || rc=$?
node=""
[ "$rc" = 0 ] || fail "SIGTERM: exit status $rc"
echo "memnode-cli.sh: ok"
