// SPDX-License-Identifier: MIT
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "qlite/profile.h"
#include "qlite/vcpu.h"
#include "qlite/vm.h"

/* Only kicks a vCPU out of KVM_RUN; the state machine carries the meaning. */
static void vcpu_kick_handler(int sig)
{
	(void)sig;
}

/*
 * A profiler sample timer fired on this vCPU's thread: ask for a sample and
 * make sure the next (or current) KVM_RUN returns. Only atomics: it runs in
 * signal context. The vCPU outlives every signal directed at its thread.
 */
static void vcpu_sample_handler(int sig, siginfo_t *si, void *uc)
{
	struct vcpu *v = si->si_value.sival_ptr;

	(void)sig;
	(void)uc;
	if (si->si_code != SI_TIMER || !v)
		return;
	__atomic_store_n(&v->prof_req, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

static void vcpu_install_kick_handler(void)
{
	struct sigaction sa = { .sa_handler = vcpu_kick_handler };
	struct sigaction ss = { .sa_sigaction = vcpu_sample_handler, .sa_flags = SA_SIGINFO };

	sigemptyset(&sa.sa_mask);
	sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
	sigemptyset(&ss.sa_mask);
	sigaction(VCPU_SAMPLE_SIGNAL, &ss, NULL);
}

static const char *const exit_names[] = {
	[KVM_EXIT_UNKNOWN] = "UNKNOWN",
	[KVM_EXIT_EXCEPTION] = "EXCEPTION",
	[KVM_EXIT_IO] = "IO",
	[KVM_EXIT_HYPERCALL] = "HYPERCALL",
	[KVM_EXIT_DEBUG] = "DEBUG",
	[KVM_EXIT_HLT] = "HLT",
	[KVM_EXIT_MMIO] = "MMIO",
	[KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN",
	[KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
	[KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY",
	[KVM_EXIT_INTR] = "INTR",
	[KVM_EXIT_SET_TPR] = "SET_TPR",
	[KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
	[KVM_EXIT_NMI] = "NMI",
	[KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
	[KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT",
	[KVM_EXIT_IOAPIC_EOI] = "IOAPIC_EOI",
	[KVM_EXIT_HYPERV] = "HYPERV",
	[KVM_EXIT_X86_RDMSR] = "X86_RDMSR",
	[KVM_EXIT_X86_WRMSR] = "X86_WRMSR",
	[KVM_EXIT_DIRTY_RING_FULL] = "DIRTY_RING_FULL",
	[KVM_EXIT_AP_RESET_HOLD] = "AP_RESET_HOLD",
	[KVM_EXIT_X86_BUS_LOCK] = "X86_BUS_LOCK",
	[KVM_EXIT_XEN] = "XEN",
	[KVM_EXIT_NOTIFY] = "NOTIFY",
};

const char *vcpu_exit_name(uint32_t reason)
{
	return reason < ARRAY_SIZE(exit_names) ? exit_names[reason] : NULL;
}

int vcpu_create(struct vm *vm, unsigned int id, struct vcpu **out)
{
	struct vcpu *v;
	int ret;

	pthread_once(&kick_once, vcpu_install_kick_handler);
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->id = id;
	v->state = VCPU_CREATED;
	v->target = VCPU_RUNNING;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->cond, NULL);
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, id);
	if (v->fd < 0) {
		ret = -errno;
		goto err;
	}
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		ret = -errno;
		close(v->fd);
		goto err;
	}
	if (vm->dirty_ring_entries) {
		void *ring = mmap(NULL, vm->dirty_ring_entries * sizeof(struct kvm_dirty_gfn),
				  PROT_READ | PROT_WRITE, MAP_SHARED, v->fd,
				  KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));

		if (ring == MAP_FAILED) {
			ret = -errno;
			munmap(v->run, vm->run_size);
			close(v->fd);
			goto err;
		}
		v->dirty_gfns = ring;
	}
	*out = v;
	return 0;
err:
	pthread_mutex_destroy(&v->lock);
	pthread_cond_destroy(&v->cond);
	free(v);
	return ret;
}

void vcpu_destroy(struct vcpu *v)
{
	if (!v)
		return;
	munmap(v->run, v->vm->run_size);
	if (v->dirty_gfns)
		munmap(v->dirty_gfns, v->vm->dirty_ring_entries * sizeof(struct kvm_dirty_gfn));
	close(v->fd);
	pthread_mutex_destroy(&v->lock);
	pthread_cond_destroy(&v->cond);
	free(v);
}

static void vcpu_set_state(struct vcpu *v, enum vcpu_state s)
{
	pthread_mutex_lock(&v->lock);
	v->state = s;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
}

void vcpu_request(struct vcpu *v, enum vcpu_state target)
{
	pthread_mutex_lock(&v->lock);
	/* EXITING is final: a late pause/resume must not revive the thread. */
	if (v->target != VCPU_EXITING)
		v->target = target;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	/* Set after the target, so the thread cannot re-enter KVM_RUN unkicked. */
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->thread_started && v->thread != pthread_self())
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_kick(struct vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&v->thread_started, __ATOMIC_ACQUIRE) && v->thread != pthread_self())
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_wait_state(struct vcpu *v, enum vcpu_state state)
{
	pthread_mutex_lock(&v->lock);
	while (v->state != state && v->state != VCPU_EXITED)
		pthread_cond_wait(&v->cond, &v->lock);
	pthread_mutex_unlock(&v->lock);
}

void vcpu_dump(struct vcpu *v, const char *why)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	log_msg("vcpu%u: %s (exit reason %u: %s)", v->id, why, v->run->exit_reason,
		vcpu_exit_name(v->run->exit_reason) ?: "?");
	if (v->run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
		unsigned int i, n = MIN(v->run->internal.ndata, 16u);

		log_msg("  internal error suberror %u, %u data words", v->run->internal.suberror,
			v->run->internal.ndata);
		for (i = 0; i < n; i++)
			log_msg("  data[%u] = 0x%llx", i,
				(unsigned long long)v->run->internal.data[i]);
	} else if (v->run->exit_reason == KVM_EXIT_FAIL_ENTRY) {
		log_msg("  hardware entry failure reason 0x%llx",
			(unsigned long long)v->run->fail_entry.hardware_entry_failure_reason);
	}
	if (ioctl(v->fd, KVM_GET_REGS, &r) == 0) {
		log_msg("  rip=%016llx rsp=%016llx rflags=%016llx", r.rip, r.rsp, r.rflags);
		log_msg("  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx", r.rax, r.rbx, r.rcx,
			r.rdx);
		log_msg("  rsi=%016llx rdi=%016llx rbp=%016llx r8 =%016llx", r.rsi, r.rdi, r.rbp,
			r.r8);
		log_msg("  r9 =%016llx r10=%016llx r11=%016llx r12=%016llx", r.r9, r.r10, r.r11,
			r.r12);
		log_msg("  r13=%016llx r14=%016llx r15=%016llx", r.r13, r.r14, r.r15);
	}
	if (ioctl(v->fd, KVM_GET_SREGS, &s) == 0) {
		log_msg("  cs=%04x(base %llx) ds=%04x ss=%04x cr0=%llx cr2=%llx cr3=%llx cr4=%llx "
			"efer=%llx",
			s.cs.selector, s.cs.base, s.ds.selector, s.ss.selector, s.cr0, s.cr2, s.cr3,
			s.cr4, s.efer);
		log_msg("  gdt=%llx/%x idt=%llx/%x apic_base=%llx", s.gdt.base, s.gdt.limit,
			s.idt.base, s.idt.limit, s.apic_base);
	}
}

static void vcpu_handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	unsigned int size = run->io.size, i;

	/* KVM guarantees data_offset/size/count fit the run page; don't trust blindly. */
	if (size == 0 || size > 4 || run->io.data_offset + (uint64_t)size * run->io.count >
					     (uint64_t)v->vm->run_size)
		return;
	for (i = 0; i < run->io.count; i++, data += size) {
		if (run->io.direction == KVM_EXIT_IO_OUT) {
			bus_write(&v->vm->pio, run->io.port, data, size);
		} else if (bus_read(&v->vm->pio, run->io.port, data, size) < 0) {
			memset(data, 0xff, size); /* nothing there: floating bus */
		}
	}
}

static void vcpu_handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	unsigned int len = run->mmio.len;

	if (len == 0 || len > sizeof(run->mmio.data))
		return;
	if (run->mmio.is_write)
		bus_write(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, len);
	else if (bus_read(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, len) < 0)
		memset(run->mmio.data, 0xff, len);
}

