// SPDX-License-Identifier: MIT
/*
 * userfaultfd lazy page fill (include/qlite/uffd.h, docs/lazy-restore.md).
 *
 * Every page has a 2-bit state: MISSING -> BUSY -> PRESENT, never back. A
 * thread claims a page by compare-and-swap MISSING -> BUSY and is then the
 * only one to fill it, so each page is filled at most once; its UFFDIO_COPY
 * wakes every thread faulting on the page meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "qlite/uffd.h"

enum { PG_MISSING = 0, PG_BUSY = 1, PG_PRESENT = 2 };

#define PG_PER_WORD 32 /* 2 bits each in a uint64_t */
#define FAULT_BATCH 64
#define DEFER_MAX 256
#define EAGAIN_RETRIES 1000
#define HIST_BUCKETS 496 /* log-linear, 8 per power of two, up to 2^64 ns */
#define MINCORE_CHUNK (64 * MiB)

struct lazy_range {
	uint64_t first, end; /* pages [first, end) of the mapping */
	uint64_t gpa;
};

struct uffd_lazy {
	struct guest_mem *m;
	struct uffd_source src;
	unsigned int run;
	int uffd, stop_fd, err_fd;
	uint64_t pages;
	uint64_t *state;
	unsigned int nr_ranges;
	struct lazy_range ranges[MEM_MAX_REGIONS];
	bool have_zeropage;
	uint8_t *zero_page; /* UFFDIO_COPY source where ZEROPAGE is unsupported */

	pthread_t fault_thread, prefetch_thread;
	bool fault_started, prefetch_started;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* a page left BUSY; error, done or stop */
	unsigned int waiters; /* threads waiting on cond for a BUSY page */
	bool stopping, unregistering, done;
	int err; /* first fatal error, -errno */
	char errmsg[sizeof(((struct qerr *)0)->msg)];

	uint64_t last_fault;
	uint64_t start_ns, done_ns;
	uint64_t n_faults, n_fault_pages, n_prefetch, n_populate, n_zero, n_refault, n_eexist;
	uint64_t max_ns;
	uint64_t hist[HIST_BUCKETS];
	struct ratelimit rl; /* fault thread only */
};

/* ---- page states ------------------------------------------------------ */

static unsigned int pg_get(struct uffd_lazy *l, uint64_t pg)
{
	uint64_t w = __atomic_load_n(&l->state[pg / PG_PER_WORD], __ATOMIC_SEQ_CST);

	return (w >> (pg % PG_PER_WORD * 2)) & 3;
}

