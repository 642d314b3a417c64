// SPDX-License-Identifier: MIT
/*
 * Which guest pages equal which disk blocks (see elide.h). Recording is
 * table work only: the content check (read the block back, compare, hash)
 * waits for a checkpoint, so the guest's read path never hashes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "qlite/elide.h"
#include "qlite/util.h"

#define RKEY_EMPTY 0ULL
#define RKEY_DEAD (~0ULL)
#define BLOCK_BITS 48

static uint64_t key_of(unsigned int disk, uint64_t block)
{
	return ((uint64_t)(disk + 1) << BLOCK_BITS) | (block & ((1ULL << BLOCK_BITS) - 1));
}

static size_t slot_of(const struct elide *t, uint64_t key)
{
	return (size_t)(XXH3_64bits(&key, sizeof(key)) & (t->rcap - 1));
}

int elide_init(struct elide *t, uint64_t npages)
{
	memset(t, 0, sizeof(*t));
	if (!npages || npages > UINT32_MAX)
		return -EINVAL;
	t->npages = npages;
	t->pages = calloc(npages, sizeof(*t->pages));
	t->rcap = 1024;
	t->rkey = calloc(t->rcap, sizeof(*t->rkey));
	t->rpage = calloc(t->rcap, sizeof(*t->rpage));
	if (!t->pages || !t->rkey || !t->rpage) {
		elide_destroy(t);
		return -ENOMEM;
	}
	return 0;
}

void elide_destroy(struct elide *t)
{
	free(t->pages);
	free(t->rkey);
	free(t->rpage);
	memset(t, 0, sizeof(*t));
}

uint64_t elide_hash(const void *page)
{
	return XXH3_64bits(page, ELIDE_BLOCK);
}

static size_t rfind(const struct elide *t, uint64_t key)
{
	size_t i = slot_of(t, key), n;

	for (n = 0; n < t->rcap; n++, i = (i + 1) & (t->rcap - 1)) {
		if (t->rkey[i] == key)
			return i;
		if (t->rkey[i] == RKEY_EMPTY)
			break;
	}
	return SIZE_MAX;
}

static void rdel(struct elide *t, uint64_t key)
{
	size_t i = rfind(t, key);

	if (i != SIZE_MAX) {
		t->rkey[i] = RKEY_DEAD;
		t->rlive--;
	}
}

static void rput(struct elide *t, uint64_t key, uint32_t page)
{
	size_t i = slot_of(t, key);

	while (t->rkey[i] != RKEY_EMPTY && t->rkey[i] != RKEY_DEAD && t->rkey[i] != key)
		i = (i + 1) & (t->rcap - 1);
	if (t->rkey[i] == RKEY_EMPTY)
		t->rused++;
	if (t->rkey[i] != key)
		t->rlive++;
	t->rkey[i] = key;
	t->rpage[i] = page;
}

/* Rehash (growing if needed) so that live + deleted slots stay under half. */
static int rrehash(struct elide *t)
{
	size_t oldcap = t->rcap, cap = t->rcap, i;
	uint64_t *ok = t->rkey;
	uint32_t *op = t->rpage;

	while (t->rlive * 4 >= cap)
		cap *= 2;
	t->rkey = calloc(cap, sizeof(*t->rkey));
	t->rpage = calloc(cap, sizeof(*t->rpage));
	if (!t->rkey || !t->rpage) {
		free(t->rkey);
		free(t->rpage);
		t->rkey = ok;
		t->rpage = op;
		return -ENOMEM;
	}
	t->rcap = cap;
	t->rused = t->rlive = 0;
	for (i = 0; i < oldcap; i++)
		if (ok[i] != RKEY_EMPTY && ok[i] != RKEY_DEAD)
			rput(t, ok[i], op[i]);
	free(ok);
	free(op);
	return 0;
}

void elide_forget_page(struct elide *t, uint64_t page)
{
	struct elide_entry *pe;

	if (!t->pages || page >= t->npages)
		return;
	pe = &t->pages[page];
	if (pe->key) {
		rdel(t, pe->key);
		pe->key = 0;
		t->dropped++;
	}
}

void elide_record_hash(struct elide *t, uint64_t page, unsigned int disk, uint64_t block,
		       uint64_t hash)
{
	uint64_t key = key_of(disk, block);
	size_t i;

	if (!t->pages || page >= t->npages || disk >= ELIDE_MAX_DISKS ||
	    block >= (1ULL << BLOCK_BITS))
		return;
	elide_forget_page(t, page);
	/* One page per block: a second copy of a block replaces the first. */
	i = rfind(t, key);
	if (i != SIZE_MAX) {
		t->pages[t->rpage[i]].key = 0;
		t->rkey[i] = RKEY_DEAD;
		t->rlive--;
	}
	if ((t->rused + 1) * 2 > t->rcap && rrehash(t)) {
		return; /* out of memory: this page simply is not elided */
	}
	rput(t, key, (uint32_t)page);
	t->pages[page].key = key;
	t->pages[page].hash = hash;
	t->recorded++;
}

void elide_record(struct elide *t, uint64_t page, unsigned int disk, uint64_t block)
{
	elide_record_hash(t, page, disk, block, 0);
}

