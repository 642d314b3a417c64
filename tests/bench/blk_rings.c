// SPDX-License-Identifier: MIT
/*
 * Multi-queue block backend: one io_uring shared by all queues vs one ring
 * per queue. Each of N queues keeps D random reads in flight against FILE,
 * re-issuing from the completion callback as a virtio-blk device would, and
 * the program prints IOPS and IOPS per CPU-second for:
 *   shared-loop    one ring, its eventfd in the main loop (epoll)
 *   shared-wait    one ring, one thread blocking in io_uring_enter
 *   perq-loop      a ring per queue, all eventfds in one main loop
 *   perq-threads   a ring per queue, an I/O thread each (blk_ring_wait)
 * Figures only; run it several times, the order of modes rotates.
 *
 * usage: bench-blk-rings FILE [-q QUEUES] [-d DEPTH] [-b BS] [-s SECONDS]
 *            [-r ROUNDS] [-D (O_DIRECT)]
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "qlite/blk.h"
#include "qlite/loop.h"
#include "qlite/mem.h"

#define MAX_QUEUES 64

struct bench;

struct slot {
	struct queue *qs;
	struct blk_req req;
	struct iovec iov;
};

struct queue {
	struct bench *bn;
	struct blk_queue *q;
	struct blk_ring *r; /* the ring this queue submits to */
	struct slot *slots;
	uint64_t rng;
	uint64_t done;
	uint64_t errors;
};

