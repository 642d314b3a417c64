// SPDX-License-Identifier: MIT
/*
 * The split-virtqueue walker against hostile drivers: guest RAM is a real
 * mapping from mem_init(); tests write descriptor tables and rings into it
 * the way a (broken) driver would. Every violation must reach the error path.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "qlite/virtio.h"

#define RAM (16 * MiB)
#define QSIZE 16
#define DESC_GPA 0x10000
#define AVAIL_GPA 0x11000
#define USED_GPA 0x12000
#define BUF_GPA 0x100000

struct fx {
	struct guest_mem mem;
	struct virtq_state st;
	struct virtq vq;
	struct virtq_elem e;
};

static struct vring_desc *desc(struct fx *f)
{
	return mem_gpa_to_hva(&f->mem, DESC_GPA, 16 * QSIZE);
}

static uint16_t *avail(struct fx *f)
{
	return mem_gpa_to_hva(&f->mem, AVAIL_GPA, 6 + 2 * QSIZE);
}

static uint16_t *used16(struct fx *f)
{
	return mem_gpa_to_hva(&f->mem, USED_GPA, 6 + 8 * QSIZE);
}

static int setup_flags(void **state, bool event_idx, bool indirect)
{
	struct fx *f = test_calloc(1, sizeof(*f));

	if (!f || mem_init(&f->mem, RAM, MEM_BACKEND_ANON, NULL))
		return -1;
	f->st.size = QSIZE;
	f->st.desc_gpa = DESC_GPA;
	f->st.avail_gpa = AVAIL_GPA;
	f->st.used_gpa = USED_GPA;
	if (vq_enable(&f->vq, &f->st, &f->mem, event_idx, indirect))
		return -1;
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_flags(state, false, true);
}

static int setup_event_idx(void **state)
{
	return setup_flags(state, true, false);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	mem_destroy(&f->mem);
	test_free(f);
	return 0;
}

static void set_desc(struct vring_desc *d, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	d->addr = addr;
	d->len = len;
	d->flags = flags;
	d->next = next;
}

/* Make @head available as the next entry. */
static void offer(struct fx *f, uint16_t head)
{
	uint16_t *a = avail(f);

	a[2 + a[1] % QSIZE] = head;
	a[1]++;
}

static int pop(struct fx *f, const char **why)
{
	return vq_pop(&f->vq, &f->e, why);
}

static void expect_bad(struct fx *f, const char *needle)
{
	const char *why = NULL;

	assert_int_equal(pop(f, &why), -EINVAL);
	assert_non_null(why);
	if (needle && !strstr(why, needle))
		fail_msg("reason '%s' lacks '%s'", why, needle);
}

static void test_good_chain(void **state)
{
	struct fx *f = *state;
	const char *why;

	set_desc(&desc(f)[0], BUF_GPA, 16, VRING_DESC_F_NEXT, 1);
	set_desc(&desc(f)[1], BUF_GPA + 4096, 512, VRING_DESC_F_NEXT, 2);
	set_desc(&desc(f)[2], BUF_GPA + 8192, 1, VRING_DESC_F_WRITE, 0);
	offer(f, 0);
	assert_int_equal(pop(f, &why), 1);
	assert_int_equal(f->e.head, 0);
	assert_int_equal(f->e.out_num, 2);
	assert_int_equal(f->e.in_num, 1);
	assert_int_equal(f->e.out_len, 528);
	assert_int_equal(f->e.in_len, 1);
	assert_ptr_equal(f->e.iov[2].iov_base, mem_gpa_to_hva(&f->mem, BUF_GPA + 8192, 1));
	assert_int_equal(pop(f, &why), 0); /* nothing more */
	vq_push(&f->vq, &f->e, 1);
	assert_int_equal(used16(f)[1], 1);
	assert_int_equal(((uint32_t *)used16(f))[1], 0); /* id */
	assert_int_equal(((uint32_t *)used16(f))[2], 1); /* len */
}

static void test_loop(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], BUF_GPA, 16, VRING_DESC_F_NEXT, 1);
	set_desc(&desc(f)[1], BUF_GPA + 64, 16, VRING_DESC_F_NEXT, 0);
	offer(f, 0);
	expect_bad(f, "loop");
}

static void test_self_loop(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[3], BUF_GPA, 16, VRING_DESC_F_NEXT, 3);
	offer(f, 3);
	expect_bad(f, "loop");
}

static void test_next_out_of_range(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], BUF_GPA, 16, VRING_DESC_F_NEXT, QSIZE);
	offer(f, 0);
	expect_bad(f, "out of range");
}

static void test_head_out_of_range(void **state)
{
	struct fx *f = *state;

	offer(f, 0xffff);
	expect_bad(f, "head");
}

static void test_avail_idx_jump(void **state)
{
	struct fx *f = *state;

	avail(f)[1] = QSIZE + 1;
	expect_bad(f, "available index");
}

