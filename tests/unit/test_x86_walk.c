// SPDX-License-Identifier: MIT
/*
 * Software guest page walks over tables built in a buffer: no paging,
 * 32-bit (4 KiB and PSE 4 MiB pages), PAE, 4-level (4 KiB, 2 MiB, 1 GiB)
 * and 5-level; non-present entries and tables outside guest memory fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "qlite/x86_walk.h"

#define MEM_SIZE (64 * 4096)
#define P 1ULL
#define PS (1ULL << 7)
#define CR0_PG (1ULL << 31)
#define CR4_PSE (1ULL << 4)
#define CR4_PAE (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define EFER_LMA (1ULL << 10)

static uint8_t mem[MEM_SIZE];

static int rd(void *opaque, uint64_t gpa, void *buf, unsigned int len)
{
	(void)opaque;
	if (gpa > MEM_SIZE - len)
		return -EFAULT;
	memcpy(buf, mem + gpa, len);
	return 0;
}

static void put64(uint64_t gpa, uint64_t v)
{
	memcpy(mem + gpa, &v, 8);
}

static void put32(uint64_t gpa, uint32_t v)
{
	memcpy(mem + gpa, &v, 4);
}

static uint64_t walk(const struct x86_paging *pg, uint64_t gva, int *ret)
{
	uint64_t gpa = 0;

	*ret = x86_gva_to_gpa(pg, gva, &gpa, rd, NULL);
	return gpa;
}

static void test_no_paging(void **state)
{
	struct x86_paging pg = { .cr0 = 0x11 };
	int ret;

	assert_true(walk(&pg, 0x100200, &ret) == 0x100200);
	assert_int_equal(ret, 0);
}

static void test_4level(void **state)
{
	/* PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000. */
	struct x86_paging pg = { .cr0 = CR0_PG, .cr3 = 0x1000, .cr4 = CR4_PAE, .efer = EFER_LMA };
	uint64_t kva = 0xffffffff81234567ULL; /* PML4 511, PDPT 510, PD 9, PT 0x34 */
	int ret;

	memset(mem, 0, sizeof(mem));
	put64(0x1000 + 511 * 8, 0x2000 | P);
	put64(0x2000 + 510 * 8, 0x3000 | P);
	put64(0x3000 + 9 * 8, 0x4000 | P);
	put64(0x4000 + 0x34 * 8, 0x7000 | P | (1ULL << 63)); /* NX bit ignored */
	assert_true(walk(&pg, kva, &ret) == 0x7567);
	assert_int_equal(ret, 0);
	/* A 2 MiB page in the PD. */
	put64(0x3000 + 10 * 8, 0x200000 | P | PS);
	assert_true(walk(&pg, 0xffffffff81400000ULL + 0x12345, &ret) == 0x212345);
	assert_int_equal(ret, 0);
	/* A 1 GiB page in the PDPT. */
	put64(0x2000 + 0 * 8, 0x40000000ULL | P | PS);
	put64(0x1000 + 0 * 8, 0x2000 | P);
	assert_true(walk(&pg, 0x0000000000123456ULL, &ret) == 0x40123456ULL);
	/* Not present at each level. */
	walk(&pg, 0x0000008000000000ULL, &ret); /* PML4 entry 1 empty */
	assert_int_equal(ret, -EFAULT);
	walk(&pg, 0xffffffff80000000ULL, &ret); /* PD entry 0 empty */
	assert_int_equal(ret, -EFAULT);
	/* A table outside guest memory (hostile guest). */
	put64(0x3000 + 11 * 8, 0x7fff000000ULL | P);
	walk(&pg, 0xffffffff81600000ULL, &ret);
	assert_int_equal(ret, -EFAULT);
}

static void test_5level(void **state)
{
	struct x86_paging pg = { .cr0 = CR0_PG, .cr3 = 0x5000, .cr4 = CR4_PAE | CR4_LA57,
				 .efer = EFER_LMA };
	int ret;

	memset(mem, 0, sizeof(mem));
	put64(0x5000 + 511 * 8, 0x1000 | P);
	put64(0x1000 + 511 * 8, 0x2000 | P);
	put64(0x2000 + 510 * 8, 0x3000 | P);
	put64(0x3000 + 9 * 8, 0x200000 | P | PS);
	assert_true(walk(&pg, 0xffffffff81234567ULL, &ret) == 0x234567);
	assert_int_equal(ret, 0);
}

static void test_pae(void **state)
{
	/* PDPT at 0x1020 (32-byte aligned), PD 0x2000, PT 0x3000. */
	struct x86_paging pg = { .cr0 = CR0_PG, .cr3 = 0x1020, .cr4 = CR4_PAE };
	int ret;

	memset(mem, 0, sizeof(mem));
	put64(0x1020 + 3 * 8, 0x2000 | P);
	put64(0x2000 + 8 * 8, 0x3000 | P); /* 0xc1000000: PD index 8 */
	put64(0x3000 + 0x23 * 8, 0x9000 | P);
	assert_true(walk(&pg, 0xc1023456ULL, &ret) == 0x9456);
	assert_int_equal(ret, 0);
	put64(0x2000 + 9 * 8, 0x400000 | P | PS);
	assert_true(walk(&pg, 0xc1200000ULL + 0x1234, &ret) == 0x401234);
}

static void test_32bit(void **state)
{
	struct x86_paging pg = { .cr0 = CR0_PG, .cr3 = 0x1000 };
	int ret;

	memset(mem, 0, sizeof(mem));
	put32(0x1000 + 0x300 * 4, 0x2000 | P); /* 0xc0000000 */
	put32(0x2000 + 0x12 * 4, 0x8000 | P);
	assert_true(walk(&pg, 0xc0012345ULL, &ret) == 0x8345);
	assert_int_equal(ret, 0);
	/* A 4 MiB page only counts with CR4.PSE. */
	put32(0x1000 + 0x301 * 4, 0x00800000u | P | PS);
	pg.cr4 = CR4_PSE;
	assert_true(walk(&pg, 0xc0412345ULL, &ret) == 0x812345);
	assert_int_equal(ret, 0);
	put32(0x1000 + 0x302 * 4, 0);
	walk(&pg, 0xc0800000ULL, &ret);
	assert_int_equal(ret, -EFAULT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_paging), cmocka_unit_test(test_4level),
		cmocka_unit_test(test_5level),	  cmocka_unit_test(test_pae),
		cmocka_unit_test(test_32bit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