/* Returns false when the vCPU must stop running (the VM is going down). */
static bool vcpu_handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	if (run->exit_reason < ARRAY_SIZE(v->exit_counts))
		v->exit_counts[run->exit_reason]++;
	v->exits++;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vcpu_handle_io(v);
		v->io_pending = true;
		return true;
	case KVM_EXIT_MMIO:
		vcpu_handle_mmio(v);
		v->io_pending = true;
		return true;
	case KVM_EXIT_INTR:
	case KVM_EXIT_IRQ_WINDOW_OPEN:
		return true;
	case KVM_EXIT_DIRTY_RING_FULL: {
		/* KVM will not run this vCPU again until its ring is reaped and reset. */
		int ret = vm_dirty_ring_reap(v->vm, v);

		if (ret) {
			log_msg("vcpu%u: cannot reap the dirty ring: %s", v->id, strerror(-ret));
			vm_request_stop(v->vm, VM_STOP_ERROR);
			return false;
		}
		return true;
	}
	case KVM_EXIT_HLT:
		/* Only without an in-kernel LAPIC; a HLT with nothing to wake it. */
		vcpu_dump(v, "guest halted with no interrupt controller to wake it");
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			vm_request_stop(v->vm, VM_STOP_POWEROFF);
			return false;
		case KVM_SYSTEM_EVENT_RESET:
			vm_request_stop(v->vm, VM_STOP_RESET);
			return false;
		default:
			vcpu_dump(v, "unexpected system event");
			vm_request_stop(v->vm, VM_STOP_GUEST_CRASH);
			return false;
		}
	case KVM_EXIT_SHUTDOWN:
		vcpu_dump(v, "guest triple-faulted");
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		vcpu_dump(v, "KVM internal error");
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		vcpu_dump(v, "KVM could not enter the guest");
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH);
		return false;
	default:
		vcpu_dump(v, "unhandled exit");
		vm_request_stop(v->vm, VM_STOP_GUEST_CRASH);
		return false;
	}
}

