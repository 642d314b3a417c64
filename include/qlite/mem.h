/* SPDX-License-Identifier: MIT */
/*
 * Guest physical memory: one memfd carved into KVM memory slots around the
 * x86 32-bit MMIO hole. The memfd makes RAM shareable, punchable and
 * registrable with userfaultfd (checkpoint, migration, balloon).
 */
#ifndef QLITE_MEM_H
#define QLITE_MEM_H

#include <stdint.h>
#include <stddef.h>
#include "qlite/util.h"

#define MEM_MAX_REGIONS 4
/* RAM below 4 GiB stops here; [3 GiB, 4 GiB) is MMIO (LAPIC, IOAPIC, PCI). */
#define MEM_32BIT_GAP_START (3ULL * GiB)
#define MEM_4G (4ULL * GiB)

struct mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	uint64_t fd_offset; /* offset of this region in the memfd */
	uint32_t slot;
};

struct guest_mem {
	int memfd;
	uint64_t ram_size; /* total bytes of RAM */
	uint8_t *base; /* one mapping of the whole memfd */
	unsigned int nr_regions;
	struct mem_region regions[MEM_MAX_REGIONS];
};

/* Create the memfd and mapping and lay regions out (no KVM involvement). */
int mem_init(struct guest_mem *m, uint64_t ram_size, struct qerr *e);
void mem_destroy(struct guest_mem *m);

/*
 * Translate [gpa, gpa+len) to a host pointer. The whole range must lie in
 * one RAM region; otherwise NULL. Overflow-safe: gpa and len are guest input.
 */
void *mem_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len);

int mem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len);
int mem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len);

#endif
