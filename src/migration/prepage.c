// SPDX-License-Identifier: MIT
/*
 * Adaptive pre-paging order for post-copy (prepage.h). Each pivot has two
 * cursors moving away from it; they only ever move outward, so however
 * many held pages they skip, a pivot costs at most one pass over the
 * bitmap (a word at a time where it is full).
 */
#include "prepage.h"

#include <string.h>

#include "mig_internal.h"

static bool held(const struct mig_prepage *pp, uint64_t i)
{
	return mig_bit_test(pp->held, i);
}

static void take(struct mig_prepage *pp, uint64_t first, uint64_t n)
{
	for (uint64_t i = first; i < first + n; i++)
		mig_bit_set(pp->held, i);
	pp->left -= n;
}

/* The lowest page >= @from not held, or npages. */
static uint64_t find_up(const struct mig_prepage *pp, uint64_t from)
{
	uint64_t i = from;

	while (i < pp->npages) {
		if (i % MIG_BITS == 0 && pp->held[i / MIG_BITS] == ~0UL) {
			i += MIG_BITS;
			continue;
		}
		if (!held(pp, i))
			return i;
		i++;
	}
	return pp->npages;
}

/* The highest page < @below not held, or UINT64_MAX. */
static uint64_t find_down(const struct mig_prepage *pp, uint64_t below)
{
	uint64_t i = below;

	while (i > 0) {
		if (i % MIG_BITS == 0 && pp->held[i / MIG_BITS - 1] == ~0UL) {
			i -= MIG_BITS;
			continue;
		}
		if (!held(pp, i - 1))
			return i - 1;
		i--;
	}
	return UINT64_MAX;
}

void mig_prepage_init(struct mig_prepage *pp, uint64_t npages, unsigned long *held_bits)
{
	memset(pp, 0, sizeof(*pp));
	pp->npages = npages;
	pp->held = held_bits;
	pp->max_pivots = MIG_PREPAGE_PIVOTS;
	for (uint64_t i = 0; i < npages; i++)
		pp->left += !held(pp, i);
}

void mig_prepage_set_pivots(struct mig_prepage *pp, unsigned int max)
{
	pp->max_pivots = max < MIG_PREPAGE_MAX_PIVOTS ? max : MIG_PREPAGE_MAX_PIVOTS;
	if (pp->npivots > pp->max_pivots)
		pp->npivots = pp->max_pivots; /* [0] is the newest: the oldest go */
	if (pp->turn >= pp->npivots)
		pp->turn = 0;
}

void mig_prepage_fault(struct mig_prepage *pp, uint64_t page)
{
	if (page >= pp->npages || !pp->max_pivots)
		return;
	if (pp->npivots >= pp->max_pivots)
		pp->npivots--; /* the oldest goes */
	memmove(&pp->pivot[1], &pp->pivot[0], pp->npivots * sizeof(pp->pivot[0]));
	pp->pivot[0] = (struct mig_prepage_pivot){.up = page, .down = page, .next_down = false};
	pp->npivots++;
	pp->turn = 0; /* the newest fault is the best prediction: its run comes first */
}

bool mig_prepage_mark(struct mig_prepage *pp, uint64_t page)
{
	if (page >= pp->npages || held(pp, page))
		return false;
	take(pp, page, 1);
	return true;
}

bool mig_prepage_unmark(struct mig_prepage *pp, uint64_t page)
{
	if (page >= pp->npages || !held(pp, page))
		return false;
	pp->held[page / MIG_BITS] &= ~(1UL << (page % MIG_BITS));
	pp->left++;
	return true;
}

static uint64_t run_up(struct mig_prepage *pp, uint64_t from, uint64_t max, uint64_t *first)
{
	uint64_t x = find_up(pp, from), hi = x;

	if (x == pp->npages)
		return 0;
	while (hi + 1 < pp->npages && hi + 1 - x < max && !held(pp, hi + 1))
		hi++;
	*first = x;
	take(pp, x, hi - x + 1);
	return hi - x + 1;
}

static uint64_t run_down(struct mig_prepage *pp, uint64_t below, uint64_t max, uint64_t *first)
{
	uint64_t x = find_down(pp, below), lo = x;

	if (x == UINT64_MAX)
		return 0;
	while (lo > 0 && x - lo + 1 < max && !held(pp, lo - 1))
		lo--;
	*first = lo;
	take(pp, lo, x - lo + 1);
	return x - lo + 1;
}

/* One run from pivot @p, alternating directions; 0 when both are exhausted. */
static uint64_t pivot_run(struct mig_prepage *pp, struct mig_prepage_pivot *p, uint64_t max,
			  uint64_t *first)
{
	for (int tries = 0; tries < 2; tries++) {
		uint64_t n;

		if (p->next_down) {
			n = p->down ? run_down(pp, p->down, max, first) : 0;
			p->down = n ? *first : 0;
		} else {
			n = p->up < pp->npages ? run_up(pp, p->up, max, first) : 0;
			p->up = n ? *first + n : pp->npages;
		}
		p->next_down = !p->next_down;
		if (n)
			return n;
	}
	return 0;
}

uint64_t mig_prepage_next(struct mig_prepage *pp, uint64_t max, uint64_t *first)
{
	uint64_t n;

	if (!pp->left || !max)
		return 0;
	while (pp->npivots) {
		unsigned int i = pp->turn % pp->npivots;

		n = pivot_run(pp, &pp->pivot[i], max, first);
		if (n) {
			pp->turn = i + 1;
			return n;
		}
		/* Both directions reached the edges: this pivot is spent. */
		memmove(&pp->pivot[i], &pp->pivot[i + 1],
			(pp->npivots - i - 1) * sizeof(pp->pivot[0]));
		pp->npivots--;
		pp->turn = i;
	}
	n = run_up(pp, pp->sweep, max, first);
	if (n) {
		pp->sweep = *first + n;
		return n;
	}
	/* Pages given back (mig_prepage_unmark) below the sweep: start over once. */
	n = run_up(pp, 0, max, first);
	if (n)
		pp->sweep = *first + n;
	return n;
}
