// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/bus.h"

int bus_init(struct bus *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
	return -pthread_rwlock_init(&b->lock, NULL);
}

void bus_destroy(struct bus *b)
{
	free(b->ranges);
	b->ranges = NULL;
	b->nr = b->cap = 0;
	pthread_rwlock_destroy(&b->lock);
}

/* Index of the first range whose end is above @addr (binary search). */
static unsigned int bus_find(const struct bus *b, uint64_t addr)
{
	unsigned int lo = 0, hi = b->nr;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &b->ranges[mid];

		if (addr - r->base >= r->len && addr > r->base)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int bus_register(struct bus *b, uint64_t base, uint64_t len, const struct bus_ops *ops,
		 void *opaque, const char *name)
{
	unsigned int i;
	int ret = 0;

	if (!len || base + len - 1 < base || !ops)
		return -EINVAL;
	pthread_rwlock_wrlock(&b->lock);
	i = bus_find(b, base);
	/* Overlap with the range at i (the first ending above base)? */
	if (i < b->nr && b->ranges[i].base <= base + len - 1) {
		ret = -EEXIST;
		goto out;
	}
	if (b->nr == b->cap) {
		unsigned int cap = b->cap ? b->cap * 2 : 16;
		struct bus_range *n = realloc(b->ranges, cap * sizeof(*n));

		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		b->ranges = n;
		b->cap = cap;
	}
	memmove(&b->ranges[i + 1], &b->ranges[i], (b->nr - i) * sizeof(b->ranges[0]));
	b->ranges[i] = (struct bus_range){ base, len, ops, opaque, name };
	b->nr++;
out:
	pthread_rwlock_unlock(&b->lock);
	return ret;
}

int bus_unregister(struct bus *b, uint64_t base)
{
	unsigned int i;
	int ret = -ENOENT;

	pthread_rwlock_wrlock(&b->lock);
	i = bus_find(b, base);
	if (i < b->nr && b->ranges[i].base == base) {
		memmove(&b->ranges[i], &b->ranges[i + 1], (b->nr - i - 1) * sizeof(b->ranges[0]));
		b->nr--;
		ret = 0;
	}
	pthread_rwlock_unlock(&b->lock);
	return ret;
}

/* Caller holds the read lock. NULL unless [addr, addr+len) is inside one range. */
static const struct bus_range *bus_match(const struct bus *b, uint64_t addr, unsigned int len)
{
	unsigned int i = bus_find(b, addr);
	const struct bus_range *r;

	if (i >= b->nr)
		return NULL;
	r = &b->ranges[i];
	if (addr < r->base || addr - r->base >= r->len || len > r->len - (addr - r->base))
		return NULL;
	return r;
}

int bus_read(struct bus *b, uint64_t addr, uint8_t *data, unsigned int len)
{
	const struct bus_range *r;
	int ret = -ENOENT;

	pthread_rwlock_rdlock(&b->lock);
	r = bus_match(b, addr, len);
	if (r && r->ops->read) {
		r->ops->read(r->opaque, addr - r->base, data, len);
		ret = 0;
	}
	pthread_rwlock_unlock(&b->lock);
	return ret;
}

int bus_write(struct bus *b, uint64_t addr, const uint8_t *data, unsigned int len)
{
	const struct bus_range *r;
	int ret = -ENOENT;

	pthread_rwlock_rdlock(&b->lock);
	r = bus_match(b, addr, len);
	if (r && r->ops->write) {
		r->ops->write(r->opaque, addr - r->base, data, len);
		ret = 0;
	}
	pthread_rwlock_unlock(&b->lock);
	return ret;
}

const char *bus_lookup_name(struct bus *b, uint64_t addr)
{
	const struct bus_range *r;
	const char *name = NULL;

	pthread_rwlock_rdlock(&b->lock);
	r = bus_match(b, addr, 1);
	if (r)
		name = r->name;
	pthread_rwlock_unlock(&b->lock);
	return name;
}
