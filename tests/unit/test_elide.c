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
#include <sys/mman.h>

#include "qlite/elide.h"

#define NPAGES 100000
#define LB (8 * sizeof(unsigned long))

static uint8_t *mem; /* NPAGES pages of "guest memory", untouched ones zero */

/* A fake image: every block holds @fill, except that @bad fails to read. */
struct fake_disk {
	uint8_t fill;
	unsigned int bad_disk;
	uint64_t bad_block;
	int err;
	unsigned int reads;
	unsigned int last_disk;
	uint64_t last_block, last_n;
};

static int fake_read(void *opaque, unsigned int disk, uint64_t block, uint64_t n, void *buf)
{
	struct fake_disk *f = opaque;

	f->reads++;
	f->last_disk = disk;
	f->last_block = block;
	f->last_n = n;
	if (f->err && disk == f->bad_disk && f->bad_block >= block && f->bad_block < block + n)
		return f->err;
	memset(buf, f->fill, n * 4096);
	return 0;
}

static uint8_t *pg(uint64_t page)
{
	return mem + page * 4096;
}

static unsigned long *verify(const struct elide *t, struct fake_disk *f)
{
	unsigned long *same = calloc(t->npages / LB + 1, sizeof(*same));

	assert_non_null(same);
	assert_int_equal(elide_verify(t, mem, NULL, fake_read, f, same), 0);
	return same;
}

/* A checkpoint's check then lookup, of one page. */
static bool lookup(const struct elide *t, uint64_t page, struct fake_disk *f, unsigned int *disk,
		   uint64_t *block, uint64_t *hash)
{
	unsigned long *same = verify(t, f);
	bool hit = elide_lookup(t, page, page < NPAGES ? pg(page) : mem, same, disk, block, hash);

	free(same);
	return hit;
}

#define LOOKUP(t, page, f) lookup(t, page, f, &disk, &block, &hash)

static void test_record_lookup(void **state)
{
	struct fake_disk f = { .fill = 0xa5 };
	struct elide t;
	unsigned int disk;
	uint64_t block, hash;

	(void)state;
	memset(pg(3), 0xa5, 4096);
	assert_int_equal(elide_init(&t, 1024), 0);
	assert_false(LOOKUP(&t, 3, &f));
	/* Recording reads nothing: the check waits for the checkpoint. */
	elide_record(&t, 3, 1, 77);
	assert_int_equal(f.reads, 0);
	assert_true(LOOKUP(&t, 3, &f));
	assert_int_equal(f.reads, 1);
	assert_int_equal(f.last_disk, 1);
	assert_int_equal(f.last_block, 77);
	assert_int_equal(disk, 1);
	assert_int_equal(block, 77);
	assert_true(hash == elide_hash(pg(3)));
	/* Without a check, no reference. */
	assert_false(elide_lookup(&t, 3, pg(3), NULL, &disk, &block, &hash));
	/* The block changed on the image behind our back: not elided. */
	f.fill = 0x5a;
	assert_false(LOOKUP(&t, 3, &f));
	/* The guest changed the page (one byte is enough). */
	f.fill = 0xa5;
	pg(3)[4095] ^= 1;
	assert_false(LOOKUP(&t, 3, &f));
	pg(3)[4095] ^= 1;
	/* A read error means data, never a reference. */
	f.err = -EIO;
	f.bad_disk = 1;
	f.bad_block = 77;
	assert_false(LOOKUP(&t, 3, &f));
	f.err = 0;
	assert_true(LOOKUP(&t, 3, &f));
	/* Re-recording a page replaces its old block. */
	memset(pg(3), 0x5a, 4096);
	f.fill = 0x5a;
	elide_record(&t, 3, 0, 5);
	assert_true(LOOKUP(&t, 3, &f));
	assert_int_equal(disk, 0);
	assert_int_equal(block, 5);
	/* A write to the old block must not touch the page's new mapping. */
	elide_drop_range(&t, 1, 77 * 4096, 4096, NULL, NULL);
	assert_true(LOOKUP(&t, 3, &f));
	/* A sub-block write to the new one drops it. */
	elide_drop_range(&t, 0, 5 * 4096 + 512, 512, NULL, NULL);
	assert_false(LOOKUP(&t, 3, &f));
	/* Out of range pages and disks are ignored, never written. */
	elide_record(&t, 1024, 0, 1);
	elide_record(&t, 1, ELIDE_MAX_DISKS, 1);
	assert_false(LOOKUP(&t, 1, &f));
	assert_false(LOOKUP(&t, 1024, &f));
	elide_destroy(&t);
	memset(pg(3), 0, 4096);
}

