#!/bin/sh
# SPDX-License-Identifier: MIT
# Soak: run test suites N times in a row and report every failure, with the
# log that holds its output. A race that shows once in 200 runs shows here.
#
#   tests/soak.sh [-n RUNS] [-C BUILDDIR] [-s SUITE]...
#
# Defaults: 20 runs of the unit suite in build/. Exit status 0 when every
# run passed, 1 otherwise.
set -eu

runs=20
dir=build
suites=""
while getopts n:C:s:h opt; do
	case $opt in
	n) runs=$OPTARG ;;
	C) dir=$OPTARG ;;
	s) suites="$suites --suite $OPTARG" ;;
	*)
		sed -n '3,9s/^# \{0,1\}//p' "$0"
		exit 2
		;;
	esac
done
[ -n "$suites" ] || suites="--suite unit"
[ -f "$dir/build.ninja" ] || {
	echo "soak: $dir is not a build directory (meson setup $dir)" >&2
	exit 2
}
ninja -C "$dir" >/dev/null

failed_runs=0
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
i=1
while [ "$i" -le "$runs" ]; do
	log="soak-$i"
	# shellcheck disable=SC2086
	if meson test -C "$dir" --no-rebuild --logbase "$log" $suites >/dev/null 2>&1; then
		echo "soak: run $i/$runs passed"
	else
		failed_runs=$((failed_runs + 1))
		python3 - "$dir/meson-logs/$log.json" "$i" >>"$summary" <<-'EOF'
			import json, sys
			for line in open(sys.argv[1]):
			    t = json.loads(line)
			    if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL"):
			        print(f'run {sys.argv[2]}: {t["name"]} {t["result"]}')
		EOF
		echo "soak: run $i/$runs FAILED (log: $dir/meson-logs/$log.txt)"
	fi
	i=$((i + 1))
done

if [ "$failed_runs" -eq 0 ]; then
	echo "soak: all $runs runs passed"
	exit 0
fi
echo "soak: $failed_runs of $runs runs failed:"
cat "$summary"
exit 1