static bool pg_cas(struct uffd_lazy *l, uint64_t pg, unsigned int old, unsigned int nv)
{
	uint64_t *wp = &l->state[pg / PG_PER_WORD];
	unsigned int sh = pg % PG_PER_WORD * 2;
	uint64_t w = __atomic_load_n(wp, __ATOMIC_RELAXED), nw;

	do {
		if (((w >> sh) & 3) != old)
			return false;
		nw = (w & ~(3ULL << sh)) | ((uint64_t)nv << sh);
	} while (!__atomic_compare_exchange_n(wp, &w, nw, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
	return true;
}

static void stat_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static bool flag_get(const bool *f)
{
	return __atomic_load_n(f, __ATOMIC_SEQ_CST);
}

static uint8_t *pg_hva(struct uffd_lazy *l, uint64_t pg)
{
	return l->m->base + pg * UFFD_PAGE_SIZE;
}

static const struct lazy_range *pg_range(struct uffd_lazy *l, uint64_t pg)
{
	unsigned int i;

	for (i = 0; i < l->nr_ranges; i++)
		if (pg >= l->ranges[i].first && pg < l->ranges[i].end)
			return &l->ranges[i];
	return NULL;
}

/* For messages: the guest address the page backs. */
static unsigned long long pg_gpa(struct uffd_lazy *l, uint64_t pg)
{
	const struct lazy_range *r = pg_range(l, pg);

	return r ? r->gpa + (pg - r->first) * UFFD_PAGE_SIZE : ~0ULL;
}

/* Report a fatal error once: the VM must stop; returns @err. */
static int __attribute__((format(printf, 3, 4))) lazy_fail(struct uffd_lazy *l, int err,
							   const char *fmt, ...)
{
	uint64_t one = 1;
	bool first = false;
	va_list ap;

	pthread_mutex_lock(&l->lock);
	if (!l->err) {
		va_start(ap, fmt);
		vsnprintf(l->errmsg, sizeof(l->errmsg), fmt, ap);
		va_end(ap);
		__atomic_store_n(&l->err, err, __ATOMIC_SEQ_CST);
		first = true;
	}
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	if (first) {
		log_err("lazy page fill: %s", l->errmsg);
		if (write(l->err_fd, &one, sizeof(one)) < 0)
			log_err("lazy page fill: cannot signal the error eventfd: %s", strerror(errno));
		/* errmsg no longer changes once err is set. */
		if (l->src.failed)
			l->src.failed(l->src.opaque, err, l->errmsg);
	}
	return err;
}

/* Pages [pg, pg+n) are installed: BUSY -> PRESENT, and wake waiters. */
static void pg_settle(struct uffd_lazy *l, uint64_t pg, uint64_t n, bool claimed)
{
	uint64_t i;

	if (!claimed)
		return;
	for (i = 0; i < n; i++)
		pg_cas(l, pg + i, PG_BUSY, PG_PRESENT);
	/* Pairs with the waiter's increment then state check (both seq_cst). */
	if (__atomic_load_n(&l->waiters, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&l->lock);
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->lock);
	}
}

static int lazy_wake(struct uffd_lazy *l, uint64_t pg)
{
	struct uffdio_range r = { .start = (uintptr_t)pg_hva(l, pg), .len = UFFD_PAGE_SIZE };

	if (ioctl(l->uffd, UFFDIO_WAKE, &r) < 0)
		return lazy_fail(l, -errno, "UFFDIO_WAKE at gpa 0x%llx: %s", pg_gpa(l, pg),
				 strerror(errno));
	return 0;
}

/*
 * Install [pg, pg+n) (one range) from @src, or zeros when @src is NULL.
 * @claimed: the pages are ours (BUSY) and become PRESENT; otherwise they
 * are PRESENT already and a fault says the content was dropped since.
 * EEXIST: the page is populated already (written behind our back, or a
 * stale fault event); keep it and wake whoever faulted on it, since nobody
 * else will. Returns how many pages we installed, or the fatal -errno.
 */
static int64_t lazy_install(struct uffd_lazy *l, uint64_t pg, uint64_t n, const uint8_t *src,
			    bool claimed)
{
	uint64_t off = 0, installed = 0;
	unsigned int retries = 0;

	while (off < n) {
		uint64_t dst = (uintptr_t)pg_hva(l, pg + off);
		int64_t done;
		int ret, err;

		if (!src && l->have_zeropage) {
			struct uffdio_zeropage z = { .range = { .start = dst,
								.len = (n - off) * UFFD_PAGE_SIZE } };

			ret = ioctl(l->uffd, UFFDIO_ZEROPAGE, &z);
			done = z.zeropage;
		} else {
			struct uffdio_copy c = {
				.dst = dst,
				.src = (uintptr_t)(src ? src + off * UFFD_PAGE_SIZE : l->zero_page),
				.len = src ? (n - off) * UFFD_PAGE_SIZE : UFFD_PAGE_SIZE,
			};

			ret = ioctl(l->uffd, UFFDIO_COPY, &c);
			done = c.copy;
		}
		err = ret < 0 ? errno : 0;
		if (done > 0) {
			/* Installed (and woken) up to here, even on a partial copy. */
			pg_settle(l, pg + off, done / UFFD_PAGE_SIZE, claimed);
			off += done / UFFD_PAGE_SIZE;
			installed += done / UFFD_PAGE_SIZE;
			retries = 0;
		}
		if (!err)
			continue;
		if (err == EAGAIN && (done > 0 || ++retries < EAGAIN_RETRIES)) {
			if (done <= 0)
				sched_yield();
			continue;
		}
		if (err == EEXIST) {
			if (claimed)
				stat_add(&l->n_eexist, 1);
			ret = lazy_wake(l, pg + off);
			if (ret)
				return ret;
			pg_settle(l, pg + off, 1, claimed);
			off++;
			continue;
		}
		if (err == ENOENT && flag_get(&l->unregistering)) {
			/* Ordinary memory now: nothing left to install. */
			pg_settle(l, pg + off, n - off, claimed);
			return installed;
		}
		return lazy_fail(l, -err, "%s at gpa 0x%llx: %s",
				 !src && l->have_zeropage ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY",
				 pg_gpa(l, pg + off), strerror(err));
	}
	return installed;
}

/* Fill claimed DATA pages [pg, pg+n) into @buf and install them. */
static int64_t lazy_fill(struct uffd_lazy *l, uint64_t pg, uint64_t n, uint8_t *buf)
{
	uint64_t i;
	int ret;

	/* One read for the whole run where the source can. */
	if (n > 1 && l->src.fill_run && l->src.fill_run(l->src.opaque, pg, n, buf) == 0)
		return lazy_install(l, pg, n, buf, true);
	for (i = 0; i < n; i++) {
		ret = l->src.fill(l->src.opaque, pg + i, buf + i * UFFD_PAGE_SIZE);
		if (!ret)
			continue;
		if (ret > 0)
			ret = -EIO;
		/* Install what we have; page pg+i onwards stay BUSY: unresolved. */
		if (i)
			lazy_install(l, pg, i, buf, true);
		return lazy_fail(l, ret, "cannot fetch page %llu (gpa 0x%llx): %s",
				 (unsigned long long)(pg + i), pg_gpa(l, pg + i), strerror(-ret));
	}
	return lazy_install(l, pg, n, buf, true);
}

static int lazy_kind(struct uffd_lazy *l, uint64_t pg, enum uffd_page_kind *kind)
{
	*kind = l->src.kind(l->src.opaque, pg);
	if (*kind == UFFD_PAGE_ZERO || *kind == UFFD_PAGE_DATA)
		return 0;
	return lazy_fail(l, -EINVAL, "source gave page %llu an unknown kind %d",
			 (unsigned long long)pg, (int)*kind);
}

/* Resolve one claimed page: zero or filled. 0 or the fatal -errno. */
static int lazy_resolve(struct uffd_lazy *l, uint64_t pg, uint8_t *buf)
{
	enum uffd_page_kind kind;
	int64_t ret;

	ret = lazy_kind(l, pg, &kind);
	if (ret)
		return (int)ret;
	if (kind == UFFD_PAGE_DATA) {
		ret = lazy_fill(l, pg, 1, buf);
		return ret < 0 ? (int)ret : 0;
	}
	ret = lazy_install(l, pg, 1, NULL, true);
	if (ret < 0)
		return (int)ret;
	stat_add(&l->n_zero, ret);
	return 0;
}

/* Wait while another thread fills @pg. 0, or why to give up. */
static int lazy_wait_busy(struct uffd_lazy *l, uint64_t pg)
{
	struct timespec ts;
	int ret;

	pthread_mutex_lock(&l->lock);
	__atomic_add_fetch(&l->waiters, 1, __ATOMIC_SEQ_CST);
	while (pg_get(l, pg) == PG_BUSY && !l->err && !l->stopping) {
		/* Bounded: a missed broadcast costs a tick, not a hang. */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&l->cond, &l->lock, &ts);
	}
	ret = l->err ? l->err : l->stopping ? -ECANCELED : 0;
	__atomic_sub_fetch(&l->waiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&l->lock);
	return ret;
}

