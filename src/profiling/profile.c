// SPDX-License-Identifier: MIT
/*
 * Profiler core: attach to and detach from vCPUs, the profiled KVM_RUN
 * (exit accounting, samples), the register sampler, and snapshots.
 *
 * Threads: the main thread starts, stops and snapshots a session; each
 * vCPU thread writes only its own struct profile_vcpu (counters with
 * relaxed atomics, the histogram under pv->lock) and takes its own samples,
 * so a sample never stops any other vCPU and never waits for one.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "profile_internal.h"
#include "qlite/kvm_stats.h"
#include "qlite/x86_walk.h"
#include "qlite/vcpu.h"
#include "qlite/vm.h"

#define MSR_LSTAR 0xc0000082
#define CR3_ADDR_MASK 0x000ffffffffff000ULL /* drop PCID and the no-flush bit */
#define HIST_INITIAL 1024

static const struct profiler_ops *method_ops(enum profile_method m)
{
	switch (m) {
	case PROFILE_METHOD_TIMER:
		return &profiler_timer_ops;
	case PROFILE_METHOD_KICK:
		return &profiler_kick_ops;
	case PROFILE_METHOD_PERF:
		return &profiler_perf_ops;
	}
	return NULL;
}

uint64_t profile_next_interval(uint64_t *rng, uint64_t period_ns)
{
	uint64_t x = *rng ? *rng : 0x9e3779b97f4a7c15ULL;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*rng = x;
	return period_ns / 2 + (x % (period_ns + 1));
}

/* ---- histogram ------------------------------------------------------- */

