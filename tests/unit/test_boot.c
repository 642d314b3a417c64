// SPDX-License-Identifier: MIT
/*
 * Linux boot protocol builders: bzimage_parse on synthetic (and hostile)
 * images, e820_build and initrd_place. Images are heap buffers of exactly
 * the advertised length so ASan catches any read past the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "qlite/boot.h"
#include "qlite/mem.h"

#define HDR_OFFSET 0x1f1
#define SETUP_SECTS 4
#define SETUP_SIZE ((SETUP_SECTS + 1) * 512)
#define PM_SIZE (64 * KiB) /* protected-mode part of the default image */
#define INIT_SIZE (2 * MiB)

struct image {
	uint8_t *buf;
	size_t len;
	struct setup_header *h; /* inside buf, packed */
};

/* A minimal valid 64-bit bzImage: 5 setup sectors, then PM_SIZE bytes. */
static void image_make(struct image *im, size_t pm_size)
{
	struct setup_header *h;
	size_t i;

	im->len = SETUP_SIZE + pm_size;
	im->buf = test_calloc(1, im->len);
	assert_non_null(im->buf);
	for (i = SETUP_SIZE; i < im->len; i++)
		im->buf[i] = (uint8_t)i;
	h = (struct setup_header *)(im->buf + HDR_OFFSET);
	h->setup_sects = SETUP_SECTS;
	h->syssize = pm_size / 16;
	h->boot_flag = 0xaa55;
	h->jump = 0x66eb;	/* jmp to 0x268, as real kernels */
	h->header = 0x53726448; /* "HdrS" */
	h->version = 0x020f;
	h->loadflags = LOADED_HIGH;
	h->kernel_alignment = 2 * MiB;
	h->relocatable_kernel = 1;
	h->xloadflags = XLF_KERNEL_64;
	h->cmdline_size = 2047;
	h->pref_address = 16 * MiB;
	h->init_size = INIT_SIZE;
	im->h = h;
}

static void image_free(struct image *im)
{
	test_free(im->buf);
}

static int parse(const struct image *im, struct bzimage_info *bi, struct qerr *e)
{
	memset(bi, 0, sizeof(*bi));
	memset(e, 0, sizeof(*e));
	return bzimage_parse(im->buf, im->len, bi, e);
}

/* A rejected image must come back -ENOEXEC with a message for the user. */
static void expect_reject(const struct image *im)
{
	struct bzimage_info bi;
	struct qerr e;

	assert_int_equal(parse(im, &bi, &e), -ENOEXEC);
	assert_int_equal(e.errnum, ENOEXEC);
	assert_true(strlen(e.msg) > 10);
}

static void test_bzimage_valid(void **state)
{
	struct image im;
	struct bzimage_info bi;
	struct qerr e;

	image_make(&im, PM_SIZE);
	assert_int_equal(parse(&im, &bi, &e), 0);
	assert_int_equal(bi.version, 0x020f);
	assert_int_equal(bi.setup_size, SETUP_SIZE);
	assert_int_equal(bi.kernel_size, PM_SIZE);
	assert_int_equal(bi.init_size, INIT_SIZE);
	assert_int_equal(bi.initrd_addr_max, 0x37ffffff); /* header said 0: the old default */
	assert_int_equal(bi.cmdline_size, 2047);
	assert_true(bi.pref_address == 16 * MiB);
	assert_int_equal(bi.kernel_alignment, 2 * MiB);
	assert_int_equal(bi.xloadflags, XLF_KERNEL_64);
	assert_int_equal(e.errnum, 0);
	image_free(&im);
}

