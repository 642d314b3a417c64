// SPDX-License-Identifier: MIT
/* cpuid_filter on synthetic KVM_GET_SUPPORTED_CPUID output. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/util.h"
#include "qlite/vcpu.h"

#define ECX_HYPERVISOR (1u << 31)
#define ECX_PDCM (1u << 15)
/* AMD PerfCtrExtCore, PerfCtrExtNB, PerfCtrExtLLC: PMU bits hidden by default. */
#define AMD_PERFCTR_BITS ((1u << 23) | (1u << 24) | (1u << 28))
#define EDX_HTT (1u << 28)
#define SIG_INDEX KVM_CPUID_FLAG_SIGNIFCANT_INDEX

/* Plausible host values; the filter must only change what it owns. */
static const struct kvm_cpuid_entry2 host_entries[] = {
	{ .function = 0, .eax = 0x1f, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
	/* APIC id 0x12 and count 0x34 from the host must be replaced. */
	{ .function = 1,
	  .eax = 0x000906ea,
	  .ebx = 0x12340800,
	  .ecx = 0x7ffafbff,
	  .edx = 0x0fabfbff },
	{ .function = 4, .index = 0, .flags = SIG_INDEX, .eax = 0x1c004121, .ebx = 0x01c0003f },
	{ .function = 7, .index = 0, .flags = SIG_INDEX, .ebx = 0x029c67af },
	{ .function = 0xa, .eax = 0x07300404, .ebx = 0, .ecx = 0, .edx = 0x00000603 },
	{ .function = 0xb,
	  .index = 0,
	  .flags = SIG_INDEX,
	  .eax = 1,
	  .ebx = 2,
	  .ecx = 0x100,
	  .edx = 0x55 },
	{ .function = 0xb,
	  .index = 1,
	  .flags = SIG_INDEX,
	  .eax = 4,
	  .ebx = 8,
	  .ecx = 0x201,
	  .edx = 0x55 },
	{ .function = 0x1f,
	  .index = 0,
	  .flags = SIG_INDEX,
	  .eax = 1,
	  .ebx = 2,
	  .ecx = 0x100,
	  .edx = 0x66 },
	{ .function = 0x1f,
	  .index = 1,
	  .flags = SIG_INDEX,
	  .eax = 4,
	  .ebx = 8,
	  .ecx = 0x201,
	  .edx = 0x66 },
	{ .function = 0x80000000, .eax = 0x80000021, .ebx = 0x68747541 },
	{ .function = 0x80000001, .ecx = 0x75c237ff, .edx = 0x2fd3fbff },
	{ .function = 0x8000001e, .eax = 0x77, .ebx = 0x00000100, .ecx = 0x00000000 },
};

#define NENT ARRAY_SIZE(host_entries)

static struct kvm_cpuid2 *cpuid_new(void)
{
	struct kvm_cpuid2 *c = test_calloc(1, sizeof(*c) + NENT * sizeof(c->entries[0]));

	assert_non_null(c);
	c->nent = NENT;
	memcpy(c->entries, host_entries, sizeof(host_entries));
	return c;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	unsigned int i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	fail_msg("leaf 0x%x.%u missing", fn, idx);
	return NULL;
}

/* Check one filtered table for vCPU @v of @n; the host values are the reference. */
static void check_filtered(const struct kvm_cpuid2 *c, unsigned int v, unsigned int n)
{
	unsigned int i;

	assert_int_equal(c->nent, NENT);
	for (i = 0; i < NENT; i++) {
		const struct kvm_cpuid_entry2 *h = &host_entries[i];
		const struct kvm_cpuid_entry2 *e = find(c, h->function, h->index);

		assert_int_equal(e->flags, h->flags);
		switch (h->function) {
		case 1:
			assert_int_equal(e->ebx >> 24, v); /* initial APIC id */
			assert_int_equal(e->ebx & 0xffff, h->ebx & 0xffff);
			assert_true(((e->ebx >> 16) & 0xff) >= (n > 255 ? 255 : n));
			assert_int_equal(e->ecx, (h->ecx & ~ECX_PDCM) | ECX_HYPERVISOR);
			assert_int_equal(e->eax, h->eax);
			if (n > 1)
				assert_int_equal(e->edx, h->edx | EDX_HTT);
			else
				assert_int_equal(e->edx & ~EDX_HTT, h->edx & ~EDX_HTT);
			break;
		case 0xa:
			/* No PMU unless asked for. */
			assert_int_equal(e->eax, 0);
			assert_int_equal(e->ebx, 0);
			assert_int_equal(e->ecx, 0);
			assert_int_equal(e->edx, 0);
			break;
		case 0x80000001:
			/* No PMU unless asked for: AMD's counter extensions hidden. */
			assert_int_equal(e->ecx, h->ecx & ~AMD_PERFCTR_BITS);
			assert_int_equal(e->edx, h->edx);
			assert_int_equal(e->eax, h->eax);
			break;
		case 0xb:
		case 0x1f:
			/* x2APIC id on every subleaf; level info untouched. */
			assert_int_equal(e->edx, v);
			assert_int_equal(e->eax, h->eax);
			assert_int_equal(e->ebx, h->ebx);
			assert_int_equal(e->ecx, h->ecx);
			break;
		case 0x8000001e:
			assert_int_equal(e->eax, v); /* extended APIC id */
			assert_int_equal(e->ebx, h->ebx);
			assert_int_equal(e->ecx, h->ecx);
			break;
		default:
			assert_memory_equal(e, h, sizeof(*e));
			break;
		}
	}
}

static void check_ncpus(unsigned int n)
{
	unsigned int v;

	for (v = 0; v < n; v++) {
		struct kvm_cpuid2 *c = cpuid_new();

		assert_int_equal(cpuid_filter(c, v, n, false), 0);
		check_filtered(c, v, n);
		test_free(c);
	}
}

static void test_one_cpu(void **state)
{
	check_ncpus(1);
}

static void test_smp(void **state)
{
	check_ncpus(2);
	check_ncpus(4);
	check_ncpus(64);
	check_ncpus(255);
}

/* Filtering an already-filtered table (another vCPU's copy) must not mix ids. */
static void test_refilter(void **state)
{
	struct kvm_cpuid2 *c = cpuid_new();

	assert_int_equal(cpuid_filter(c, 5, 8, false), 0);
	assert_int_equal(cpuid_filter(c, 3, 8, false), 0);
	check_filtered(c, 3, 8);
	assert_int_equal(cpuid_filter(c, 0, 1, false), 0);
	assert_int_equal(find(c, 1, 0)->ebx >> 24, 0);
	assert_int_equal(find(c, 0xb, 1)->edx, 0);
	test_free(c);
}

static void test_invalid(void **state)
{
	struct kvm_cpuid2 *c = cpuid_new();

	assert_int_equal(cpuid_filter(c, 1, 1, false), -EINVAL);
	assert_int_equal(cpuid_filter(c, 64, 64, false), -EINVAL);
	assert_int_equal(cpuid_filter(c, UINT32_MAX, 4, false), -EINVAL);
	assert_int_equal(cpuid_filter(c, 0, 0, false), -EINVAL);
	assert_int_equal(cpuid_filter(NULL, 0, 1, false), -EINVAL);
	/* A rejected call leaves the table as it was. */
	assert_memory_equal(c->entries, host_entries, sizeof(host_entries));
	test_free(c);
}

static void test_empty(void **state)
{
	struct kvm_cpuid2 c = { .nent = 0 };

	assert_int_equal(cpuid_filter(&c, 0, 1, false), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_cpu),
		cmocka_unit_test(test_smp),
		cmocka_unit_test(test_refilter),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_empty),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
