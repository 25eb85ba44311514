// SPDX-License-Identifier: MIT
/*
 * Reads a file into heap buffers whose pages sit on a device, and writes
 * device-resident buffers out: the kernel itself touches the pages (a
 * kernel-mode fault inside read() and write()), and the data must come
 * through intact. Natively it is plain file I/O. Under uhmm the buffers are
 * pushed to the first device with hmm_migrate, found with dlsym so that the
 * program needs nothing from uhmm to build or run.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILE_SIZE (24u << 20)
#define CHUNK (1u << 20)

typedef int (*migrate_fn)(void *, size_t, void *, unsigned, size_t *);
typedef void *(*device_get_fn)(int);

static migrate_fn migrate;
static void *device;

/* Page-aligned range of [p, p + len) on the device, when uhmm is there. */
static void to_device(void *p, size_t len)
{
	uintptr_t s = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
	uintptr_t e = ((uintptr_t)p + len) & ~(uintptr_t)4095;
	size_t moved;

	if (migrate && device && e > s && migrate((void *)s, e - s, device, 0, &moved)) {
		fprintf(stderr, "readfile: hmm_migrate failed\n");
		exit(1);
	}
}

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "readfile.dat";
	unsigned char *buf = malloc(FILE_SIZE), *out = malloc(FILE_SIZE);
	uint64_t h_write = 0xcbf29ce484222325ull, h_read = h_write, h_back = h_write;
	device_get_fn device_get;
	char copy[4096];
	int fd;

	if (!buf || !out)
		return 1;
	migrate = (migrate_fn)dlsym(RTLD_DEFAULT, "hmm_migrate");
	device_get = (device_get_fn)dlsym(RTLD_DEFAULT, "hmm_device_get");
	device = device_get ? device_get(0) : NULL;
	/* Write a pattern from a device-resident buffer: the kernel reads it. */
	for (size_t i = 0; i < FILE_SIZE; i++)
		out[i] = (unsigned char)(i * 31 + (i >> 12));
	h_write = fnv(out, FILE_SIZE, h_write);
	to_device(out, FILE_SIZE);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return 1;
	for (size_t at = 0; at < FILE_SIZE; at += CHUNK)
		if (write(fd, out + at, CHUNK) != CHUNK)
			return 1;
	/* Read it back into a device-resident buffer: the kernel writes it. */
	memset(buf, 0, FILE_SIZE);
	to_device(buf, FILE_SIZE);
	for (size_t at = 0; at < FILE_SIZE; at += CHUNK)
		if (pread(fd, buf + at, CHUNK, (off_t)at) != CHUNK)
			return 1;
	h_read = fnv(buf, FILE_SIZE, h_read);
	/* Unaligned reads straddling pages, half of them on the device. */
	to_device(buf, FILE_SIZE / 2);
	for (size_t at = 4000; at + sizeof(copy) < FILE_SIZE; at += 997 * 1024) {
		if (pread(fd, buf + at, sizeof(copy), (off_t)at) != (ssize_t)sizeof(copy))
			return 1;
		memcpy(copy, buf + at, sizeof(copy));
		h_back = fnv((unsigned char *)copy, sizeof(copy), h_back);
	}
	close(fd);
	unlink(path);
	printf("readfile: wrote %016llx read %016llx %s, pieces %016llx\n",
	       (unsigned long long)h_write, (unsigned long long)h_read,
	       h_write == h_read ? "(equal)" : "(DIFFERENT)", (unsigned long long)h_back);
	free(buf);
	free(out);
	return h_write != h_read;
}