static void test_bzimage_header_defaults(void **state)
{
	struct image im;
	struct bzimage_info bi;
	struct qerr e;

	image_make(&im, PM_SIZE);
	im.h->setup_sects = 0;	/* means 4 */
	im.h->cmdline_size = 0; /* pre-2.06 default: 255 */
	im.h->initrd_addr_max = 0x7fffffff;
	im.h->version = 0x020c; /* exactly 2.12 */
	assert_int_equal(parse(&im, &bi, &e), 0);
	assert_int_equal(bi.setup_size, SETUP_SIZE);
	assert_int_equal(bi.kernel_size, PM_SIZE);
	assert_int_equal(bi.cmdline_size, 255);
	assert_int_equal(bi.initrd_addr_max, 0x7fffffff);

	/* A kernel that can take its initrd anywhere in 32 bits. */
	im.h->xloadflags |= XLF_CAN_BE_LOADED_ABOVE_4G;
	assert_int_equal(parse(&im, &bi, &e), 0);
	assert_int_equal(bi.initrd_addr_max, 0xffffffff);
	image_free(&im);
}

static void test_bzimage_more_setup_sects(void **state)
{
	struct image im;
	struct bzimage_info bi;
	struct qerr e;

	/* 30 setup sectors: the same file has a shorter protected-mode part. */
	image_make(&im, PM_SIZE);
	im.h->setup_sects = 30;
	im.h->syssize = (im.len - 31 * 512) / 16;
	assert_int_equal(parse(&im, &bi, &e), 0);
	assert_int_equal(bi.setup_size, 31 * 512);
	assert_int_equal(bi.kernel_size, im.len - 31 * 512);
	image_free(&im);
}

static void test_bzimage_too_small(void **state)
{
	static const size_t lens[] = { 0, 1, 512, HDR_OFFSET,
				       HDR_OFFSET + sizeof(struct setup_header) - 1 };
	struct bzimage_info bi;
	struct qerr e;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(lens); i++) {
		/* Exact-size allocation (at least 1 byte) so ASan sees over-reads. */
		uint8_t *buf = test_calloc(1, lens[i] ? lens[i] : 1);

		memset(&e, 0, sizeof(e));
		assert_int_equal(bzimage_parse(buf, lens[i], &bi, &e), -ENOEXEC);
		assert_true(e.msg[0] != '\0');
		test_free(buf);
	}
}

static void test_bzimage_bad_magic(void **state)
{
	struct image im;

	image_make(&im, PM_SIZE);
	im.h->header = 0x53726447;
	expect_reject(&im);
	im.h->header = 0;
	expect_reject(&im);
	image_free(&im);
}

static void test_bzimage_bad_boot_flag(void **state)
{
	struct image im;

	image_make(&im, PM_SIZE);
	im.h->boot_flag = 0x55aa;
	expect_reject(&im);
	im.h->boot_flag = 0;
	expect_reject(&im);
	image_free(&im);
}

static void test_bzimage_old_protocol(void **state)
{
	struct image im;

	image_make(&im, PM_SIZE);
	im.h->version = 0x020b; /* 2.11 */
	expect_reject(&im);
	im.h->version = 0x0100;
	expect_reject(&im);
	im.h->version = 0;
	expect_reject(&im);
	image_free(&im);
}

static void test_bzimage_no_64bit(void **state)
{
	struct image im;

	image_make(&im, PM_SIZE);
	im.h->xloadflags = XLF_CAN_BE_LOADED_ABOVE_4G | XLF_EFI_HANDOVER_32;
	expect_reject(&im);
	image_free(&im);
}

static void test_bzimage_not_loaded_high(void **state)
{
	struct image im;

	image_make(&im, PM_SIZE);
	im.h->loadflags = 0x80; /* CAN_USE_HEAP but not LOADED_HIGH: a zImage */
	expect_reject(&im);
	image_free(&im);
}

static void test_bzimage_setup_past_end(void **state)
{
	struct image im;

	/* 255 setup sectors claimed, 4 KiB of image behind the header. */
	image_make(&im, 4 * KiB);
	im.h->syssize = 0;
	im.h->setup_sects = 255;
	expect_reject(&im);
	/* Setup exactly fills the file: no protected-mode part at all. */
	im.h->setup_sects = im.len / 512 - 1;
	assert_int_equal((im.h->setup_sects + 1) * 512, im.len);
	expect_reject(&im);
	image_free(&im);
}