static size_t hist_slot(uint64_t rip, uint64_t cr3, size_t cap)
{
	uint64_t h = (rip ^ (cr3 * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;

	return (size_t)(h >> 17) & (cap - 1);
}

static struct hist_entry *hist_find(struct hist_entry *t, size_t cap, uint64_t rip, uint64_t cr3,
				    uint8_t cpl)
{
	size_t i = hist_slot(rip, cr3, cap);

	for (;;) {
		struct hist_entry *h = &t[i];

		if (!h->count || (h->rip == rip && h->cr3 == cr3 && h->cpl == cpl))
			return h;
		i = (i + 1) & (cap - 1);
	}
}

static int hist_grow(struct profile_vcpu *pv)
{
	size_t cap = pv->hist_cap * 2, i;
	struct hist_entry *t;

	if (cap > PROFILE_MAX_SAMPLE_KEYS * 2)
		return -ENOSPC;
	t = calloc(cap, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (i = 0; i < pv->hist_cap; i++) {
		const struct hist_entry *h = &pv->hist[i];

		if (h->count)
			*hist_find(t, cap, h->rip, h->cr3, h->cpl) = *h;
	}
	free(pv->hist);
	pv->hist = t;
	pv->hist_cap = cap;
	return 0;
}

void profile_record(struct profile_vcpu *pv, uint64_t rip, uint64_t cr3, unsigned int cpl)
{
	struct hist_entry *h;
	bool dropped = false;

	if (cpl == 3) {
		cr3 &= CR3_ADDR_MASK;
	} else {
		cpl = 0; /* rings 1 and 2 are kernel too */
		cr3 = 0; /* one kernel for every address space */
	}
	pthread_mutex_lock(&pv->lock);
	h = hist_find(pv->hist, pv->hist_cap, rip, cr3, (uint8_t)cpl);
	if (!h->count && (pv->hist_n + 1) * 10 > pv->hist_cap * 7) {
		if (hist_grow(pv))
			dropped = true;
		else
			h = hist_find(pv->hist, pv->hist_cap, rip, cr3, (uint8_t)cpl);
	}
	if (!dropped) {
		if (!h->count) {
			h->rip = rip;
			h->cr3 = cr3;
			h->cpl = (uint8_t)cpl;
			pv->hist_n++;
		}
		h->count++;
	}
	pthread_mutex_unlock(&pv->lock);
	stat_add(&pv->samples, 1);
	stat_add(dropped ? &pv->dropped : cpl == 3 ? &pv->user : &pv->kernel, 1);
}

void profile_record_idle(struct profile_vcpu *pv)
{
	stat_add(&pv->samples, 1);
	stat_add(&pv->idle, 1);
}

void profile_record_steal(struct profile_vcpu *pv)
{
	stat_add(&pv->samples, 1);
	stat_add(&pv->steal, 1);
}

/* ---- the register sampler (timer and kick methods) -------------------- */

static void sample_lstar(struct profile_vcpu *pv)
{
	union {
		struct kvm_msrs hdr;
		uint8_t raw[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
	} m;
	uint64_t n = stat_get(&pv->samples);

	/* An ioctl: rarely. Often enough to see Linux set it, and a reboot. */
	if (pv->lstar ? n % 4096 : n % 64 != 1)
		return;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.hdr.entries[0].index = MSR_LSTAR;
	if (ioctl(pv->v->fd, KVM_GET_MSRS, &m) == 1)
		__atomic_store_n(&pv->lstar, m.hdr.entries[0].data, __ATOMIC_RELAXED);
}

static int read_guest(void *opaque, uint64_t gpa, void *buf, unsigned int len)
{
	return mem_read(opaque, gpa, buf, len) ? -EFAULT : 0;
}

/*
 * A halted vCPU's RIP points just past its HLT (0xf4): KVM has completed
 * the instruction. So a RIP after any other byte cannot be halted, and
 * needs no KVM_GET_MP_STATE; only candidates (and unreadable code) do.
 */
static bool maybe_after_hlt(struct profile *p, const struct kvm_regs *r,
			    const struct kvm_sregs *s)
{
	struct x86_paging pg = { .cr0 = s->cr0, .cr3 = s->cr3, .cr4 = s->cr4, .efer = s->efer };
	uint64_t gva = r->rip - 1, gpa;
	uint8_t byte;

	if (!(s->efer & (1ULL << 10))) /* outside long mode, CS has a base */
		gva += s->cs.base;
	if (x86_gva_to_gpa(&pg, gva, &gpa, read_guest, &p->vm->mem) ||
	    mem_read(&p->vm->mem, gpa, &byte, 1))
		return true;
	return byte == 0xf4;
}

/*
 * Registers without KVM_GET_REGS and KVM_GET_SREGS: a KVM_RUN that returns
 * at once (immediate_exit) and copies them into the run page. It stands in
 * for this iteration's KVM_RUN (profile_vcpu_run returns its result); it
 * also completes a pending I/O, as that KVM_RUN would have. immediate_exit
 * stays set: the vCPU loop clears it on EINTR, after which it rechecks
 * its target as after any kick, so no request is lost.
 */
static bool fetch_regs(struct profile_vcpu *pv)
{
	struct kvm_run *run = pv->v->run;

	__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&run->kvm_valid_regs, KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS,
			 __ATOMIC_RELAXED);
	pv->ran_ret = ioctl(pv->v->fd, KVM_RUN, 0);
	pv->ran_err = errno;
	pv->ran = true;
	__atomic_store_n(&run->kvm_valid_regs,
			 pv->sync_on ? KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS : 0,
			 __ATOMIC_RELAXED);
	return pv->ran_ret == 0 || pv->ran_err == EINTR || pv->ran_err == EAGAIN;
}

void profile_sample_regs(struct profile *p, struct profile_vcpu *pv)
{
	struct vcpu *v = pv->v;
	struct kvm_regs rb;
	struct kvm_sregs sb;
	const struct kvm_regs *r = &v->run->s.regs.regs;
	const struct kvm_sregs *s = &v->run->s.regs.sregs;

	/* Where it stands: from the last exit, or fetched now. */
	if (!pv->regs_synced) {
		if (p->sync_regs) {
			if (!fetch_regs(pv))
				return;
		} else {
			if (ioctl(v->fd, KVM_GET_REGS, &rb) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sb) < 0)
				return;
			r = &rb;
			s = &sb;
		}
	}
	/*
	 * Halted (idle)? Only after an EINTR return: after a real exit it was
	 * executing an instruction. A vCPU never seen running may be waiting
	 * for INIT/SIPI at any RIP: ask KVM until it has run.
	 */
	if (pv->last_intr && (!pv->seen_running || maybe_after_hlt(p, r, s))) {
		struct kvm_mp_state mp;

		if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) == 0 &&
		    mp.mp_state != KVM_MP_STATE_RUNNABLE) {
			profile_record_idle(pv);
			return;
		}
	}
	pv->seen_running = true;
	if (pv->late) {
		profile_record_steal(pv);
		return;
	}
	profile_record(pv, r->rip, s->cr3, s->cs.selector & 3);
	sample_lstar(pv);
}

