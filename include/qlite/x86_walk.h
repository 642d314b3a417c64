/* SPDX-License-Identifier: MIT */
/*
 * Guest virtual -> guest physical address translation in software, for
 * reading a guest byte without a vCPU ioctl (the profiler checks whether a
 * sampled RIP follows a HLT). Covers the x86 paging modes: none, 32-bit
 * (with PSE), PAE, 4- and 5-level. Pure: page-table reads go through a
 * callback, so unit tests feed it tables built in a buffer.
 */
#ifndef QLITE_X86_WALK_H
#define QLITE_X86_WALK_H

#include <stdint.h>

struct x86_paging {
	uint64_t cr0, cr3, cr4, efer;
};

/* Read the 4 or 8 bytes at guest-physical @gpa; 0 or -errno. */
typedef int (*x86_read_phys)(void *opaque, uint64_t gpa, void *buf, unsigned int len);

/* 0 and *@gpa, or -EFAULT (not present, unreadable table). */
int x86_gva_to_gpa(const struct x86_paging *pg, uint64_t gva, uint64_t *gpa, x86_read_phys read,
		   void *opaque);

#endif
