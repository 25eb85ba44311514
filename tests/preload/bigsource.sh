#!/bin/sh
# SPDX-License-Identifier: MIT
# A C file with enough functions to make cc1 work: loops, switches, inlining.
awk 'BEGIN {
	print "#include <stddef.h>"
	for (i = 0; i < 200; i++) {
		printf "static inline unsigned f%d(unsigned x) { return x * %du + (x >> %d); }\n", i, 2 * i + 1, i % 13 + 1
		printf "unsigned g%d(const unsigned *v, size_t n) {\n", i
		printf "\tunsigned s = %d;\n\tfor (size_t j = 0; j < n; j++) {\n", i
		printf "\t\tswitch (v[j] %% 5) {\n"
		for (c = 0; c < 5; c++)
			printf "\t\tcase %d: s += f%d(v[j] + %d); break;\n", c, (i + c) % (i + 1), c
		printf "\t\t}\n\t}\n\treturn s;\n}\n"
	}
}'
