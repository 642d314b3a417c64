// SPDX-License-Identifier: MIT
/*
 * The guest profiler end to end on /dev/kvm: a guest runs the same loop in
 * two functions, 70 and 30 iterations in 100, and is halted for about 40 %
 * of the time. A QMP client (qlite's own) profiles it with each sampling
 * method; the split of the samples, symbolized through the guest ELF with
 * libelf, must be within 5 points of 70/30, halted time must come out as
 * idle (within 10 points of the share the guest measured with its TSC),
 * and the exit accounting must name the test devices. Then bad
 * profile-start input gets errors while the VM runs on, and a profile
 * running when the guest powers off arrives in the PROFILE_STOPPED event.
 *
 * With --bench N (tests/bench/profile.sh) it profiles N windows per method
 * and prints the attribution accuracy instead of checking bounds: the
 * share of non-idle samples in the right function, min(sampled, known)
 * summed over the two functions (glue code counts as wrong).
 */
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/client.h"
#include "qlite/report.h"
#include "qlite/vcpu.h"

#define FREQ PROFILE_DEFAULT_FREQ
#define WINDOW_US 1500000 /* per method: how long to profile (not checked) */
#define BENCH_WINDOW_US 2000000
#define MAX_WINDOWS 32
#define TOLERANCE 5.0 /* points, the bound */
#define IDLE_TOLERANCE 10.0
/*
 * The kick method's samples depend on a second thread being scheduled on
 * time, and its real-time sampler preempts busy vCPUs on a shared CPU
 * (their samples then count as steal, so idle reads high: 63 % for 49 %
 * halted at 19 % wait). On a host so loaded that the vCPU thread itself
 * waited this much of the window for a CPU, its bounds are reported, not
 * asserted; the timer method's always are (within 2.5 points at 55 %).
 */
#define KICK_MAX_WAIT_PCT 10.0

struct result {
	char method[8];
	bool ok;
	double share_a, share_b, truth_a, truth_b, idle_pct, truth_idle;
	double split_a, in_hot; /* prof_hot_a's part of the two; both's part of busy */
	double tsc_a; /* the guest's TSC account of the split (includes host steal) */
	double steal_pct;
	double accuracy; /* % of busy samples in the right function */
	uint64_t samples, busy, idle, steal, intr;
	uint64_t pio_count, pio_ns, mmio_count, io_exits, mmio_exits;
	unsigned int kvm_stats;
};

struct client {
	struct ktest *t;
	const char *sock;
	struct symtab syms;
	struct result res[2];
	struct result bench[2][MAX_WINDOWS];
	int windows; /* --bench N */
	int failures;
	bool bad_input_ok[6];
	bool vm_stopped_event;
	uint64_t vm_stopped_samples;
	char vm_stopped_reason[32];
};

static volatile uint64_t *shared(struct client *c)
{
	return ktest_shared(c->t);
}

static void on_event(void *opaque, struct json_object *ev)
{
	struct client *c = opaque;
	struct json_object *name, *data, *prof, *reason;
	struct profile_data d;
	struct qerr e = { 0 };

	if (!json_object_object_get_ex(ev, "event", &name) ||
	    strcmp(json_object_get_string(name), "PROFILE_STOPPED") ||
	    !json_object_object_get_ex(ev, "data", &data) ||
	    !json_object_object_get_ex(data, "profile", &prof))
		return;
	if (json_object_object_get_ex(data, "reason", &reason))
		snprintf(c->vm_stopped_reason, sizeof(c->vm_stopped_reason), "%s",
			 json_object_get_string(reason));
	if (profile_data_from_json(prof, &d, &e)) {
		fprintf(stderr, "PROFILE_STOPPED data: %s\n", e.msg);
		return;
	}
	c->vm_stopped_event = true;
	c->vm_stopped_samples = d.nvcpus ? d.vcpus[0].samples : 0;
	profile_data_free(&d);
}

static struct json_object *start_args(int64_t freq, const char *method, int64_t duration_ms)
{
	struct json_object *a = json_object_new_object();

	json_object_object_add(a, "frequency", json_object_new_int64(freq));
	if (method)
		json_object_object_add(a, "method", json_object_new_string(method));
	if (duration_ms)
		json_object_object_add(a, "duration", json_object_new_int64(duration_ms));
	return a;
}


