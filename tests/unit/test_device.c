// SPDX-License-Identifier: MIT
/* device_class_check: every class must say what its state is. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/device.h"
#include "qlite/util.h"
#include "qlite/vm.h"

struct toy {
	uint32_t reg;
	uint8_t fifo[16];
};

static const struct state_field toy_fields[] = {
	STATE_FIELD(struct toy, reg),
	STATE_FIELD(struct toy, fifo),
};

static const struct state_desc toy_state = {
	.name = "toy",
	.version = 1,
	.fields = toy_fields,
	.nr_fields = 2,
};

static void test_stateless_ok(void **state)
{
	const struct device_class c = { .name = "stateless", .stateless = true };

	assert_int_equal(device_class_check(&c), 0);
}

static void test_with_state_ok(void **state)
{
	const struct device_class c = { .name = "toy", .state = &toy_state };

	assert_int_equal(device_class_check(&c), 0);
	/* STATE_FIELD records what save/load will copy. */
	assert_string_equal(toy_fields[1].name, "fifo");
	assert_int_equal(toy_fields[1].offset, offsetof(struct toy, fifo));
	assert_int_equal(toy_fields[1].size, 16);
}

static void test_neither(void **state)
{
	const struct device_class c = { .name = "silent" };

	assert_int_equal(device_class_check(&c), -EINVAL);
}

static void test_both(void **state)
{
	const struct device_class c = { .name = "confused",
					.state = &toy_state,
					.stateless = true };

	assert_int_equal(device_class_check(&c), -EINVAL);
}

static void test_empty_state(void **state)
{
	const struct state_desc no_fields = {
		.name = "e", .version = 1, .fields = toy_fields, .nr_fields = 0
	};
	const struct state_desc null_fields = { .name = "n", .version = 1, .nr_fields = 2 };
	const struct device_class c1 = { .name = "e", .state = &no_fields };
	const struct device_class c2 = { .name = "n", .state = &null_fields };

	assert_int_equal(device_class_check(&c1), -EINVAL);
	assert_int_equal(device_class_check(&c2), -EINVAL);
}

static void test_null(void **state)
{
	const struct device_class noname = { .stateless = true };

	assert_int_equal(device_class_check(NULL), -EINVAL);
	assert_int_equal(device_class_check(&noname), -EINVAL);
}

/* A save is refused, naming the device, when any class declares nothing. */
static void test_vm_check_savable(void **state)
{
	static const struct device_class ok1 = { .name = "toy", .state = &toy_state };
	static const struct device_class ok2 = { .name = "plain", .stateless = true };
	static const struct device_class silent = { .name = "silent" };
	static const struct device_class both = { .name = "confused",
						  .state = &toy_state,
						  .stateless = true };
	struct vm *vm = calloc(1, sizeof(*vm));
	struct device d[3] = { { .cls = &ok1 }, { .cls = &ok2 }, { .cls = &silent } };
	struct qerr e = { 0 };

	assert_non_null(vm);
	assert_int_equal(vm_check_savable(vm, &e), 0); /* no devices: nothing to refuse */
	d[0].next = &d[1];
	vm->devices = &d[0];
	assert_int_equal(vm_check_savable(vm, &e), 0);
	d[1].next = &d[2]; /* as if it had slipped past vm_add_device */
	assert_int_equal(vm_check_savable(vm, &e), -EINVAL);
	assert_string_equal(e.msg, "device silent declares no state description; save refused");
	d[2].cls = &both;
	e = (struct qerr){ 0 };
	assert_int_equal(vm_check_savable(vm, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "device confused"));
	/* vm_add_device refuses such a class in the first place. */
	assert_int_equal(vm_add_device(vm, &silent, NULL), -EINVAL);
	assert_ptr_equal(vm->devices, &d[0]);
	free(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stateless_ok),
		cmocka_unit_test(test_with_state_ok),
		cmocka_unit_test(test_neither),
		cmocka_unit_test(test_both),
		cmocka_unit_test(test_empty_state),
		cmocka_unit_test(test_null),
		cmocka_unit_test(test_vm_check_savable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
