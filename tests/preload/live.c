// SPDX-License-Identifier: MIT
/*
 * A process for uhmm-stat to watch: it fills a heap buffer, says "ready" on
 * stdout, and keeps reading the buffer until its stdin closes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>

int main(void)
{
	size_t len = 16 << 20;
	volatile char *buf = malloc(len);
	unsigned long sum = 0;

	if (!buf)
		return 1;
	memset((char *)buf, 1, len);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };

		if (poll(&p, 1, 10) > 0)
			break; /* data or EOF: done */
		for (size_t i = 0; i < len; i += 4096 * 16)
			sum += buf[i];
	}
	return sum ? 0 : 1;
}