static void measure(struct client *c, struct qmp_conn *q, const char *method, struct result *r,
		    unsigned int window_us)
{
	struct json_object *args = start_args(FREQ, method, 0), *ret;
	uint64_t a0, b0, i0, a1, b1, i1, t0, t1, w0, w1;
	pid_t tid = c->t->vm->vcpus[0]->tid;
	struct report_options ro = { .kernel = &c->syms };
	struct profile_data d;
	struct report rep;
	struct qerr e = { 0 };
	unsigned int k;
	bool qerror;

	snprintf(r->method, sizeof(r->method), "%s", method);
	a0 = shared(c)[PS_CYCLES_A];
	b0 = shared(c)[PS_CYCLES_B];
	i0 = shared(c)[PS_CYCLES_IDLE];
	w0 = ktest_runqueue_wait_ns(tid);
	t0 = time_now_ns();
	ret = qmp_conn_execute(q, "profile-start", args, &qerror, &e);
	json_object_put(args);
	if (!ret) {
		fprintf(stderr, "profile-start %s: %s\n", method, e.msg);
		return;
	}
	json_object_put(ret);
	usleep(window_us);
	ret = qmp_conn_execute(q, "profile-stop", NULL, &qerror, &e);
	a1 = shared(c)[PS_CYCLES_A];
	b1 = shared(c)[PS_CYCLES_B];
	i1 = shared(c)[PS_CYCLES_IDLE];
	w1 = ktest_runqueue_wait_ns(tid);
	t1 = time_now_ns();
	if (!ret || profile_data_from_json(ret, &d, &e)) {
		fprintf(stderr, "profile-stop %s: %s\n", method, e.msg);
		json_object_put(ret);
		return;
	}
	json_object_put(ret);
	if (report_build(&d, &ro, &rep, &e)) {
		fprintf(stderr, "report: %s\n", e.msg);
		profile_data_free(&d);
		return;
	}
	r->share_a = report_share(&rep, "prof_hot_a");
	r->share_b = report_share(&rep, "prof_hot_b");
	/*
	 * The guest's TSC account covers the two functions, not the glue
	 * between them (a few rdtsc, the device accesses): compare the split
	 * between the two, and require that they hold nearly all busy samples.
	 */
	r->split_a = r->share_a + r->share_b > 0 ? 100.0 * r->share_a / (r->share_a + r->share_b) : 0;
	r->in_hot = r->share_a + r->share_b;
	/*
	 * The truth is the iteration split: the guest's TSC also counts time
	 * its vCPU thread was preempted on a loaded host, which the samples
	 * rightly do not see (printed for comparison).
	 */
	r->truth_a = 100.0 * (double)shared(c)[PS_ITERS_A] /
		     (double)(shared(c)[PS_ITERS_A] + shared(c)[PS_ITERS_B]);
	r->truth_b = 100.0 - r->truth_a;
	r->tsc_a = 100.0 * (double)(a1 - a0) / (double)(a1 - a0 + b1 - b0);
	r->accuracy = MIN(r->share_a, r->truth_a) + MIN(r->share_b, r->truth_b);
	/*
	 * Waiting for a host CPU stretches halted and busy time alike (a woken
	 * vCPU waits too), so the guest's halted share is compared as it is;
	 * the wait is printed to explain a spread.
	 */
	r->steal_pct = 100.0 * (double)(w1 - w0) / (double)(t1 - t0);
	r->samples = rep.total;
	r->busy = rep.kernel + rep.user;
	r->idle = rep.idle;
	/* Of the samples that found the guest somewhere: steal is neither idle nor busy. */
	r->idle_pct = rep.total > rep.steal ?
			      100.0 * (double)rep.idle / (double)(rep.total - rep.steal) : 0;
	r->steal = rep.steal;
	r->truth_idle = 100.0 * (double)(i1 - i0) / (double)(a1 - a0 + b1 - b0 + i1 - i0);
	for (k = 0; k < d.vcpus[0].ndevices; k++) {
		const struct prof_device *dev = &d.vcpus[0].devices[k];

		if (!strcmp(dev->name, "testdev-pio") && !strcmp(dev->bus, "pio")) {
			r->pio_count = dev->c.count;
			r->pio_ns = dev->c.ns;
		}
		if (!strcmp(dev->name, "testdev-mmio") && !strcmp(dev->bus, "mmio"))
			r->mmio_count = dev->c.count;
	}
	r->io_exits = d.vcpus[0].exits[KVM_EXIT_IO].count;
	r->mmio_exits = d.vcpus[0].exits[KVM_EXIT_MMIO].count;
	r->intr = d.vcpus[0].exits[KVM_EXIT_INTR].count;
	r->kvm_stats = d.vcpus[0].nstats;
	r->ok = true;
	printf("%-5s: %llu samples (%llu steal), %llu busy, idle %.1f%% (guest: %.1f%% halted, "
	       "thread waited for a CPU %.1f%%); prof_hot_a %.1f%%, prof_hot_b %.1f%% of busy; split %.1f/%.1f "
	       "(known: %.1f/%.1f; guest TSC: %.1f/%.1f)\n",
	       method, (unsigned long long)r->samples, (unsigned long long)r->steal,
	       (unsigned long long)r->busy, r->idle_pct, r->truth_idle, r->steal_pct, r->share_a, r->share_b, r->split_a, 100 - r->split_a,
	       r->truth_a, r->truth_b, r->tsc_a, 100 - r->tsc_a);
	report_print_top(&rep, 5, stdout);
	report_print_exits(&d, stdout);
	report_free(&rep);
	profile_data_free(&d);
}

