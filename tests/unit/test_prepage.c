// SPDX-License-Identifier: MIT
/*
 * Post-copy's adaptive pre-paging order: runs bubble outward from the
 * newest fault in both directions, several pivots take turns (newest
 * first, the oldest dropped past MIG_PREPAGE_PIVOTS), held pages are never
 * returned and every page is returned at most once, also under random
 * faults, held sets and run lengths.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../src/migration/mig_internal.h"
#include "../../src/migration/prepage.h"

static unsigned long *bits(uint64_t n)
{
	unsigned long *b = calloc(mig_bitmap_words(n), sizeof(*b));

	assert_non_null(b);
	return b;
}

static void expect_run(struct mig_prepage *pp, uint64_t max, uint64_t first, uint64_t n)
{
	uint64_t f = UINT64_MAX;

	assert_int_equal(mig_prepage_next(pp, max, &f), n);
	assert_int_equal(f, first);
}

static void test_sweep_without_faults(void **state)
{
	unsigned long *h = bits(100);
	struct mig_prepage pp;

	(void)state;
	mig_bit_set(h, 5);
	mig_prepage_init(&pp, 100, h);
	assert_int_equal(mig_prepage_left(&pp), 99);
	expect_run(&pp, 16, 0, 5); /* stops before the held page */
	expect_run(&pp, 16, 6, 16);
	for (uint64_t f = 22; f < 100; f += 16)
		expect_run(&pp, 16, f, f + 16 <= 100 ? 16 : 100 - f);
	assert_int_equal(mig_prepage_left(&pp), 0);
	assert_int_equal(mig_prepage_next(&pp, 16, &(uint64_t){0}), 0);
	free(h);
}

static void test_one_pivot_both_directions(void **state)
{
	unsigned long *h = bits(1000);
	struct mig_prepage pp;

	(void)state;
	mig_prepage_init(&pp, 1000, h);
	mig_prepage_fault(&pp, 100);
	assert_true(mig_prepage_mark(&pp, 100)); /* sent on request */
	assert_false(mig_prepage_mark(&pp, 100));
	expect_run(&pp, 4, 101, 4); /* up first ... */
	expect_run(&pp, 4, 96, 4);  /* ... then down, alternating, outward */
	expect_run(&pp, 4, 105, 4);
	expect_run(&pp, 4, 92, 4);
	expect_run(&pp, 4, 109, 4);
	/* Down to the edge: the last run below is cut at page 0. */
	for (int i = 0; i < 22; i++) {
		expect_run(&pp, 4, 88 - 4 * i, 4);
		expect_run(&pp, 4, 113 + 4 * i, 4);
	}
	expect_run(&pp, 4, 0, 4);
	/* Below exhausted: only upward runs now. */
	expect_run(&pp, 4, 201, 4);
	expect_run(&pp, 4, 205, 4);
	free(h);
}

static void test_pivots_take_turns_newest_first(void **state)
{
	unsigned long *h = bits(4096);
	struct mig_prepage pp;

	(void)state;
	mig_prepage_init(&pp, 4096, h);
	mig_prepage_fault(&pp, 1000);
	mig_prepage_fault(&pp, 2000);
	mig_prepage_fault(&pp, 3000);
	expect_run(&pp, 8, 3000, 8);
	expect_run(&pp, 8, 2000, 8);
	expect_run(&pp, 8, 1000, 8);
	expect_run(&pp, 8, 2992, 8);
	expect_run(&pp, 8, 1992, 8);
	expect_run(&pp, 8, 992, 8);
	/* A new fault goes first at once, then the turns go on. */
	mig_prepage_fault(&pp, 10);
	expect_run(&pp, 8, 10, 8);
	expect_run(&pp, 8, 3008, 8);
	free(h);
}

static void test_oldest_pivot_dropped(void **state)
{
	unsigned long *h = bits(8192);
	struct mig_prepage pp;
	uint64_t first;

	(void)state;
	mig_prepage_init(&pp, 8192, h);
	for (int i = 0; i <= MIG_PREPAGE_PIVOTS; i++)
		mig_prepage_fault(&pp, 1000 * (uint64_t)i + 500);
	assert_int_equal(pp.npivots, MIG_PREPAGE_PIVOTS);
	/* Two rounds of turns: every run near one of the 7 newest, never 500. */
	for (int i = 0; i < 2 * MIG_PREPAGE_PIVOTS; i++) {
		uint64_t n = mig_prepage_next(&pp, 4, &first);

		assert_int_equal(n, 4);
		assert_true(first >= 1000);
		assert_true(first % 1000 >= 496 && first % 1000 < 504);
	}
	mig_prepage_fault(&pp, 1ULL << 40); /* out of range: ignored */
	assert_int_equal(pp.pivot[0].up, 7504);
	free(h);
}

