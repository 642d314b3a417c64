// SPDX-License-Identifier: MIT
/* Bus registry: overlap rules and dispatch, with recording fake devices. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/bus.h"

/* A fake device that remembers every call. */
struct rec {
	unsigned int reads, writes;
	uint64_t offset;
	unsigned int len;
	uint8_t wdata[8];
	uint8_t fill; /* what reads return */
};

static void rec_read(void *opaque, uint64_t offset, uint8_t *data, unsigned int len)
{
	struct rec *r = opaque;

	r->reads++;
	r->offset = offset;
	r->len = len;
	memset(data, r->fill, len);
}

static void rec_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned int len)
{
	struct rec *r = opaque;

	r->writes++;
	r->offset = offset;
	r->len = len;
	memcpy(r->wdata, data, len);
}

static const struct bus_ops rec_ops = { .read = rec_read, .write = rec_write };

static int setup(void **state)
{
	struct bus *b = calloc(1, sizeof(*b));

	if (!b || bus_init(b, "test"))
		return -1;
	*state = b;
	return 0;
}

static int teardown(void **state)
{
	bus_destroy(*state);
	free(*state);
	return 0;
}

static unsigned int calls(const struct rec *r)
{
	return r->reads + r->writes;
}

static void test_overlap_rejected(void **state)
{
	struct bus *b = *state;
	struct rec a = { 0 }, c = { 0 };

	assert_int_equal(bus_register(b, 0x100, 0x10, &rec_ops, &a, "a"), 0);
	/* Same range, partial overlap from below and above, inside, around. */
	assert_int_equal(bus_register(b, 0x100, 0x10, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0xf8, 0x10, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0xff, 0x2, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0x108, 0x10, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0x10f, 0x1, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0x104, 0x4, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0x0, 0x1000, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0x0, UINT64_MAX, &rec_ops, &c, "c"), -EEXIST);

	/* Exactly adjacent on either side is fine. */
	assert_int_equal(bus_register(b, 0xf0, 0x10, &rec_ops, &c, "below"), 0);
	assert_int_equal(bus_register(b, 0x110, 0x10, &rec_ops, &c, "above"), 0);
	/* Now a range spanning the gap between two others. */
	assert_int_equal(bus_register(b, 0xe0, 0x11, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(bus_register(b, 0x11f, 0x2, &rec_ops, &c, "c"), -EEXIST);
	assert_int_equal(b->nr, 3);
}

static void test_invalid_ranges(void **state)
{
	struct bus *b = *state;
	struct rec a = { 0 };

	assert_int_equal(bus_register(b, 0x100, 0, &rec_ops, &a, "zero"), -EINVAL);
	assert_int_equal(bus_register(b, UINT64_MAX, 2, &rec_ops, &a, "wrap"), -EINVAL);
	assert_int_equal(bus_register(b, 2, UINT64_MAX, &rec_ops, &a, "wrap"), -EINVAL);
	assert_int_equal(bus_register(b, 0x1000, 0x10, NULL, &a, "noops"), -EINVAL);
	assert_int_equal(b->nr, 0);

	/* A range ending exactly at 2^64 does not wrap. */
	assert_int_equal(bus_register(b, UINT64_MAX - 0xf, 0x10, &rec_ops, &a, "top"), 0);
	assert_int_equal(bus_register(b, UINT64_MAX, 1, &rec_ops, &a, "top2"), -EEXIST);
	assert_string_equal(bus_lookup_name(b, UINT64_MAX), "top");
	/* 8 bytes at UINT64_MAX - 3 would cross 2^64. */
	assert_int_equal(bus_read(b, UINT64_MAX - 3, (uint8_t[8]){ 0 }, 8), -ENOENT);
	assert_int_equal(calls(&a), 0);
	assert_int_equal(bus_read(b, UINT64_MAX - 7, (uint8_t[8]){ 0 }, 8), 0);
	assert_int_equal(a.offset, 8);
}

static void test_dispatch(void **state)
{
	struct bus *b = *state;
	struct rec a = { .fill = 0xaa }, c = { .fill = 0xcc };
	uint8_t buf[8];
	const uint8_t w[4] = { 1, 2, 3, 4 };

	assert_int_equal(bus_register(b, 0x3f8, 8, &rec_ops, &a, "serial"), 0);
	assert_int_equal(bus_register(b, 0x600, 0x10, &rec_ops, &c, "pm"), 0);

	memset(buf, 0, sizeof(buf));
	assert_int_equal(bus_read(b, 0x3fd, buf, 1), 0);
	assert_int_equal(a.reads, 1);
	assert_int_equal(a.offset, 5);
	assert_int_equal(a.len, 1);
	assert_int_equal(buf[0], 0xaa);
	assert_int_equal(buf[1], 0); /* only len bytes touched */

	assert_int_equal(bus_write(b, 0x604, w, 2), 0);
	assert_int_equal(c.writes, 1);
	assert_int_equal(c.offset, 4);
	assert_int_equal(c.len, 2);
	assert_memory_equal(c.wdata, w, 2);

	/* Last bytes of a range are still inside it. */
	assert_int_equal(bus_write(b, 0x60c, w, 4), 0);
	assert_int_equal(c.offset, 0xc);
	assert_int_equal(bus_read(b, 0x3f8, buf, 8), 0);
	assert_int_equal(a.offset, 0);
	assert_int_equal(a.len, 8);
	assert_int_equal(a.writes, 0);
}

static void test_no_device(void **state)
{
	struct bus *b = *state;
	struct rec a = { 0 };
	uint8_t buf[8] = { 0 };

	assert_int_equal(bus_read(b, 0x80, buf, 1), -ENOENT);
	assert_int_equal(bus_register(b, 0x100, 0x10, &rec_ops, &a, "a"), 0);
	assert_int_equal(bus_read(b, 0xff, buf, 1), -ENOENT);
	assert_int_equal(bus_read(b, 0x110, buf, 1), -ENOENT);
	assert_int_equal(bus_write(b, 0, buf, 1), -ENOENT);
	assert_int_equal(bus_write(b, UINT64_MAX, buf, 1), -ENOENT);
	assert_null(bus_lookup_name(b, 0x110));
	assert_int_equal(calls(&a), 0);
}

static void test_crossing_end(void **state)
{
	struct bus *b = *state;
	struct rec a = { 0 }, c = { 0 };
	uint8_t buf[8] = { 0 };

	assert_int_equal(bus_register(b, 0x100, 0x10, &rec_ops, &a, "a"), 0);
	assert_int_equal(bus_register(b, 0x110, 0x10, &rec_ops, &c, "c"), 0);

	/* Crossing the end of the last range (nothing behind it). */
	assert_int_equal(bus_read(b, 0x11e, buf, 4), -ENOENT);
	assert_int_equal(bus_write(b, 0x11f, buf, 2), -ENOENT);
	/* Straddling two adjacent ranges: never split across devices. */
	assert_int_equal(bus_read(b, 0x10e, buf, 4), -ENOENT);
	assert_int_equal(bus_write(b, 0x10f, buf, 2), -ENOENT);
	assert_int_equal(bus_write(b, 0x109, buf, 8), -ENOENT);
	/* Starting just before a range and running into it. */
	assert_int_equal(bus_read(b, 0xfe, buf, 4), -ENOENT);
	assert_int_equal(calls(&a), 0);
	assert_int_equal(calls(&c), 0);
}

static void test_unregister(void **state)
{
	struct bus *b = *state;
	struct rec a = { 0 }, c = { 0 };
	uint8_t buf[4] = { 0 };

	assert_int_equal(bus_register(b, 0x100, 0x10, &rec_ops, &a, "a"), 0);
	assert_int_equal(bus_register(b, 0x200, 0x10, &rec_ops, &c, "c"), 0);
	/* Only the exact base unregisters. */
	assert_int_equal(bus_unregister(b, 0x104), -ENOENT);
	assert_int_equal(bus_unregister(b, 0x300), -ENOENT);
	assert_int_equal(bus_unregister(b, 0x100), 0);
	assert_int_equal(bus_unregister(b, 0x100), -ENOENT);

	assert_int_equal(bus_read(b, 0x100, buf, 1), -ENOENT);
	assert_int_equal(bus_write(b, 0x10f, buf, 1), -ENOENT);
	assert_null(bus_lookup_name(b, 0x100));
	assert_int_equal(calls(&a), 0);
	/* The neighbour is untouched, and the space can be reused. */
	assert_int_equal(bus_read(b, 0x200, buf, 1), 0);
	assert_int_equal(c.reads, 1);
	assert_int_equal(bus_register(b, 0x108, 0x8, &rec_ops, &a, "a2"), 0);
	assert_string_equal(bus_lookup_name(b, 0x10f), "a2");
}

static void test_missing_callback(void **state)
{
	struct bus *b = *state;
	static const struct bus_ops ro = { .read = rec_read };
	struct rec a = { 0 };
	uint8_t buf[1] = { 0 };

	assert_int_equal(bus_register(b, 0x10, 1, &ro, &a, "ro"), 0);
	assert_int_equal(bus_write(b, 0x10, buf, 1), -ENOENT);
	assert_int_equal(bus_read(b, 0x10, buf, 1), 0);
	assert_int_equal(a.reads, 1);
}

#define NR_MANY 200

/* Out-of-order registration, enough to grow the array several times. */
static void test_many_out_of_order(void **state)
{
	struct bus *b = *state;
	static struct rec recs[NR_MANY];
	static char names[NR_MANY][8];
	uint8_t buf[2];
	unsigned int i, k;

	memset(recs, 0, sizeof(recs));
	/* 7 is coprime with NR_MANY, so k visits every slot once. */
	for (i = 0, k = 0; i < NR_MANY; i++, k = (k + 7) % NR_MANY) {
		snprintf(names[k], sizeof(names[k]), "d%u", k);
		assert_int_equal(
			bus_register(b, 0x1000 + k * 0x20, 0x10, &rec_ops, &recs[k], names[k]), 0);
	}
	assert_int_equal(b->nr, NR_MANY);
	for (i = 1; i < b->nr; i++)
		assert_true(b->ranges[i - 1].base + b->ranges[i - 1].len <= b->ranges[i].base);

	for (i = 0; i < NR_MANY; i++) {
		assert_int_equal(bus_read(b, 0x1000 + i * 0x20 + 0xe, buf, 2), 0);
		assert_int_equal(recs[i].reads, 1);
		assert_int_equal(recs[i].offset, 0xe);
		/* The gap after each range belongs to nobody. */
		assert_int_equal(bus_read(b, 0x1000 + i * 0x20 + 0x10, buf, 1), -ENOENT);
		assert_string_equal(bus_lookup_name(b, 0x1000 + i * 0x20 + 3), names[i]);
	}
	for (i = 0; i < NR_MANY; i++)
		assert_int_equal(recs[i].reads, 1);

	/* Overlap is still caught in the middle of a big table. */
	assert_int_equal(bus_register(b, 0x1000 + 100 * 0x20 + 0xf, 0x2, &rec_ops, &recs[0], "x"),
			 -EEXIST);
	assert_int_equal(
		bus_register(b, 0x1000 + 100 * 0x20 + 0x10, 0x10, &rec_ops, &recs[0], "gap"), 0);
}

static void test_lookup_name(void **state)
{
	struct bus *b = *state;
	struct rec a = { 0 };

	assert_null(bus_lookup_name(b, 0));
	assert_int_equal(bus_register(b, 0xfee00000, 0x1000, &rec_ops, &a, "lapic"), 0);
	assert_int_equal(bus_register(b, 0xfec00000, 0x100, &rec_ops, &a, NULL), 0);
	assert_string_equal(bus_lookup_name(b, 0xfee00000), "lapic");
	assert_string_equal(bus_lookup_name(b, 0xfee00fff), "lapic");
	assert_null(bus_lookup_name(b, 0xfee01000));
	assert_null(bus_lookup_name(b, 0xfedfffff));
	assert_null(bus_lookup_name(b, 0xfec00000)); /* registered without a name */
	assert_int_equal(calls(&a), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_overlap_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dispatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crossing_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unregister, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lookup_name, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
