/* SPDX-License-Identifier: MIT */
/*
 * The guest profiler, VMM side: agent-free sampling of every vCPU (RIP, CPL,
 * CR3, halted or not) and VM-exit accounting (exits by reason, time spent in
 * the VMM per reason and per device, KVM's binary stats), behind a const ops
 * table per sampling method. A session belongs to one VM instance and ends
 * with it; its result (struct profile_data) outlives the VM and is what QMP
 * query-profile returns and `qlite profile` symbolizes (see report.h).
 *
 * Host-side profiler state is not migrated (it is not guest state).
 */
#ifndef QLITE_PROFILE_H
#define QLITE_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qlite/util.h"

struct vm;
struct vcpu;
struct profile_vcpu;
struct json_object;

#define PROFILE_MIN_FREQ 1
#define PROFILE_MAX_FREQ 10000 /* above this the kicks themselves dominate */
#define PROFILE_DEFAULT_FREQ 999 /* not 1000: avoids lockstep with guest ticks */
#define PROFILE_NR_REASONS 64 /* KVM_EXIT_* reasons below this are counted */
#define PROFILE_MAX_DEVICES 32 /* per vCPU; more share one "other" entry */
/* Distinct (cpl, cr3, rip) kept per vCPU (4 MiB of table at most); more are dropped, counted. */
#define PROFILE_MAX_SAMPLE_KEYS (1u << 16)
/*
 * Addresses listed in one QMP reply, most frequent first; the rest are
 * summed in "samples-omitted" (keeps a reply well under the QMP server's
 * 16 MiB output limit per client).
 */
#define PROFILE_MAX_REPLY_SAMPLES 200000
/*
 * A sample taken late, while the vCPU was inside KVM_RUN and not halted,
 * found a vCPU thread that sat on a host runqueue when the sample was due:
 * the guest ran nowhere then. It counts as steal, not to the function it
 * happened to stand in. Late means more than this, or four times the usual
 * delivery delay where that is longer (nested under TCG a signal takes
 * hundreds of microseconds to stop a running vCPU); a preempted thread
 * waits for a CPU in milliseconds.
 */
#define PROFILE_STEAL_NS 100000ULL

enum profile_method {
	PROFILE_METHOD_TIMER, /* POSIX timer per vCPU thread (default, see README) */
	PROFILE_METHOD_KICK, /* one sampler thread kicks every vCPU */
	PROFILE_METHOD_PERF, /* host perf sampling of vCPU threads (needs a host PMU) */
};

struct profile_params {
	unsigned int freq; /* samples per second per vCPU */
	enum profile_method method;
	uint64_t duration_ns; /* stop by itself after this long; 0: only on request */
};

/* ---- the result ------------------------------------------------------ */

/* Samples aggregated by (cpl, cr3, rip); cr3 is 0 for kernel samples. */
struct prof_sample {
	uint64_t rip;
	uint64_t cr3;
	uint8_t cpl;
	uint64_t count;
};

struct prof_count {
	uint64_t count;
	uint64_t ns; /* time in the VMM: KVM_RUN returned -> next KVM_RUN */
};

struct prof_device {
	char name[32];
	char bus[8]; /* "pio" or "mmio" */
	struct prof_count c;
};

struct prof_stat {
	char name[48];
	uint64_t value; /* delta over the session for cumulative stats */
};

struct prof_vcpu_data {
	unsigned int id;
	uint64_t samples; /* all samples, idle included */
	uint64_t idle; /* vCPU halted (or waiting for INIT/SIPI) */
	uint64_t steal; /* vCPU thread preempted on the host when the sample was due */
	uint64_t kernel, user;
	uint64_t dropped; /* too many distinct addresses */
	uint64_t sample_ns; /* time spent taking samples on the vCPU thread */
	uint64_t lstar; /* guest MSR_LSTAR (0: not set), for KASLR */
	struct prof_count exits[PROFILE_NR_REASONS];
	unsigned int ndevices;
	struct prof_device devices[PROFILE_MAX_DEVICES];
	unsigned int nstats;
	struct prof_stat *stats; /* KVM binary stats of this vCPU */
};

struct profile_data {
	char method[8];
	unsigned int freq;
	bool running;
	char stop_reason[24]; /* "", "stopped", "duration", "vm-stopped", ... */
	uint64_t elapsed_ns;
	unsigned int nvcpus;
	struct prof_vcpu_data *vcpus;
	size_t nsamples;
	struct prof_sample *samples; /* summed over vCPUs, sorted by count (descending) */
	uint64_t omitted; /* samples of addresses left out of the list (JSON form) */
	unsigned int nvm_stats;
	struct prof_stat *vm_stats; /* KVM binary stats of the VM */
};

void profile_data_free(struct profile_data *d);
/* The first non-zero MSR_LSTAR any vCPU reported, or 0. */
uint64_t profile_data_lstar(const struct profile_data *d);
/* QMP form (json-c); see docs/profiling.md for the schema. */
struct json_object *profile_data_to_json(const struct profile_data *d);
int profile_data_from_json(struct json_object *o, struct profile_data *d, struct qerr *e);

const char *profile_method_name(enum profile_method m);
int profile_method_parse(const char *s, enum profile_method *m);
/* Exit reason name as JSON shows it (KVM_EXIT_IO -> "IO"); NULL if unnamed. */
const char *profile_exit_name(unsigned int reason);
int profile_exit_reason(const char *name);

/* ---- the session (VMM side) ----------------------------------------- */

struct profile;

/* Main thread. Attaches to every vCPU of @vm; they pick it up at once. */
int profile_start(struct vm *vm, const struct profile_params *params, struct profile **out,
		  struct qerr *e);
/*
 * Main thread. Detach from every vCPU (each leaves the profiled path before
 * this returns; none is paused for it), stop the sampler and keep the
 * final result. Idempotent. @reason goes into stop_reason.
 */
void profile_stop(struct profile *p, const char *reason);
bool profile_running(const struct profile *p);
/* True once a running session has reached its duration. */
bool profile_due(const struct profile *p, uint64_t now_ns);
/* Current (or final) data; the caller frees it with profile_data_free(). */
int profile_snapshot(struct profile *p, struct profile_data *d);
void profile_destroy(struct profile *p);

/*
 * vCPU thread: KVM_RUN with accounting and sampling. vcpu.c calls this
 * instead of ioctl(KVM_RUN) when the vCPU has a profiler attached: one
 * predictable branch on a pointer when profiling is off.
 */
int profile_vcpu_run(struct vcpu *v, struct profile_vcpu *pv);

#endif