static void test_unmark_sent_again(void **state)
{
	unsigned long *h = bits(64);
	struct mig_prepage pp;
	uint64_t first, n, total = 0;

	(void)state;
	mig_prepage_init(&pp, 64, h);
	while ((n = mig_prepage_next(&pp, 64, &first)))
		total += n;
	assert_int_equal(total, 64);
	assert_true(mig_prepage_unmark(&pp, 7));
	assert_false(mig_prepage_unmark(&pp, 7));
	assert_false(mig_prepage_unmark(&pp, 64));
	expect_run(&pp, 64, 7, 1);
	assert_int_equal(mig_prepage_next(&pp, 64, &first), 0);
	free(h);
}

/* Random held sets, faults, marks and run lengths: each page exactly once. */
static void test_random_exactly_once(void **state)
{
	(void)state;
	srand(12345);
	for (int iter = 0; iter < 200; iter++) {
		uint64_t np = 1 + (uint64_t)rand() % 3000, first, n, seen_n = 0;
		unsigned long *h = bits(np);
		unsigned char *seen = calloc(np, 1);
		struct mig_prepage pp;

		assert_non_null(seen);
		for (uint64_t i = 0; i < np; i++)
			if (rand() % 4 == 0) {
				mig_bit_set(h, i);
				seen[i] = 2;
				seen_n++;
			}
		mig_prepage_init(&pp, np, h);
		assert_int_equal(mig_prepage_left(&pp), np - seen_n);
		for (;;) {
			uint64_t max = 1 + (uint64_t)rand() % 40;

			if (rand() % 5 == 0)
				mig_prepage_fault(&pp, (uint64_t)rand() % (np + 10));
			if (rand() % 7 == 0) {
				uint64_t p = (uint64_t)rand() % np;

				if (mig_prepage_mark(&pp, p)) {
					assert_int_equal(seen[p], 0);
					seen[p] = 3;
					seen_n++;
				}
			}
			n = mig_prepage_next(&pp, max, &first);
			if (!n)
				break;
			assert_true(n <= max);
			assert_true(first + n <= np);
			for (uint64_t i = first; i < first + n; i++) {
				assert_int_equal(seen[i], 0);
				seen[i] = 1;
				seen_n++;
			}
		}
		assert_int_equal(seen_n, np);
		assert_int_equal(mig_prepage_left(&pp), 0);
		free(seen);
		free(h);
	}
}

/* x-prepage-pivots 0: faults are ignored, the push is an ascending sweep. */
static void test_no_pivots_ascending(void **state)
{
	unsigned long *h = bits(1000);
	struct mig_prepage pp;
	uint64_t first, n, next = 0;

	(void)state;
	mig_prepage_init(&pp, 1000, h);
	mig_prepage_set_pivots(&pp, 0);
	mig_prepage_fault(&pp, 500);
	assert_int_equal(pp.npivots, 0);
	assert_true(mig_prepage_mark(&pp, 500)); /* sent on request */
	while ((n = mig_prepage_next(&pp, 16, &first))) {
		if (first + n == 500)
			mig_prepage_fault(&pp, 900);
		assert_true(first >= next);
		next = first + n;
	}
	assert_int_equal(next, 1000);
	assert_int_equal(mig_prepage_left(&pp), 0);
	free(h);
}

/* Fewer pivots: the oldest go at once; more than the maximum: clamped. */
static void test_set_pivots(void **state)
{
	unsigned long *h = bits(8192);
	struct mig_prepage pp;

	(void)state;
	mig_prepage_init(&pp, 8192, h);
	assert_int_equal(pp.max_pivots, MIG_PREPAGE_PIVOTS);
	for (int i = 1; i <= 5; i++)
		mig_prepage_fault(&pp, 1000 * (uint64_t)i);
	mig_prepage_set_pivots(&pp, 2);
	assert_int_equal(pp.npivots, 2);
	expect_run(&pp, 8, 5000, 8);
	expect_run(&pp, 8, 4000, 8);
	expect_run(&pp, 8, 4992, 8);
	mig_prepage_fault(&pp, 100);
	assert_int_equal(pp.npivots, 2);
	expect_run(&pp, 8, 100, 8);
	expect_run(&pp, 8, 5008, 8);
	mig_prepage_set_pivots(&pp, 1000);
	assert_int_equal(pp.max_pivots, MIG_PREPAGE_MAX_PIVOTS);
	for (int i = 0; i < 100; i++)
		mig_prepage_fault(&pp, 10 * (uint64_t)i + 6000);
	assert_int_equal(pp.npivots, MIG_PREPAGE_MAX_PIVOTS);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sweep_without_faults),
		cmocka_unit_test(test_one_pivot_both_directions),
		cmocka_unit_test(test_pivots_take_turns_newest_first),
		cmocka_unit_test(test_oldest_pivot_dropped),
		cmocka_unit_test(test_unmark_sent_again),
		cmocka_unit_test(test_random_exactly_once),
		cmocka_unit_test(test_no_pivots_ascending),
		cmocka_unit_test(test_set_pivots),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
