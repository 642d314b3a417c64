// SPDX-License-Identifier: MIT
/*
 * Sampling method "kick": one sampler thread wakes at the sampling rate and
 * kicks every running vCPU (immediate_exit + the kick signal, as a pause
 * request does, but without changing its state). Each vCPU thread then
 * records its own sample; the sampler never waits for a vCPU.
 */
#include <sched.h>
#include <string.h>

#include "profile_internal.h"
#include "qlite/vcpu.h"

static void *kick_thread(void *arg)
{
	struct profile *p = arg;
	uint64_t period = 1000000000ULL / p->params.freq, rng = time_now_ns();
	struct sched_param sp = { .sched_priority = 1 };
	int ret;

	/*
	 * A sample is taken when the kick lands, so a sampler that wakes late
	 * moves samples in time; how late depends on what the vCPUs are doing
	 * (a busy vCPU holds a CPU) and that biased the known-split test by 3
	 * to 14 points on a loaded 2-CPU host. As a real-time thread it wakes
	 * on time (error < 1 point). It runs microseconds per period.
	 */
	ret = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
	if (ret)
		log_msg("profiler: kick sampler runs without SCHED_FIFO (%s): samples may lag "
			"under host load; the timer method does not depend on it",
			strerror(ret));
	uint64_t next = time_now_ns() + profile_next_interval(&rng, period);

	while (profile_thread_sleep(p, next)) {
		uint64_t now;
		unsigned int i;

		for (i = 0; i < p->nvcpus; i++) {
			struct vcpu *v = p->pv[i]->v;

			/* A parked vCPU has nothing to sample (a hint; racy by design). */
			if (__atomic_load_n(&v->state, __ATOMIC_RELAXED) == VCPU_PAUSED)
				continue;
			__atomic_store_n(&p->pv[i]->due_ns, time_now_ns(), __ATOMIC_RELEASE);
			__atomic_store_n(&v->prof_req, 1, __ATOMIC_SEQ_CST);
			vcpu_kick(v);
		}
		next += profile_next_interval(&rng, period);
		now = time_now_ns();
		if (next < now) /* fell behind (host overloaded): skip, don't burst */
			next = now + profile_next_interval(&rng, period);
	}
	return NULL;
}

static int kick_attach(struct profile *p, struct qerr *e)
{
	int ret = profile_thread_start(p, kick_thread, "prof-sampler");

	return ret ? qerr_set(e, -ret, "cannot start the sampler thread") : 0;
}

static void kick_detach(struct profile *p)
{
	profile_thread_stop(p);
}

const struct profiler_ops profiler_kick_ops = {
	.name = "kick",
	.attach = kick_attach,
	.sample = profile_sample_regs,
	.detach = kick_detach,
};
