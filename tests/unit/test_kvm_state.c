// SPDX-License-Identifier: MIT
/*
 * The KVM state blobs' encoder and hostile-input decoder, without KVM:
 * round trips, every truncation, lengths and counts beyond the limits,
 * missing, repeated and unknown parts, random bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/kvm_state.h"

static const struct vcpu_kvm_limits host = { .xsave_max = 8192, .xcrs = true };

static void fill(void *p, size_t n, uint8_t seed)
{
	uint8_t *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (uint8_t)(seed + i * 7);
}

/* A state with every part set to something recognisable. */
static struct vcpu_kvm_state *sample_vcpu(bool sregs2, bool xsave)
{
	struct vcpu_kvm_state *s = calloc(1, sizeof(*s));
	unsigned int i;

	assert_non_null(s);
	s->vcpu_id = 3;
	s->tsc_khz = 2596122;
	fill(&s->regs, sizeof(s->regs), 1);
	s->has_sregs2 = sregs2;
	fill(&s->sregs, sizeof(s->sregs), 2);
	fill(&s->sregs2, sizeof(s->sregs2), 3);
	if (xsave) {
		s->has_xsave = true;
		s->xsave_len = 6000;
		s->xsave = malloc(s->xsave_len);
		assert_non_null(s->xsave);
		fill(s->xsave, s->xsave_len, 4);
	} else {
		fill(&s->fpu, sizeof(s->fpu), 5);
	}
	s->has_xcrs = true;
	s->xcrs.nr_xcrs = 2;
	s->xcrs.xcrs[0].value = 7;
	s->xcrs.xcrs[1].xcr = 1;
	s->xcrs.xcrs[1].value = 0x200;
	s->nmsrs = 100;
	for (i = 0; i < s->nmsrs; i++) {
		s->msrs[i].index = 0x4b564d00 + i;
		s->msrs[i].data = 0x1122334455667788ULL ^ i;
	}
	fill(&s->lapic, sizeof(s->lapic), 6);
	fill(&s->events, sizeof(s->events), 7);
	s->mp_state.mp_state = KVM_MP_STATE_HALTED;
	fill(&s->debugregs, sizeof(s->debugregs), 8);
	s->has_cpuid = true;
	s->ncpuid = 40;
	for (i = 0; i < s->ncpuid; i++) {
		struct kvm_cpuid_entry2 *c = &s->cpuid[i];

		c->function = i < 20 ? i : 0x80000000 + i;
		c->index = i == 7 ? 0 : i % 3;
		c->flags = i % 2 ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
		c->eax = 0x1000 + i;
		c->ebx = 0x2000 + i;
		c->ecx = 0x3000 + i;
		c->edx = 0x4000 + i;
	}
	return s;
}

static void encode(const struct vcpu_kvm_state *s, struct sbuf *b)
{
	sbuf_init(b);
	vcpu_kvm_state_encode(s, b);
	assert_int_equal(sbuf_status(b), 0);
}

static void assert_same_state(const struct vcpu_kvm_state *a, const struct vcpu_kvm_state *b)
{
	assert_int_equal(a->vcpu_id, b->vcpu_id);
	assert_int_equal(a->tsc_khz, b->tsc_khz);
	assert_memory_equal(&a->regs, &b->regs, sizeof(a->regs));
	assert_int_equal(a->has_sregs2, b->has_sregs2);
	if (a->has_sregs2)
		assert_memory_equal(&a->sregs2, &b->sregs2, sizeof(a->sregs2));
	else
		assert_memory_equal(&a->sregs, &b->sregs, sizeof(a->sregs));
	assert_int_equal(a->has_xsave, b->has_xsave);
	if (a->has_xsave) {
		assert_int_equal(a->xsave_len, b->xsave_len);
		assert_memory_equal(a->xsave, b->xsave, a->xsave_len);
	} else {
		assert_memory_equal(&a->fpu, &b->fpu, sizeof(a->fpu));
	}
	assert_int_equal(a->has_xcrs, b->has_xcrs);
	assert_int_equal(a->xcrs.nr_xcrs, b->xcrs.nr_xcrs);
	assert_memory_equal(a->xcrs.xcrs, b->xcrs.xcrs, a->xcrs.nr_xcrs * sizeof(a->xcrs.xcrs[0]));
	assert_int_equal(a->nmsrs, b->nmsrs);
	assert_memory_equal(a->msrs, b->msrs, a->nmsrs * sizeof(a->msrs[0]));
	assert_memory_equal(&a->lapic, &b->lapic, sizeof(a->lapic));
	assert_memory_equal(&a->events, &b->events, sizeof(a->events));
	assert_int_equal(a->mp_state.mp_state, b->mp_state.mp_state);
	assert_memory_equal(&a->debugregs, &b->debugregs, sizeof(a->debugregs));
	assert_int_equal(a->has_cpuid, b->has_cpuid);
	assert_int_equal(a->ncpuid, b->ncpuid);
	assert_memory_equal(a->cpuid, b->cpuid, a->ncpuid * sizeof(a->cpuid[0]));
}

