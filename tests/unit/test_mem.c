// SPDX-License-Identifier: MIT
/*
 * Guest RAM layout and gpa translation on a real memfd. The > 3 GiB cases
 * map several GiB, but mem_init() maps with MAP_NORESERVE and the tests
 * touch only a few pages, so they are cheap.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qlite/mem.h"

#define RAM_SMALL (256 * MiB)
#define RAM_BIG (4 * GiB + 512 * MiB) /* 3 GiB low + 1.5 GiB above 4 GiB */
#define HIGH_SIZE (RAM_BIG - MEM_32BIT_GAP_START)

struct fixture {
	struct guest_mem m;
};

static int setup_mem(void **state, uint64_t size, enum mem_backend backend)
{
	struct fixture *f = test_calloc(1, sizeof(*f));
	struct qerr e = { 0 };

	if (!f)
		return -1;
	if (mem_init(&f->m, size, backend, &e)) {
		print_error("mem_init(%llu): %s\n", (unsigned long long)size, e.msg);
		test_free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int setup_small(void **state)
{
	return setup_mem(state, RAM_SMALL, MEM_BACKEND_MEMFD);
}

static int setup_big(void **state)
{
	return setup_mem(state, RAM_BIG, MEM_BACKEND_MEMFD);
}

/* The default backend: same layout and translation, no fd. */
static int setup_small_anon(void **state)
{
	return setup_mem(state, RAM_SMALL, MEM_BACKEND_ANON);
}

static int setup_big_anon(void **state)
{
	return setup_mem(state, RAM_BIG, MEM_BACKEND_ANON);
}

static void test_anon_has_no_fd(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;

	assert_int_equal(m->backend, MEM_BACKEND_ANON);
	assert_int_equal(m->memfd, -1);
	assert_non_null(m->base);
}

static void test_dirty_bitmap(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;
	uint8_t *p = mem_gpa_to_hva(m, 0x5000, 1);

	assert_false(mem_dirty_test_clear(m, 5));
	/* 2 bytes straddling pages 5 and 6. */
	mem_dirty_mark(m, p + 4095, 2);
	assert_false(mem_dirty_test_clear(m, 4));
	assert_true(mem_dirty_test_clear(m, 5));
	assert_false(mem_dirty_test_clear(m, 5)); /* cleared */
	assert_true(mem_dirty_test_clear(m, 6));
	assert_false(mem_dirty_test_clear(m, 7));
	/* Outside the mapping, or past its end: ignored, never out of bounds. */
	mem_dirty_mark(m, (uint8_t *)m->base - 4096, 8192);
	mem_dirty_mark(m, m->base + m->ram_size - 1, 1 << 20);
	assert_true(mem_dirty_test_clear(m, m->ram_size / 4096 - 1));
	assert_false(mem_dirty_test_clear(m, m->ram_size / 4096));
}

static void test_backend_parse(void **state)
{
	enum mem_backend b;

	assert_int_equal(mem_backend_parse("anon", &b), 0);
	assert_int_equal(b, MEM_BACKEND_ANON);
	assert_int_equal(mem_backend_parse("memfd", &b), 0);
	assert_int_equal(b, MEM_BACKEND_MEMFD);
	assert_int_equal(mem_backend_parse("hugetlb", &b), -EINVAL);
	assert_int_equal(mem_backend_parse("", &b), -EINVAL);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	mem_destroy(&f->m);
	test_free(f);
	return 0;
}

static void test_layout_small(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;
	struct stat st;

	assert_true(m->memfd >= 0);
	assert_true(fstat(m->memfd, &st) == 0);
	assert_true((uint64_t)st.st_size == RAM_SMALL);
	assert_true(m->ram_size == RAM_SMALL);
	assert_int_equal(m->nr_regions, 1);
	assert_true(m->regions[0].gpa == 0);
	assert_true(m->regions[0].size == RAM_SMALL);
	assert_ptr_equal(m->regions[0].hva, m->base);
	assert_true(m->regions[0].fd_offset == 0);
}

static void test_layout_big(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;

	assert_int_equal(m->nr_regions, 2);
	assert_true(m->regions[0].gpa == 0);
	assert_true(m->regions[0].size == MEM_32BIT_GAP_START);
	assert_true(m->regions[1].gpa == MEM_4G);
	assert_true(m->regions[1].size == HIGH_SIZE);
	assert_ptr_equal(m->regions[1].hva, m->base + MEM_32BIT_GAP_START);
	assert_true(m->regions[1].fd_offset == MEM_32BIT_GAP_START);
	assert_true(m->regions[0].slot != m->regions[1].slot);
}

static void test_layout_exactly_3g(void **state)
{
	struct guest_mem m;

	assert_int_equal(mem_init(&m, 3 * GiB, MEM_BACKEND_MEMFD, NULL), 0);
	assert_int_equal(m.nr_regions, 1);
	assert_true(m.regions[0].size == 3 * GiB);
	assert_null(mem_gpa_to_hva(&m, 3 * GiB, 1));
	assert_null(mem_gpa_to_hva(&m, MEM_4G, 1));
	assert_non_null(mem_gpa_to_hva(&m, 3 * GiB - 1, 1));
	mem_destroy(&m);
}

static void test_init_invalid(void **state)
{
	struct guest_mem m;
	struct qerr e = { 0 };

	assert_int_equal(mem_init(&m, 0, MEM_BACKEND_MEMFD, &e), -EINVAL);
	assert_true(e.msg[0] != '\0');
	assert_int_equal(m.memfd, -1);
	mem_destroy(&m); /* safe after a failed init */

	assert_int_equal(mem_init(&m, 4 * KiB + 1, MEM_BACKEND_ANON, NULL), -EINVAL);
	assert_int_equal(mem_init(&m, 16 * MiB - 2048, MEM_BACKEND_MEMFD, NULL), -EINVAL);
	assert_null(m.base);
	mem_destroy(&m);
}

static void test_gpa_inside(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;

	assert_ptr_equal(mem_gpa_to_hva(m, 0, 1), m->base);
	assert_ptr_equal(mem_gpa_to_hva(m, 0x1234, 100), m->base + 0x1234);
	assert_ptr_equal(mem_gpa_to_hva(m, 0, RAM_SMALL), m->base);
	assert_ptr_equal(mem_gpa_to_hva(m, RAM_SMALL - 1, 1), m->base + RAM_SMALL - 1);
	assert_ptr_equal(mem_gpa_to_hva(m, RAM_SMALL - 4096, 4096), m->base + RAM_SMALL - 4096);
}

static void test_gpa_crossing_end(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;

	assert_null(mem_gpa_to_hva(m, RAM_SMALL - 1, 2));
	assert_null(mem_gpa_to_hva(m, RAM_SMALL - 4096, 4097));
	assert_null(mem_gpa_to_hva(m, 0, RAM_SMALL + 1));
	assert_null(mem_gpa_to_hva(m, RAM_SMALL, 1));
	assert_null(mem_gpa_to_hva(m, RAM_SMALL + 4096, 4096));
}

static void test_gpa_len_zero(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;

	/* An empty range inside RAM is valid; outside RAM it is not. */
	assert_ptr_equal(mem_gpa_to_hva(m, 0x1000, 0), m->base + 0x1000);
	assert_ptr_equal(mem_gpa_to_hva(m, RAM_SMALL - 1, 0), m->base + RAM_SMALL - 1);
	assert_null(mem_gpa_to_hva(m, RAM_SMALL, 0));
	assert_null(mem_gpa_to_hva(m, UINT64_MAX, 0));
}

static void test_gpa_overflow(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;

	/* gpa + len wraps to a small number inside RAM: must not succeed. */
	assert_null(mem_gpa_to_hva(m, 0x1000, UINT64_MAX));
	assert_null(mem_gpa_to_hva(m, 0x1000, UINT64_MAX - 0xfff));
	assert_null(mem_gpa_to_hva(m, 0x1000, UINT64_MAX - 0x1fff));
	assert_null(mem_gpa_to_hva(m, RAM_SMALL - 1, UINT64_MAX));
	assert_null(mem_gpa_to_hva(m, UINT64_MAX, 1));
	assert_null(mem_gpa_to_hva(m, UINT64_MAX, UINT64_MAX));
	assert_null(mem_gpa_to_hva(m, UINT64_MAX - 0xfff, 0x2000));
	assert_null(mem_gpa_to_hva(m, 0, UINT64_MAX));
	assert_null(mem_gpa_to_hva(m, (uint64_t)-RAM_SMALL, RAM_SMALL));
}

static void test_gpa_big_hole(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;
	const uint64_t high_end = MEM_4G + HIGH_SIZE;

	/* Low region up to 3 GiB. */
	assert_ptr_equal(mem_gpa_to_hva(m, 3 * GiB - 8, 8), m->base + 3 * GiB - 8);
	assert_null(mem_gpa_to_hva(m, 3 * GiB - 8, 9));
	/* The MMIO hole [3G, 4G) is not RAM, whatever the length. */
	assert_null(mem_gpa_to_hva(m, 3 * GiB, 1));
	assert_null(mem_gpa_to_hva(m, 3 * GiB, 0));
	assert_null(mem_gpa_to_hva(m, 0xfee00000, 4));
	assert_null(mem_gpa_to_hva(m, MEM_4G - 1, 1));
	assert_null(mem_gpa_to_hva(m, MEM_4G - 1, 2));	      /* into high RAM from the hole */
	assert_null(mem_gpa_to_hva(m, 3 * GiB - 1, GiB + 2)); /* spans the hole */
	/* High region: gpa 4 GiB is memfd offset 3 GiB. */
	assert_ptr_equal(mem_gpa_to_hva(m, MEM_4G, 1), m->base + 3 * GiB);
	assert_ptr_equal(mem_gpa_to_hva(m, MEM_4G, HIGH_SIZE), m->base + 3 * GiB);
	assert_ptr_equal(mem_gpa_to_hva(m, high_end - 1, 1), m->base + RAM_BIG - 1);
	assert_null(mem_gpa_to_hva(m, high_end - 1, 2));
	assert_null(mem_gpa_to_hva(m, high_end, 1));
	assert_null(mem_gpa_to_hva(m, MEM_4G + 0x1000, UINT64_MAX - 0xfff));
	assert_null(mem_gpa_to_hva(m, MEM_4G, UINT64_MAX));
}

static void test_read_write(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;
	uint8_t in[64], out[64], edge[4];
	unsigned int i;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7 + 1);
	assert_int_equal(mem_write(m, 0x7000, in, sizeof(in)), 0);
	memset(out, 0, sizeof(out));
	assert_int_equal(mem_read(m, 0x7000, out, sizeof(out)), 0);
	assert_memory_equal(in, out, sizeof(in));
	assert_memory_equal(m->base + 0x7000, in, sizeof(in));

	/* Straddling the end fails whole: nothing is written. */
	memset(edge, 0x5a, sizeof(edge));
	assert_int_equal(mem_write(m, RAM_SMALL - 4, edge, 4), 0);
	assert_int_equal(mem_write(m, RAM_SMALL - 2, in, 4), -EFAULT);
	assert_memory_equal(m->base + RAM_SMALL - 4, edge, 4);
	assert_int_equal(mem_read(m, RAM_SMALL - 2, out, 4), -EFAULT);
	assert_int_equal(mem_read(m, RAM_SMALL, out, 1), -EFAULT);
	assert_int_equal(mem_write(m, UINT64_MAX, in, 1), -EFAULT);
	assert_int_equal(mem_read(m, 0x1000, out, SIZE_MAX), -EFAULT);
}

static void test_read_write_high(void **state)
{
	struct guest_mem *m = &((struct fixture *)*state)->m;
	const char msg[] = "above 4G";
	char out[sizeof(msg)];

	assert_int_equal(mem_write(m, MEM_4G + 0x1000, msg, sizeof(msg)), 0);
	/* The same bytes are at memfd offset 3 GiB + 0x1000. */
	assert_int_equal(pread(m->memfd, out, sizeof(out), 3 * GiB + 0x1000), sizeof(out));
	assert_memory_equal(out, msg, sizeof(msg));
	memset(out, 0, sizeof(out));
	assert_int_equal(mem_read(m, MEM_4G + 0x1000, out, sizeof(out)), 0);
	assert_string_equal(out, msg);

	assert_int_equal(mem_write(m, 3 * GiB, msg, 1), -EFAULT);
	assert_int_equal(mem_read(m, 0xfec00000, out, 4), -EFAULT);
	/* Low-region write lands at the low memfd offset. */
	assert_int_equal(mem_write(m, 0x2000, msg, sizeof(msg)), 0);
	assert_int_equal(pread(m->memfd, out, sizeof(out), 0x2000), sizeof(out));
	assert_memory_equal(out, msg, sizeof(msg));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_layout_small, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_layout_big, setup_big, teardown),
		cmocka_unit_test(test_layout_exactly_3g),
		cmocka_unit_test(test_init_invalid),
		cmocka_unit_test_setup_teardown(test_gpa_inside, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_gpa_crossing_end, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_gpa_len_zero, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_gpa_overflow, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_gpa_big_hole, setup_big, teardown),
		cmocka_unit_test_setup_teardown(test_read_write, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_read_write_high, setup_big, teardown),
		cmocka_unit_test_setup_teardown(test_anon_has_no_fd, setup_small_anon, teardown),
		cmocka_unit_test_setup_teardown(test_gpa_inside, setup_small_anon, teardown),
		cmocka_unit_test_setup_teardown(test_gpa_big_hole, setup_big_anon, teardown),
		cmocka_unit_test_setup_teardown(test_read_write, setup_small_anon, teardown),
		cmocka_unit_test(test_backend_parse),
		cmocka_unit_test_setup_teardown(test_dirty_bitmap, setup_small_anon, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