static void test_huge_length(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], BUF_GPA, 0xffffffff, 0, 0);
	offer(f, 0);
	expect_bad(f, "outside");
}

static void test_outside_ram(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], RAM - 8, 16, 0, 0); /* crosses the end of RAM */
	offer(f, 0);
	expect_bad(f, "outside");
	set_desc(&desc(f)[1], 0xfffffffffffff000ULL, 0x2000, 0, 0); /* wraps */
	offer(f, 1);
	f->st.last_avail_idx = 1;
	expect_bad(f, "outside");
	set_desc(&desc(f)[2], 0xd0000000, 16, 0, 0); /* MMIO hole */
	offer(f, 2);
	f->st.last_avail_idx = 2;
	expect_bad(f, "outside");
}

static void test_readable_after_writable(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], BUF_GPA, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	set_desc(&desc(f)[1], BUF_GPA + 4096, 16, 0, 0);
	offer(f, 0);
	expect_bad(f, "readable buffer after");
}

static void test_writable_overlap(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], BUF_GPA, 4096, VRING_DESC_F_NEXT, 1);
	set_desc(&desc(f)[1], BUF_GPA + 100, 16, VRING_DESC_F_WRITE, 0);
	offer(f, 0);
	expect_bad(f, "overlaps");
}

static void test_readable_overlap_ok(void **state)
{
	struct fx *f = *state;
	const char *why;

	/* The same page read twice (Linux does this with ZERO_PAGE): allowed. */
	set_desc(&desc(f)[0], BUF_GPA, 4096, VRING_DESC_F_NEXT, 1);
	set_desc(&desc(f)[1], BUF_GPA, 4096, VRING_DESC_F_NEXT, 2);
	set_desc(&desc(f)[2], BUF_GPA + 8192, 1, VRING_DESC_F_WRITE, 0);
	offer(f, 0);
	assert_int_equal(pop(f, &why), 1);
}

static struct vring_desc *table_at(struct fx *f, uint64_t gpa, unsigned int n)
{
	return mem_gpa_to_hva(&f->mem, gpa, 16ULL * n);
}

static void test_indirect_good(void **state)
{
	struct fx *f = *state;
	struct vring_desc *t = table_at(f, 0x20000, 3);
	const char *why;

	set_desc(&t[0], BUF_GPA, 16, VRING_DESC_F_NEXT, 2);
	set_desc(&t[2], BUF_GPA + 4096, 64, VRING_DESC_F_NEXT, 1);
	set_desc(&t[1], BUF_GPA + 8192, 1, VRING_DESC_F_WRITE, 0);
	set_desc(&desc(f)[5], 0x20000, 48, VRING_DESC_F_INDIRECT, 0);
	offer(f, 5);
	assert_int_equal(pop(f, &why), 1);
	assert_int_equal(f->e.head, 5);
	assert_int_equal(f->e.out_num, 2);
	assert_int_equal(f->e.in_num, 1);
}

static void test_indirect_nested(void **state)
{
	struct fx *f = *state;
	struct vring_desc *t = table_at(f, 0x20000, 2);

	set_desc(&t[0], 0x21000, 32, VRING_DESC_F_INDIRECT, 0);
	set_desc(&desc(f)[0], 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_bad(f, "inside an indirect");
}

static void test_indirect_loop(void **state)
{
	struct fx *f = *state;
	struct vring_desc *t = table_at(f, 0x20000, 2);

	set_desc(&t[0], BUF_GPA, 16, VRING_DESC_F_NEXT, 1);
	set_desc(&t[1], BUF_GPA, 16, VRING_DESC_F_NEXT, 0);
	set_desc(&desc(f)[0], 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_bad(f, "loop");
}

static void test_indirect_malformed(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], 0x20000, 20, VRING_DESC_F_INDIRECT, 0); /* not k*16 */
	offer(f, 0);
	expect_bad(f, "indirect");
	set_desc(&desc(f)[1], 0x20000, 32, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 2);
	offer(f, 1);
	f->st.last_avail_idx = 1;
	expect_bad(f, "indirect");
	set_desc(&desc(f)[2], RAM - 16, 64, VRING_DESC_F_INDIRECT, 0); /* table past RAM */
	offer(f, 2);
	f->st.last_avail_idx = 2;
	expect_bad(f, "outside");
	set_desc(&desc(f)[3], 0x20000, 0x100000, VRING_DESC_F_INDIRECT, 0); /* 64Ki entries */
	offer(f, 3);
	f->st.last_avail_idx = 3;
	expect_bad(f, "indirect");
}