static bool lazy_should_stop(struct uffd_lazy *l)
{
	return flag_get(&l->stopping) || __atomic_load_n(&l->err, __ATOMIC_SEQ_CST);
}

/* ---- fault thread ----------------------------------------------------- */

static uint64_t hist_upper(unsigned int b)
{
	unsigned int e;

	if (b < 8)
		return b;
	e = b / 8 + 2;
	return ((9ULL + b % 8) << (e - 3)) - 1;
}

static void hist_add(struct uffd_lazy *l, uint64_t ns)
{
	uint64_t max = __atomic_load_n(&l->max_ns, __ATOMIC_RELAXED);
	unsigned int b, e;

	if (ns < 8) {
		b = (unsigned int)ns;
	} else {
		e = 63 - __builtin_clzll(ns);
		b = (e - 2) * 8 + ((ns >> (e - 3)) & 7);
	}
	stat_add(&l->hist[b], 1);
	if (ns > max)
		__atomic_store_n(&l->max_ns, ns, __ATOMIC_RELAXED); /* one writer */
}

/* The fault thread's own state. */
struct fault_ctx {
	uint8_t *buf;
	/* Faults on BUSY pages, rechecked once the page is present. */
	uint64_t deferred[DEFER_MAX];
	unsigned int ndeferred;
};

/*
 * A fault on a page marked present: the page was discarded since (balloon),
 * so it reads as zero; or the fault was resolved meanwhile (EEXIST: wake,
 * harmless).
 */
static void lazy_fault_present(struct uffd_lazy *l, uint64_t pg)
{
	if (lazy_install(l, pg, 1, NULL, false) > 0) {
		stat_add(&l->n_refault, 1);
		stat_add(&l->n_zero, 1);
	}
}

/*
 * Deferred faults whose page is no longer BUSY. The filler's UFFDIO_COPY
 * woke whoever faulted before it; but between that copy and the page being
 * marked present, the page may have been discarded and faulted again, and
 * nobody else would answer that fault.
 */
static void fault_recheck(struct uffd_lazy *l, struct fault_ctx *c)
{
	bool failed = __atomic_load_n(&l->err, __ATOMIC_SEQ_CST);
	unsigned int i, n = 0;

	for (i = 0; i < c->ndeferred; i++) {
		if (pg_get(l, c->deferred[i]) != PG_BUSY)
			lazy_fault_present(l, c->deferred[i]);
		else if (!failed) /* after a fatal error it may stay BUSY: stop polling */
			c->deferred[n++] = c->deferred[i];
	}
	c->ndeferred = n;
}

