// SPDX-License-Identifier: MIT
/*
 * Sampling method "timer": a POSIX timer per vCPU thread (CLOCK_MONOTONIC,
 * SIGEV_THREAD_ID). The kernel signals the vCPU thread itself; the handler
 * (vcpu.c) asks for a sample and sets immediate_exit, so KVM_RUN returns
 * and the thread records where its guest was. No thread of ours wakes up
 * per sample, which is why this is the default (see README.md, measured).
 * The timer is one-shot, re-armed with a jittered interval by each sample
 * (profile_next_interval): a parked vCPU is not signalled again until it
 * runs and samples.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "profile_internal.h"
#include "qlite/vcpu.h"

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

/*
 * The next expiry counts from the last one, not from now: a sample taken
 * late (slow signal delivery, a busy host) must not lower the rate.
 */
static int timer_arm(struct profile *p, struct profile_vcpu *pv)
{
	uint64_t period = 1000000000ULL / p->params.freq, now = time_now_ns();
	uint64_t due = __atomic_load_n(&pv->due_ns, __ATOMIC_RELAXED);
	struct itimerspec its = { 0 };

	due = (due ? due : now) + profile_next_interval(&pv->rng, period);
	if (due <= now)
		due = now + profile_next_interval(&pv->rng, period);
	its.it_value.tv_sec = (time_t)(due / 1000000000ULL);
	its.it_value.tv_nsec = (long)(due % 1000000000ULL);
	__atomic_store_n(&pv->due_ns, due, __ATOMIC_RELEASE);
	return timer_settime(pv->timer, TIMER_ABSTIME, &its, NULL) < 0 ? -errno : 0;
}

/* On the vCPU's thread: the timer signals this thread only. */
static int timer_vcpu_created(struct profile *p, struct profile_vcpu *pv)
{
	struct sigevent sev;
	int ret;

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = VCPU_SAMPLE_SIGNAL;
	sev.sigev_value.sival_ptr = pv->v;
	sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &sev, &pv->timer) < 0)
		return -errno;
	pv->has_timer = true;
	ret = timer_arm(p, pv);
	if (ret) {
		timer_delete(pv->timer);
		pv->has_timer = false;
	}
	return ret;
}

static void timer_sample(struct profile *p, struct profile_vcpu *pv)
{
	profile_sample_regs(p, pv);
	if (pv->has_timer)
		timer_arm(p, pv);
}

static void timer_detach(struct profile *p)
{
	unsigned int i;

	/* A signal already queued still finds its vCPU: they outlive this. */
	for (i = 0; i < p->nvcpus; i++)
		if (p->pv[i]->has_timer) {
			timer_delete(p->pv[i]->timer);
			p->pv[i]->has_timer = false;
		}
}

const struct profiler_ops profiler_timer_ops = {
	.name = "timer",
	.vcpu_created = timer_vcpu_created,
	.sample = timer_sample,
	.detach = timer_detach,
};
