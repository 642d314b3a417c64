// SPDX-License-Identifier: MIT
/*
 * vPMU set-up on Intel- and AMD-style KVM_GET_SUPPORTED_CPUID tables: which
 * hosts can give a guest a PMU, what CPUID a vCPU sees with --pmu off and
 * on, and the KVM_SET_PMU_EVENT_FILTER allow-list --pmu allow= builds. The
 * PMU itself cannot run on the project's machines (no host PMU); this is
 * the part that can be checked without one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/vcpu.h"
#include "qlite/vpmu.h"

#define SIG KVM_CPUID_FLAG_SIGNIFCANT_INDEX

/* An Intel host (Ice Lake-like) whose KVM offers arch PMU v2, 8 GP counters. */
static const struct kvm_cpuid_entry2 intel[] = {
	{ .function = 0, .eax = 0x1b, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
	{ .function = 1, .eax = 0x000606a6, .ebx = 0x00000800, .ecx = 0xfffab223, .edx = 0x0f8bfbff },
	{ .function = 0xa, .eax = 0x08300802, .ebx = 0, .ecx = 0, .edx = 0x00008603 },
	{ .function = 0x23, .eax = 3, .ebx = 0xff, .ecx = 0xff, .edx = 0x7 },
	{ .function = 0x80000000, .eax = 0x80000008 },
	{ .function = 0x80000001, .ecx = 0x00000121, .edx = 0x2c100800 },
};

/* An AMD Zen 4 host: PerfCtrExtCore and PerfMonV2 (6 core counters). */
static const struct kvm_cpuid_entry2 amd[] = {
	{ .function = 0, .eax = 0x10, .ebx = 0x68747541, .ecx = 0x444d4163, .edx = 0x69746e65 },
	{ .function = 1, .eax = 0x00a10f11, .ebx = 0x00000800, .ecx = 0xfef8320b, .edx = 0x178bfbff },
	{ .function = 0xa }, /* KVM reports the leaf empty on AMD */
	{ .function = 0x80000000, .eax = 0x80000028 },
	{ .function = 0x80000001, .eax = 0x00a10f11, .ecx = 0x75c237ff, .edx = 0x2fd3fbff },
	{ .function = 0x80000022, .eax = 0x1, .ebx = 0x6 },
};

/* This project's kvm-pvm host: AMD, no PMU at all (measured). */
static const struct kvm_cpuid_entry2 pvm[] = {
	{ .function = 0, .eax = 0x1c, .ebx = 0x68747541, .ecx = 0x444d4163, .edx = 0x69746e65 },
	{ .function = 1, .eax = 0x00b00f21, .ebx = 0x01020800, .ecx = 0x81202000, .edx = 0x078bfbff },
	{ .function = 0xa },
	{ .function = 0x80000001, .eax = 0x00b00f21, .ebx = 0x40000000, .ecx = 0x00400393,
	  .edx = 0x23d3fbff },
};

static struct kvm_cpuid2 *table(const struct kvm_cpuid_entry2 *e, size_t n)
{
	struct kvm_cpuid2 *c = test_calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	assert_non_null(c);
	c->nent = (uint32_t)n;
	memcpy(c->entries, e, n * sizeof(*e));
	return c;
}

#define TABLE(x) table(x, sizeof(x) / sizeof(x[0]))

static const struct kvm_cpuid_entry2 *leaf(const struct kvm_cpuid2 *c, uint32_t fn)
{
	unsigned int i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn)
			return &c->entries[i];
	fail_msg("leaf 0x%x missing", fn);
	return NULL;
}

static void test_vendor(void **state)
{
	struct kvm_cpuid2 *c = TABLE(intel);
	struct kvm_cpuid_entry2 hygon[] = {
		{ .function = 0, .ebx = 0x6f677948, .ecx = 0x656e6975, .edx = 0x6e65476e },
	};
	struct kvm_cpuid2 empty = { .nent = 0 };

	assert_int_equal(cpuid_vendor(c), CPU_VENDOR_INTEL);
	test_free(c);
	c = TABLE(amd);
	assert_int_equal(cpuid_vendor(c), CPU_VENDOR_AMD);
	test_free(c);
	c = TABLE(hygon);
	assert_int_equal(cpuid_vendor(c), CPU_VENDOR_AMD);
	c->entries[0].ebx = 0x12345678;
	assert_int_equal(cpuid_vendor(c), CPU_VENDOR_OTHER);
	test_free(c);
	assert_int_equal(cpuid_vendor(&empty), CPU_VENDOR_OTHER);
}