static void test_vcpu_roundtrip(void **state)
{
	static const bool combos[][2] = { { true, true }, { false, false }, { true, false } };
	unsigned int i;

	(void)state;
	{
		/* Without a CPU model: a version 1 blob, as older qlites wrote. */
		struct vcpu_kvm_state *a = sample_vcpu(true, true), *d = calloc(1, sizeof(*d));
		struct qerr e = { 0 };
		struct sbuf b;
		uint32_t ver;

		assert_non_null(d);
		a->has_cpuid = false;
		a->ncpuid = 0;
		encode(a, &b);
		memcpy(&ver, b.data + 4, 4);
		assert_int_equal(ver, 1);
		assert_int_equal(vcpu_kvm_state_decode(b.data, b.len, &host, d, &e), 0);
		assert_same_state(a, d);
		vcpu_kvm_state_release(a);
		vcpu_kvm_state_release(d);
		free(a);
		free(d);
		sbuf_free(&b);
	}
	for (i = 0; i < 3; i++) {
		struct vcpu_kvm_state *s = sample_vcpu(combos[i][0], combos[i][1]);
		struct vcpu_kvm_state *d = calloc(1, sizeof(*d));
		struct qerr e = { 0 };
		struct sbuf b, again;

		encode(s, &b);
		assert_int_equal(vcpu_kvm_state_decode(b.data, b.len, &host, d, &e), 0);
		assert_same_state(s, d);
		/* Encoding is a function of the state: the same bytes again. */
		encode(d, &again);
		assert_int_equal(again.len, b.len);
		assert_memory_equal(again.data, b.data, b.len);
		vcpu_kvm_state_release(s);
		vcpu_kvm_state_release(d);
		assert_null(d->xsave);
		free(s);
		free(d);
		sbuf_free(&b);
		sbuf_free(&again);
	}
}

/* Refused, with the message starting with a part's name (or "header"). */
static void expect_refused(const uint8_t *p, size_t len, const struct vcpu_kvm_limits *lim,
			   const char *want)
{
	struct vcpu_kvm_state *d = calloc(1, sizeof(*d));
	struct qerr e = { 0 };
	unsigned int tag;
	bool named;
	int ret;

	ret = vcpu_kvm_state_decode(p, len, lim, d, &e);
	if (ret >= 0)
		fail_msg("a %zu-byte blob was accepted (want \"%s\")", len, want ? want : "");
	assert_null(d->xsave); /* nothing left allocated */
	named = !strncmp(e.msg, "header", 6);
	for (tag = 1; tag < VCPU_PART_COUNT && !named; tag++) {
		const char *n = vcpu_kvm_part_name(tag);

		named = !strncmp(e.msg, n, strlen(n)) && e.msg[strlen(n)] == ':';
	}
	if (!named)
		fail_msg("\"%s\" names no part", e.msg);
	if (want && !strstr(e.msg, want))
		fail_msg("\"%s\" does not say \"%s\"", e.msg, want);
	free(d);
}

static void test_vcpu_truncated(void **state)
{
	struct vcpu_kvm_state *s = sample_vcpu(true, true);
	struct sbuf b;
	size_t l;

	(void)state;
	encode(s, &b);
	for (l = 0; l < b.len; l++)
		expect_refused(b.data, l, &host, NULL);
	expect_refused(b.data, 3, &host, "header");
	vcpu_kvm_state_release(s);
	free(s);
	sbuf_free(&b);
}

/* Offset of part @tag's header in @b (the test's own walk). */
static size_t part_at(const struct sbuf *b, uint32_t tag)
{
	size_t off = 8;

	while (off + 8 <= b->len) {
		uint32_t t, l;

		memcpy(&t, b->data + off, 4);
		memcpy(&l, b->data + off + 4, 4);
		if (t == tag)
			return off;
		off += 8 + l;
	}
	fail_msg("no part %u", tag);
	return 0;
}

static void put32(struct sbuf *b, size_t off, uint32_t v)
{
	memcpy(b->data + off, &v, 4);
}