/* The image is read in block order, consecutive blocks in one read. */
static void test_verify_runs(void **state)
{
	struct fake_disk f = { .fill = 0x33 };
	unsigned long *same;
	struct elide t;
	uint64_t p;

	(void)state;
	assert_int_equal(elide_init(&t, 64), 0);
	for (p = 5; p <= 8; p++)
		memset(pg(p), 0x33, 4096);
	elide_record(&t, 5, 0, 12); /* pages out of block order */
	elide_record(&t, 6, 0, 10);
	elide_record(&t, 7, 0, 11);
	elide_record(&t, 8, 1, 13); /* another disk: another run */
	same = verify(&t, &f);
	assert_int_equal(f.reads, 2);
	assert_int_equal(f.last_disk, 1);
	assert_int_equal(f.last_block, 13);
	assert_int_equal(f.last_n, 1);
	for (p = 5; p <= 8; p++)
		assert_true(same[0] & (1UL << p));
	free(same);
	/* Only pages in @want are looked at. */
	{
		unsigned long want = 1UL << 6, s = 0;

		f.reads = 0;
		assert_int_equal(elide_verify(&t, mem, &want, fake_read, &f, &s), 0);
		assert_int_equal(f.reads, 1);
		assert_int_equal(f.last_block, 10);
		assert_int_equal(f.last_n, 1);
		assert_true(s == 1UL << 6);
	}
	/* A bad block in a run spoils only its own page. */
	f.reads = 0;
	f.err = -EIO;
	f.bad_disk = 0;
	f.bad_block = 11;
	same = verify(&t, &f);
	assert_int_equal(f.reads, 2 + 3); /* the run, then block by block */
	assert_true(same[0] & (1UL << 5));
	assert_true(same[0] & (1UL << 6));
	assert_false(same[0] & (1UL << 7));
	assert_true(same[0] & (1UL << 8));
	free(same);
	/* Hashed (restore-seeded) pages are not read. */
	f.reads = 0;
	f.err = 0;
	elide_record_hash(&t, 5, 0, 12, elide_hash(pg(5)));
	elide_record_hash(&t, 6, 0, 10, elide_hash(pg(6)));
	elide_record_hash(&t, 7, 0, 11, elide_hash(pg(7)));
	elide_record_hash(&t, 8, 1, 13, elide_hash(pg(8)));
	same = verify(&t, &f);
	assert_int_equal(f.reads, 0);
	free(same);
	elide_destroy(&t);
	for (p = 5; p <= 8; p++)
		memset(pg(p), 0, 4096);
}

/* Restore's seeds carry a verified hash: checked by hash, no read. */
static void test_record_hash(void **state)
{
	struct fake_disk f = { .fill = 0x00 };
	struct elide t;
	unsigned int disk;
	uint64_t block, hash, h;

	(void)state;
	memset(pg(2), 0xa5, 4096);
	h = elide_hash(pg(2));
	assert_int_equal(elide_init(&t, 16), 0);
	elide_record_hash(&t, 2, 0, 9, h);
	assert_true(LOOKUP(&t, 2, &f));
	assert_true(elide_lookup(&t, 2, pg(2), NULL, &disk, &block, &hash));
	assert_int_equal(f.reads, 0);
	assert_int_equal(block, 9);
	assert_true(hash == h);
	pg(2)[7] ^= 1;
	assert_false(LOOKUP(&t, 2, &f));
	pg(2)[7] ^= 1;
	/* A fresh read of the page makes it unverified again. */
	elide_record(&t, 2, 0, 9);
	assert_false(LOOKUP(&t, 2, &f)); /* the image holds zeroes */
	assert_int_equal(f.reads, 1);
	f.fill = 0xa5;
	assert_true(LOOKUP(&t, 2, &f));
	elide_destroy(&t);
	memset(pg(2), 0, 4096);
}

static void test_one_page_per_block(void **state)
{
	struct fake_disk f = { .fill = 0 };
	struct elide t;
	unsigned int disk;
	uint64_t block, hash;

	(void)state;
	assert_int_equal(elide_init(&t, 64), 0);
	elide_record(&t, 1, 0, 9);
	elide_record(&t, 2, 0, 9); /* the same block read into another page */
	assert_false(LOOKUP(&t, 1, &f));
	assert_true(LOOKUP(&t, 2, &f));
	elide_drop_range(&t, 0, 9 * 4096, 1, NULL, NULL);
	assert_false(LOOKUP(&t, 2, &f));
	elide_destroy(&t);
}

/* Many pages (zero, like the image), growth, deletes, a huge (discard-like) range. */
static void test_many(void **state)
{
	const uint64_t n = NPAGES;
	struct fake_disk f = { .fill = 0 };
	unsigned long *same;
	struct elide t;
	unsigned int disk;
	uint64_t i, block, hash;

	(void)state;
	assert_int_equal(elide_init(&t, n), 0);
	for (i = 0; i < n; i++)
		elide_record(&t, i, (unsigned int)(i % 3), i * 7);
	for (i = 0; i < n; i += 2) /* drop the even pages' blocks */
		elide_drop_range(&t, (unsigned int)(i % 3), i * 7 * 4096, 4096, NULL, NULL);
	same = verify(&t, &f);
	for (i = 0; i < n; i++) {
		bool hit = elide_lookup(&t, i, pg(i), same, &disk, &block, &hash);

		assert_int_equal(hit, i % 2 == 1);
		if (hit)
			assert_true(block == i * 7 && disk == i % 3);
	}
	free(same);
	/* Re-record after deletes reuses the table without losing entries. */
	for (i = 0; i < n; i += 2)
		elide_record(&t, i, 2, 1000000 + i);
	same = verify(&t, &f);
	for (i = 0; i < n; i++)
		assert_true(elide_lookup(&t, i, pg(i), same, &disk, &block, &hash));
	free(same);
	/* Discard the whole of disk 2 at once. */
	elide_drop_range(&t, 2, 0, 1ULL << 40, NULL, NULL);
	same = verify(&t, &f);
	for (i = 0; i < n; i++) {
		bool hit = elide_lookup(&t, i, pg(i), same, &disk, &block, &hash);

		assert_int_equal(hit, i % 2 == 1 && i % 3 != 2);
	}
	free(same);
	elide_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_lookup),
		cmocka_unit_test(test_verify_runs),
		cmocka_unit_test(test_record_hash),
		cmocka_unit_test(test_one_page_per_block),
		cmocka_unit_test(test_many),
	};

	/* Untouched pages read as zero and cost no memory. */
	mem = mmap(NULL, NPAGES * 4096ULL, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
