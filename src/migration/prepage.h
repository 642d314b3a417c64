/* SPDX-License-Identifier: MIT */
/*
 * Adaptive pre-paging for post-copy (Hines and Gopalan, "Post-copy based
 * live virtual machine migration using adaptive pre-paging and dynamic
 * self-ballooning", VEE 2009): the source pushes the pages the destination
 * lacks in an order that "bubbles" outward from the most recent faults,
 * the pivots, in both directions, because a fault predicts its neighbours.
 * Several pivots (MIG_PREPAGE_PIVOTS by default, the parameter
 * x-prepage-pivots) are served round-robin, the newest replacing the
 * oldest, so a guest touching a few regions at once keeps all of them warm.
 * Without pivots (0 of them: pre-paging off), or once every bubble reached
 * the edges, it sweeps upwards.
 *
 * Pure bookkeeping, no locking: the caller serialises mig_prepage_fault()
 * (its request thread) and mig_prepage_next() (its push thread).
 */
#ifndef QLITE_MIG_PREPAGE_H
#define QLITE_MIG_PREPAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "qlite/migrate.h"

#define MIG_PREPAGE_PIVOTS MIG_DEFAULT_PREPAGE_PIVOTS
#define MIG_PREPAGE_MAX_PIVOTS MIG_MAX_PREPAGE_PIVOTS

struct mig_prepage_pivot {
	uint64_t up;	/* the next page to look at above the pivot (npages: done) */
	uint64_t down;	/* one past the next page to look at below it (0: done) */
	bool next_down; /* direction of the next run */
};

struct mig_prepage {
	uint64_t npages;
	unsigned long *held; /* the caller's bitmap: a bit per page the destination has */
	struct mig_prepage_pivot pivot[MIG_PREPAGE_MAX_PIVOTS]; /* [0] the newest */
	unsigned int npivots;
	unsigned int max_pivots; /* 0: no pre-paging, a plain ascending sweep */
	unsigned int turn;	 /* the pivot whose run comes next */
	uint64_t sweep;		 /* the ascending sweep's cursor */
	uint64_t left;		 /* pages without a bit in @held */
};

/*
 * @held (mig_bitmap_words(npages) words) says which pages the destination
 * has already; mig_prepage_next() sets the bit of every page it returns,
 * and the caller sets it for pages it sends otherwise (mig_prepage_mark()).
 */
void mig_prepage_init(struct mig_prepage *pp, uint64_t npages, unsigned long *held);
/*
 * Keep at most @max pivots (MIG_PREPAGE_PIVOTS after init; above
 * MIG_PREPAGE_MAX_PIVOTS: that many); the oldest beyond go at once.
 */
void mig_prepage_set_pivots(struct mig_prepage *pp, unsigned int max);
/* A fault (page request) at @page: the newest pivot. Out of range or no pivots: ignored. */
void mig_prepage_fault(struct mig_prepage *pp, uint64_t page);
/* @page was sent some other way (on request): never pushed; false if it already was. */
bool mig_prepage_mark(struct mig_prepage *pp, uint64_t page);
/* @page must be sent again (recovery: it may not have arrived); false if it was not held. */
bool mig_prepage_unmark(struct mig_prepage *pp, uint64_t page);
/*
 * The next run to push: [*first, *first + n) with 1 <= n <= @max, none of
 * them held before, all marked held now. 0 once every page is held.
 */
uint64_t mig_prepage_next(struct mig_prepage *pp, uint64_t max, uint64_t *first);
/* Pages not held yet. */
static inline uint64_t mig_prepage_left(const struct mig_prepage *pp)
{
	return pp->left;
}

#endif
