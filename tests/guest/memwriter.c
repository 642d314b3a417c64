// SPDX-License-Identifier: GPL-2.0-only
/*
 * qlite-memwriter: the guest workload of the migration tests and benchmark.
 * It rewrites a buffer page by page, pass after pass, and checks every word
 * of a page still holds the previous pass's pattern before overwriting it, so
 * a page lost, stale or corrupted by a migration is caught on the next pass.
 * Each pass prints "MW pass P sum S up U", S a checksum of what the pass
 * read: the sums depend only on the buffer size and the pass, so the host
 * compares them with what `-e` prints (same -m and -p).
 *
 * Built static (no libraries in the guest): guest-images/build.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_WORDS 512 /* 4 KiB pages of u64 */

static uint64_t pattern(uint64_t pass, uint64_t page, uint64_t word)
{
	uint64_t x;

	/* Pass 0 is the buffer as mmap gives it. */
	if (!pass)
		return 0;
	x = (pass << 44) ^ (page << 9) ^ word;
	x *= 0x9e3779b97f4a7c15ULL;
	return x ^ (x >> 29);
}

static uint64_t mix(uint64_t sum, uint64_t w)
{
	return ((sum << 7) | (sum >> 57)) ^ w;
}

static void usage(void)
{
	fputs("usage: qlite-memwriter [-m MIB] [-p PASSES] [-s SLEEP_MS] [-e]\n"
	      "  rewrites and checks a MIB buffer PASSES times (0: forever);\n"
	      "  -e prints the sums a correct run prints, without a buffer\n",
	      stderr);
	exit(2);
}

static unsigned long parse_num(const char *s, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max)
		usage();
	return v;
}

static void uptime(char *buf, size_t len)
{
	FILE *f = fopen("/proc/uptime", "r");

	snprintf(buf, len, "?");
	if (f) {
		if (fscanf(f, "%31s", buf) != 1)
			snprintf(buf, len, "?");
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	unsigned long mib = 16, passes = 10, sleep_ms = 0;
	uint64_t *buf = NULL, npages, pass, pg, w;
	int opt, expect = 0, bad = 0;
	char up[32];

	while ((opt = getopt(argc, argv, "m:p:s:e")) != -1) {
		switch (opt) {
		case 'm': mib = parse_num(optarg, 1 << 20); break;
		case 'p': passes = parse_num(optarg, 1UL << 40); break;
		case 's': sleep_ms = parse_num(optarg, 3600000); break;
		case 'e': expect = 1; break;
		default: usage();
		}
	}
	if (optind != argc || !mib)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	npages = (uint64_t)mib * 256;
	if (!expect) {
		buf = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (buf == MAP_FAILED) {
			perror("qlite-memwriter: mmap");
			return 1;
		}
	}
	printf("MW start %lu MiB %" PRIu64 " pages\n", mib, npages);
	for (pass = 1; !passes || pass <= passes; pass++) {
		uint64_t sum = pass;

		for (pg = 0; pg < npages; pg++) {
			uint64_t *p = buf ? buf + pg * PAGE_WORDS : NULL;

			for (w = 0; w < PAGE_WORDS; w++) {
				uint64_t want = pattern(pass - 1, pg, w);
				uint64_t v = pattern(pass, pg, w);

				if (p && p[w] != want) {
					printf("MW-CORRUPT pass %" PRIu64 " page %" PRIu64
					       " word %" PRIu64 " has %016" PRIx64
					       " want %016" PRIx64 "\n",
					       pass, pg, w, p[w], want);
					if (++bad >= 8)
						return 1;
					break;
				}
				/* The sum covers what memory held. */
				sum = mix(sum, p ? p[w] : want);
				if (p)
					p[w] = v;
			}
		}
		if (bad)
			return 1;
		if (expect) {
			printf("MW pass %" PRIu64 " sum %016" PRIx64 "\n", pass, sum);
			continue;
		}
		uptime(up, sizeof(up));
		printf("MW pass %" PRIu64 " sum %016" PRIx64 " up %s\n", pass, sum, up);
		if (sleep_ms) {
			struct timespec ts = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000 };

			nanosleep(&ts, NULL);
		}
	}
	printf("MW-DONE passes %lu\n", passes);
	return 0;
}