static void fault_defer(struct uffd_lazy *l, struct fault_ctx *c, uint64_t pg)
{
	unsigned int i;

	for (i = 0; i < c->ndeferred; i++)
		if (c->deferred[i] == pg)
			return;
	if (c->ndeferred == DEFER_MAX) {
		/* Full: wait for the oldest (a fill in progress); after a fatal error drop it. */
		if (lazy_wait_busy(l, c->deferred[0]) == 0)
			lazy_fault_present(l, c->deferred[0]);
		memmove(c->deferred, c->deferred + 1, (DEFER_MAX - 1) * sizeof(c->deferred[0]));
		c->ndeferred--;
	}
	c->deferred[c->ndeferred++] = pg;
}

static void lazy_fault(struct uffd_lazy *l, struct fault_ctx *c, uint64_t addr)
{
	uint64_t base = (uintptr_t)l->m->base, pg;

	if (addr < base || addr - base >= l->m->ram_size) {
		log_ratelimited(&l->rl, "lazy page fill: fault at 0x%llx outside guest RAM",
				(unsigned long long)addr);
		return;
	}
	pg = (addr - base) / UFFD_PAGE_SIZE;
	__atomic_store_n(&l->last_fault, pg, __ATOMIC_RELAXED);
	for (;;) {
		switch (pg_get(l, pg)) {
		case PG_MISSING:
			if (!pg_cas(l, pg, PG_MISSING, PG_BUSY))
				continue;
			if (!lazy_resolve(l, pg, c->buf))
				stat_add(&l->n_fault_pages, 1);
			return;
		case PG_BUSY:
			/* Normally the filler's UFFDIO_COPY wakes the faulting thread. */
			fault_defer(l, c, pg);
			return;
		default:
			lazy_fault_present(l, pg);
			return;
		}
	}
}

