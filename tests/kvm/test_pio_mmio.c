// SPDX-License-Identifier: MIT
/* Guest PIO and MMIO accesses of every size reach the right device. */
#include <stdio.h>
#include <string.h>

#include "harness.h"

int main(void)
{
	struct ktest t;
	int failures = 0, ret;
	enum vm_stop_reason why;
	uint32_t v32;

	ret = ktest_create(&t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	CHECK(ktest_start(&t, GT_PIO_MMIO) == 0);
	why = ktest_run(&t, 60);
	CHECK(why == VM_STOP_POWEROFF);
	CHECK(t.fails == 0);
	CHECK(t.nvalues == 1 && t.values[0] == 0xdeadbeef);
	/* The device saw exactly what the guest wrote, at the right offsets. */
	CHECK(t.pio_regs[0] == 0x5a);
	CHECK(t.pio_regs[2] == 0xef && t.pio_regs[3] == 0xbe);
	memcpy(&v32, &t.pio_regs[4], 4);
	CHECK(v32 == 0xdeadbeef);
	CHECK(t.mmio_regs[0] == 0x11);
	CHECK(t.mmio_regs[0x40] == 0xff && t.mmio_regs[0x47] == 0x88);
	ktest_destroy(&t);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
