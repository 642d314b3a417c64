// SPDX-License-Identifier: MIT
/* parse_size, parse_uint and qerr_set: everything the CLI trusts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "qlite/sbuf.h"
#include "qlite/util.h"

/* Sentinel: a failed parse must leave *out alone. */
#define UNTOUCHED 0xdeadbeefcafef00dULL

static void expect_size(const char *s, uint64_t want)
{
	uint64_t v = UNTOUCHED;

	if (parse_size(s, &v) != 0)
		fail_msg("parse_size(\"%s\") failed", s);
	if (v != want)
		fail_msg("parse_size(\"%s\") = %llu, want %llu", s, (unsigned long long)v,
			 (unsigned long long)want);
}

static void expect_size_err(const char *s, int err)
{
	uint64_t v = UNTOUCHED;
	int ret = parse_size(s, &v);

	if (ret != err)
		fail_msg("parse_size(\"%s\") = %d, want %d", s ? s : "(null)", ret, err);
	assert_true(v == UNTOUCHED);
}

static void test_parse_size_valid(void **state)
{
	expect_size("512M", 512 * MiB);
	expect_size("2G", 2 * GiB);
	expect_size("64K", 64 * KiB);
	expect_size("1048576", 1048576);
	expect_size("1GiB", GiB);
	expect_size("1gb", GiB);
	expect_size("1g", GiB);
	expect_size("4k", 4 * KiB);
	expect_size("1MB", MiB);
	expect_size("1T", 1024 * GiB);
	expect_size("0", 0);
	expect_size("16777215T", 16777215ULL << 40); /* largest T that fits */
	expect_size("18446744073709551615", UINT64_MAX);
}

static void test_parse_size_invalid(void **state)
{
	expect_size_err(NULL, -EINVAL);
	expect_size_err("", -EINVAL);
	expect_size_err("M", -EINVAL);
	expect_size_err("-1", -EINVAL);
	expect_size_err("+1", -EINVAL);
	expect_size_err(" 1", -EINVAL);
	expect_size_err("12X", -EINVAL);
	expect_size_err("1 M", -EINVAL);
	expect_size_err("1M ", -EINVAL);
	expect_size_err("1MM", -EINVAL);
	expect_size_err("1iB", -EINVAL); /* 'i' only after a unit */
	expect_size_err("1GiBB", -EINVAL);
	expect_size_err("0x10", -EINVAL);
	expect_size_err("1.5G", -EINVAL);
}

static void test_parse_size_overflow(void **state)
{
	expect_size_err("99999999999T", -ERANGE);
	expect_size_err("16777216T", -ERANGE); /* 2^64 exactly */
	expect_size_err("17179869184G", -ERANGE);
	expect_size_err("18446744073709551616", -ERANGE);
	expect_size_err("99999999999999999999999999", -ERANGE);
}

static void test_parse_uint(void **state)
{
	uint64_t v = UNTOUCHED;

	assert_int_equal(parse_uint("5", 1, 10, &v), 0);
	assert_true(v == 5);
	assert_int_equal(parse_uint("1", 1, 10, &v), 0);
	assert_true(v == 1);
	assert_int_equal(parse_uint("10", 1, 10, &v), 0);
	assert_true(v == 10);
	assert_int_equal(parse_uint("0", 0, 0, &v), 0);
	assert_true(v == 0);
	assert_int_equal(parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);

	v = UNTOUCHED;
	assert_int_equal(parse_uint("0", 1, 10, &v), -ERANGE);
	assert_int_equal(parse_uint("11", 1, 10, &v), -ERANGE);
	assert_int_equal(parse_uint(NULL, 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("-1", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(parse_uint("+1", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint(" 1", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("1a", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_uint("1M", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -EINVAL);
	assert_true(v == UNTOUCHED);
}

static void test_qerr_first_message_wins(void **state)
{
	struct qerr e = { 0 };

	assert_int_equal(qerr_set(&e, ENOENT, "first %d", 1), -ENOENT);
	assert_int_equal(qerr_set(&e, EIO, "second %d", 2), -EIO);
	assert_int_equal(e.errnum, ENOENT);
	assert_string_equal(e.msg, "first 1");
}

static void test_qerr_edge(void **state)
{
	struct qerr e = { 0 };
	char big[2 * sizeof(e.msg)];

	/* NULL is allowed: callers that do not care about the text. */
	assert_int_equal(qerr_set(NULL, EPERM, "ignored"), -EPERM);
	/* A non-positive errnum must still report failure. */
	assert_int_equal(qerr_set(&e, 0, "zero"), -EINVAL);
	assert_int_equal(e.errnum, EINVAL);
	assert_string_equal(e.msg, "zero");
	assert_int_equal(qerr_set(NULL, -5, "neg"), -EINVAL);

	/* Long messages are truncated and stay NUL-terminated. */
	memset(&e, 0, sizeof(e));
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(qerr_set(&e, E2BIG, "%s", big), -E2BIG);
	assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);
}

static void test_sbuf_scur(void **state)
{
	struct sbuf b;
	struct scur c;
	char s[8];

	(void)state;
	sbuf_init(&b);
	sbuf_put_u8(&b, 0x12);
	sbuf_put_u16(&b, 0x3456);
	sbuf_put_u32(&b, 0x789abcde);
	sbuf_put_u64(&b, 0x0123456789abcdefULL);
	sbuf_put_str(&b, "qlite");
	for (int i = 0; i < 1000; i++) /* grows past the first allocation */
		sbuf_put_u32(&b, (uint32_t)i);
	assert_int_equal(sbuf_status(&b), 0);
	assert_int_equal(b.len, 1 + 2 + 4 + 8 + 2 + 5 + 4000);
	assert_int_equal(b.data[1], 0x56); /* little-endian on the wire */

	scur_init(&c, b.data, b.len);
	assert_int_equal(scur_u8(&c), 0x12);
	assert_int_equal(scur_u16(&c), 0x3456);
	assert_int_equal(scur_u32(&c), 0x789abcde);
	assert_true(scur_u64(&c) == 0x0123456789abcdefULL);
	assert_true(scur_str(&c, s, sizeof(s)));
	assert_string_equal(s, "qlite");
	for (int i = 0; i < 1000; i++)
		assert_int_equal(scur_u32(&c), i);
	assert_true(scur_done(&c));

	/* Past the end: zero values, and the failure sticks. */
	assert_int_equal(scur_u32(&c), 0);
	assert_false(scur_ok(&c));
	scur_init(&c, b.data, 3);
	assert_int_equal(scur_u32(&c), 0);
	assert_int_equal(scur_u8(&c), 0);
	assert_false(scur_ok(&c));
	/* A string longer than the destination is refused, not truncated. */
	scur_init(&c, b.data + 15, b.len - 15);
	assert_false(scur_str(&c, s, 5));
	assert_false(scur_ok(&c));
	assert_string_equal(s, "");
	sbuf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size_valid),
		cmocka_unit_test(test_parse_size_invalid),
		cmocka_unit_test(test_parse_size_overflow),
		cmocka_unit_test(test_parse_uint),
		cmocka_unit_test(test_qerr_first_message_wins),
		cmocka_unit_test(test_qerr_edge),
		cmocka_unit_test(test_sbuf_scur),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
