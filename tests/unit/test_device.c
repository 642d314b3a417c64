// SPDX-License-Identifier: MIT
/* device_class_check: every class must say what its state is. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>

#include "qlite/device.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stateless_ok),
		cmocka_unit_test(test_with_state_ok),
		cmocka_unit_test(test_neither),
		cmocka_unit_test(test_both),
		cmocka_unit_test(test_empty_state),
		cmocka_unit_test(test_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
