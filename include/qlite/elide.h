/* SPDX-License-Identifier: MIT */
/*
 * I/O-aware page elision (after Park, Egger and Lee, VEE 2011): remember
 * which guest pages hold exactly the bytes of which 4 KiB disk block, so a
 * checkpoint can store a (disk, block) reference instead of the page.
 *
 * A mapping is recorded, unverified, when a virtio-blk read fills a whole
 * page from a 4 KiB-aligned block: O(1) table work, no hashing, since this
 * runs on the main thread for every completed read. It is dropped when that
 * block is written (or discarded). A checkpoint (VM paused, devices
 * quiesced) elides the page only if its bytes still equal the block read
 * back from the image (elide_verify()), and only then hashes it (XXH3;
 * restore checks the block against that hash). Any guest or device write
 * since the read shows up there, without KVM dirty logging (which would
 * force 4 KiB mappings on the whole guest for as long as it runs). Mappings
 * seeded by a restore carry the hash it verified and are checked by hash
 * instead.
 * Main thread only (device completions); checkpointing reads it while the
 * devices are quiesced.
 */
#ifndef QLITE_ELIDE_H
#define QLITE_ELIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ELIDE_MAX_DISKS 255
#define ELIDE_BLOCK 4096ULL

struct elide_entry {
	uint64_t key; /* 0: none; else (disk + 1) << 48 | block */
	uint64_t hash; /* in the tracker, 0: not known, compare with the image */
};

struct elide {
	uint64_t npages;
	struct elide_entry *pages; /* by page index into the guest mapping */
	/* block key -> page, open addressing (0 empty, ~0 deleted) */
	uint64_t *rkey;
	uint32_t *rpage;
	size_t rcap, rused, rlive;
	uint64_t recorded, dropped; /* counters, for query-snapshot */
};

int elide_init(struct elide *t, uint64_t npages);
void elide_destroy(struct elide *t);
uint64_t elide_hash(const void *page);
/* Page @page now holds block @block of disk @disk (unverified, not hashed). */
void elide_record(struct elide *t, uint64_t page, unsigned int disk, uint64_t block);
/*
 * Record with the block's hash, known and verified elsewhere (restore seeds
 * the tracker); elide_lookup() then checks the page against the hash alone.
 */
void elide_record_hash(struct elide *t, uint64_t page, unsigned int disk, uint64_t block,
		       uint64_t hash);
/*
 * Bytes [off, off+len) of @disk are about to change: forget every page
 * holding them, calling @before (may be NULL) with each such page first.
 */
void elide_drop_range(struct elide *t, unsigned int disk, uint64_t off, uint64_t len,
		      void (*before)(void *opaque, uint64_t page), void *opaque);
/* Forget page @page (its content was replaced some other way we know of). */
void elide_forget_page(struct elide *t, uint64_t page);
/* Read @n consecutive 4 KiB blocks of @disk from @block into @buf: 0 or -errno. */
typedef int (*elide_read_fn)(void *opaque, unsigned int disk, uint64_t block, uint64_t n,
			     void *buf);
#define ELIDE_RUN_MAX 256 /* blocks per read: 1 MiB */
/*
 * The checkpoint's content check: every unverified mapping of a page set in
 * @want (bitmap; NULL: all pages) is compared with its block as @read
 * returns it now, in block order, runs of consecutive blocks in one read
 * (pages are scattered over the disk, the disk is read sequentially). Page
 * p's content is at @mem + p * 4096. A page that matches gets its bit set
 * in @same (bitmap of npages bits, zeroed by the caller); a read error
 * leaves its pages unset. 0, or -ENOMEM (nothing set).
 */
int elide_verify(const struct elide *t, const uint8_t *mem, const unsigned long *want,
		 elide_read_fn read, void *opaque, unsigned long *same);
/*
 * Does @page (content @data) still equal the block recorded for it? An
 * unverified mapping needs its bit in @same (elide_verify(); NULL: none
 * did); a hashed one compares hashes. True with *disk, *block and the
 * page's *hash filled in.
 */
bool elide_lookup(const struct elide *t, uint64_t page, const void *data,
		  const unsigned long *same, unsigned int *disk, uint64_t *block, uint64_t *hash);

#endif
