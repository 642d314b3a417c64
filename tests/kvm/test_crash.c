// SPDX-License-Identifier: MIT
/* A triple fault stops the VM as a guest crash, with a register dump. */
#include <stdio.h>

#include "harness.h"

int main(void)
{
	struct ktest t;
	int failures = 0, ret;
	enum vm_stop_reason why;

	ret = ktest_create(&t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	CHECK(ktest_start(&t, GT_TRIPLE_FAULT) == 0);
	why = ktest_run(&t, 60);
	CHECK(why == VM_STOP_GUEST_CRASH);
	ktest_destroy(&t);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