/* Sync registers with exits only while exits are rarer than samples' ioctls. */
static void sample_tune_sync(struct profile *p, struct profile_vcpu *pv)
{
	bool on = p->sync_regs && pv->exits_since_sample < PROFILE_SYNC_MAX_EXITS;

	pv->exits_since_sample = 0;
	if (on == pv->sync_on)
		return;
	pv->sync_on = on;
	__atomic_store_n(&pv->v->run->kvm_valid_regs,
			 on ? KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS : 0, __ATOMIC_RELAXED);
}

/* ---- method threads --------------------------------------------------- */

int profile_thread_start(struct profile *p, void *(*fn)(void *), const char *name)
{
	int ret;

	p->stopping = false;
	ret = -pthread_create(&p->thread, NULL, fn, p);
	if (ret)
		return ret;
	pthread_setname_np(p->thread, name);
	p->thread_started = true;
	return 0;
}

void profile_thread_stop(struct profile *p)
{
	if (!p->thread_started)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	p->thread_started = false;
}

bool profile_thread_sleep(struct profile *p, uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = deadline_ns / 1000000000ULL,
			       .tv_nsec = deadline_ns % 1000000000ULL };
	bool go;

	pthread_mutex_lock(&p->lock);
	while (!p->stopping)
		if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT)
			break;
	go = !p->stopping;
	pthread_mutex_unlock(&p->lock);
	return go;
}

/* ---- the profiled KVM_RUN --------------------------------------------- */

static int exit_device(struct profile *p, struct profile_vcpu *pv)
{
	struct kvm_run *run = pv->v->run;
	const char *key;
	unsigned int i, n = pv->ndevs;
	bool mmio;

	if (run->exit_reason == KVM_EXIT_IO) {
		mmio = false;
		key = bus_lookup_name(&p->vm->pio, run->io.port);
	} else if (run->exit_reason == KVM_EXIT_MMIO) {
		mmio = true;
		key = bus_lookup_name(&p->vm->mmio, run->mmio.phys_addr);
	} else {
		return -1;
	}
	for (i = 0; i < n; i++)
		if (pv->devs[i].key == key && pv->devs[i].mmio == mmio)
			return (int)i;
	if (n == PROFILE_MAX_DEVICES)
		return n - 1; /* the last slot is "other" once the table is full */
	pv->devs[n].key = key;
	pv->devs[n].mmio = mmio;
	if (n == PROFILE_MAX_DEVICES - 1)
		snprintf(pv->devs[n].name, sizeof(pv->devs[n].name), "other");
	else
		snprintf(pv->devs[n].name, sizeof(pv->devs[n].name), "%s", key ? key : "unclaimed");
	__atomic_store_n(&pv->ndevs, n + 1, __ATOMIC_RELEASE);
	return (int)n;
}