static void test_bzimage_truncated(void **state)
{
	struct image im;
	struct bzimage_info bi;
	struct qerr e;

	image_make(&im, PM_SIZE);
	im.h->syssize = PM_SIZE / 16 + 1;
	expect_reject(&im);
	im.h->syssize = 0xffffffff; /* * 16 must not wrap to something small */
	expect_reject(&im);
	im.h->syssize = 0x10000000; /* * 16 == 2^32 */
	expect_reject(&im);
	/* Trailing bytes after syssize (e.g. an appended signature) are fine. */
	im.h->syssize = PM_SIZE / 16 - 4;
	assert_int_equal(parse(&im, &bi, &e), 0);
	image_free(&im);
}

static void test_bzimage_init_size_small(void **state)
{
	struct image im;
	struct bzimage_info bi;
	struct qerr e;

	image_make(&im, PM_SIZE);
	im.h->init_size = PM_SIZE - 1;
	expect_reject(&im);
	im.h->init_size = 0;
	expect_reject(&im);
	im.h->init_size = PM_SIZE; /* the boundary is fine */
	assert_int_equal(parse(&im, &bi, &e), 0);
	image_free(&im);
}

/*
 * A > 4 GiB image: kernel_size is 32 bits, so the parser must refuse rather
 * than report a truncated size. The mapping is MAP_NORESERVE and only the
 * header page is touched.
 */
static void test_bzimage_over_4g(void **state)
{
	const size_t pm = 4 * GiB + PM_SIZE;
	const size_t len = SETUP_SIZE + pm;
	struct image proto;
	struct bzimage_info bi;
	struct qerr e = { 0 };
	uint8_t *buf;
	int ret;

	buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (buf == MAP_FAILED)
		skip();
	image_make(&proto, PM_SIZE);
	memcpy(buf, proto.buf, SETUP_SIZE);
	image_free(&proto);
	/* syssize consistent with the low 32 bits of the real size. */
	((struct setup_header *)(buf + HDR_OFFSET))->syssize = PM_SIZE / 16;

	memset(&bi, 0, sizeof(bi));
	ret = bzimage_parse(buf, len, &bi, &e);
	munmap(buf, len);
	if (ret == 0)
		fail_msg("accepted a %zu-byte image as kernel_size %u (truncated to 32 bits)", len,
			 bi.kernel_size);
	assert_int_not_equal(ret, 0);
}

/* Invariants every e820 map must satisfy for @ram bytes from mem_init(). */
static void check_e820(const struct boot_params *bp, uint64_t ram)
{
	const uint64_t low_end = MIN(ram, MEM_32BIT_GAP_START);
	const uint64_t hole = BOOT_ACPI_END - BOOT_EBDA_START;
	uint64_t ram_sum = 0;
	bool ebda = false, acpi = false;
	unsigned int i;

	assert_true(bp->e820_entries > 0);
	assert_true(bp->e820_entries <= ARRAY_SIZE(bp->e820_table));
	for (i = 0; i < bp->e820_entries; i++) {
		const struct boot_e820_entry *en = &bp->e820_table[i];
		uint64_t end = en->addr + en->size;

		assert_true(en->size > 0);
		assert_true(end > en->addr);
		if (i > 0) {
			const struct boot_e820_entry *p = &bp->e820_table[i - 1];

			/* Sorted and non-overlapping. */
			assert_true(p->addr + p->size <= en->addr);
		}
		assert_true(en->type == E820_TYPE_RAM || en->type == E820_TYPE_RESERVED);
		if (en->type == E820_TYPE_RAM) {
			ram_sum += en->size;
			/* RAM only where mem_init() put RAM. */
			if (en->addr < MEM_4G)
				assert_true(end <= low_end);
			else
				assert_true(en->addr == MEM_4G && end == MEM_4G + ram - low_end);
			/* Never over the EBDA or the ACPI tables. */
			assert_true(end <= BOOT_EBDA_START || en->addr >= BOOT_ACPI_END);
		} else {
			if (en->addr <= BOOT_EBDA_START && end >= 0xa0000)
				ebda = true;
			if (en->addr <= BOOT_ACPI_START && end >= BOOT_ACPI_END)
				acpi = true;
		}
	}
	/* All RAM is described, minus [0x9fc00, 0x100000). */
	assert_true(ram_sum == ram - hole);
	assert_true(ebda);
	assert_true(acpi);
}

