#!/bin/sh
# SPDX-License-Identifier: MIT
# usage: layers.sh LIB...   the layers' static libraries, bottom first
#
# The runtime is a stack: a layer's code may call its own layer and the
# ones below, never one above. Include paths already refuse an upward
# #include; this checks the objects, so that a hand-written declaration
# cannot sneak an upward call past them either. Each library's undefined
# symbols must not be defined by any library after it in the list. Names
# that libc defines (malloc, munmap...) are libc calls, whoever interposes
# them for the process (the transparent layer does).
set -eu
failures=0
later_defs=$(mktemp)
libc_defs=$(mktemp)
trap 'rm -f "$later_defs" "$libc_defs"' EXIT

defined() { nm --defined-only -g "$1" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u; }
undefined() { nm -u "$1" 2>/dev/null | awk '{ print $NF }' | sort -u; }

libc=$(${CC:-cc} -print-file-name=libc.so.6)
nm -D --defined-only "$libc" | awk '{ sub(/@.*/, "", $NF); print $NF }' | sort -u >"$libc_defs"
[ -s "$libc_defs" ] || { echo "layers: cannot read libc's symbols ($libc)"; exit 1; }

# Walk top-down, collecting what the layers above define.
for lib in $(printf '%s\n' "$@" | tac); do
	upward=$(undefined "$lib" | comm -12 - "$later_defs" | comm -23 - "$libc_defs")
	if [ -n "$upward" ]; then
		echo "FAIL: $(basename "$lib") calls up into a higher layer:"
		echo "$upward" | sed 's/^/  /'
		failures=$((failures + 1))
	fi
	defined "$lib" | sort -u -m - "$later_defs" >"$later_defs.new"
	mv "$later_defs.new" "$later_defs"
done
[ "$failures" -eq 0 ] || exit 1
echo "layers: $# libraries, no upward calls"