static void account(struct profile_vcpu *pv, uint64_t ns)
{
	if (pv->last_reason >= 0 && pv->last_reason < PROFILE_NR_REASONS) {
		stat_add(&pv->exits[pv->last_reason].count, 1);
		stat_add(&pv->exits[pv->last_reason].ns, ns);
	}
	if (pv->last_dev >= 0) {
		stat_add(&pv->devs[pv->last_dev].c.count, 1);
		stat_add(&pv->devs[pv->last_dev].c.ns, ns);
	}
}

/* First profiled KVM_RUN of this vCPU: per-thread set-up. */
static void pv_thread_setup(struct profile *p, struct profile_vcpu *pv)
{
	struct kvm_stats *st = NULL;
	int ret;

	pv->ready = true;
	/* Registers do not ride along until a sample has seen how often this vCPU exits. */
	/* Optional: older KVMs have no binary stats. Must be asked on this thread. */
	if (!kvm_stats_open(pv->v->fd, &st)) {
		pthread_mutex_lock(&pv->lock);
		pv->stats = st;
		pthread_mutex_unlock(&pv->lock);
	}
	if (p->ops->vcpu_created) {
		ret = p->ops->vcpu_created(p, pv);
		if (ret)
			log_msg("profiler: vCPU %u: %s set-up failed: %s; no samples from it",
				pv->id, p->ops->name, strerror(-ret));
	}
}

int profile_vcpu_run(struct vcpu *v, struct profile_vcpu *pv)
{
	struct profile *p = pv->p;
	uint64_t t, ret_at = pv->t_ret, due;
	int ret, err;

	if (!pv->ready)
		pv_thread_setup(p, pv);
	t = time_now_ns();
	if (pv->t_ret) {
		/* Time in the VMM for the last exit, unless the vCPU parked meanwhile. */
		if (pv->last_pauses == v->pauses)
			account(pv, t - pv->t_ret);
		pv->t_ret = 0;
	}
	if (__atomic_exchange_n(&v->prof_req, 0, __ATOMIC_ACQ_REL) && p->ops->sample) {
		/*
		 * Late, and KVM_RUN was running when it was due (it returned
		 * after): the thread sat preempted on the host. Late because
		 * qlite itself was busy with an exit is not steal: the guest
		 * waited on its instruction then.
		 */
		due = __atomic_load_n(&pv->due_ns, __ATOMIC_ACQUIRE);
		pv->late = false;
		if (due && t > due) {
			uint64_t delay = t - due;
			uint64_t thr = MAX(PROFILE_STEAL_NS, 4 * pv->delay_avg_ns);

			pv->late = delay > thr && ret_at > due;
			if (!pv->late) /* the usual delay, from samples that were not stolen */
				pv->delay_avg_ns += ((int64_t)delay - (int64_t)pv->delay_avg_ns) / 16;
		}
		p->ops->sample(p, pv);
		sample_tune_sync(p, pv);
		stat_add(&pv->sample_ns, time_now_ns() - t);
	}
	if (pv->ran) {
		/* The sample's own KVM_RUN (fetch_regs) was this iteration's. */
		pv->ran = false;
		ret = pv->ran_ret;
		err = pv->ran_err;
	} else {
		ret = ioctl(v->fd, KVM_RUN, 0);
		err = errno;
	}
	pv->t_ret = time_now_ns();
	pv->last_pauses = v->pauses;
	pv->regs_synced = pv->sync_on;
	pv->exits_since_sample++;
	pv->last_dev = -1;
	if (ret < 0) {
		pv->last_intr = err == EINTR || err == EAGAIN;
		pv->last_reason = pv->last_intr ? KVM_EXIT_INTR : -1;
	} else {
		pv->last_intr = false;
		pv->last_reason = (int)v->run->exit_reason;
		pv->last_dev = exit_device(p, pv);
	}
	if (p->ops->vcpu_exit)
		p->ops->vcpu_exit(p, pv, ret);
	errno = err;
	return ret;
}

/* ---- session ---------------------------------------------------------- */