static bool expect_error(struct qmp_conn *q, const char *cmd, struct json_object *args,
			 const char *needle)
{
	struct qerr e = { 0 };
	bool qerror;
	struct json_object *ret = qmp_conn_execute(q, cmd, args, &qerror, &e);

	json_object_put(args);
	if (ret || !qerror || !strstr(e.msg, needle)) {
		fprintf(stderr, "%s: want an error with \"%s\", got %s\n", cmd, needle,
			ret ? "success" : e.msg);
		json_object_put(ret);
		return false;
	}
	return true;
}

static void *client_thread(void *arg)
{
	struct client *c = arg;
	struct qmp_conn *q = calloc(1, sizeof(*q));
	struct json_object *ret, *args;
	struct qerr e = { 0 };
	int i;

	if (!q)
		return NULL;
	q->on_event = on_event;
	q->opaque = c;
	if (qmp_conn_open(q, c->sock, &e)) {
		fprintf(stderr, "client: %s\n", e.msg);
		goto out;
	}
	/* The guest is in its loop once it has finished a couple of rounds. */
	for (i = 0; i < 3000 && shared(c)[PS_ROUNDS] < 2; i++)
		usleep(10000);
	c->bad_input_ok[0] = expect_error(q, "profile-stop", NULL, "no profile has been started");
	c->bad_input_ok[1] = expect_error(q, "profile-start", start_args(0, NULL, 0), "out of range");
	c->bad_input_ok[2] =
		expect_error(q, "profile-start", start_args(20000, NULL, 0), "out of range");
	c->bad_input_ok[3] =
		expect_error(q, "profile-start", start_args(FREQ, "bogus", 0), "expected timer");
	if (c->windows) {
		for (i = 0; i < c->windows; i++) {
			measure(c, q, "timer", &c->bench[0][i], BENCH_WINDOW_US);
			measure(c, q, "kick", &c->bench[1][i], BENCH_WINDOW_US);
		}
	}
	measure(c, q, "timer", &c->res[0], WINDOW_US);
	measure(c, q, "kick", &c->res[1], WINDOW_US);
	/* A second start while one runs is refused; the first keeps going. */
	args = start_args(FREQ, NULL, 60000);
	ret = qmp_conn_execute(q, "profile-start", args, NULL, &e);
	json_object_put(args);
	json_object_put(ret);
	c->bad_input_ok[4] =
		ret && expect_error(q, "profile-start", start_args(FREQ, NULL, 0), "already running");
	/* The guest powers off mid-profile: the result comes with PROFILE_STOPPED. */
	usleep(200000);
	shared(c)[PS_STOP] = 1;
	while (!c->vm_stopped_event && !qmp_conn_wait(q, 1000, &e))
		;
	c->bad_input_ok[5] = true;
out:
	qmp_conn_close(q);
	free(q);
	return NULL;
}

