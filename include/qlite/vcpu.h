/* SPDX-License-Identifier: MIT */
/*
 * vCPU threads. Each vCPU is a state machine (RUNNING, PAUSED, EXITING)
 * driven by commands from other threads; a signal only kicks it out of
 * KVM_RUN (with immediate_exit), it never carries meaning itself.
 */
#ifndef QLITE_VCPU_H
#define QLITE_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct vm;
struct profile_vcpu;
struct sbuf;
struct qerr;

/* Kicks a vCPU out of KVM_RUN; carries no meaning of its own. */
#define VCPU_KICK_SIGNAL SIGUSR1
/* Profiler sample timers (SIGEV_THREAD_ID, si_value = the vCPU). */
#define VCPU_SAMPLE_SIGNAL SIGUSR2

enum vcpu_state {
	VCPU_CREATED,
	VCPU_RUNNING,
	VCPU_PAUSED,
	VCPU_EXITING,
	VCPU_EXITED,
};

struct vcpu {
	struct vm *vm;
	unsigned int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	pid_t tid;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum vcpu_state state; /* what the thread is doing */
	enum vcpu_state target; /* what it has been told to do */

	/* The dirty ring (vm->dirty_ring_entries entries) and the next entry to harvest. */
	struct kvm_dirty_gfn *dirty_gfns;
	uint32_t dirty_fetch; /* under vm->dirty_lock */

	/* Last exit left an I/O to be completed by the next KVM_RUN. */
	bool io_pending;

	/* Liveness probe: asked by the main loop, answered by the vCPU thread. */
	int probe_req; /* atomic */
	int probe_seq; /* atomic: answers so far */
	bool probe_dead; /* halted with interrupts off, or waiting for SIPI */
	uint32_t probe_mp_state;
	uint64_t probe_rip, probe_rflags;
	uint64_t exits;
	uint64_t exit_counts[64];
	uint64_t pauses; /* times the thread parked (vCPU thread only) */

	/*
	 * Profiler (profile.h). @prof is set and cleared under @lock; the
	 * thread copies it to @prof_seen at the top of each loop, under the
	 * same lock, and runs with that copy, so a detach can wait until no
	 * KVM_RUN uses the old one. @prof_req: a sample is due (atomic).
	 */
	struct profile_vcpu *prof;
	struct profile_vcpu *prof_seen;
	int prof_req;
};

int vcpu_create(struct vm *vm, unsigned int id, struct vcpu **out);
void vcpu_destroy(struct vcpu *v);
/* CPUID, MSRs, FPU, LAPIC: the x86 reset state a firmware would leave. */
int vcpu_setup_x86(struct vcpu *v);
int vcpu_start(struct vcpu *v);
/* Ask the thread to move to @target and kick it out of KVM_RUN. */
void vcpu_request(struct vcpu *v, enum vcpu_state target);
/* Kick the thread out of KVM_RUN (immediate_exit + signal); no state change. */
void vcpu_kick(struct vcpu *v);
/* Wait until the thread reached @state (or exited). */
void vcpu_wait_state(struct vcpu *v, enum vcpu_state state);
void vcpu_join(struct vcpu *v);
/* Ask the thread to report its liveness (see vm_check_alive). */
void vcpu_probe(struct vcpu *v);
/* Registers, sregs and the last exit, to stderr. */
void vcpu_dump(struct vcpu *v, const char *why);
/* KVM_EXIT_* name, or NULL for a reason without one. */
const char *vcpu_exit_name(uint32_t reason);

/*
 * All KVM state of the vCPU as a blob (format: src/vcpu/state.c): regs,
 * sregs, FPU/XSAVE, XCRs, MSRs, LAPIC, events, mp_state, debug registers
 * and the TSC frequency. The vCPU must not be in KVM_RUN (paused, or never
 * started). Appends to @b.
 */
int vcpu_state_save(struct vcpu *v, struct sbuf *b, struct qerr *e);
/*
 * @buf is hostile: every length is checked against this host's KVM before
 * anything is set; errors name the part ("vcpu 1: msrs: ..."). Load guest
 * memory first (KVM writes the kvmclock and steal time areas) and the VM
 * blob (vm_kvm_state_load) before the vCPUs.
 */
int vcpu_state_load(struct vcpu *v, const uint8_t *buf, size_t len, struct qerr *e);

/* CPUID filtering (pure; unit-tested). @pmu: expose KVM's vPMU (--pmu on). */
int cpuid_filter(struct kvm_cpuid2 *c, unsigned int vcpu_id, unsigned int ncpus, bool pmu);

#endif
