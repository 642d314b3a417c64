// SPDX-License-Identifier: MIT
/*
 * A guest that halts with interrupts off (what the Linux decompressor does
 * on a corrupt kernel) can never run again: qlite must end it as a crash,
 * not wait forever. A guest idling with interrupts on is alive.
 */
#include <stdio.h>

#include "harness.h"

int main(void)
{
	struct ktest t;
	int failures = 0, ret;
	enum vm_stop_reason why;

	ret = ktest_create(&t, 2, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	CHECK(ktest_start(&t, GT_HALT_DEAD) == 0);
	why = ktest_run(&t, 60); /* the watchdog would say VM_STOP_ERROR */
	CHECK(why == VM_STOP_GUEST_CRASH);
	ktest_destroy(&t);

	/* Idle with interrupts enabled: still running when the watchdog fires. */
	ret = ktest_create(&t, 1, 64 * MiB);
	CHECK(ret == 0);
	CHECK(ktest_start(&t, GT_HALT_IDLE) == 0);
	why = ktest_run(&t, 5);
	CHECK(why == VM_STOP_ERROR);
	ktest_destroy(&t);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
