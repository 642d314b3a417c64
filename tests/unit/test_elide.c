// SPDX-License-Identifier: MIT
/* The page <-> disk block tracker behind I/O-aware checkpoint elision. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/elide.h"

static uint8_t page_a[4096], page_b[4096];

/* A fake image: every block holds @fill, except that @bad fails to read. */
struct fake_disk {
	uint8_t fill;
	unsigned int bad_disk;
	uint64_t bad_block;
	int err;
	unsigned int reads;
	unsigned int last_disk;
	uint64_t last_block;
};

static int fake_read(void *opaque, unsigned int disk, uint64_t block, void *buf)
{
	struct fake_disk *f = opaque;

	f->reads++;
	f->last_disk = disk;
	f->last_block = block;
	if (f->err && disk == f->bad_disk && block == f->bad_block)
		return f->err;
	memset(buf, f->fill, 4096);
	return 0;
}

#define LOOKUP(t, page, data, f) elide_lookup(t, page, data, fake_read, f, &disk, &block, &hash)

static void test_record_lookup(void **state)
{
	struct fake_disk f = { .fill = 0xa5 };
	struct elide t;
	unsigned int disk;
	uint64_t block, hash;

	(void)state;
	memset(page_a, 0xa5, sizeof(page_a));
	memset(page_b, 0x5a, sizeof(page_b));
	assert_int_equal(elide_init(&t, 1024), 0);
	assert_false(LOOKUP(&t, 3, page_a, &f));
	/* Recording reads nothing: the check waits for the lookup. */
	elide_record(&t, 3, 1, 77);
	assert_int_equal(f.reads, 0);
	assert_true(LOOKUP(&t, 3, page_a, &f));
	assert_int_equal(f.reads, 1);
	assert_int_equal(f.last_disk, 1);
	assert_int_equal(f.last_block, 77);
	assert_int_equal(disk, 1);
	assert_int_equal(block, 77);
	assert_true(hash == elide_hash(page_a));
	/* The guest changed the page: it no longer equals the block. */
	assert_false(LOOKUP(&t, 3, page_b, &f));
	/* The block changed on the image behind our back: not elided either. */
	f.fill = 0x5a;
	assert_false(LOOKUP(&t, 3, page_a, &f));
	/* One differing byte is enough. */
	f.fill = 0xa5;
	page_a[4095] ^= 1;
	assert_false(LOOKUP(&t, 3, page_a, &f));
	page_a[4095] ^= 1;
	/* A read error means data, never a reference. */
	f.err = -EIO;
	f.bad_disk = 1;
	f.bad_block = 77;
	assert_false(LOOKUP(&t, 3, page_a, &f));
	f.err = 0;
	assert_true(LOOKUP(&t, 3, page_a, &f));
	/* No way to read the image: no reference. */
	assert_false(elide_lookup(&t, 3, page_a, NULL, NULL, &disk, &block, &hash));
	/* Re-recording a page replaces its old block. */
	f.fill = 0x5a;
	elide_record(&t, 3, 0, 5);
	assert_true(LOOKUP(&t, 3, page_b, &f));
	assert_int_equal(disk, 0);
	assert_int_equal(block, 5);
	/* A write to the old block must not touch the page's new mapping. */
	elide_drop_range(&t, 1, 77 * 4096, 4096, NULL, NULL);
	assert_true(LOOKUP(&t, 3, page_b, &f));
	/* A sub-block write to the new one drops it. */
	elide_drop_range(&t, 0, 5 * 4096 + 512, 512, NULL, NULL);
	assert_false(LOOKUP(&t, 3, page_b, &f));
	/* Out of range pages and disks are ignored, never written. */
	f.fill = 0xa5;
	elide_record(&t, 1024, 0, 1);
	elide_record(&t, 1, ELIDE_MAX_DISKS, 1);
	assert_false(LOOKUP(&t, 1, page_a, &f));
	assert_false(LOOKUP(&t, 1024, page_a, &f));
	elide_destroy(&t);
}

/* Restore's seeds carry a verified hash: checked by hash, no read. */
static void test_record_hash(void **state)
{
	struct fake_disk f = { .fill = 0x00 };
	struct elide t;
	unsigned int disk;
	uint64_t block, hash;

	(void)state;
	memset(page_a, 0xa5, sizeof(page_a));
	memset(page_b, 0x5a, sizeof(page_b));
	assert_int_equal(elide_init(&t, 16), 0);
	elide_record_hash(&t, 2, 0, 9, elide_hash(page_a));
	assert_true(LOOKUP(&t, 2, page_a, &f));
	assert_int_equal(f.reads, 0);
	assert_int_equal(block, 9);
	assert_true(hash == elide_hash(page_a));
	assert_false(LOOKUP(&t, 2, page_b, &f));
	/* A fresh read of the page makes it unverified again. */
	elide_record(&t, 2, 0, 9);
	assert_false(LOOKUP(&t, 2, page_a, &f)); /* the image holds zeroes */
	assert_int_equal(f.reads, 1);
	f.fill = 0xa5;
	assert_true(LOOKUP(&t, 2, page_a, &f));
	elide_destroy(&t);
}

static void test_one_page_per_block(void **state)
{
	struct fake_disk f = { .fill = 0xa5 };
	struct elide t;
	unsigned int disk;
	uint64_t block, hash;

	(void)state;
	assert_int_equal(elide_init(&t, 64), 0);
	elide_record(&t, 1, 0, 9);
	elide_record(&t, 2, 0, 9); /* the same block read into another page */
	assert_false(LOOKUP(&t, 1, page_a, &f));
	assert_true(LOOKUP(&t, 2, page_a, &f));
	elide_drop_range(&t, 0, 9 * 4096, 1, NULL, NULL);
	assert_false(LOOKUP(&t, 2, page_a, &f));
	elide_destroy(&t);
}

/* Many pages, growth, deletes, and a huge (discard-like) range. */
static void test_many(void **state)
{
	const uint64_t n = 100000;
	struct fake_disk f = { .fill = 0xa5 };
	struct elide t;
	unsigned int disk;
	uint64_t i, block, hash;

	(void)state;
	assert_int_equal(elide_init(&t, n), 0);
	for (i = 0; i < n; i++)
		elide_record(&t, i, (unsigned int)(i % 3), i * 7);
	for (i = 0; i < n; i += 2) /* drop the even pages' blocks */
		elide_drop_range(&t, (unsigned int)(i % 3), i * 7 * 4096, 4096, NULL, NULL);
	for (i = 0; i < n; i++) {
		bool hit = LOOKUP(&t, i, page_a, &f);

		assert_int_equal(hit, i % 2 == 1);
		if (hit)
			assert_true(block == i * 7 && disk == i % 3);
	}
	/* Re-record after deletes reuses the table without losing entries. */
	for (i = 0; i < n; i += 2)
		elide_record(&t, i, 2, 1000000 + i);
	for (i = 0; i < n; i++)
		assert_true(LOOKUP(&t, i, page_a, &f));
	/* Discard the whole of disk 2 at once. */
	elide_drop_range(&t, 2, 0, 1ULL << 40, NULL, NULL);
	for (i = 0; i < n; i++) {
		bool hit = LOOKUP(&t, i, page_a, &f);

		assert_int_equal(hit, i % 2 == 1 && i % 3 != 2);
	}
	elide_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_lookup),
		cmocka_unit_test(test_record_hash),
		cmocka_unit_test(test_one_page_per_block),
		cmocka_unit_test(test_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
