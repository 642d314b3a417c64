// SPDX-License-Identifier: MIT
/* The page <-> disk block tracker behind I/O-aware checkpoint elision. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "qlite/elide.h"

static uint8_t page_a[4096], page_b[4096];

static void test_record_lookup(void **state)
{
	struct elide t;
	unsigned int disk;
	uint64_t block, hash;

	(void)state;
	memset(page_a, 0xa5, sizeof(page_a));
	memset(page_b, 0x5a, sizeof(page_b));
	assert_int_equal(elide_init(&t, 1024), 0);
	assert_false(elide_lookup(&t, 3, page_a, &disk, &block, &hash));
	elide_record(&t, 3, 1, 77, page_a);
	assert_true(elide_lookup(&t, 3, page_a, &disk, &block, &hash));
	assert_int_equal(disk, 1);
	assert_int_equal(block, 77);
	assert_true(hash == elide_hash(page_a));
	/* The guest changed the page: the hash no longer matches. */
	assert_false(elide_lookup(&t, 3, page_b, &disk, &block, &hash));
	/* Re-recording a page replaces its old block. */
	elide_record(&t, 3, 0, 5, page_b);
	assert_true(elide_lookup(&t, 3, page_b, &disk, &block, &hash));
	assert_int_equal(disk, 0);
	assert_int_equal(block, 5);
	/* A write to the old block must not touch the page's new mapping. */
	elide_drop_range(&t, 1, 77 * 4096, 4096, NULL, NULL);
	assert_true(elide_lookup(&t, 3, page_b, &disk, &block, &hash));
	/* A sub-block write to the new one drops it. */
	elide_drop_range(&t, 0, 5 * 4096 + 512, 512, NULL, NULL);
	assert_false(elide_lookup(&t, 3, page_b, &disk, &block, &hash));
	/* Out of range pages and disks are ignored, never written. */
	elide_record(&t, 1024, 0, 1, page_a);
	elide_record(&t, 1, ELIDE_MAX_DISKS, 1, page_a);
	assert_false(elide_lookup(&t, 1, page_a, &disk, &block, &hash));
	elide_destroy(&t);
}

static void test_one_page_per_block(void **state)
{
	struct elide t;
	unsigned int disk;
	uint64_t block, hash;

	(void)state;
	assert_int_equal(elide_init(&t, 64), 0);
	elide_record(&t, 1, 0, 9, page_a);
	elide_record(&t, 2, 0, 9, page_a); /* the same block read into another page */
	assert_false(elide_lookup(&t, 1, page_a, &disk, &block, &hash));
	assert_true(elide_lookup(&t, 2, page_a, &disk, &block, &hash));
	elide_drop_range(&t, 0, 9 * 4096, 1, NULL, NULL);
	assert_false(elide_lookup(&t, 2, page_a, &disk, &block, &hash));
	elide_destroy(&t);
}

/* Many pages, growth, deletes, and a huge (discard-like) range. */
static void test_many(void **state)
{
	const uint64_t n = 100000;
	struct elide t;
	unsigned int disk;
	uint64_t i, block, hash;

	(void)state;
	assert_int_equal(elide_init(&t, n), 0);
	for (i = 0; i < n; i++)
		elide_record(&t, i, (unsigned int)(i % 3), i * 7, page_a);
	for (i = 0; i < n; i += 2) /* drop the even pages' blocks */
		elide_drop_range(&t, (unsigned int)(i % 3), i * 7 * 4096, 4096, NULL, NULL);
	for (i = 0; i < n; i++) {
		bool hit = elide_lookup(&t, i, page_a, &disk, &block, &hash);

		assert_int_equal(hit, i % 2 == 1);
		if (hit)
			assert_true(block == i * 7 && disk == i % 3);
	}
	/* Re-record after deletes reuses the table without losing entries. */
	for (i = 0; i < n; i += 2)
		elide_record(&t, i, 2, 1000000 + i, page_a);
	for (i = 0; i < n; i++)
		assert_true(elide_lookup(&t, i, page_a, &disk, &block, &hash));
	/* Discard the whole of disk 2 at once. */
	elide_drop_range(&t, 2, 0, 1ULL << 40, NULL, NULL);
	for (i = 0; i < n; i++) {
		bool hit = elide_lookup(&t, i, page_a, &disk, &block, &hash);

		assert_int_equal(hit, i % 2 == 1 && i % 3 != 2);
	}
	elide_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_lookup),
		cmocka_unit_test(test_one_page_per_block),
		cmocka_unit_test(test_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