static void *fault_main(void *arg)
{
	struct uffd_lazy *l = arg;
	struct uffd_msg msg[FAULT_BATCH];
	struct pollfd pfd[2] = { { .fd = l->uffd, .events = POLLIN },
				 { .fd = l->stop_fd, .events = POLLIN } };
	struct fault_ctx *c = calloc(1, sizeof(*c));
	size_t i;
	ssize_t n;
	uint64_t t0;

	pthread_setname_np(pthread_self(), "uffd-fault");
	if (c)
		c->buf = aligned_alloc(UFFD_PAGE_SIZE, UFFD_PAGE_SIZE);
	if (!c || !c->buf) {
		lazy_fail(l, -ENOMEM, "out of memory for the fault thread");
		free(c);
		return NULL;
	}
	for (;;) {
		/* While faults are deferred, look at them every millisecond. */
		n = poll(pfd, 2, c->ndeferred ? 1 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			lazy_fail(l, -errno, "poll on the userfaultfd: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break; /* done or stopping */
		fault_recheck(l, c);
		if (!n)
			continue;
		if (pfd[0].revents & (POLLERR | POLLNVAL)) {
			lazy_fail(l, -EIO, "the userfaultfd reports an error");
			break;
		}
		n = read(l->uffd, msg, sizeof(msg));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue; /* woken before we read it */
			lazy_fail(l, -errno, "reading userfaultfd events: %s", strerror(errno));
			break;
		}
		t0 = time_now_ns();
		for (i = 0; i < (size_t)n / sizeof(msg[0]); i++) {
			/* No other event was asked for (UFFDIO_API features 0). */
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			stat_add(&l->n_faults, 1);
			lazy_fault(l, c, msg[i].arg.pagefault.address);
			hist_add(l, time_now_ns() - t0);
		}
	}
	free(c->buf);
	free(c);
	return NULL;
}

/* ---- prefetch thread -------------------------------------------------- */

/*
 * Consider page @pg: skip it if present or zero, else claim a run of
 * missing DATA pages from it and fill them. @wait: wait for a BUSY page
 * instead of skipping it (the final sweep). The next page to look at, or
 * the fatal -errno.
 */
static int64_t prefetch_at(struct uffd_lazy *l, uint64_t pg, uint8_t *buf, bool wait)
{
	enum uffd_page_kind kind;
	uint64_t q, limit;
	int64_t ret;

	for (;;) {
		switch (pg_get(l, pg)) {
		case PG_PRESENT:
			return pg + 1;
		case PG_BUSY:
			if (!wait)
				return pg + 1;
			ret = lazy_wait_busy(l, pg);
			if (ret)
				return ret;
			continue;
		}
		ret = lazy_kind(l, pg, &kind);
		if (ret)
			return ret;
		if (kind == UFFD_PAGE_ZERO)
			return pg + 1; /* zero-fill on demand, before and after unregistering */
		if (pg_cas(l, pg, PG_MISSING, PG_BUSY))
			break;
	}
	/* UFFDIO_COPY must not cross a registered range. */
	limit = MIN(pg_range(l, pg)->end, pg + l->run);
	for (q = pg + 1; q < limit; q++) {
		if (pg_get(l, q) != PG_MISSING)
			break;
		if (lazy_kind(l, q, &kind) || kind != UFFD_PAGE_DATA)
			break;
		if (!pg_cas(l, q, PG_MISSING, PG_BUSY))
			break;
	}
	ret = lazy_fill(l, pg, q - pg, buf);
	if (ret < 0)
		return ret;
	stat_add(&l->n_prefetch, q - pg);
	return q;
}

/* Every DATA page is present: unregister, so the rest is ordinary memory. */
static void lazy_complete(struct uffd_lazy *l)
{
	unsigned int i;
	uint64_t one = 1;

	__atomic_store_n(&l->unregistering, true, __ATOMIC_SEQ_CST);
	for (i = 0; i < l->nr_ranges; i++) {
		struct uffdio_range r = {
			.start = (uintptr_t)pg_hva(l, l->ranges[i].first),
			.len = (l->ranges[i].end - l->ranges[i].first) * UFFD_PAGE_SIZE,
		};

		/* This also wakes threads still queued on the range. */
		if (ioctl(l->uffd, UFFDIO_UNREGISTER, &r) < 0) {
			lazy_fail(l, -errno, "cannot unregister guest RAM at gpa 0x%llx: %s",
				  (unsigned long long)l->ranges[i].gpa, strerror(errno));
			return;
		}
	}
	pthread_mutex_lock(&l->lock);
	l->done_ns = time_now_ns();
	__atomic_store_n(&l->done, true, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	/* No fault can come any more: let the fault thread exit. */
	if (write(l->stop_fd, &one, sizeof(one)) < 0)
		log_err("lazy page fill: cannot stop the fault thread: %s", strerror(errno));
}

static void *prefetch_main(void *arg)
{
	struct uffd_lazy *l = arg;
	uint8_t *buf = aligned_alloc(UFFD_PAGE_SIZE, (size_t)l->run * UFFD_PAGE_SIZE);
	uint64_t pg = UINT64_MAX;
	int64_t next;

	pthread_setname_np(pthread_self(), "uffd-prefetch");
	if (!buf) {
		lazy_fail(l, -ENOMEM, "out of memory for the prefetch buffer");
		return NULL;
	}
	if (l->src.prefetch_next) {
		while (!lazy_should_stop(l)) {
			pg = l->src.prefetch_next(l->src.opaque, pg,
						  __atomic_load_n(&l->last_fault, __ATOMIC_RELAXED));
			if (pg >= l->pages || prefetch_at(l, pg, buf, false) < 0)
				break;
		}
	}
	/* Whatever the order left out; waiting on BUSY pages makes it complete. */
	for (pg = 0; pg < l->pages && !lazy_should_stop(l); pg = next) {
		next = prefetch_at(l, pg, buf, true);
		if (next < 0)
			break;
	}
	if (pg >= l->pages && !lazy_should_stop(l))
		lazy_complete(l);
	free(buf);
	return NULL;
}

/* ---- set-up ----------------------------------------------------------- */

static int lazy_open(struct qerr *e)
{
	int fd, dev, err;

	/* No UFFD_USER_MODE_ONLY: KVM and io_uring fault guest RAM from the kernel. */
	fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
	if (errno == ENOSYS)
		return qerr_set(e, ENOSYS, "this kernel has no userfaultfd (CONFIG_USERFAULTFD)");
	if (errno != EPERM)
		return qerr_set(e, errno, "userfaultfd: %s", strerror(errno));
	/* Kernel faults need CAP_SYS_PTRACE or the sysctl; the device needs file access. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return qerr_set(e, EPERM,
				"userfaultfd refused (handling kernel faults needs CAP_SYS_PTRACE or "
				"vm.unprivileged_userfaultfd=1) and /dev/userfaultfd: %s",
				strerror(errno));
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	err = errno;
	close(dev);
	if (fd < 0)
		return qerr_set(e, err, "/dev/userfaultfd: USERFAULTFD_IOC_NEW: %s", strerror(err));
	return fd;
}

/*
 * Lazy fill must own every page: one already there would never be filled
 * (with keep_present it is what the caller keeps: marked present).
 */
static int lazy_check_untouched(struct uffd_lazy *l, struct qerr *e)
{
	uint8_t *vec = malloc(MINCORE_CHUNK / UFFD_PAGE_SIZE);
	unsigned int i;
	uint64_t off, len, j;
	int ret = 0;

	if (!vec)
		return qerr_set(e, ENOMEM, "out of memory checking guest RAM");
	for (i = 0; i < l->nr_ranges && !ret; i++) {
		const struct lazy_range *r = &l->ranges[i];
		uint64_t size = (r->end - r->first) * UFFD_PAGE_SIZE;

		for (off = 0; off < size && !ret; off += len) {
			len = MIN(size - off, MINCORE_CHUNK);
			if (mincore(pg_hva(l, r->first) + off, len, vec) < 0) {
				ret = qerr_set(e, errno, "mincore on guest RAM: %s", strerror(errno));
				break;
			}
			for (j = 0; j < len / UFFD_PAGE_SIZE; j++) {
				uint64_t pg = r->first + off / UFFD_PAGE_SIZE + j;

				if (!(vec[j] & 1))
					continue;
				if (l->src.keep_present) {
					/* Not registered yet: no other thread reads it. */
					l->state[pg / PG_PER_WORD] |= (uint64_t)PG_PRESENT
								      << (pg % PG_PER_WORD * 2);
					continue;
				}
				ret = qerr_set(e, EBUSY,
					       "guest RAM at gpa 0x%llx is already populated: lazy "
					       "fill needs untouched memory",
					       (unsigned long long)(r->gpa + off + j * UFFD_PAGE_SIZE));
				break;
			}
		}
	}
	free(vec);
	return ret;
}

static int lazy_register(struct uffd_lazy *l, struct qerr *e)
{
	const uint64_t need = 1ULL << _UFFDIO_COPY | 1ULL << _UFFDIO_WAKE;
	struct uffdio_api api = { .api = UFFD_API };
	unsigned int i;

	if (ioctl(l->uffd, UFFDIO_API, &api) < 0)
		return qerr_set(e, errno, "UFFDIO_API: %s", strerror(errno));
	if (l->m->backend == MEM_BACKEND_MEMFD && !(api.features & UFFD_FEATURE_MISSING_SHMEM))
		return qerr_set(e, EOPNOTSUPP,
				"this kernel's userfaultfd cannot fill missing pages of shared "
				"memory (memfd backend); use the anon backend");
	l->have_zeropage = true;
	for (i = 0; i < l->nr_ranges; i++) {
		const struct lazy_range *r = &l->ranges[i];
		struct uffdio_register reg = {
			.range = { .start = (uintptr_t)pg_hva(l, r->first),
				   .len = (r->end - r->first) * UFFD_PAGE_SIZE },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(l->uffd, UFFDIO_REGISTER, &reg) < 0)
			return qerr_set(e, errno,
					"cannot register guest RAM at gpa 0x%llx (%llu MiB) with "
					"userfaultfd: %s",
					(unsigned long long)r->gpa,
					(unsigned long long)(reg.range.len / MiB), strerror(errno));
		if ((reg.ioctls & need) != need)
			return qerr_set(e, EOPNOTSUPP,
					"userfaultfd on guest RAM at gpa 0x%llx lacks UFFDIO_COPY or "
					"UFFDIO_WAKE",
					(unsigned long long)r->gpa);
		if (!(reg.ioctls & 1ULL << _UFFDIO_ZEROPAGE))
			l->have_zeropage = false;
	}
	if (!l->have_zeropage) {
		l->zero_page = aligned_alloc(UFFD_PAGE_SIZE, UFFD_PAGE_SIZE);
		if (!l->zero_page)
			return qerr_set(e, ENOMEM, "out of memory for a zero page");
		memset(l->zero_page, 0, UFFD_PAGE_SIZE);
	}
	return 0;
}

/* Pages outside every region stay PRESENT: never registered, never filled. */
static int lazy_layout(struct uffd_lazy *l, struct qerr *e)
{
	const struct guest_mem *m = l->m;
	uint64_t words = (l->pages + PG_PER_WORD - 1) / PG_PER_WORD, pg;
	unsigned int i;

	l->state = malloc(words * sizeof(uint64_t));
	if (!l->state)
		return qerr_set(e, ENOMEM, "out of memory for the page state bitmap");
	memset(l->state, 0xaa, words * sizeof(uint64_t)); /* PG_PRESENT everywhere */
	if (!m->nr_regions || m->nr_regions > MEM_MAX_REGIONS)
		return qerr_set(e, EINVAL, "guest RAM has %u regions", m->nr_regions);
	for (i = 0; i < m->nr_regions; i++) {
		const struct mem_region *r = &m->regions[i];
		struct lazy_range *lr = &l->ranges[i];

		if (r->hva < m->base || r->size == 0 || r->size % UFFD_PAGE_SIZE ||
		    (uint64_t)(r->hva - m->base) % UFFD_PAGE_SIZE ||
		    (uint64_t)(r->hva - m->base) > m->ram_size ||
		    r->size > m->ram_size - (uint64_t)(r->hva - m->base))
			return qerr_set(e, EINVAL, "guest RAM region %u is outside the mapping", i);
		lr->first = (uint64_t)(r->hva - m->base) / UFFD_PAGE_SIZE;
		lr->end = lr->first + r->size / UFFD_PAGE_SIZE;
		lr->gpa = r->gpa;
		for (pg = lr->first; pg < lr->end;) {
			if (pg % PG_PER_WORD == 0 && lr->end - pg >= PG_PER_WORD) {
				l->state[pg / PG_PER_WORD] = 0;
				pg += PG_PER_WORD;
			} else {
				l->state[pg / PG_PER_WORD] &= ~(3ULL << (pg % PG_PER_WORD * 2));
				pg++;
			}
		}
	}
	l->nr_ranges = m->nr_regions;
	return 0;
}

static int lazy_spawn(struct uffd_lazy *l, pthread_t *t, void *(*fn)(void *), const char *name)
{
	sigset_t all, old;
	int ret;

	/* Signals are for vCPU kicks and the main loop, never for these threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(t, NULL, fn, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* Also named by the thread itself: before its first fill, and here before we return. */
	if (!ret)
		pthread_setname_np(*t, name);
	return ret;
}

int uffd_lazy_start(struct guest_mem *m, const struct uffd_source *src, struct uffd_lazy **out,
		    struct qerr *e)
{
	pthread_condattr_t ca;
	struct uffd_lazy *l;
	int ret;

	*out = NULL;
	if (!m || !m->base || !m->ram_size || m->ram_size % UFFD_PAGE_SIZE)
		return qerr_set(e, EINVAL, "lazy page fill: guest RAM is not set up");
	if (!src || !src->kind || !src->fill)
		return qerr_set(e, EINVAL, "lazy page fill: the source needs kind and fill");
	if (src->run_pages > UFFD_RUN_MAX)
		return qerr_set(e, EINVAL, "lazy page fill: runs of %u pages exceed the maximum %u",
				src->run_pages, UFFD_RUN_MAX);
	l = calloc(1, sizeof(*l));
	if (!l)
		return qerr_set(e, ENOMEM, "out of memory");
	l->m = m;
	l->src = *src;
	l->run = src->run_pages ? src->run_pages : UFFD_RUN_DEFAULT;
	l->uffd = l->stop_fd = l->err_fd = -1;
	l->pages = m->ram_size / UFFD_PAGE_SIZE;
	l->last_fault = UINT64_MAX;
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);

	ret = lazy_layout(l, e);
	if (!ret)
		ret = lazy_check_untouched(l, e);
	if (ret)
		goto fail;
	l->uffd = lazy_open(e);
	if (l->uffd < 0) {
		ret = l->uffd;
		goto fail;
	}
	ret = lazy_register(l, e);
	if (ret)
		goto fail;
	l->stop_fd = eventfd(0, EFD_CLOEXEC);
	l->err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->stop_fd < 0 || l->err_fd < 0) {
		ret = qerr_set(e, errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	l->start_ns = time_now_ns();
	ret = lazy_spawn(l, &l->fault_thread, fault_main, "uffd-fault");
	if (!ret) {
		l->fault_started = true;
		ret = lazy_spawn(l, &l->prefetch_thread, prefetch_main, "uffd-prefetch");
	}
	if (ret) {
		qerr_set(e, -ret, "cannot start the lazy page fill threads: %s", strerror(-ret));
		goto fail;
	}
	l->prefetch_started = true;
	*out = l;
	return 0;
fail:
	uffd_lazy_destroy(l);
	return ret;
}

/* ---- API -------------------------------------------------------------- */

int uffd_lazy_populate(struct uffd_lazy *l, uint64_t page, uint64_t n)
{
	uint8_t *buf;
	uint64_t pg;
	int ret = 0;

	if (!l || page >= l->pages || n > l->pages - page)
		return -EINVAL;
	if (__atomic_load_n(&l->err, __ATOMIC_SEQ_CST))
		return l->err;
	if (flag_get(&l->done))
		return 0; /* ordinary memory */
	buf = aligned_alloc(UFFD_PAGE_SIZE, UFFD_PAGE_SIZE);
	if (!buf)
		return -ENOMEM;
	for (pg = page; pg < page + n && !ret; pg++) {
		for (;;) {
			unsigned int s = pg_get(l, pg);

			if (s == PG_PRESENT)
				break;
			if (s == PG_BUSY) {
				ret = lazy_wait_busy(l, pg);
				if (ret)
					break;
				continue;
			}
			if (!pg_cas(l, pg, PG_MISSING, PG_BUSY))
				continue;
			ret = lazy_resolve(l, pg, buf);
			if (!ret)
				stat_add(&l->n_populate, 1);
			break;
		}
	}
	free(buf);
	return ret;
}

int uffd_lazy_finish(struct uffd_lazy *l, struct qerr *e)
{
	char msg[sizeof(l->errmsg)];
	int ret;

	pthread_mutex_lock(&l->lock);
	while (!l->done && !l->err && !l->stopping)
		pthread_cond_wait(&l->cond, &l->lock);
	ret = l->err ? l->err : l->done ? 0 : -ECANCELED;
	memcpy(msg, l->errmsg, sizeof(msg));
	pthread_mutex_unlock(&l->lock);
	if (ret == -ECANCELED)
		return qerr_set(e, ECANCELED, "lazy page fill stopped before every page was present");
	if (ret)
		return qerr_set(e, -ret, "lazy page fill failed: %s", msg);
	return 0;
}

int uffd_lazy_error_fd(const struct uffd_lazy *l)
{
	return l->err_fd;
}

int uffd_lazy_error(struct uffd_lazy *l, struct qerr *e)
{
	int ret;

	pthread_mutex_lock(&l->lock);
	ret = l->err;
	if (ret)
		qerr_set(e, -ret, "%s", l->errmsg);
	pthread_mutex_unlock(&l->lock);
	return ret;
}

static uint64_t hist_percentile(const uint64_t *hist, uint64_t total, unsigned int permille)
{
	uint64_t want = (total * permille + 999) / 1000, seen = 0;
	unsigned int b;

	for (b = 0; b < HIST_BUCKETS; b++) {
		seen += hist[b];
		if (seen >= want && seen)
			return hist_upper(b);
	}
	return 0;
}

void uffd_lazy_stats(struct uffd_lazy *l, struct uffd_lazy_stats *st)
{
	uint64_t hist[HIST_BUCKETS], total = 0;
	unsigned int b;

	memset(st, 0, sizeof(*st));
	st->pages = l->pages;
	st->faults = __atomic_load_n(&l->n_faults, __ATOMIC_RELAXED);
	st->fault_pages = __atomic_load_n(&l->n_fault_pages, __ATOMIC_RELAXED);
	st->prefetch_pages = __atomic_load_n(&l->n_prefetch, __ATOMIC_RELAXED);
	st->populate_pages = __atomic_load_n(&l->n_populate, __ATOMIC_RELAXED);
	st->zero_pages = __atomic_load_n(&l->n_zero, __ATOMIC_RELAXED);
	st->refaults = __atomic_load_n(&l->n_refault, __ATOMIC_RELAXED);
	st->eexist = __atomic_load_n(&l->n_eexist, __ATOMIC_RELAXED);
	for (b = 0; b < HIST_BUCKETS; b++) {
		hist[b] = __atomic_load_n(&l->hist[b], __ATOMIC_RELAXED);
		total += hist[b];
	}
	st->fault_max_ns = __atomic_load_n(&l->max_ns, __ATOMIC_RELAXED);
	if (total) {
		st->fault_p50_ns = MIN(hist_percentile(hist, total, 500), st->fault_max_ns);
		st->fault_p99_ns = MIN(hist_percentile(hist, total, 990), st->fault_max_ns);
	}
	pthread_mutex_lock(&l->lock);
	st->done = l->done;
	st->elapsed_ns = (l->done ? l->done_ns : time_now_ns()) - l->start_ns;
	pthread_mutex_unlock(&l->lock);
}

void uffd_lazy_destroy(struct uffd_lazy *l)
{
	uint64_t one = 1;

	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	__atomic_store_n(&l->stopping, true, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	if (l->stop_fd >= 0 && write(l->stop_fd, &one, sizeof(one)) < 0)
		log_err("lazy page fill: cannot stop the fault thread: %s", strerror(errno));
	if (l->prefetch_started)
		pthread_join(l->prefetch_thread, NULL);
	if (l->fault_started)
		pthread_join(l->fault_thread, NULL);
	/* Closing drops the registration and wakes any thread still faulting. */
	if (l->uffd >= 0)
		close(l->uffd);
	if (l->stop_fd >= 0)
		close(l->stop_fd);
	if (l->err_fd >= 0)
		close(l->err_fd);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l->zero_page);
	free(l->state);
	free(l);
}