static void test_e820(void **state)
{
	static const uint64_t sizes[] = {
		256 * MiB,	   3 * GiB, 5 * GiB, 16 * MiB, BOOT_ACPI_END + 4 * KiB,
		3 * GiB + 4 * KiB, 64 * GiB
	};
	struct boot_params *bp = test_calloc(1, sizeof(*bp));
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		/* Stale entries from a previous boot must not survive. */
		memset(bp, 0xff, sizeof(*bp));
		assert_int_equal(e820_build(bp, sizes[i]), 0);
		check_e820(bp, sizes[i]);
	}
	test_free(bp);
}

static void test_e820_layouts(void **state)
{
	struct boot_params *bp = test_calloc(1, sizeof(*bp));
	const struct boot_e820_entry *last;

	assert_int_equal(e820_build(bp, 256 * MiB), 0);
	last = &bp->e820_table[bp->e820_entries - 1];
	assert_true(last->type == E820_TYPE_RAM && last->addr + last->size == 256 * MiB);
	assert_true(bp->e820_table[0].addr == 0 && bp->e820_table[0].type == E820_TYPE_RAM);

	/* Exactly 3 GiB: nothing at or above the hole. */
	assert_int_equal(e820_build(bp, 3 * GiB), 0);
	last = &bp->e820_table[bp->e820_entries - 1];
	assert_true(last->addr + last->size == 3 * GiB);

	/* 5 GiB: 3 below the hole, 2 above 4 GiB. */
	assert_int_equal(e820_build(bp, 5 * GiB), 0);
	last = &bp->e820_table[bp->e820_entries - 1];
	assert_true(last->type == E820_TYPE_RAM);
	assert_true(last->addr == 4 * GiB);
	assert_true(last->size == 2 * GiB);
	last--;
	assert_true(last->addr + last->size == 3 * GiB);
	test_free(bp);
}

static void test_e820_too_small(void **state)
{
	struct boot_params *bp = test_calloc(1, sizeof(*bp));

	assert_int_equal(e820_build(bp, 0), -EINVAL);
	assert_int_equal(e820_build(bp, 640 * KiB), -EINVAL);
	assert_int_equal(e820_build(bp, MiB), -EINVAL);
	assert_int_equal(e820_build(bp, BOOT_ACPI_END + 4 * KiB - 1), -EINVAL);
	test_free(bp);
}

/* Placement rules: aligned, inside every limit, as high as possible. */
static void check_initrd(uint64_t ram, uint64_t size, uint64_t addr_max, uint64_t min_addr)
{
	uint64_t top = MIN(ram, MEM_32BIT_GAP_START);
	uint64_t gpa = 1;

	if (addr_max != UINT64_MAX)
		top = MIN(top, addr_max + 1);

	assert_int_equal(initrd_place(ram, size, addr_max, min_addr, &gpa), 0);
	assert_true(gpa % (4 * KiB) == 0);
	assert_true(gpa >= min_addr);
	assert_true(gpa + size <= top);
	assert_true(gpa + size + 4 * KiB > top); /* no higher aligned spot fits */
}

static void test_initrd_fits(void **state)
{
	check_initrd(256 * MiB, 10 * MiB + 123, 0x37ffffff, 16 * MiB);
	check_initrd(256 * MiB, 4 * KiB, 0xffffffff, 0);
	check_initrd(256 * MiB, 1, 0xffffffff, 0);
	/* Above-4G RAM is never used: the initrd stays under 3 GiB. */
	check_initrd(8 * GiB, 100 * MiB, 0xffffffff, 16 * MiB);
	check_initrd(4 * GiB + 512 * MiB, 64 * MiB, 0xffffffff, 16 * MiB);
	/* Exactly fills the space between min_addr and the top. */
	check_initrd(64 * MiB, 48 * MiB, 0xffffffff, 16 * MiB);
}

