// SPDX-License-Identifier: MIT
/* Several vCPUs run guest code at once, each on a thread named vcpuN. */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define NCPUS 4
#define PER_CPU_TOTAL 1000192ULL /* 3907 adds of 256 per vCPU, see guest.c */

int main(void)
{
	struct ktest t;
	int failures = 0, ret;
	enum vm_stop_reason why;
	unsigned int i, j;

	ret = ktest_create(&t, NCPUS, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	CHECK(ktest_start(&t, GT_SMP) == 0);
	why = ktest_run(&t, 120);
	CHECK(why == VM_STOP_POWEROFF);
	CHECK(t.fails == 0);
	CHECK(t.nvalues == NCPUS);
	for (i = 0; i < t.nvalues; i++)
		CHECK(t.values[i] == 1000000);
	CHECK(t.dones == 1);
	CHECK(ktest_shared(&t)[0] == NCPUS * PER_CPU_TOTAL);
	/* Every vCPU thread reported, each under its own vcpuN name. */
	CHECK(t.nthread_names == NCPUS);
	for (i = 0; i < NCPUS; i++) {
		char want[16];
		bool found = false;

		snprintf(want, sizeof(want), "vcpu%u", i);
		for (j = 0; j < t.nthread_names; j++)
			found |= !strcmp(t.thread_names[j], want);
		CHECK(found);
	}
	ktest_destroy(&t);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
