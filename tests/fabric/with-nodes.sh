#!/bin/sh
# SPDX-License-Identifier: MIT
# with-nodes.sh MEMNODE N [--keyed] [memnode options] -- COMMAND...
#
# Starts N memory nodes (uhmm-memnode) on loopback, each on a port of its
# own choosing, runs COMMAND with UHMM_FABRIC_NODES naming them, then stops
# them. COMMAND's status is the script's. For tests that kill or restart a
# node: UHMM_FABRIC_NODE_PIDS (their pids) and UHMM_MEMNODE (the binary).
# --keyed: the nodes get a new key file, and COMMAND UHMM_FABRIC_KEY.
set -eu
memnode=$1
count=$2
shift 2
dir=$(mktemp -d)
extra=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	if [ "$1" = --keyed ]; then
		"$memnode" --gen-key "$dir/key"
		extra="$extra --key-file $dir/key"
		UHMM_FABRIC_KEY=$dir/key
		export UHMM_FABRIC_KEY
	else
		extra="$extra $1"
	fi
	shift
done
[ $# -gt 0 ] && shift

pids=""
cleanup() {
	# shellcheck disable=SC2086
	[ -n "$pids" ] && kill $pids 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

nodes=""
i=0
while [ "$i" -lt "$count" ]; do
	# shellcheck disable=SC2086
	"$memnode" --listen 127.0.0.1:0 --mem 16G --port-file "$dir/port$i" $extra \
		2>"$dir/log$i" &
	pids="$pids $!"
	i=$((i + 1))
done
i=0
while [ "$i" -lt "$count" ]; do
	tries=0
	while [ ! -s "$dir/port$i" ]; do
		tries=$((tries + 1))
		if [ "$tries" -gt 100 ]; then
			echo "with-nodes.sh: node $i did not start:" >&2
			cat "$dir/log$i" >&2
			exit 1
		fi
		sleep 0.1
	done
	nodes="$nodes 127.0.0.1:$(cat "$dir/port$i")"
	i=$((i + 1))
done
UHMM_FABRIC_NODES=${nodes# }
UHMM_FABRIC_NODE_PIDS=${pids# }
UHMM_MEMNODE=$memnode
export UHMM_FABRIC_NODES UHMM_FABRIC_NODE_PIDS UHMM_MEMNODE
rc=0
"$@" || rc=$?
# A failure: say how the nodes fared, with what they logged.
if [ "$rc" != 0 ]; then
	i=0
	for pid in $pids; do
		if kill -0 "$pid" 2>/dev/null; then
			echo "with-nodes.sh: node $i (pid $pid) runs" >&2
		else
			st=0
			wait "$pid" || st=$?
			echo "with-nodes.sh: node $i (pid $pid) ended with status $st" >&2
		fi
		sed "s/^/  node $i: /" "$dir/log$i" >&2
		i=$((i + 1))
	done
fi
exit "$rc"