void elide_drop_range(struct elide *t, unsigned int disk, uint64_t off, uint64_t len,
		      void (*before)(void *opaque, uint64_t page), void *opaque)
{
	uint64_t b, first, last;

	if (!t->pages || !len || !t->rlive)
		return;
	first = off / ELIDE_BLOCK;
	last = (off + len - 1) / ELIDE_BLOCK;
	if (last - first >= t->rcap) {
		/* A huge range (discard): cheaper to walk the table. */
		size_t i;

		for (i = 0; i < t->rcap; i++) {
			uint64_t k = t->rkey[i];

			if (k == RKEY_EMPTY || k == RKEY_DEAD || (k >> BLOCK_BITS) != disk + 1u)
				continue;
			b = k & ((1ULL << BLOCK_BITS) - 1);
			if (b >= first && b <= last) {
				if (before)
					before(opaque, t->rpage[i]);
				t->pages[t->rpage[i]].key = 0;
				t->rkey[i] = RKEY_DEAD;
				t->rlive--;
				t->dropped++;
			}
		}
		return;
	}
	for (b = first; b <= last; b++) {
		size_t i = rfind(t, key_of(disk, b));

		if (i == SIZE_MAX)
			continue;
		if (before)
			before(opaque, t->rpage[i]);
		t->pages[t->rpage[i]].key = 0;
		t->rkey[i] = RKEY_DEAD;
		t->rlive--;
		t->dropped++;
	}
}

#define LBITS (8 * sizeof(unsigned long))

static bool bit_get(const unsigned long *b, uint64_t i)
{
	return b[i / LBITS] & (1UL << (i % LBITS));
}

struct cand {
	uint64_t key;
	uint32_t page;
};

static int cand_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct cand *)a)->key, y = ((const struct cand *)b)->key;

	return x < y ? -1 : x > y;
}

int elide_verify(const struct elide *t, const uint8_t *mem, const unsigned long *want,
		 elide_read_fn read, void *opaque, unsigned long *same)
{
	struct cand *c;
	uint8_t *buf;
	size_t n = 0, i, k;
	uint64_t p;

	if (!t->pages || !t->rlive)
		return 0;
	c = malloc(t->rlive * sizeof(*c));
	buf = aligned_alloc(4096, ELIDE_RUN_MAX * ELIDE_BLOCK);
	if (!c || !buf) {
		free(c);
		free(buf);
		return -ENOMEM;
	}
	for (p = 0; p < t->npages && n < t->rlive; p++)
		if (t->pages[p].key && !t->pages[p].hash && (!want || bit_get(want, p)))
			c[n++] = (struct cand){ t->pages[p].key, (uint32_t)p };
	/* One page per block (elide_record_hash): keys are unique. */
	qsort(c, n, sizeof(*c), cand_cmp);
	for (i = 0; i < n; i = k) {
		unsigned int disk = (unsigned int)(c[i].key >> BLOCK_BITS) - 1;
		uint64_t first = c[i].key & ((1ULL << BLOCK_BITS) - 1);

		for (k = i + 1; k < n && k - i < ELIDE_RUN_MAX && c[k].key == c[i].key + (k - i) &&
				c[k].key >> BLOCK_BITS == c[i].key >> BLOCK_BITS;
		     k++)
			;
		if (read(opaque, disk, first, k - i, buf)) {
			/* Block by block then: one bad block (a shrunk image) spoils only itself. */
			for (size_t r = i; r < k && k - i > 1; r++)
				if (!read(opaque, disk, first + (r - i), 1, buf) &&
				    !memcmp(buf, mem + (uint64_t)c[r].page * 4096, ELIDE_BLOCK))
					same[c[r].page / LBITS] |= 1UL << (c[r].page % LBITS);
			continue; /* the others are saved as data */
		}
		for (size_t r = i; r < k; r++)
			if (!memcmp(buf + (r - i) * ELIDE_BLOCK, mem + (uint64_t)c[r].page * 4096,
				    ELIDE_BLOCK))
				same[c[r].page / LBITS] |= 1UL << (c[r].page % LBITS);
	}
	free(c);
	free(buf);
	return 0;
}

bool elide_lookup(const struct elide *t, uint64_t page, const void *data,
		  const unsigned long *same, unsigned int *disk, uint64_t *block, uint64_t *hash)
{
	const struct elide_entry *pe;
	uint64_t h;

	if (!t->pages || page >= t->npages)
		return false;
	pe = &t->pages[page];
	if (!pe->key)
		return false;
	if (pe->hash) {
		/* Seeded by a restore that verified the block against it. */
		h = elide_hash(data);
		if (h != pe->hash)
			return false;
	} else {
		/*
		 * Unverified (hash 0, or a real hash that happens to be 0: that
		 * only costs a read): equal to the block as it is now, just
		 * checked by elide_verify(), with the VM paused since.
		 */
		if (!same || !bit_get(same, page))
			return false;
		h = elide_hash(data);
	}
	*disk = (unsigned int)(pe->key >> BLOCK_BITS) - 1;
	*block = pe->key & ((1ULL << BLOCK_BITS) - 1);
	*hash = h;
	return true;
}
