/* SPDX-License-Identifier: MIT */
/* Between the profiler core (profile.c) and its sampling plug-ins. */
#ifndef QLITE_PROFILE_INTERNAL_H
#define QLITE_PROFILE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "qlite/profile.h"
#include "qlite/vm.h"

struct kvm_stats;
struct profile;
struct profile_vcpu;

/*
 * A sampling method, plugged into the core. The core owns attach/detach to
 * the vCPUs and the exit accounting; a method decides when samples are due
 * and how they are taken.
 */
struct profiler_ops {
	const char *name;
	/* Main thread, before any vCPU sees the session. */
	int (*attach)(struct profile *p, struct qerr *e);
	/* On the vCPU's own thread, at its first profiled KVM_RUN. */
	int (*vcpu_created)(struct profile *p, struct profile_vcpu *pv);
	/* vCPU thread, after each KVM_RUN returned (@ret as from the ioctl). */
	void (*vcpu_exit)(struct profile *p, struct profile_vcpu *pv, int ret);
	/* vCPU thread, a sample is due (vcpu->prof_req was set). */
	void (*sample)(struct profile *p, struct profile_vcpu *pv);
	/* Main thread, after every vCPU has left the profiled path. */
	void (*detach)(struct profile *p);
};

extern const struct profiler_ops profiler_timer_ops;
extern const struct profiler_ops profiler_kick_ops;
extern const struct profiler_ops profiler_perf_ops;

struct hist_entry {
	uint64_t rip;
	uint64_t cr3;
	uint64_t count; /* 0: empty slot */
	uint8_t cpl;
};

struct pv_device {
	const char *key; /* the bus range's name pointer (NULL: unclaimed) */
	bool mmio;
	char name[32];
	struct prof_count c;
};

struct profile_vcpu {
	struct profile *p;
	struct vcpu *v;
	unsigned int id;
	bool ready; /* vcpu_created ran on the thread */

	/* Exit accounting: written by the vCPU thread only (relaxed atomics). */
	uint64_t t_ret; /* when KVM_RUN last returned; 0: nothing to account */
	int last_reason;
	int last_dev;
	uint64_t last_pauses;
	bool last_intr; /* returned EINTR: the vCPU may have been halted */
	bool regs_synced; /* run->s.regs hold the state at the last return */
	bool seen_running; /* once RUNNABLE: not waiting for INIT/SIPI any more */
	bool ran; /* the sample did this iteration's KVM_RUN (ran_ret, ran_err) */
	int ran_ret, ran_err;
	bool sync_on; /* kvm_valid_regs set for the coming KVM_RUNs */
	unsigned int exits_since_sample;
	struct prof_count exits[PROFILE_NR_REASONS];
	unsigned int ndevs; /* published with release */
	struct pv_device devs[PROFILE_MAX_DEVICES];
	uint64_t samples, idle, steal, kernel, user, dropped, sample_ns, lstar;
	uint64_t due_ns; /* when the pending sample was due (atomic; 0: unknown) */
	bool late; /* the pending sample is stolen time: see PROFILE_STEAL_NS */
	uint64_t delay_avg_ns; /* usual delay from due to sampled (moving average) */

	/* Sample histogram: vCPU thread adds, main thread snapshots. */
	pthread_mutex_t lock;
	struct hist_entry *hist;
	size_t hist_cap, hist_n;

	struct kvm_stats *stats; /* opened on the vCPU thread */

	uint64_t rng; /* xorshift state: sampling jitter */

	/* Method-private. */
	timer_t timer;
	bool has_timer;
	int perf_fd;
	void *perf_ring;
	size_t perf_ring_len;
};

/*
 * Registers ride along with every exit (KVM_CAP_SYNC_REGS) while a vCPU
 * makes fewer exits than this between samples; above, fetching them for
 * the sample (two ioctls) is cheaper. Measured on kvm-pvm: the copy costs
 * ~0.24 us per exit, an ioctl ~5 us.
 */
#define PROFILE_SYNC_MAX_EXITS 32

struct profile {
	struct vm *vm;
	struct profile_params params;
	const struct profiler_ops *ops;
	bool running;
	bool sync_regs; /* KVM_CAP_SYNC_REGS: registers ride along with exits */
	uint64_t t_start, t_stop;
	char stop_reason[24];
	unsigned int nvcpus;
	struct profile_vcpu *pv[VM_MAX_VCPUS];
	struct kvm_stats *vm_stats;
	struct profile_data final;
	bool have_final;

	/* A method's own thread (kick, perf). */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
};

/* Single-writer counters: plain add, atomic publication for readers. */
static inline void stat_add(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline uint64_t stat_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/*
 * The next sampling interval: uniformly random in [period/2, 3*period/2].
 * Strictly periodic sampling locks onto periodic guest activity (a 1 kHz
 * guest tick against 999 Hz sampling biased the known-split test by up to
 * 10 points); jitter with the same mean rate does not.
 */
uint64_t profile_next_interval(uint64_t *rng, uint64_t period_ns);

/* Count one sample (vCPU thread). @cpl 3 keeps @cr3, kernel samples drop it. */
void profile_record(struct profile_vcpu *pv, uint64_t rip, uint64_t cr3, unsigned int cpl);
void profile_record_idle(struct profile_vcpu *pv);
void profile_record_steal(struct profile_vcpu *pv);
/* The register sampler the timer and kick methods share (vCPU thread). */
void profile_sample_regs(struct profile *p, struct profile_vcpu *pv);
/* Method threads: run @fn until the session stops; wait with profile_thread_sleep. */
int profile_thread_start(struct profile *p, void *(*fn)(void *), const char *name);
void profile_thread_stop(struct profile *p);
/* Sleep until @deadline_ns (CLOCK_MONOTONIC); false when the session is stopping. */
bool profile_thread_sleep(struct profile *p, uint64_t deadline_ns);

#endif
