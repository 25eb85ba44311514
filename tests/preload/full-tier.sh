#!/bin/sh
# SPDX-License-Identifier: MIT
# usage: full-tier.sh   (UHMM_RUN: the uhmm-run to test)
#
# A real program whose footprint (48 MiB) is far above both its host limit
# (8 MiB) and the storage tier it spills to (a 16 MiB ext4 image,
# loop-mounted): the tier fills up and the rest stays on the host. Its output
# and exit status must be what they are natively, pages must have been
# evicted and some refused for want of space, and the runtime must say so
# in one line. Needs root and mkfs.ext4: exits 77 (skip) with the reason.
set -eu
: "${UHMM_RUN:?set UHMM_RUN to the uhmm-run to test}"

skip() {
	echo "SKIP: $*"
	exit 77
}
[ "$(id -u)" = 0 ] || skip "loop-mounting a file system needs root"
command -v mkfs.ext4 >/dev/null || skip "no mkfs.ext4 (e2fsprogs)"

unset MALLOC_PERTURB_ # glibc's, for the native run only: keep both runs alike
work=$(mktemp -d "${TMPDIR:-/tmp}/uhmm-full-tier.XXXXXX")
cleanup() {
	# The ring lets go of its file a moment after the process is gone.
	for _ in $(seq 50); do
		mountpoint -q "$work/mnt" || break
		umount "$work/mnt" 2>/dev/null || sleep 0.1
	done
	! mountpoint -q "$work/mnt" || umount -l "$work/mnt"
	rm -rf "$work"
}
trap cleanup EXIT
truncate -s 16M "$work/img"
mkfs.ext4 -q -F -m 0 "$work/img"
mkdir "$work/mnt"
mount -o loop "$work/img" "$work/mnt" 2>"$work/err" || skip "mount -o loop: $(cat "$work/err")"

# 12288 blocks of 4 KiB, each its own malloc, read twice in different orders.
prog='
import hashlib
blocks = [bytes((i * 7 + j) % 251 for j in range(64)) * 64 for i in range(12288)]
for order in (blocks, reversed(blocks)):
    h = hashlib.sha256()
    for b in order:
        h.update(b)
    print(h.hexdigest())
'
python3 -c "$prog" >"$work/native.out"
set +e
UHMM_STATS=1 UHMM_STATS_FILE="$work/stats" "$UHMM_RUN" \
	--device "uring:path=$work/mnt,mem=64M" --host-limit 8M python3 -c "$prog" \
	>"$work/uhmm.out" 2>"$work/uhmm.err"
status=$?
set -e

fail() {
	echo "full-tier: FAIL: $*"
	sed 's/^/  stderr: /' "$work/uhmm.err"
	exit 1
}
[ "$status" -eq 0 ] || fail "exit status $status under uhmm"
cmp -s "$work/native.out" "$work/uhmm.out" || {
	diff "$work/native.out" "$work/uhmm.out" | head -20
	fail "output differs"
}
sum() {
	awk -F= -v k="$1" '$1 == k { s += $2 } END { printf "%d", s }' "$work/stats"
}
evicted=$(sum evictions)
refused=$(sum migrations_failed)
full=$(grep -c "no space left" "$work/uhmm.err" || true)
echo "full-tier: identical output; $evicted pages evicted, $refused refused for want of space;" \
	"$full line(s) about it"
[ "$evicted" -gt 0 ] || fail "nothing was evicted"
[ "$refused" -gt 0 ] || fail "the tier never filled up: the test proves nothing"
[ "$full" -eq 1 ] || fail "expected one line about the full tier, got $full"
