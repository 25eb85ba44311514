#!/bin/sh
# SPDX-License-Identifier: MIT
# netns.sh MEMNODE BUILD_DIR
#
# Memory nodes on machines of their own, as far as one host allows: each in
# a network namespace, reached over a veth pair with the tcp provider, with
# a key (required off loopback), so that pages are sealed by default. In
# that setting:
#   - the migrate and race behaviour programs run on the fabric device;
#   - a node cut off by a partition (its link set down: silence, not a
#     reset) is declared dead at the deadline, and every page reads back
#     from its other copy (fabric_nodes, case partition).
# Needs root (ip netns); exits 77 (skipped) with the reason without it.
set -eu
memnode=$1
build=$2
tag=uhmm$$
work=$(mktemp -d)
pids=""

cleanup() {
	# shellcheck disable=SC2086
	[ -n "$pids" ] && kill $pids 2>/dev/null
	for i in 1 2; do
		ip netns del "$tag-$i" 2>/dev/null || true
		ip link del "$tag-h$i" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

if ! ip netns add "$tag-1" 2>"$work/err"; then
	echo "netns.sh: cannot make network namespaces here: $(cat "$work/err")" >&2
	exit 77
fi
ip netns add "$tag-2"
"$memnode" --gen-key "$work/key"
nodes=""
for i in 1 2; do
	ns=$tag-$i
	ip link add "$tag-h$i" type veth peer name "$tag-n$i"
	ip link set "$tag-n$i" netns "$ns"
	ip addr add "10.213.$i.1/24" dev "$tag-h$i"
	ip link set "$tag-h$i" up
	ip -n "$ns" addr add "10.213.$i.2/24" dev "$tag-n$i"
	ip -n "$ns" link set "$tag-n$i" up
	ip -n "$ns" link set lo up
	# The node's provider on its one interface (an unset one can hang, libfabric #12480).
	FI_TCP_IFACE=$tag-n$i ip netns exec "$ns" "$memnode" --listen "10.213.$i.2:7480" \
		--mem 8G --key-file "$work/key" 2>"$work/node$i.log" &
	pids="$pids $!"
	nodes="$nodes 10.213.$i.2:7480"
done
sleep 1
for i in 1 2; do
	if ! grep -q lending "$work/node$i.log"; then
		echo "netns.sh: node $i did not start:" >&2
		cat "$work/node$i.log" >&2
		exit 1
	fi
done

UHMM_FABRIC_NODES=${nodes# }
UHMM_FABRIC_KEY=$work/key
UHMM_TEST_BACKEND=fabric
export UHMM_FABRIC_NODES UHMM_FABRIC_KEY UHMM_TEST_BACKEND

echo "# behaviour programs, nodes in namespaces, sealed"
UHMM_TEST_DEVICES=fabric "$build/tests/migrate"
UHMM_TEST_DEVICES=fabric UHMM_STRESS_MS=500 "$build/tests/race"

echo "# a partition: node 1's link goes down"
UHMM_FABRIC_PARTITION="ip link set $tag-h1 down" UHMM_TEST_CASE=partition \
	UHMM_TEST_DEVICES=fabric:timeout=500 "$build/tests/fabric_nodes"