static void test_initrd_addr_max_below_ram(void **state)
{
	uint64_t gpa;

	check_initrd(2 * GiB, 20 * MiB, 0x37ffffff, 16 * MiB);
	assert_int_equal(initrd_place(2 * GiB, 20 * MiB, 0x37ffffff, 16 * MiB, &gpa), 0);
	assert_true(gpa == 0x38000000 - 20 * MiB);
	/* An odd addr_max still gives a page-aligned start. */
	check_initrd(1 * GiB, 5 * MiB + 7, 0x1234567, 1 * MiB);
	/* addr_max = UINT64_MAX must not overflow addr_max + 1. */
	check_initrd(1 * GiB, 5 * MiB, UINT64_MAX, 0);
	assert_int_equal(initrd_place(1 * GiB, 5 * MiB, UINT64_MAX, 0, &gpa), 0);
	assert_true(gpa == 1 * GiB - 5 * MiB);
}

static void test_initrd_too_large(void **state)
{
	uint64_t gpa = 0x1234;

	assert_int_equal(initrd_place(256 * MiB, 256 * MiB + 1, 0xffffffff, 0, &gpa), -ENOSPC);
	assert_int_equal(initrd_place(8 * GiB, 3 * GiB + 1, 0xffffffff, 0, &gpa), -ENOSPC);
	assert_int_equal(initrd_place(256 * MiB, UINT64_MAX, 0xffffffff, 0, &gpa), -ENOSPC);
	assert_int_equal(initrd_place(256 * MiB, UINT64_MAX, UINT64_MAX, 0, &gpa), -ENOSPC);
	assert_int_equal(initrd_place(2 * GiB, 0x38000001, 0x37ffffff, 0, &gpa), -ENOSPC);
	assert_true(gpa == 0x1234); /* untouched on failure */
}

static void test_initrd_min_addr(void **state)
{
	uint64_t gpa = 0x1234;

	/* Would overlap the kernel's decompression buffer. */
	assert_int_equal(initrd_place(64 * MiB, 40 * MiB, 0xffffffff, 32 * MiB, &gpa), -ENOSPC);
	assert_int_equal(initrd_place(64 * MiB, 48 * MiB + 1, 0xffffffff, 16 * MiB, &gpa), -ENOSPC);
	/* min_addr above every limit. */
	assert_int_equal(initrd_place(2 * GiB, 4 * KiB, 0x37ffffff, 0x40000000, &gpa), -ENOSPC);
	assert_int_equal(initrd_place(256 * MiB, 4 * KiB, 0xffffffff, 512 * MiB, &gpa), -ENOSPC);
	assert_true(gpa == 0x1234);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bzimage_valid),
		cmocka_unit_test(test_bzimage_header_defaults),
		cmocka_unit_test(test_bzimage_more_setup_sects),
		cmocka_unit_test(test_bzimage_too_small),
		cmocka_unit_test(test_bzimage_bad_magic),
		cmocka_unit_test(test_bzimage_bad_boot_flag),
		cmocka_unit_test(test_bzimage_old_protocol),
		cmocka_unit_test(test_bzimage_no_64bit),
		cmocka_unit_test(test_bzimage_not_loaded_high),
		cmocka_unit_test(test_bzimage_setup_past_end),
		cmocka_unit_test(test_bzimage_truncated),
		cmocka_unit_test(test_bzimage_init_size_small),
		cmocka_unit_test(test_bzimage_over_4g),
		cmocka_unit_test(test_e820),
		cmocka_unit_test(test_e820_layouts),
		cmocka_unit_test(test_e820_too_small),
		cmocka_unit_test(test_initrd_fits),
		cmocka_unit_test(test_initrd_addr_max_below_ram),
		cmocka_unit_test(test_initrd_too_large),
		cmocka_unit_test(test_initrd_min_addr),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
