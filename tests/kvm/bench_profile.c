// SPDX-License-Identifier: MIT
/*
 * The guest profiler's sampling overhead on /dev/kvm (issue 6): a guest
 * does pure CPU work (a register-only hash, no exits, no interrupts) and
 * counts units of it in shared memory; in ONE run, windows alternate
 * between no profiling and profiling over QMP (profile-start/-stop, as
 * `qlite profile` does) with the timer method at 1 kHz, the kick method
 * at 1 kHz and the timer method at 100 Hz. Throughput per window is units
 * per second of wall time between profile-start's reply and profile-stop
 * (the same bracket for "off"); per mode the median over the windows, and
 * the slowdown against "off". A benchmark: prints figures, asserts nothing.
 *
 * usage: bench-profile [-r ROUNDS] [-w SECONDS] [-c VCPUS]
 *        (QLITE_TEST_GUEST = guest.elf; default 10 rounds of 2 s, 1 vCPU)
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/client.h"
#include "qlite/profile.h"
#include "qlite/vcpu.h"

#define MAX_ROUNDS 64

struct mode {
	const char *name;
	const char *method; /* NULL: profiling off */
	unsigned int freq;
};

static const struct mode modes[] = {
	{"off", NULL, 0},
	{"timer-1k", "timer", 1000},
	{"kick-1k", "kick", 1000},
	{"timer-100", "timer", 100},
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

struct window {
	bool ok;
	double rate;	      /* units/s, summed over vCPUs */
	double wait_pct;      /* vCPU threads' run-queue wait, % of the window (summed) */
	double samples_per_s; /* per vCPU */
	double sample_pct; /* time taking samples on the vCPU threads, % of the session (per vCPU)
			    */
};

struct bench {
	struct ktest t;
	const char *sock;
	unsigned int ncpus, rounds;
	double window_s;
	struct window w[NMODES][MAX_ROUNDS];   /* [0]: unused, see off[] */
	struct window off[NMODES][MAX_ROUNDS]; /* the "off" window just before w[m][r] */
};


static uint64_t progress(struct bench *b)
{
	volatile uint64_t *shared = ktest_shared(&b->t);
	uint64_t sum = 0;
	unsigned int i;

	for (i = 0; i < b->ncpus; i++)
		sum += shared[CW_PROGRESS(i)];
	return sum;
}

static uint64_t waits(struct bench *b)
{
	uint64_t sum = 0;
	unsigned int i;

	for (i = 0; i < b->ncpus; i++)
		sum += ktest_runqueue_wait_ns(b->t.vm->vcpus[i]->tid);
	return sum;
}

static void window(struct bench *b, struct qmp_conn *q, const struct mode *m, struct window *w)
{
	struct qerr e = {0};
	struct json_object *args, *ret;
	uint64_t p0, p1, t0, t1, w0, w1;
	struct profile_data d;
	unsigned int i;

	if (m->method) {
		args = json_object_new_object();
		json_object_object_add(args, "frequency", json_object_new_int((int)m->freq));
		json_object_object_add(args, "method", json_object_new_string(m->method));
		ret = qmp_conn_execute(q, "profile-start", args, NULL, &e);
		json_object_put(args);
		if (!ret) {
			fprintf(stderr, "profile-start %s: %s\n", m->name, e.msg);
			return;
		}
		json_object_put(ret);
	}
	p0 = progress(b);
	w0 = waits(b);
	t0 = time_now_ns();
	usleep((useconds_t)(b->window_s * 1e6));
	p1 = progress(b);
	w1 = waits(b);
	t1 = time_now_ns();
	w->rate = (double)(p1 - p0) * 1e9 / (double)(t1 - t0);
	w->wait_pct = 100.0 * (double)(w1 - w0) / (double)(t1 - t0);
	if (m->method) {
		ret = qmp_conn_execute(q, "profile-stop", NULL, NULL, &e);
		if (!ret || profile_data_from_json(ret, &d, &e)) {
			fprintf(stderr, "profile-stop %s: %s\n", m->name, e.msg);
			json_object_put(ret);
			return;
		}
		json_object_put(ret);
		w->samples_per_s = 0;
		w->sample_pct = 0;
		for (i = 0; i < d.nvcpus; i++) {
			w->samples_per_s += (double)d.vcpus[i].samples;
			w->sample_pct += (double)d.vcpus[i].sample_ns;
		}
		w->samples_per_s /= (double)(d.elapsed_ns ? d.elapsed_ns : 1) / 1e9 * d.nvcpus;
		w->sample_pct *= 100.0 / ((double)(d.elapsed_ns ? d.elapsed_ns : 1) * d.nvcpus);
		profile_data_free(&d);
	}
	w->ok = true;
}

static void *client_thread(void *arg)
{
	struct bench *b = arg;
	struct qmp_conn *q = calloc(1, sizeof(*q));
	struct qerr e = {0};
	unsigned int r, k, i;

	if (!q || qmp_conn_open(q, b->sock, &e)) {
		fprintf(stderr, "client: %s\n", q ? e.msg : "out of memory");
		goto out;
	}
	for (i = 0; i < 3000 && progress(b) == 0; i++)
		usleep(10000);
	usleep(500000); /* settle */
	for (r = 0; r < b->rounds; r++) {
		/* ABAB: off, then a profiled mode; their order rotates per round. */
		for (k = 0; k < NMODES - 1; k++) {
			unsigned int mi = 1 + (k + r) % (NMODES - 1);

			window(b, q, &modes[0], &b->off[mi][r]);
			window(b, q, &modes[mi], &b->w[mi][r]);
		}
		fprintf(stderr, "round %u/%u done\n", r + 1, b->rounds);
	}
out:
	ktest_shared(&b->t)[CW_STOP] = b->ncpus;
	if (q)
		qmp_conn_close(q);
	free(q);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, unsigned int n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	struct bench *b = calloc(1, sizeof(*b));
	char sock[108], spec[128];
	double off, v[MAX_ROUNDS], wt[MAX_ROUNDS], sps[MAX_ROUNDS], pair[MAX_ROUNDS],
		spct[MAX_ROUNDS];
	unsigned int m, r, n;
	pthread_t th;
	int opt, ret;

	if (!b)
		return 1;
	b->ncpus = 1;
	b->rounds = 10;
	b->window_s = 2.0;
	while ((opt = getopt(argc, argv, "r:w:c:")) != -1) {
		switch (opt) {
		case 'r':
			b->rounds = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'w':
			b->window_s = strtod(optarg, NULL);
			break;
		case 'c':
			b->ncpus = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: %s [-r ROUNDS] [-w SECONDS] [-c VCPUS]\n", argv[0]);
			return 2;
		}
	}
	b->rounds = MIN(MAX(b->rounds, 1u), (unsigned int)MAX_ROUNDS);
	b->ncpus = MIN(MAX(b->ncpus, 1u), 8u);
	if (b->window_s < 0.1)
		b->window_s = 0.1;
	ret = ktest_create(&b->t, b->ncpus, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	snprintf(sock, sizeof(sock), "/tmp/qlite-bench-profile-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", sock);
	unlink(sock);
	b->t.qmp = spec;
	b->sock = sock;
	if (ktest_start(&b->t, GT_CPU_WORK))
		return 1;
	pthread_create(&th, NULL, client_thread, b);
	ret = ktest_run(&b->t,
			(unsigned int)(60 + b->rounds * (NMODES - 1) * 2 * (b->window_s + 1)));
	pthread_join(th, NULL);
	printf("==== sampling overhead on /dev/kvm: CPU-bound guest, %u vCPU(s), %u rounds, "
	       "%.1f s windows (off alternating with each mode)\n",
	       b->ncpus, b->rounds, b->window_s);
	/* "off": every off window of the run. */
	for (n = 0, m = 1; m < NMODES; m++)
		for (r = 0; r < b->rounds; r++)
			if (b->off[m][r].ok && n < MAX_ROUNDS) {
				v[n] = b->off[m][r].rate;
				wt[n++] = b->off[m][r].wait_pct;
			}
	off = median(v, n);
	printf("  %-10s %12.0f units/s (median of %u; min %.0f, max %.0f)  vCPU run-queue wait "
	       "%.1f%%\n",
	       "off", off, n, n ? v[0] : 0, n ? v[n - 1] : 0, median(wt, n));
	for (m = 1; m < NMODES; m++) {
		double med, lo, hi, paired;

		for (n = 0, r = 0; r < b->rounds; r++) {
			if (!b->w[m][r].ok || !b->off[m][r].ok)
				continue;
			v[n] = b->w[m][r].rate;
			wt[n] = b->w[m][r].wait_pct;
			sps[n] = b->w[m][r].samples_per_s;
			spct[n] = b->w[m][r].sample_pct;
			/* against the off window just before it */
			pair[n] = 100 * (1 - b->w[m][r].rate / b->off[m][r].rate);
			n++;
		}
		if (!n) {
			printf("  %-10s no windows\n", modes[m].name);
			continue;
		}
		med = median(v, n);
		lo = v[0];
		hi = v[n - 1];
		paired = median(pair, n);
		printf("  %-10s %12.0f units/s (median of %u; min %.0f, max %.0f)  slowdown "
		       "%5.2f%% "
		       "(paired with the off window before: median %5.2f%%, range %.2f..%.2f)  "
		       "samples/s/vCPU %.0f (taking them: %.2f%% of the vCPU thread)  "
		       "vCPU run-queue wait %.1f%%\n",
		       modes[m].name, med, n, lo, hi, off > 0 ? 100 * (1 - med / off) : 0, paired,
		       pair[0], pair[n - 1], median(sps, n), median(spct, n), median(wt, n));
	}
	ktest_destroy(&b->t);
	unlink(sock);
	free(b);
	return ret == VM_STOP_POWEROFF ? 0 : 1;
}