static void pv_free(struct profile_vcpu *pv)
{
	if (!pv)
		return;
	kvm_stats_close(pv->stats);
	pthread_mutex_destroy(&pv->lock);
	free(pv->hist);
	free(pv);
}

static void profile_free(struct profile *p)
{
	unsigned int i;

	for (i = 0; i < p->nvcpus; i++)
		pv_free(p->pv[i]);
	kvm_stats_close(p->vm_stats);
	profile_data_free(&p->final);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}

int profile_start(struct vm *vm, const struct profile_params *params, struct profile **out,
		  struct qerr *e)
{
	const struct profiler_ops *ops = method_ops(params->method);
	pthread_condattr_t ca;
	struct profile *p;
	unsigned int i;
	int ret, sync;

	if (!ops)
		return qerr_set(e, EINVAL, "unknown profiling method");
	if (params->freq < PROFILE_MIN_FREQ || params->freq > PROFILE_MAX_FREQ)
		return qerr_set(e, ERANGE, "frequency %u Hz is out of range (%u..%u Hz)",
				params->freq, PROFILE_MIN_FREQ, PROFILE_MAX_FREQ);
	p = calloc(1, sizeof(*p));
	if (!p)
		return qerr_set(e, ENOMEM, "out of memory");
	p->vm = vm;
	p->params = *params;
	p->ops = ops;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	sync = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
	/* Only register samplers read them (perf's samples carry their own RIP). */
	p->sync_regs = ops->sample && sync > 0 &&
		       (sync & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)) ==
			       (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS);
	p->nvcpus = vm->ncpus;
	for (i = 0; i < p->nvcpus; i++) {
		struct profile_vcpu *pv = calloc(1, sizeof(*pv));

		if (!pv || !(pv->hist = calloc(HIST_INITIAL, sizeof(*pv->hist)))) {
			free(pv);
			p->nvcpus = i;
			profile_free(p);
			return qerr_set(e, ENOMEM, "out of memory");
		}
		pv->p = p;
		pv->v = vm->vcpus[i];
		pv->id = i;
		pv->hist_cap = HIST_INITIAL;
		pv->perf_fd = -1;
		pv->rng = time_now_ns() ^ ((uint64_t)(i + 1) << 32);
		pthread_mutex_init(&pv->lock, NULL);
		p->pv[i] = pv;
	}
	if (kvm_stats_open(vm->vm_fd, &p->vm_stats))
		p->vm_stats = NULL; /* optional */
	ret = ops->attach ? ops->attach(p, e) : 0;
	if (ret) {
		profile_free(p);
		return ret;
	}
	p->t_start = time_now_ns();
	p->running = true;
	for (i = 0; i < p->nvcpus; i++) {
		struct vcpu *v = vm->vcpus[i];

		__atomic_store_n(&v->prof_req, 0, __ATOMIC_RELAXED);
		pthread_mutex_lock(&v->lock);
		v->prof = p->pv[i];
		pthread_mutex_unlock(&v->lock);
		/* A vCPU busy in the guest would otherwise only see it at its next exit. */
		vcpu_kick(v);
	}
	*out = p;
	return 0;
}

bool profile_running(const struct profile *p)
{
	return p && p->running;
}

bool profile_due(const struct profile *p, uint64_t now_ns)
{
	return p && p->running && p->params.duration_ns &&
	       now_ns - p->t_start >= p->params.duration_ns;
}

static int sample_cmp_key(const void *a, const void *b)
{
	const struct prof_sample *x = a, *y = b;

	if (x->cpl != y->cpl)
		return x->cpl < y->cpl ? -1 : 1;
	if (x->cr3 != y->cr3)
		return x->cr3 < y->cr3 ? -1 : 1;
	if (x->rip != y->rip)
		return x->rip < y->rip ? -1 : 1;
	return 0;
}

static int sample_cmp_count(const void *a, const void *b)
{
	const struct prof_sample *x = a, *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return sample_cmp_key(a, b);
}

