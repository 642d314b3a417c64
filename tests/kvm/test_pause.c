// SPDX-License-Identifier: MIT
/*
 * Pause/resume over QMP on a running guest: two vCPUs count in guest memory.
 * While paused the counters stand still and no vCPU is in KVM_RUN; after
 * cont they move again; the guest clock does not include the paused time.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/client.h"
#include "qlite/vcpu.h"

#define NCPUS 2
#define PAUSE_MS 600

/* True if @cmd returned normally; its "return" value in *@ret (may be NULL). */
static bool qmp_ok(struct qmp_conn *q, const char *cmd, struct json_object **ret)
{
	struct qerr e = { 0 };
	bool qmp_error = false;
	struct json_object *r = qmp_conn_execute(q, cmd, NULL, &qmp_error, &e);

	if (!r)
		return false;
	if (ret)
		*ret = r;
	else
		json_object_put(r);
	return true;
}

struct ctx {
	struct ktest *t;
	const char *sock;
	int failures;
};

static uint64_t counter(struct ktest *t, unsigned int cpu)
{
	return __atomic_load_n(&ktest_shared(t)[cpu], __ATOMIC_RELAXED);
}

static bool wait_counting(struct ktest *t, unsigned int cpu, uint64_t above)
{
	int i;

	for (i = 0; i < 2000; i++) { /* a hang guard, not a timing assertion */
		if (counter(t, cpu) > above)
			return true;
		usleep(5000);
	}
	return false;
}

static void *driver(void *arg)
{
	struct ctx *cx = arg;
	struct ktest *t = cx->t;
	struct qmp_conn q = { .fd = -1 };
	struct qerr e = { 0 };
	struct json_object *st = NULL, *v;
	struct kvm_clock_data after;
	uint64_t before[NCPUS], held[NCPUS];
	int failures = 0;
	unsigned int i;

	/* The CLI's own client: greeting and qmp_capabilities on open. */
	CHECK(qmp_conn_open(&q, cx->sock, &e) == 0);

	for (i = 0; i < NCPUS; i++)
		CHECK(wait_counting(t, i, 100));
	CHECK(qmp_ok(&q, "stop", NULL));
	/* stop returns only once every vCPU is parked outside KVM_RUN. */
	for (i = 0; i < NCPUS; i++) {
		pthread_mutex_lock(&t->vm->vcpus[i]->lock);
		CHECK(t->vm->vcpus[i]->state == VCPU_PAUSED);
		pthread_mutex_unlock(&t->vm->vcpus[i]->lock);
		before[i] = counter(t, i);
	}
	usleep(PAUSE_MS * 1000);
	for (i = 0; i < NCPUS; i++) {
		held[i] = counter(t, i);
		CHECK(held[i] == before[i]);
	}
	CHECK(qmp_ok(&q, "query-status", &st));
	CHECK(st && json_object_object_get_ex(st, "status", &v) &&
	      !strcmp(json_object_get_string(v), "paused"));
	json_object_put(st);

	CHECK(qmp_ok(&q, "cont", NULL));
	/* The guest clock resumes from where it was held, not +PAUSE_MS. */
	CHECK(ioctl(t->vm->vm_fd, KVM_GET_CLOCK, &after) == 0);
	CHECK(after.clock >= t->vm->paused_clock.clock);
	CHECK(after.clock - t->vm->paused_clock.clock < PAUSE_MS * 1000000ULL / 2);
	for (i = 0; i < NCPUS; i++)
		CHECK(wait_counting(t, i, held[i]));
	CHECK(qmp_ok(&q, "query-status", &st));
	CHECK(st && json_object_object_get_ex(st, "status", &v) &&
	      !strcmp(json_object_get_string(v), "running"));
	json_object_put(st);
	CHECK(qmp_ok(&q, "quit", NULL));
	qmp_conn_close(&q);
	cx->failures = failures;
	return NULL;
}

int main(void)
{
	char sock[64], spec[80];
	struct ktest t;
	struct ctx cx = { .t = &t };
	pthread_t th;
	int failures = 0, ret;
	enum vm_stop_reason why;

	ret = ktest_create(&t, NCPUS, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	snprintf(sock, sizeof(sock), "/tmp/qlite-kvm-pause-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", sock);
	unlink(sock);
	t.qmp = spec;
	cx.sock = sock;
	CHECK(ktest_start(&t, GT_COUNT_FOREVER) == 0);
	pthread_create(&th, NULL, driver, &cx);
	why = ktest_run(&t, 120);
	pthread_join(th, NULL);
	failures += cx.failures;
	CHECK(why == VM_STOP_QUIT);
	ktest_destroy(&t);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
