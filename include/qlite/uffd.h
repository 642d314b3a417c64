/* SPDX-License-Identifier: MIT */
/*
 * Lazy page fill with userfaultfd: guest RAM is registered in MISSING mode
 * and filled from a source on demand (thread "uffd-fault") and in the
 * background (thread "uffd-prefetch"), every page exactly once. When every
 * DATA page is present the ranges are unregistered and the threads exit.
 * Used by lazy restore and post-copy migration; see docs/lazy-restore.md.
 */
#ifndef QLITE_UFFD_H
#define QLITE_UFFD_H

#include <stdbool.h>
#include <stdint.h>
#include "qlite/mem.h"
#include "qlite/util.h"

#define UFFD_PAGE_SIZE 4096u
/* Default and maximum pages per prefetch UFFDIO_COPY (64 KiB, 2 MiB). */
#define UFFD_RUN_DEFAULT 16u
#define UFFD_RUN_MAX 512u

enum uffd_page_kind {
	UFFD_PAGE_ZERO, /* never fetched: zero-filled on access, not prefetched */
	UFFD_PAGE_DATA, /* filled through uffd_source.fill */
};

/*
 * Where page content comes from. @page is an index into the guest mapping
 * in 4 KiB pages: page = (hva - mem->base) / 4096. Callbacks run on the
 * engine's threads and on callers of uffd_lazy_populate(), concurrently for
 * different pages; they must not touch guest RAM (it may be missing).
 */
struct uffd_source {
	/* Must be cheap and constant for the life of the engine. */
	enum uffd_page_kind (*kind)(void *opaque, uint64_t page);
	/* Fill @dst (4 KiB, page-aligned, the caller's scratch); 0 or -errno. */
	int (*fill)(void *opaque, uint64_t page, void *dst);
	/*
	 * Optional: fill the @n DATA pages from @page at once (one read for a
	 * prefetch run). Non-zero: the engine falls back to fill() page by
	 * page, which then reports any error.
	 */
	int (*fill_run)(void *opaque, uint64_t page, uint64_t n, void *dst);
	/*
	 * Optional prefetch order: the next page to prefetch from after @prev
	 * (UINT64_MAX on the first call), or UINT64_MAX to stop. @last_fault is
	 * the page of the most recent fault (UINT64_MAX before any), so an
	 * order can pivot around faults. Runs extend upwards from the returned
	 * page. Whatever the order skips, an ascending sweep fills afterwards.
	 * NULL: ascending.
	 */
	uint64_t (*prefetch_next)(void *opaque, uint64_t prev, uint64_t last_fault);
	void *opaque;
	/* Pages per prefetch UFFDIO_COPY, at most UFFD_RUN_MAX; 0: default. */
	unsigned int run_pages;
	/*
	 * Pages resident when the engine starts are kept as they are (present,
	 * never filled) instead of refusing to start: post-copy, where pre-copy
	 * placed part of memory. The caller drops (mem_discard) every page it
	 * wants filled, after MADV_NOHUGEPAGE: a write may populate a whole
	 * huge page, and khugepaged may collapse dropped pages in again until
	 * the engine registers them. Resident is what mincore() says; a page it misses (swapped out)
	 * is not filled over either (UFFDIO_COPY finds it: EEXIST).
	 */
	bool keep_present;
	/*
	 * Optional: called once, from the engine thread that hit it, on the
	 * first fatal error (after the error eventfd is signalled), so an owner
	 * blocked elsewhere (post-copy's migration thread) learns of it.
	 */
	void (*failed)(void *opaque, int err, const char *msg);
};

struct uffd_lazy_stats {
	uint64_t pages; /* pages in the mapping */
	uint64_t faults; /* page-fault events read */
	uint64_t fault_pages; /* pages resolved by the fault thread (data or zero) */
	uint64_t prefetch_pages; /* pages filled by the prefetch thread */
	uint64_t populate_pages; /* pages resolved by uffd_lazy_populate() */
	uint64_t zero_pages; /* pages resolved as zero (ZERO kind or refault) */
	uint64_t refaults; /* faults on pages already present: discarded since */
	uint64_t eexist; /* pages found populated behind the engine's back */
	uint64_t fault_p50_ns, fault_p99_ns, fault_max_ns; /* fault service time */
	bool done; /* every DATA page present, ranges unregistered */
	uint64_t elapsed_ns; /* start to done (or to now) */
};

struct uffd_lazy;

/*
 * Register every region of @m (untouched so far: no page may be resident,
 * unless src->keep_present) and start both threads. @src is copied; @m must outlive the engine.
 */
int uffd_lazy_start(struct guest_mem *m, const struct uffd_source *src, struct uffd_lazy **out,
		    struct qerr *e);
/*
 * Make [page, page+n) present now, waiting for pages another thread is
 * filling: before writes into guest RAM that would not fault (through the
 * memfd, say), or a disk-write hook. 0, or -EINVAL (out of range), the
 * fatal error, -ECANCELED (destroying), -ENOMEM.
 */
int uffd_lazy_populate(struct uffd_lazy *l, uint64_t page, uint64_t n);
/* Block until every DATA page is present and the ranges are unregistered. */
int uffd_lazy_finish(struct uffd_lazy *l, struct qerr *e);
void uffd_lazy_stats(struct uffd_lazy *l, struct uffd_lazy_stats *st);
/*
 * A fill or UFFDIO error is fatal for the VM (the guest would read garbage):
 * the page stays unresolved, this eventfd becomes readable, and
 * uffd_lazy_error() returns the first error (0 if none) with its message.
 */
int uffd_lazy_error_fd(const struct uffd_lazy *l);
int uffd_lazy_error(struct uffd_lazy *l, struct qerr *e);
/*
 * Stop the threads and close the userfaultfd; safe at any time (NULL too).
 * Before done, still-missing pages then read as zero: call it once the VM
 * is stopped, or after uffd_lazy_finish(). Call before mem_destroy().
 */
void uffd_lazy_destroy(struct uffd_lazy *l);

#endif