struct bench {
	struct guest_mem mem;
	struct blk_backend *b;
	unsigned int queues, depth, bs;
	uint64_t blocks;
	bool stop;
	struct queue qs[MAX_QUEUES];
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void issue(struct slot *s);

static void on_done(void *opaque, int result)
{
	struct slot *s = opaque;

	s->qs->done++;
	if (result)
		s->qs->errors++;
	if (!__atomic_load_n(&s->qs->bn->stop, __ATOMIC_RELAXED))
		issue(s);
}

static void issue(struct slot *s)
{
	struct queue *qs = s->qs;
	uint64_t off = rng_next(&qs->rng) % qs->bn->blocks * qs->bn->bs;

	if (blk_read(qs->q, &s->req, off, &s->iov, 1, on_done, s))
		qs->errors++;
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void *io_thread(void *opaque)
{
	struct queue *qs = opaque;

	while (!__atomic_load_n(&qs->bn->stop, __ATOMIC_RELAXED))
		if (blk_ring_wait(qs->r) < 0)
			break;
	return NULL;
}

enum mode { SHARED_LOOP, SHARED_WAIT, PERQ_LOOP, PERQ_THREADS, NR_MODES };
static const char *const mode_names[] = { "shared-loop", "shared-wait", "perq-loop",
					  "perq-threads" };

static int run_mode(struct bench *bn, enum mode m, double seconds)
{
	bool per_queue = m == PERQ_LOOP || m == PERQ_THREADS;
	unsigned int nr_rings = per_queue ? bn->queues : 1;
	struct blk_ring *rings[MAX_QUEUES];
	pthread_t threads[MAX_QUEUES];
	struct loop *l = NULL;
	struct qerr e = { 0 };
	uint64_t total = 0, errors = 0, t0, t1;
	double c0, c1;
	unsigned int i, k;

	for (i = 0; i < nr_rings; i++) {
		if (blk_ring_create(&rings[i], per_queue ? bn->depth : bn->depth * bn->queues, &e)) {
			fprintf(stderr, "%s\n", e.msg);
			return -1;
		}
	}
	if (m == SHARED_LOOP || m == PERQ_LOOP) {
		if (loop_create(&l))
			return -1;
		for (i = 0; i < nr_rings; i++)
			blk_ring_attach(rings[i], l);
	}
	bn->stop = false;
	for (i = 0; i < bn->queues; i++) {
		struct queue *qs = &bn->qs[i];

		qs->r = rings[per_queue ? i : 0];
		qs->done = qs->errors = 0;
		if (blk_queue_create(&qs->q, bn->b, qs->r))
			return -1;
	}
	t0 = time_now_ns();
	c0 = cpu_seconds();
	for (i = 0; i < bn->queues; i++) {
		for (k = 0; k < bn->depth; k++)
			issue(&bn->qs[i].slots[k]);
		if (per_queue)
			blk_ring_submit(rings[i]);
	}
	blk_ring_submit(rings[0]);
	if (m == PERQ_THREADS)
		for (i = 0; i < nr_rings; i++)
			pthread_create(&threads[i], NULL, io_thread, &bn->qs[i]);
	while (time_now_ns() - t0 < seconds * 1e9) {
		if (m == PERQ_THREADS) {
			struct timespec ts = { 0, 20 * 1000 * 1000 };

			nanosleep(&ts, NULL);
		} else if (l) {
			loop_run_once(l, 100);
		} else {
			blk_ring_wait(rings[0]);
		}
	}
	__atomic_store_n(&bn->stop, true, __ATOMIC_RELAXED);
	if (m == PERQ_THREADS)
		for (i = 0; i < nr_rings; i++)
			pthread_join(threads[i], NULL);
	t1 = time_now_ns();
	c1 = cpu_seconds();
	for (i = 0; i < bn->queues; i++) {
		blk_queue_destroy(bn->qs[i].q); /* drains */
		total += bn->qs[i].done;
		errors += bn->qs[i].errors;
	}
	for (i = 0; i < nr_rings; i++)
		blk_ring_destroy(rings[i]);
	loop_destroy(l);
	printf("%-13s queues=%-2u depth=%-3u IOPS=%9.0f  CPU=%5.2fs  IOPS/CPU-s=%9.0f%s\n",
	       mode_names[m], bn->queues, bn->depth, total / ((t1 - t0) / 1e9), c1 - c0,
	       total / (c1 - c0), errors ? "  (errors!)" : "");
	return 0;
}

int main(int argc, char **argv)
{
	struct bench *bn = calloc(1, sizeof(*bn));
	struct blk_opts o = { 0 };
	struct qerr e = { 0 };
	double seconds = 3;
	unsigned int rounds = 2, r, m, i, k;
	int c;

	bn->queues = 4;
	bn->depth = 32;
	bn->bs = 4096;
	while ((c = getopt(argc, argv, "q:d:b:s:r:D")) != -1) {
		switch (c) {
		case 'q':
			bn->queues = atoi(optarg);
			break;
		case 'd':
			bn->depth = atoi(optarg);
			break;
		case 'b':
			bn->bs = atoi(optarg);
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'r':
			rounds = atoi(optarg);
			break;
		case 'D':
			o.direct = true;
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc - 1 || !bn->queues || bn->queues > MAX_QUEUES || !bn->depth ||
	    bn->depth > 1024 || bn->bs < 512 || bn->bs % 512)
		goto usage;
	o.path = argv[optind];
	o.readonly = true;
	if (mem_init(&bn->mem, (uint64_t)bn->queues * bn->depth * ALIGN_UP(bn->bs, 4096) + 16 * MiB,
		     MEM_BACKEND_ANON, &e) ||
	    blk_backend_open(&bn->b, &o, &bn->mem, &e)) {
		fprintf(stderr, "bench-blk-rings: %s\n", e.msg);
		return 1;
	}
	bn->blocks = blk_backend_size(bn->b) / bn->bs;
	for (i = 0; i < bn->queues; i++) {
		struct queue *qs = &bn->qs[i];

		qs->bn = bn;
		qs->rng = 0x9e3779b97f4a7c15ULL * (i + 1);
		qs->slots = calloc(bn->depth, sizeof(*qs->slots));
		for (k = 0; k < bn->depth; k++) {
			uint64_t at = ((uint64_t)i * bn->depth + k) * ALIGN_UP(bn->bs, 4096);

			qs->slots[k].qs = qs;
			qs->slots[k].iov = (struct iovec){ bn->mem.base + at, bn->bs };
		}
	}
	printf("bench-blk-rings: %s, %llu MiB, %s, %u B random reads, %u queues x depth %u, "
	       "%.1f s per mode, %u rounds\n",
	       o.path, (unsigned long long)(blk_backend_size(bn->b) >> 20),
	       o.direct ? "O_DIRECT" : "page cache", bn->bs, bn->queues, bn->depth, seconds, rounds);
	for (r = 0; r < rounds; r++)
		for (m = 0; m < NR_MODES; m++)
			if (run_mode(bn, (m + r) % NR_MODES, seconds))
				return 1;
	for (i = 0; i < bn->queues; i++)
		free(bn->qs[i].slots);
	blk_backend_close(bn->b);
	mem_destroy(&bn->mem);
	free(bn);
	return 0;
usage:
	fprintf(stderr, "usage: %s FILE [-q QUEUES] [-d DEPTH] [-b BS] [-s SECONDS] [-r ROUNDS] "
			"[-D]\n",
		argv[0]);
	free(bn);
	return 2;
}
