// SPDX-License-Identifier: MIT
/* The 16550 as a driver programs it: output, input, IIR/THRE, loopback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int main(void)
{
	struct ktest t;
	int failures = 0, ret;
	enum vm_stop_reason why;
	char *out;

	ret = ktest_create(&t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	t.echo_input = "ping qlite\n";
	CHECK(ktest_start(&t, GT_SERIAL) == 0);
	why = ktest_run(&t, 60);
	CHECK(why == VM_STOP_POWEROFF);
	CHECK(t.fails == 0);
	out = ktest_console(&t);
	CHECK(out && !strcmp(out, "hello from the guest\nPING QLITE\n"));
	if (out && strcmp(out, "hello from the guest\nPING QLITE\n"))
		fprintf(stderr, "console was: '%s'\n", out);
	free(out);
	ktest_destroy(&t);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