/*
 * Finish an emulated I/O before parking: KVM completes it on the next
 * KVM_RUN, and immediate_exit makes that run return at once. Saved state
 * then never has a half-done instruction.
 */
static void vcpu_complete_io(struct vcpu *v)
{
	if (!v->io_pending)
		return;
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	ioctl(v->fd, KVM_RUN, 0);
	v->io_pending = false;
}

void vcpu_probe(struct vcpu *v)
{
	__atomic_store_n(&v->probe_req, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->thread_started)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

/* On the vCPU thread, out of KVM_RUN: can anything ever wake this vCPU? */
static void vcpu_answer_probe(struct vcpu *v)
{
	struct kvm_mp_state mp = { 0 };
	struct kvm_regs r;

	if (!__atomic_exchange_n(&v->probe_req, 0, __ATOMIC_SEQ_CST))
		return;
	if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0 || ioctl(v->fd, KVM_GET_REGS, &r) < 0)
		return;
	v->probe_mp_state = mp.mp_state;
	v->probe_rip = r.rip;
	v->probe_rflags = r.rflags;
	/* HLT with IF=0 waits for an NMI/INIT nobody sends; an AP waits for SIPI. */
	v->probe_dead = (mp.mp_state == KVM_MP_STATE_HALTED && !(r.rflags & 0x200)) ||
			mp.mp_state == KVM_MP_STATE_UNINITIALIZED ||
			mp.mp_state == KVM_MP_STATE_INIT_RECEIVED;
	__atomic_fetch_add(&v->probe_seq, 1, __ATOMIC_SEQ_CST);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	char name[16];
	sigset_t set;

	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&v->lock);
	v->tid = (pid_t)syscall(SYS_gettid);
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	sigaddset(&set, VCPU_SAMPLE_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	for (;;) {
		struct profile_vcpu *prof;
		enum vcpu_state target;
		int ret;

		pthread_mutex_lock(&v->lock);
		target = v->target;
		if (target != VCPU_RUNNING) {
			pthread_mutex_unlock(&v->lock);
			vcpu_complete_io(v);
			pthread_mutex_lock(&v->lock);
			while (v->target == VCPU_PAUSED) {
				v->state = VCPU_PAUSED;
				v->pauses++;
				pthread_cond_broadcast(&v->cond);
				pthread_cond_wait(&v->cond, &v->lock);
			}
			target = v->target;
		}
		if (target == VCPU_EXITING) {
			pthread_mutex_unlock(&v->lock);
			break;
		}
		v->state = VCPU_RUNNING;
		prof = v->prof_seen = v->prof;
		pthread_cond_broadcast(&v->cond);
		pthread_mutex_unlock(&v->lock);

		/* The profiler's only cost when off: this branch. */
		if (__builtin_expect(prof != NULL, 0))
			ret = profile_vcpu_run(v, prof);
		else
			ret = ioctl(v->fd, KVM_RUN, 0);
		if (ret < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				/* Kicked: the pending I/O (if any) is now done. */
				v->io_pending = false;
				__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
				vcpu_answer_probe(v);
				continue;
			}
			log_msg("vcpu%u: KVM_RUN failed: %s", v->id, strerror(errno));
			vm_request_stop(v->vm, VM_STOP_ERROR);
			break;
		}
		v->io_pending = false;
		if (!vcpu_handle_exit(v))
			break;
	}
	vcpu_set_state(v, VCPU_EXITED);
	return NULL;
}

int vcpu_start(struct vcpu *v)
{
	sigset_t set, old;
	int ret;

	/* Threads inherit the mask: keep the kick signal blocked until the loop runs. */
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	sigaddset(&set, VCPU_SAMPLE_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	ret = -pthread_create(&v->thread, NULL, vcpu_thread, v);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		return ret;
	__atomic_store_n(&v->thread_started, true, __ATOMIC_RELEASE);
	/* Callers (query-cpus-fast) may ask for the thread id right away. */
	pthread_mutex_lock(&v->lock);
	while (!v->tid)
		pthread_cond_wait(&v->cond, &v->lock);
	pthread_mutex_unlock(&v->lock);
	return 0;
}

void vcpu_join(struct vcpu *v)
{
	if (v->thread_started) {
		pthread_join(v->thread, NULL);
		v->thread_started = false;
	}
}
