/* SPDX-License-Identifier: MIT */
/*
 * Address-space registries (one for port I/O, one for MMIO) mapping ranges to
 * device callbacks. vCPU threads dispatch concurrently; registration and
 * removal take the write side of the lock, so a device is never called after
 * bus_unregister() returns.
 */
#ifndef QLITE_BUS_H
#define QLITE_BUS_H

#include <pthread.h>
#include <stdint.h>
#include "qlite/util.h"

struct bus_ops {
	/* @offset is relative to the range base; @len is 1, 2, 4 or 8. */
	void (*read)(void *opaque, uint64_t offset, uint8_t *data, unsigned int len);
	void (*write)(void *opaque, uint64_t offset, const uint8_t *data, unsigned int len);
};

struct bus_range {
	uint64_t base;
	uint64_t len;
	const struct bus_ops *ops;
	void *opaque;
	const char *name; /* device name, for diagnostics and exit accounting */
};

struct bus {
	const char *name; /* "pio" or "mmio" */
	pthread_rwlock_t lock;
	struct bus_range *ranges; /* sorted by base, non-overlapping */
	unsigned int nr;
	unsigned int cap;
};

int bus_init(struct bus *b, const char *name);
void bus_destroy(struct bus *b);
/* -EEXIST if it overlaps a registered range, -EINVAL for empty/wrapping ranges. */
int bus_register(struct bus *b, uint64_t base, uint64_t len, const struct bus_ops *ops,
		 void *opaque, const char *name);
int bus_unregister(struct bus *b, uint64_t base);
/*
 * Dispatch an access. -ENOENT if no device claims it or the access crosses
 * the end of a range (never split across devices). On -ENOENT reads, the
 * caller decides what the guest sees (all-ones on x86).
 */
int bus_read(struct bus *b, uint64_t addr, uint8_t *data, unsigned int len);
int bus_write(struct bus *b, uint64_t addr, const uint8_t *data, unsigned int len);
/* Name of the device owning @addr, or NULL. */
const char *bus_lookup_name(struct bus *b, uint64_t addr);

#endif