static void expect_host(const struct kvm_cpuid2 *c, int cap, bool host, int want,
			 const char *needle)
{
	struct qerr e = { 0 };

	assert_int_equal(vpmu_host_check(c, cap, host, &e), want);
	if (needle && !strstr(e.msg, needle))
		fail_msg("\"%s\" lacks \"%s\"", e.msg, needle);
}

static void test_host_check(void **state)
{
	struct kvm_cpuid2 *c = TABLE(intel);

	expect_host(c, 1, true, 0, NULL);
	expect_host(c, -1, false, 0, NULL); /* old kernel: CPUID decides */
	expect_host(c, 0, true, -ENOTSUP, "KVM_CAP_PMU_CAPABILITY is 0");
	c->entries[2].eax = 0; /* leaf 0xA empty: no architectural PMU */
	expect_host(c, -1, true, -ENOTSUP, "leaf 0xA");
	c->entries[2].eax = 0x00000002; /* version 2 but no counters */
	expect_host(c, -1, true, -ENOTSUP, "leaf 0xA");
	test_free(c);

	c = TABLE(amd);
	expect_host(c, 1, true, 0, NULL);
	c->entries[4].ecx &= ~(1u << 23); /* PerfMonV2 alone is enough */
	expect_host(c, -1, false, 0, NULL);
	c->entries[5].eax = 0; /* legacy counters only: KVM or the host must say */
	expect_host(c, 1, false, 0, NULL);
	expect_host(c, -1, true, 0, NULL);
	expect_host(c, -1, false, -ENOTSUP, "no host PMU");
	expect_host(c, 0, true, -ENOTSUP, "KVM_CAP_PMU_CAPABILITY");
	test_free(c);

	/* What `--pmu on` meets on this project's machines. */
	c = TABLE(pvm);
	expect_host(c, 0, false, -ENOTSUP, "offers guests no PMU");
	expect_host(c, -1, false, -ENOTSUP, "offers guests no PMU");
	c->entries[0].ebx = 0; /* unknown vendor */
	expect_host(c, 1, true, -ENOTSUP, "vendor");
	test_free(c);
}

static void test_cpuid_off_intel(void **state)
{
	struct kvm_cpuid2 *c = TABLE(intel);

	assert_int_equal(cpuid_filter(c, 0, 1, false), 0);
	assert_int_equal(leaf(c, 0xa)->eax, 0);
	assert_int_equal(leaf(c, 0xa)->edx, 0);
	assert_int_equal(leaf(c, 0x23)->eax, 0);
	assert_int_equal(leaf(c, 0x23)->ebx, 0);
	assert_int_equal(leaf(c, 1)->ecx & (1u << 15), 0); /* PDCM */
	/* Unrelated feature bits stay. */
	assert_int_equal(leaf(c, 1)->ecx & ~(1u << 15), (intel[1].ecx & ~(1u << 15)) | (1u << 31));
	assert_int_equal(leaf(c, 0x80000001)->ecx, intel[5].ecx);
	test_free(c);
}

static void test_cpuid_off_amd(void **state)
{
	struct kvm_cpuid2 *c = TABLE(amd);

	assert_int_equal(cpuid_filter(c, 1, 2, false), 0);
	assert_int_equal(leaf(c, 0x80000001)->ecx & ((1u << 23) | (1u << 24) | (1u << 28)), 0);
	assert_int_equal(leaf(c, 0x80000001)->ecx,
			 amd[4].ecx & ~((1u << 23) | (1u << 24) | (1u << 28)));
	assert_int_equal(leaf(c, 0x80000022)->eax, 0);
	assert_int_equal(leaf(c, 0x80000022)->ebx, 0);
	assert_int_equal(leaf(c, 0x80000001)->edx, amd[4].edx);
	test_free(c);
}

static void test_cpuid_on(void **state)
{
	struct kvm_cpuid2 *c = TABLE(intel);

	/* On: what KVM offers reaches the guest (topology still filtered). */
	assert_int_equal(cpuid_filter(c, 0, 1, true), 0);
	assert_memory_equal(leaf(c, 0xa), &intel[2], sizeof(intel[2]));
	assert_memory_equal(leaf(c, 0x23), &intel[3], sizeof(intel[3]));
	assert_true(leaf(c, 1)->ecx & (1u << 15));
	test_free(c);
	c = TABLE(amd);
	assert_int_equal(cpuid_filter(c, 0, 1, true), 0);
	assert_int_equal(leaf(c, 0x80000001)->ecx, amd[4].ecx);
	assert_int_equal(leaf(c, 0x80000022)->eax, 1);
	assert_int_equal(leaf(c, 0x80000022)->ebx, 6);
	test_free(c);
}