static void test_indirect_mid_chain(void **state)
{
	struct fx *f = *state;

	set_desc(&desc(f)[0], BUF_GPA, 16, VRING_DESC_F_NEXT, 1);
	set_desc(&desc(f)[1], 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_bad(f, "inside a chain");
}

static void test_indirect_not_negotiated(void **state)
{
	struct fx *f = *state; /* setup_event_idx: no INDIRECT_DESC */

	set_desc(&desc(f)[0], 0x20000, 32, VRING_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_bad(f, "INDIRECT_DESC");
}

static void test_enable_checks(void **state)
{
	struct fx *f = *state;
	struct virtq vq;
	struct virtq_state s = f->st;

	s.size = 3; /* not a power of two */
	assert_int_equal(vq_enable(&vq, &s, &f->mem, false, false), -EINVAL);
	s.size = 2048; /* too big */
	assert_int_equal(vq_enable(&vq, &s, &f->mem, false, false), -EINVAL);
	s = f->st;
	s.desc_gpa = DESC_GPA + 8; /* misaligned */
	assert_int_equal(vq_enable(&vq, &s, &f->mem, false, false), -EINVAL);
	s = f->st;
	s.used_gpa = RAM - 8; /* used ring past the end of RAM */
	assert_int_equal(vq_enable(&vq, &s, &f->mem, false, false), -EINVAL);
	s = f->st;
	s.avail_gpa = 0xfffffffffffffffeULL;
	assert_int_equal(vq_enable(&vq, &s, &f->mem, false, false), -EINVAL);
	/* A disabled queue pops nothing. */
	vq_disable(&vq);
	assert_int_equal(vq_pop(&vq, &f->e, &(const char *){ NULL }), 0);
}

static void test_event_idx(void **state)
{
	struct fx *f = *state;
	uint16_t *a = avail(f);
	const char *why;
	int i;

	for (i = 0; i < 4; i++) {
		set_desc(&desc(f)[i], BUF_GPA + i * 64, 8, VRING_DESC_F_WRITE, 0);
		offer(f, i);
	}
	/* Driver: "interrupt me when used passes index 2" (used_event = 2). */
	a[2 + QSIZE] = 2;
	for (i = 0; i < 2; i++) {
		assert_int_equal(pop(f, &why), 1);
		vq_push(&f->vq, &f->e, 8);
	}
	assert_true(vq_should_notify(&f->vq)); /* first time: always */
	assert_int_equal(pop(f, &why), 1);
	vq_push(&f->vq, &f->e, 8); /* used_idx 3: crosses event 2 */
	assert_true(vq_should_notify(&f->vq));
	assert_int_equal(pop(f, &why), 1);
	vq_push(&f->vq, &f->e, 8); /* used_idx 4: event still 2 */
	assert_false(vq_should_notify(&f->vq));
	/* Device side: avail_event tells the driver where to kick next. */
	assert_int_equal(*(uint16_t *)((uint8_t *)used16(f) + 4 + 8 * QSIZE), 4);
}

static void test_mark_dirty(void **state)
{
	struct fx *f = *state;
	const char *why;

	set_desc(&desc(f)[0], BUF_GPA, 16, VRING_DESC_F_NEXT, 1);
	set_desc(&desc(f)[1], BUF_GPA + 0x3000, 0x2000, VRING_DESC_F_WRITE, 0);
	offer(f, 0);
	assert_int_equal(pop(f, &why), 1);
	vq_mark_dirty(&f->vq, &f->e, 0x1001); /* device wrote 4 KiB + 1 byte */
	assert_false(mem_dirty_test_clear(&f->mem, BUF_GPA / 4096)); /* read-only part */
	assert_true(mem_dirty_test_clear(&f->mem, BUF_GPA / 4096 + 3));
	assert_true(mem_dirty_test_clear(&f->mem, BUF_GPA / 4096 + 4));
	assert_false(mem_dirty_test_clear(&f->mem, BUF_GPA / 4096 + 5));
}

/* The used ring is written by the VMM: a migration must see it changed. */
static void test_used_ring_dirty(void **state)
{
	struct fx *f = *state;
	const char *why;

	set_desc(&desc(f)[0], BUF_GPA, 16, VRING_DESC_F_WRITE, 0);
	offer(f, 0);
	assert_int_equal(pop(f, &why), 1);
	assert_false(mem_dirty_test_clear(&f->mem, USED_GPA / 4096));
	vq_push(&f->vq, &f->e, 16);
	assert_true(mem_dirty_test_clear(&f->mem, USED_GPA / 4096));
	vq_set_kicks(&f->vq, false);
	assert_true(mem_dirty_test_clear(&f->mem, USED_GPA / 4096));
	assert_false(mem_dirty_test_clear(&f->mem, AVAIL_GPA / 4096)); /* the driver's */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_good_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_self_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_next_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_head_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_avail_idx_jump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outside_ram, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readable_after_writable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writable_overlap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readable_overlap_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect_nested, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect_mid_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect_not_negotiated, setup_event_idx,
						teardown),
		cmocka_unit_test_setup_teardown(test_enable_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_idx, setup_event_idx, teardown),
		cmocka_unit_test_setup_teardown(test_mark_dirty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_used_ring_dirty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_used_ring_dirty, setup_event_idx, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
