// SPDX-License-Identifier: MIT
/* Software page walk (see x86_walk.h). Guest tables are guest input: every
 * read is bounds-checked by the callback, a non-present entry ends the walk. */
#include <errno.h>

#include "qlite/x86_walk.h"

#define CR0_PG (1ULL << 31)
#define CR4_PSE (1ULL << 4)
#define CR4_PAE (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define EFER_LMA (1ULL << 10)
#define PTE_P 1ULL
#define PTE_PS (1ULL << 7)
#define ADDR_MASK 0x000ffffffffff000ULL

static int read64(x86_read_phys read, void *opaque, uint64_t gpa, uint64_t *v)
{
	return read(opaque, gpa, v, 8);
}

int x86_gva_to_gpa(const struct x86_paging *pg, uint64_t gva, uint64_t *gpa, x86_read_phys read,
		   void *opaque)
{
	uint64_t e, table;
	int level, levels;

	if (!(pg->cr0 & CR0_PG)) {
		*gpa = gva & 0xffffffffULL;
		return 0;
	}
	if (!(pg->efer & EFER_LMA) && !(pg->cr4 & CR4_PAE)) {
		/* 32-bit paging: two levels of 4-byte entries, 4 MiB pages with PSE. */
		uint32_t pde, pte;
		uint32_t va = (uint32_t)gva;

		if (read(opaque, (pg->cr3 & 0xfffff000ULL) + ((va >> 22) << 2), &pde, 4) ||
		    !(pde & PTE_P))
			return -EFAULT;
		if ((pde & PTE_PS) && (pg->cr4 & CR4_PSE)) {
			*gpa = ((uint64_t)(pde & 0xffc00000u) | ((uint64_t)(pde & 0x1fe000u) << 19)) +
			       (va & 0x3fffff);
			return 0;
		}
		if (read(opaque, (pde & 0xfffff000u) + (((va >> 12) & 0x3ff) << 2), &pte, 4) ||
		    !(pte & PTE_P))
			return -EFAULT;
		*gpa = (uint64_t)(pte & 0xfffff000u) + (va & 0xfff);
		return 0;
	}
	if (!(pg->efer & EFER_LMA)) {
		/* PAE: a 4-entry PDPT, then two levels of 8-byte entries. */
		uint32_t va = (uint32_t)gva;

		if (read64(read, opaque, (pg->cr3 & 0xffffffe0ULL) + ((va >> 30) << 3), &e) ||
		    !(e & PTE_P))
			return -EFAULT;
		table = e & ADDR_MASK;
		levels = 2;
	} else {
		levels = (pg->cr4 & CR4_LA57) ? 5 : 4;
		table = pg->cr3 & ADDR_MASK;
	}
	for (level = levels; level >= 1; level--) {
		unsigned int shift = 12 + 9 * (level - 1);
		uint64_t idx = (gva >> shift) & 0x1ff;

		if (read64(read, opaque, table + idx * 8, &e) || !(e & PTE_P))
			return -EFAULT;
		/* 1 GiB and 2 MiB pages end the walk at levels 3 and 2. */
		if (level <= 3 && level >= 2 && (e & PTE_PS)) {
			uint64_t size = 1ULL << shift;

			*gpa = (e & ADDR_MASK & ~(size - 1)) + (gva & (size - 1));
			return 0;
		}
		table = e & ADDR_MASK;
	}
	*gpa = table + (gva & 0xfff);
	return 0;
}