/* Live data of a running session (main thread). */
static int profile_collect(struct profile *p, struct profile_data *d)
{
	size_t total = 0, n = 0, i, j;
	unsigned int k;

	memset(d, 0, sizeof(*d));
	snprintf(d->method, sizeof(d->method), "%s", profile_method_name(p->params.method));
	d->freq = p->params.freq;
	d->running = p->running;
	snprintf(d->stop_reason, sizeof(d->stop_reason), "%s", p->stop_reason);
	d->elapsed_ns = (p->running ? time_now_ns() : p->t_stop) - p->t_start;
	d->nvcpus = p->nvcpus;
	d->vcpus = calloc(p->nvcpus ? p->nvcpus : 1, sizeof(*d->vcpus));
	if (!d->vcpus)
		return -ENOMEM;
	for (k = 0; k < p->nvcpus; k++) {
		struct profile_vcpu *pv = p->pv[k];

		pthread_mutex_lock(&pv->lock);
		total += pv->hist_n;
		pthread_mutex_unlock(&pv->lock);
	}
	/* Histograms may grow meanwhile: the copy below is bounded by this. */
	d->samples = calloc(total + p->nvcpus * 64 + 1, sizeof(*d->samples));
	if (!d->samples)
		return -ENOMEM;
	total += p->nvcpus * 64;
	for (k = 0; k < p->nvcpus; k++) {
		struct profile_vcpu *pv = p->pv[k];
		struct prof_vcpu_data *o = &d->vcpus[k];
		unsigned int nd = __atomic_load_n(&pv->ndevs, __ATOMIC_ACQUIRE), r;

		o->id = pv->id;
		pthread_mutex_lock(&pv->lock);
		for (i = 0; i < pv->hist_cap && n < total; i++) {
			const struct hist_entry *h = &pv->hist[i];

			if (h->count)
				d->samples[n++] = (struct prof_sample){ .rip = h->rip,
									.cr3 = h->cr3,
									.cpl = h->cpl,
									.count = h->count };
		}
		if (kvm_stats_read(pv->stats, &o->stats, &o->nstats))
			o->nstats = 0;
		pthread_mutex_unlock(&pv->lock);
		o->samples = stat_get(&pv->samples);
		o->idle = stat_get(&pv->idle);
		o->steal = stat_get(&pv->steal);
		o->kernel = stat_get(&pv->kernel);
		o->user = stat_get(&pv->user);
		o->dropped = stat_get(&pv->dropped);
		o->sample_ns = stat_get(&pv->sample_ns);
		o->lstar = stat_get(&pv->lstar);
		for (r = 0; r < PROFILE_NR_REASONS; r++) {
			o->exits[r].count = stat_get(&pv->exits[r].count);
			o->exits[r].ns = stat_get(&pv->exits[r].ns);
		}
		o->ndevices = nd;
		for (r = 0; r < nd; r++) {
			memcpy(o->devices[r].name, pv->devs[r].name, sizeof(o->devices[r].name));
			snprintf(o->devices[r].bus, sizeof(o->devices[r].bus), "%s",
				 pv->devs[r].mmio ? "mmio" : "pio");
			o->devices[r].c.count = stat_get(&pv->devs[r].c.count);
			o->devices[r].c.ns = stat_get(&pv->devs[r].c.ns);
		}
	}
	if (kvm_stats_read(p->vm_stats, &d->vm_stats, &d->nvm_stats))
		d->nvm_stats = 0;
	/* Sum equal keys across vCPUs, then most frequent first. */
	qsort(d->samples, n, sizeof(*d->samples), sample_cmp_key);
	for (i = 0, j = 0; i < n; i++) {
		if (j && !sample_cmp_key(&d->samples[j - 1], &d->samples[i]))
			d->samples[j - 1].count += d->samples[i].count;
		else
			d->samples[j++] = d->samples[i];
	}
	d->nsamples = j;
	qsort(d->samples, j, sizeof(*d->samples), sample_cmp_count);
	return 0;
}

