/* SPDX-License-Identifier: MIT */
/*
 * Guest physical memory: one host mapping carved into KVM memory slots
 * around the x86 32-bit MMIO hole. Two backends, both registrable with
 * userfaultfd and discardable page by page:
 *  - anon (default): private anonymous memory with MADV_HUGEPAGE, so KVM maps
 *    the guest with 2 MiB pages (measured: faster boots, fewer NPT faults);
 *  - memfd: shareable with other processes; huge pages only where the host
 *    enables shmem THP. See docs/architecture.md, "Guest memory".
 */
#ifndef QLITE_MEM_H
#define QLITE_MEM_H

#include <stdint.h>
#include <stdbool.h>
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
	uint64_t fd_offset; /* offset of this region in the memfd (and in the mapping) */
	uint32_t slot;
};

enum mem_backend {
	MEM_BACKEND_ANON,
	MEM_BACKEND_MEMFD,
};

struct guest_mem {
	enum mem_backend backend;
	int memfd; /* -1 for anon */
	uint64_t ram_size; /* total bytes of RAM */
	uint8_t *base; /* one mapping of the whole memfd */
	unsigned int nr_regions;
	struct mem_region regions[MEM_MAX_REGIONS];
	/*
	 * Pages the VMM itself wrote (device DMA, io_uring reads into guest
	 * RAM), one bit per 4 KiB of the mapping: KVM's dirty log never sees
	 * those writes, and migration/checkpointing must.
	 */
	unsigned long *dirty;
	/*
	 * Pages handed back to the host (balloon inflate, free page reporting):
	 * their content was dropped then. The guest may write a reported page
	 * again later, so consumers (checkpoint, migration) trust a bit only
	 * together with dirty tracking since the discard.
	 */
	unsigned long *discarded;
};

/* Create the backing and mapping and lay regions out (no KVM involvement). */
int mem_init(struct guest_mem *m, uint64_t ram_size, enum mem_backend backend, struct qerr *e);
/* "anon" / "memfd" -> backend; -EINVAL otherwise. */
int mem_backend_parse(const char *s, enum mem_backend *out);
void mem_destroy(struct guest_mem *m);

/*
 * Translate [gpa, gpa+len) to a host pointer. The whole range must lie in
 * one RAM region; otherwise NULL. Overflow-safe: gpa and len are guest input.
 */
void *mem_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Record that the VMM wrote [hva, hva+len) of guest RAM (thread-safe). */
void mem_dirty_mark(struct guest_mem *m, const void *hva, size_t len);
/* Test and clear one page's bit; @page is an index into the mapping. */
bool mem_dirty_test_clear(struct guest_mem *m, uint64_t page);

/*
 * Give [gpa, gpa+len) back to the host (MADV_DONTNEED, or punching the
 * memfd) and mark it discarded. Page-aligned, inside one RAM region.
 */
int mem_discard(struct guest_mem *m, uint64_t gpa, uint64_t len);
/* The guest may use [gpa, gpa+len) again (balloon deflate). */
void mem_undiscard(struct guest_mem *m, uint64_t gpa, uint64_t len);
bool mem_page_discarded(const struct guest_mem *m, uint64_t page);

int mem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len);
int mem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len);

#endif
