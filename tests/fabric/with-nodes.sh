#!/bin/sh
# SPDX-License-Identifier: MIT
# with-nodes.sh MEMNODE N [--key-file F] [--provider P] -- COMMAND...
#
# Starts N memory nodes (uhmm-memnode) on loopback, each on a port of its
# own choosing, runs COMMAND with UHMM_FABRIC_NODES naming them (and
# UHMM_FABRIC_NODE_PIDS their pids, for tests that kill one), then stops
# them. COMMAND's status is the script's.
set -eu
memnode=$1
count=$2
shift 2
extra=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	extra="$extra $1"
	shift
done
[ $# -gt 0 ] && shift

dir=$(mktemp -d)
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
export UHMM_FABRIC_NODES UHMM_FABRIC_NODE_PIDS
rc=0
"$@" || rc=$?
exit "$rc"