static void test_vcpu_hostile(void **state)
{
	struct vcpu_kvm_state *s = sample_vcpu(true, true);
	struct vcpu_kvm_limits no_xsave = { .xsave_max = 0, .xcrs = true };
	struct vcpu_kvm_limits no_xcrs = { .xsave_max = 8192, .xcrs = false };
	struct vcpu_kvm_limits small = { .xsave_max = 4096, .xcrs = true };
	struct sbuf good, b;
	size_t off;

	(void)state;
	encode(s, &good);
	sbuf_init(&b);
#define FRESH() (sbuf_reset(&b), sbuf_put(&b, good.data, good.len))

	FRESH();
	put32(&b, 0, VM_KVM_STATE_MAGIC);
	expect_refused(b.data, b.len, &host, "magic");
	FRESH();
	put32(&b, 4, VCPU_KVM_STATE_VERSION + 1);
	expect_refused(b.data, b.len, &host, "version");

	/* Lengths: huge, one short, one long (fixed-size parts). */
	off = part_at(&good, VCPU_PART_REGS);
	FRESH();
	put32(&b, off + 4, 0xffffffffu);
	expect_refused(b.data, b.len, &host, "regs:");
	FRESH();
	put32(&b, off + 4, sizeof(struct kvm_regs) - 1);
	expect_refused(b.data, b.len, &host, "regs:");
	off = part_at(&good, VCPU_PART_LAPIC);
	FRESH();
	put32(&b, off + 4, sizeof(struct kvm_lapic_state) + 1);
	expect_refused(b.data, b.len, &host, "lapic:");

	/* MSR counts: beyond the bound, disagreeing with the length, repeats. */
	off = part_at(&good, VCPU_PART_MSRS);
	FRESH();
	put32(&b, off + 8, 0xffffffffu);
	expect_refused(b.data, b.len, &host, "msrs:");
	FRESH();
	put32(&b, off + 8, VCPU_KVM_STATE_MAX_MSRS + 1);
	expect_refused(b.data, b.len, &host, "msrs:");
	FRESH();
	put32(&b, off + 8, 101);
	expect_refused(b.data, b.len, &host, "msrs:");
	FRESH();
	put32(&b, off + 8 + 4 + 12 * 7, 0x4b564d00); /* MSR 7 := MSR 0 */
	expect_refused(b.data, b.len, &host, "msrs: MSR 0x4b564d00 appears twice");

	off = part_at(&good, VCPU_PART_XCRS);
	FRESH();
	put32(&b, off + 8, 17);
	expect_refused(b.data, b.len, &host, "xcrs:");

	/* What this host's KVM cannot take. */
	expect_refused(good.data, good.len, &no_xsave, "xsave: this KVM has no");
	expect_refused(good.data, good.len, &no_xcrs, "xcrs: this KVM has no");
	expect_refused(good.data, good.len, &small, "xsave: 6000 bytes");
	s->xsave_len = 100;
	sbuf_free(&b);
	encode(s, &b);
	expect_refused(b.data, b.len, &host, "xsave: 100 bytes");

	/* Missing, repeated, conflicting and unknown parts. */
	s->xsave_len = 6000;
	FRESH();
	sbuf_put(&b, good.data + part_at(&good, VCPU_PART_MP_STATE), 12);
	expect_refused(b.data, b.len, &host, "mp-state: appears twice");
	FRESH();
	sbuf_put_u32(&b, VCPU_PART_SREGS);
	sbuf_put_u32(&b, sizeof(struct kvm_sregs));
	sbuf_put(&b, &s->sregs, sizeof(s->sregs));
	expect_refused(b.data, b.len, &host, "present together");
	FRESH();
	sbuf_put_u32(&b, VCPU_PART_COUNT);
	sbuf_put_u32(&b, 0);
	expect_refused(b.data, b.len, &host, "unknown tag");
	FRESH();
	sbuf_put_u32(&b, 0);
	sbuf_put_u32(&b, 0);
	expect_refused(b.data, b.len, &host, "unknown tag 0");
	/* Cut the last parts: a valid prefix, still incomplete. */
	expect_refused(good.data, part_at(&good, VCPU_PART_DEBUGREGS), &host,
		       "debugregs: missing");
	expect_refused(good.data, part_at(&good, VCPU_PART_CPUID), &host, "cpuid: missing");

	/* The CPU model: only in version 2, bounded, each leaf once, known flags. */
	off = part_at(&good, VCPU_PART_CPUID);
	FRESH();
	put32(&b, 4, 1);
	expect_refused(b.data, b.len, &host, "cpuid: not part of a version 1 blob");
	FRESH();
	put32(&b, off + 8, VCPU_KVM_STATE_MAX_CPUID + 1);
	expect_refused(b.data, b.len, &host, "cpuid: 257 entries");
	FRESH();
	put32(&b, off + 8, 39);
	expect_refused(b.data, b.len, &host, "cpuid: 1124 bytes for 39 entries");
	FRESH();
	put32(&b, off + 12 + 28 * 5, 4); /* entry 5 takes entry 4's leaf, 0x4.1 */
	put32(&b, off + 12 + 28 * 5 + 4, 1);
	expect_refused(b.data, b.len, &host, "cpuid: leaf 0x4.1 appears twice");
	FRESH();
	put32(&b, off + 12 + 28 * 2 + 8, 0x80);
	expect_refused(b.data, b.len, &host, "cpuid: leaf 0x2.2: flags 0x80");

#undef FRESH
	vcpu_kvm_state_release(s);
	free(s);
	sbuf_free(&good);
	sbuf_free(&b);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Random and mutated blobs: never a crash, a leak or an unnamed refusal. */
static void test_vcpu_random(void **state)
{
	struct vcpu_kvm_state *s = sample_vcpu(true, true), *d = calloc(1, sizeof(*d));
	struct sbuf good, b;
	unsigned int i, j;

	(void)state;
	encode(s, &good);
	sbuf_init(&b);
	for (i = 0; i < 5000; i++) {
		size_t n = rng() % (good.len + 64);

		sbuf_reset(&b);
		for (j = 0; j < n; j++)
			sbuf_put_u8(&b, (uint8_t)rng());
		if ((i & 1) && n >= 8)
			memcpy(b.data, good.data, 8);
		expect_refused(b.data, b.len, &host, NULL);
	}
	for (i = 0; i < 5000; i++) {
		struct qerr e = { 0 };

		sbuf_reset(&b);
		sbuf_put(&b, good.data, good.len);
		for (j = 0; j < 1 + rng() % 4; j++)
			b.data[rng() % b.len] ^= (uint8_t)(1 + rng() % 255);
		if (vcpu_kvm_state_decode(b.data, b.len, &host, d, &e) == 0)
			vcpu_kvm_state_release(d); /* payload bytes: still a valid blob */
		else
			assert_null(d->xsave);
	}
	vcpu_kvm_state_release(s);
	free(s);
	free(d);
	sbuf_free(&good);
	sbuf_free(&b);
}

static void test_vm_blob(void **state)
{
	struct vm_kvm_state s, d;
	struct qerr e = { 0 };
	struct sbuf b, c;
	size_t l;

	(void)state;
	fill(&s, sizeof(s), 9);
	sbuf_init(&b);
	vm_kvm_state_encode(&s, &b);
	assert_int_equal(sbuf_status(&b), 0);
	assert_int_equal(vm_kvm_state_decode(b.data, b.len, &d, &e), 0);
	assert_memory_equal(&s.pic, &d.pic, sizeof(s.pic));
	assert_memory_equal(&s.ioapic, &d.ioapic, sizeof(s.ioapic));
	assert_memory_equal(&s.pit, &d.pit, sizeof(s.pit));
	assert_true(s.clock.clock == d.clock.clock && s.clock.flags == d.clock.flags &&
		    s.clock.realtime == d.clock.realtime && s.clock.host_tsc == d.clock.host_tsc);
	sbuf_init(&c);
	vm_kvm_state_encode(&d, &c);
	assert_int_equal(c.len, b.len);
	assert_memory_equal(c.data, b.data, b.len);

	for (l = 0; l < b.len; l++) {
		unsigned int tag;
		bool named;

		memset(&e, 0, sizeof(e));
		assert_true(vm_kvm_state_decode(b.data, l, &d, &e) < 0);
		named = !strncmp(e.msg, "header", 6);
		for (tag = 1; tag < VM_PART_COUNT && !named; tag++)
			named = !strncmp(e.msg, vm_kvm_part_name(tag),
					 strlen(vm_kvm_part_name(tag)));
		if (!named)
			fail_msg("\"%s\" names no part", e.msg);
	}
	/* A vCPU blob is not a VM blob. */
	memset(&e, 0, sizeof(e));
	put32(&b, 0, VCPU_KVM_STATE_MAGIC);
	assert_true(vm_kvm_state_decode(b.data, b.len, &d, &e) < 0);
	assert_non_null(strstr(e.msg, "magic"));
	assert_null(vm_kvm_part_name(VM_PART_COUNT));
	assert_null(vcpu_kvm_part_name(1000));
	sbuf_free(&b);
	sbuf_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vcpu_roundtrip), cmocka_unit_test(test_vcpu_truncated),
		cmocka_unit_test(test_vcpu_hostile),   cmocka_unit_test(test_vcpu_random),
		cmocka_unit_test(test_vm_blob),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
