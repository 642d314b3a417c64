/* SPDX-License-Identifier: MIT */
/*
 * Reading a perf_event mmap ring (PERF_SAMPLE_IP | PERF_SAMPLE_TID records)
 * for the profiler's "perf" method. Pure, so it is unit-tested without a
 * host PMU.
 */
#ifndef QLITE_PERF_RING_H
#define QLITE_PERF_RING_H

#include <stdint.h>

struct perf_ring_sample {
	uint64_t ip;
	uint32_t pid, tid;
	uint16_t misc; /* PERF_RECORD_MISC_*: the CPU mode (guest kernel/user, ...) */
};

/*
 * Walk records in [@tail, @head) of the data area @data (@size bytes, a
 * power of two; positions wrap), calling @fn for each sample. Returns the
 * number of samples or -EINVAL for a corrupt ring.
 */
int perf_ring_parse(const uint8_t *data, uint64_t size, uint64_t tail, uint64_t head,
		    void (*fn)(void *opaque, const struct perf_ring_sample *s), void *opaque);

#endif
