/* SPDX-License-Identifier: MIT */
/*
 * Driving a virtio-pci device from a kvm test as its driver would: BAR 0
 * through the VM's MMIO bus, guest RAM by address, and the main loop until
 * a condition holds. Include after `static int failures;` (CHECK counts
 * there, see harness.h).
 */
#ifndef KTEST_VDRV_H
#define KTEST_VDRV_H

#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "qlite/loop.h"
#include "qlite/virtio.h"

static inline void bar_w(struct virtio_dev *d, unsigned int off, uint64_t v, unsigned int len)
{
	CHECK(bus_write(&d->vm->mmio, d->pci.bars[0].addr + off, (uint8_t *)&v, len) == 0);
}

static inline uint32_t bar_r(struct virtio_dev *d, unsigned int off, unsigned int len)
{
	uint32_t v = 0;

	CHECK(bus_read(&d->vm->mmio, d->pci.bars[0].addr + off, (uint8_t *)&v, len) == 0);
	return v;
}

/* Guest RAM at @a, @len bytes of it; a test addressing outside RAM aborts. */
static inline void *gpa(struct vm *vm, uint64_t a, uint64_t len)
{
	void *p = mem_gpa_to_hva(&vm->mem, a, len);

	if (!p) {
		fprintf(stderr, "test bug: %#llx is not guest RAM\n", (unsigned long long)a);
		abort();
	}
	return p;
}

/* Run the main loop until @cond holds (bounded: 200 turns of up to 10 ms). */
#define LOOP_UNTIL(vm, cond)                                \
	do {                                                \
		for (int n_ = 0; n_ < 200 && !(cond); n_++) \
			loop_run_once((vm)->loop, 10);      \
		CHECK(cond);                                \
	} while (0)

#endif