static struct vpmu_config parse_ok(const char *arg)
{
	struct vpmu_config c;
	struct qerr e = { 0 };

	if (vpmu_parse(arg, &c, &e))
		fail_msg("%s: %s", arg, e.msg);
	return c;
}

static void expect_parse_err(const char *arg, const char *needle)
{
	struct vpmu_config c;
	struct qerr e = { 0 };

	assert_int_not_equal(vpmu_parse(arg, &c, &e), 0);
	if (!strstr(e.msg, needle))
		fail_msg("%s: \"%s\" lacks \"%s\"", arg, e.msg, needle);
}

static void test_parse(void **state)
{
	struct vpmu_config c = parse_ok("off");
	char many[2048] = "allow=";
	int i;

	assert_int_equal(c.mode, VPMU_OFF);
	c = parse_ok("on");
	assert_int_equal(c.mode, VPMU_ON);
	c = parse_ok("allow=cycles,instructions,0x01c2,0XFF");
	assert_int_equal(c.mode, VPMU_ALLOW);
	assert_int_equal(c.nevents, 4);
	assert_false(c.events[0].raw);
	assert_string_equal(c.events[1].name, "instructions");
	assert_true(c.events[2].raw && c.events[2].value == 0x01c2);
	assert_true(c.events[3].raw && c.events[3].value == 0xff);
	expect_parse_err("yes", "expected off, on or allow=");
	expect_parse_err("ON", "expected off, on or allow=");
	expect_parse_err("allow=", "at least one event");
	expect_parse_err("allow=cycles,,branches", "empty event");
	expect_parse_err("allow=cycles,", "empty event");
	expect_parse_err("allow=bogus", "unknown event 'bogus'");
	expect_parse_err("allow=0x", "not a hexadecimal");
	expect_parse_err("allow=0xzz", "not a hexadecimal");
	expect_parse_err("allow=0x10000000000000000", "not a hexadecimal");
	expect_parse_err("allow=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "too long");
	for (i = 0; i < 70; i++)
		strcat(many, i ? ",cycles" : "cycles");
	expect_parse_err(many, "at most 64");
}

static void test_filter(void **state)
{
	struct vpmu_config c = parse_ok("allow=instructions,cycles,ref-cycles,branches,0x12345");
	struct kvm_pmu_event_filter *f;
	struct qerr e = { 0 };

	assert_int_equal(vpmu_build_filter(&c, CPU_VENDOR_INTEL, &f, &e), 0);
	assert_int_equal(f->action, KVM_PMU_EVENT_ALLOW);
	assert_int_equal(f->nevents, 5);
	assert_true(f->events[0] == 0x00c0);
	assert_true(f->events[1] == 0x003c);
	assert_true(f->events[2] == 0x013c);
	assert_true(f->events[3] == 0x00c4);
	assert_true(f->events[4] == 0x12345);
	/* Fixed counters 0 (instructions), 1 (cycles), 2 (ref-cycles). */
	assert_int_equal(f->fixed_counter_bitmap, 0x7);
	assert_int_equal(f->flags, 0);
	free(f);

	c = parse_ok("allow=cycles,instructions,branch-misses,cache-misses");
	assert_int_equal(vpmu_build_filter(&c, CPU_VENDOR_AMD, &f, &e), 0);
	assert_int_equal(f->nevents, 4);
	assert_true(f->events[0] == 0x0076);
	assert_true(f->events[1] == 0x00c0);
	assert_true(f->events[2] == 0x00c3);
	assert_true(f->events[3] == 0x0964);
	assert_int_equal(f->fixed_counter_bitmap, 0); /* AMD has none */
	free(f);

	c = parse_ok("allow=ref-cycles");
	assert_int_equal(vpmu_build_filter(&c, CPU_VENDOR_AMD, &f, &e), -ENOTSUP);
	assert_non_null(strstr(e.msg, "Intel only"));
	memset(&e, 0, sizeof(e));
	assert_int_equal(vpmu_build_filter(&c, CPU_VENDOR_OTHER, &f, &e), -ENOTSUP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vendor),	       cmocka_unit_test(test_host_check),
		cmocka_unit_test(test_cpuid_off_intel), cmocka_unit_test(test_cpuid_off_amd),
		cmocka_unit_test(test_cpuid_on),	       cmocka_unit_test(test_parse),
		cmocka_unit_test(test_filter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