/* --bench: the figures, per method, over the windows. */
static void print_bench(struct client *c)
{
	static const char *const names[] = { "timer", "kick" };
	int m, i;

	printf("\n==== attribution accuracy, known-split guest (70/30, ~40 %% halted), %d windows "
	       "of %.1f s at %u Hz per method\n",
	       c->windows, BENCH_WINDOW_US / 1e6, FREQ);
	for (m = 0; m < 2; m++) {
		double acc = 0, acc_min = 100, err = 0, err_max = 0, idle = 0, guest_idle = 0;
		double wait = 0;
		int n = 0;

		for (i = 0; i < c->windows; i++) {
			const struct result *r = &c->bench[m][i];

			if (!r->ok)
				continue;
			acc += r->accuracy;
			acc_min = MIN(acc_min, r->accuracy);
			err += fabs(r->split_a - r->truth_a);
			err_max = MAX(err_max, fabs(r->split_a - r->truth_a));
			idle += r->idle_pct;
			guest_idle += r->truth_idle;
			wait += r->steal_pct;
			n++;
		}
		if (!n) {
			printf("%-5s: no results\n", names[m]);
			continue;
		}
		printf("%-5s: accuracy %.1f%% of non-idle samples in the right function (min %.1f%%); "
		       "split error %.2f points (max %.2f); idle %.1f%% vs guest-measured %.1f%%; "
		       "vCPU thread waited for a CPU %.1f%%\n",
		       names[m], acc / n, acc_min, err / n, err_max, idle / n, guest_idle / n,
		       wait / n);
	}
}

int main(int argc, char **argv)
{
	const char *elf = getenv("QLITE_TEST_GUEST");
	struct client c = { 0 };
	struct qerr e = { 0 };
	char sock[108], spec[128];
	struct ktest t;
	pthread_t th;
	int failures = 0, ret, m;
	enum vm_stop_reason why;

	if (argc == 3 && !strcmp(argv[1], "--bench"))
		c.windows = MIN(MAX(atoi(argv[2]), 1), MAX_WINDOWS);
	ret = ktest_create(&t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	if (!elf || symtab_load(elf, &c.syms, &e)) {
		fprintf(stderr, "guest symbols: %s\n", elf ? e.msg : "QLITE_TEST_GUEST unset");
		return 1;
	}
	snprintf(sock, sizeof(sock), "/tmp/qlite-kvm-profile-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", sock);
	unlink(sock);
	t.qmp = spec;
	c.t = &t;
	c.sock = sock;
	CHECK(ktest_start(&t, GT_PROFILE_SPLIT) == 0);
	CHECK(pthread_create(&th, NULL, client_thread, &c) == 0);
	why = ktest_run(&t, 120);
	pthread_join(th, NULL);
	CHECK(why == VM_STOP_POWEROFF);
	CHECK(t.fails == 0);
	if (c.windows) {
		/* Figures, not assertions (only that it ran). */
		print_bench(&c);
		symtab_free(&c.syms);
		ktest_destroy(&t);
		unlink(sock);
		return why == VM_STOP_POWEROFF ? 0 : 1;
	}
	for (m = 0; m < 2; m++) {
		struct result *r = &c.res[m];

		CHECK(r->ok);
		if (!r->ok)
			continue;
		if (m == 1 && r->steal_pct > KICK_MAX_WAIT_PCT) {
			printf("kick: host overloaded (vCPU thread waited %.0f%% for a CPU): "
			       "split error %.2f points, not checked\n",
			       r->steal_pct, fabs(r->split_a - r->truth_a));
			continue;
		}
		/* Enough samples for a 5-point bound to mean something. */
		CHECK(r->busy >= 300);
		CHECK(fabs(r->split_a - r->truth_a) <= TOLERANCE);
		CHECK(r->in_hot >= 90.0);
		/* Halted time is idle: present, close to the guest's own count. */
		CHECK(r->idle > 0);
		CHECK(fabs(r->idle_pct - r->truth_idle) <= IDLE_TOLERANCE);
		/* Exits attributed to the devices the guest touched. */
		CHECK(r->pio_count > 0 && r->pio_ns > 0);
		CHECK(r->mmio_count > 0);
		CHECK(r->io_exits >= r->pio_count);
		CHECK(r->mmio_exits >= r->mmio_count);
		CHECK(r->intr > 0);
		if (ioctl(t.vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD) > 0)
			CHECK(r->kvm_stats > 0);
		printf("%s: split error %.2f points; %.1f%% of busy samples in the two functions\n",
		       r->method, fabs(r->split_a - r->truth_a), r->in_hot);
	}
	for (m = 0; m < 6; m++)
		CHECK(c.bad_input_ok[m]);
	CHECK(c.vm_stopped_event);
	CHECK(!strcmp(c.vm_stopped_reason, "vm-stopped"));
	CHECK(c.vm_stopped_samples > 0);
	symtab_free(&c.syms);
	ktest_destroy(&t);
	unlink(sock);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