static int profile_data_copy(const struct profile_data *s, struct profile_data *d)
{
	unsigned int k;

	*d = *s;
	d->vcpus = calloc(s->nvcpus ? s->nvcpus : 1, sizeof(*d->vcpus));
	d->samples = calloc(s->nsamples ? s->nsamples : 1, sizeof(*d->samples));
	d->vm_stats = calloc(s->nvm_stats ? s->nvm_stats : 1, sizeof(*d->vm_stats));
	if (!d->vcpus || !d->samples || !d->vm_stats) {
		d->nvcpus = 0; /* nothing below is owned yet */
		profile_data_free(d);
		return -ENOMEM;
	}
	memcpy(d->samples, s->samples, s->nsamples * sizeof(*d->samples));
	memcpy(d->vm_stats, s->vm_stats, s->nvm_stats * sizeof(*d->vm_stats));
	for (k = 0; k < s->nvcpus; k++) {
		d->vcpus[k] = s->vcpus[k];
		d->vcpus[k].stats = calloc(s->vcpus[k].nstats ? s->vcpus[k].nstats : 1,
					   sizeof(struct prof_stat));
		if (!d->vcpus[k].stats) {
			d->nvcpus = k; /* free what was copied */
			profile_data_free(d);
			return -ENOMEM;
		}
		memcpy(d->vcpus[k].stats, s->vcpus[k].stats,
		       s->vcpus[k].nstats * sizeof(struct prof_stat));
	}
	return 0;
}

int profile_snapshot(struct profile *p, struct profile_data *d)
{
	int ret;

	if (p->have_final)
		return profile_data_copy(&p->final, d);
	ret = profile_collect(p, d);
	if (ret)
		profile_data_free(d);
	return ret;
}

void profile_stop(struct profile *p, const char *reason)
{
	unsigned int i;

	if (!p || !p->running)
		return;
	for (i = 0; i < p->nvcpus; i++) {
		struct vcpu *v = p->pv[i]->v;

		pthread_mutex_lock(&v->lock);
		v->prof = NULL;
		pthread_mutex_unlock(&v->lock);
		vcpu_kick(v);
	}
	/* Each vCPU passes its loop top (or is parked, or gone): no KVM_RUN uses pv. */
	for (i = 0; i < p->nvcpus; i++) {
		struct vcpu *v = p->pv[i]->v;

		pthread_mutex_lock(&v->lock);
		while (v->prof_seen == p->pv[i] && v->state == VCPU_RUNNING)
			pthread_cond_wait(&v->cond, &v->lock);
		if (v->prof_seen == p->pv[i])
			v->prof_seen = NULL; /* parked or exited with it: never used again */
		pthread_mutex_unlock(&v->lock);
		__atomic_store_n(&v->run->kvm_valid_regs, 0, __ATOMIC_RELAXED);
	}
	if (p->ops->detach)
		p->ops->detach(p);
	p->t_stop = time_now_ns();
	p->running = false;
	snprintf(p->stop_reason, sizeof(p->stop_reason), "%s", reason ? reason : "stopped");
	if (profile_collect(p, &p->final)) {
		profile_data_free(&p->final);
		log_msg("profiler: out of memory keeping the result");
	} else {
		p->have_final = true;
	}
	/* The VM may go away now: drop everything that refers to it. */
	for (i = 0; i < p->nvcpus; i++) {
		kvm_stats_close(p->pv[i]->stats);
		p->pv[i]->stats = NULL;
		p->pv[i]->v = NULL;
	}
	kvm_stats_close(p->vm_stats);
	p->vm_stats = NULL;
	p->vm = NULL;
}

void profile_destroy(struct profile *p)
{
	if (!p)
		return;
	profile_stop(p, NULL);
	profile_free(p);
}
