// SPDX-License-Identifier: MIT
/*
 * The cost of a VM exit handled in qlite, for the exit-path benchmark
 * (tests/bench/exit-path.sh): a guest makes N back-to-back PIO exits to
 * a test device; prints ns and guest TSC cycles per exit. With --profile
 * HZ the guest profiler (timer method) is attached over QMP first, so the
 * loop runs with exit accounting and sampling on.
 *
 * Also builds against a qlite without a profiler (the benchmark's "before"
 * side), where --profile is refused.
 *
 * usage: bench-exits [N] [--profile HZ]     (QLITE_TEST_GUEST = guest.elf)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#if __has_include("qlite/profile.h")
#include <json-c/json.h>

#include "qlite/client.h"
#define HAVE_PROFILER 1
#endif

struct bench {
	struct ktest t;
	const char *sock;
	unsigned int freq;
	uint64_t t_go;
	bool ok;
};

static void *go_thread(void *arg)
{
	struct bench *b = arg;
	volatile uint64_t *shared = ktest_shared(&b->t);

#ifdef HAVE_PROFILER
	if (b->freq) {
		struct qmp_conn *q = calloc(1, sizeof(*q));
		struct json_object *args = json_object_new_object(), *ret = NULL;
		struct qerr e = { 0 };

		json_object_object_add(args, "frequency", json_object_new_int((int)b->freq));
		if (!q || qmp_conn_open(q, b->sock, &e) ||
		    !(ret = qmp_conn_execute(q, "profile-start", args, NULL, &e))) {
			fprintf(stderr, "profile-start: %s\n", e.msg);
			json_object_put(args);
			free(q);
			shared[EXIT_LOOP_COUNT] = 0; /* let the guest finish at once */
			b->ok = false;
			b->t_go = time_now_ns();
			shared[EXIT_LOOP_GO] = 1;
			return NULL;
		}
		json_object_put(ret);
		json_object_put(args);
		b->t_go = time_now_ns();
		shared[EXIT_LOOP_GO] = 1;
		qmp_conn_close(q); /* the session lives in qlite until the VM stops */
		free(q);
		return NULL;
	}
#endif
	b->t_go = time_now_ns();
	shared[EXIT_LOOP_GO] = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	struct bench b = { .ok = true };
	uint64_t n = 200000, t_end, cycles;
	char sock[108], spec[128];
	pthread_t th;
	int i, ret;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--profile") && i + 1 < argc)
			b.freq = (unsigned int)strtoul(argv[++i], NULL, 10);
		else
			n = strtoull(argv[i], NULL, 10);
	}
#ifndef HAVE_PROFILER
	if (b.freq) {
		fprintf(stderr, "this qlite has no profiler\n");
		return 2;
	}
#endif
	ret = ktest_create(&b.t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	snprintf(sock, sizeof(sock), "/tmp/qlite-bench-exits-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", sock);
	unlink(sock);
	b.t.qmp = spec;
	b.sock = sock;
	if (ktest_start(&b.t, GT_EXIT_LOOP))
		return 1;
	ktest_shared(&b.t)[EXIT_LOOP_COUNT] = n;
	pthread_create(&th, NULL, go_thread, &b);
	if (ktest_run(&b.t, 600) != VM_STOP_POWEROFF)
		b.ok = false;
	t_end = time_now_ns();
	pthread_join(th, NULL);
	cycles = ktest_shared(&b.t)[EXIT_LOOP_CYCLES];
	if (b.ok && n)
		printf("exits=%llu profile_hz=%u ns_per_exit=%.1f cycles_per_exit=%.1f\n",
		       (unsigned long long)n, b.freq, (double)(t_end - b.t_go) / (double)n,
		       (double)cycles / (double)n);
	ktest_destroy(&b.t);
	unlink(sock);
	return b.ok ? 0 : 1;
}
