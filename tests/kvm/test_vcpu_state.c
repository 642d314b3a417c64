// SPDX-License-Identifier: MIT
/*
 * Checkpoint/restore of the KVM state (vcpu_state_*, vm_kvm_state_*) with
 * the GT_STATE_WORK guest on two vCPUs:
 *  A: uninterrupted: the reference results;
 *  B: paused over QMP mid-run; VM and vCPU state saved, RAM copied. On the
 *     paused VM: save -> load -> save gives the same bytes but for what
 *     time moves, and hostile blobs fail naming the part. Then B goes on
 *     and must end like A;
 *  C: a second VM in this process takes B's RAM and state, waits,
 *     starts (vm_start(vm, false)) and must end like A, its kvmclock
 *     showing neither the checkpoint's age nor the wait;
 *  D: the same, started paused (-S) and resumed over QMP after the wait.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/client.h"
#include "qlite/kvm_state.h"
#include "qlite/sbuf.h"
#include "qlite/vcpu.h"

#define NCPUS 2
#define MEM (64 * MiB)
/* Age of the checkpoint when C starts, and C's wait between load and start. */
#define CHECKPOINT_AGE_NS (4000ULL * 1000000)
#define LOAD_TO_START_US (3000 * 1000)
/* Largest kvmclock step across the checkpoint the guest may see. */
#define MAX_STEP_NS (1500ULL * 1000000)

#define MSR_IA32_TSC 0x10
#define APIC_TMCCT 0x390

struct result {
	uint64_t result[NCPUS], progress[NCPUS], step[NCPUS], ticks[NCPUS];
	uint64_t kvmclock[NCPUS], vec[NCPUS];
	unsigned int fails;
	enum vm_stop_reason why;
};

/* kvm-pvm stops on x87 and SSE instructions in these guests (an emulation failure). */
static bool fpu_ok(void)
{
	return access("/sys/module/kvm_pvm", F_OK) != 0;
}

/*
 * @at: units done at the checkpoint (NULL: none); the kvmclock step over
 * it is from the last unit before to the first after.
 */
static void collect(struct ktest *t, enum vm_stop_reason why, const uint64_t *at,
		    struct result *r)
{
	volatile uint64_t *sh;
	unsigned int i;

	r->why = why;
	if (!t->vm)
		return; /* never built */
	sh = ktest_shared(t);
	for (i = 0; i < NCPUS; i++) {
		const uint64_t *log = mem_gpa_to_hva(&t->vm->mem, SW_LOG_ADDR + 0x1000ULL * i,
						     SW_UNITS * 8);

		if (at && log && at[i] > 0 && at[i] < SW_UNITS && log[at[i]] >= log[at[i] - 1])
			r->step[i] = log[at[i]] - log[at[i] - 1];
		else if (at)
			r->step[i] = UINT64_MAX;
		r->result[i] = sh[SW_RESULT(i)];
		r->progress[i] = sh[SW_PROGRESS(i)];
		r->ticks[i] = sh[SW_TICKS(i)];
		r->kvmclock[i] = sh[SW_KVMCLOCK(i)];
		r->vec[i] = sh[SW_FPU_USED(i)];
	}
	r->fails = t->fails;
}

/* A finished run, and the same results as the reference. */
static int check_run(const char *name, const struct result *r, const struct result *ref)
{
	int failures = 0;
	unsigned int i;

	fprintf(stderr, "%s: stop %d, guest fails %u\n", name, r->why, r->fails);
	CHECK(r->why == VM_STOP_POWEROFF);
	CHECK(r->fails == 0);
	for (i = 0; i < NCPUS; i++) {
		fprintf(stderr,
			"  vcpu%u: result %016llx progress %llu ticks %llu clock step %.1f ms, %s\n",
			i, (unsigned long long)r->result[i], (unsigned long long)r->progress[i],
			(unsigned long long)r->ticks[i], r->step[i] / 1e6,
			r->vec[i] == 2 ? "x87+SSE+AVX" : r->vec[i] ? "x87+SSE" : "no FPU");
		CHECK(r->progress[i] == SW_UNITS);
		CHECK(r->ticks[i] >= 3);
		CHECK(r->result[i] != 0);
		if (r->kvmclock[i])
			CHECK(r->step[i] < MAX_STEP_NS);
		if (ref)
			CHECK(r->result[i] == ref->result[i]);
	}
	return failures;
}

/* ---- blobs: the test's own walk of the format ------------------------- */

/* Offset of part @tag's header in @b, or -1. */
static long part_off(const uint8_t *b, size_t len, uint32_t tag)
{
	size_t off = 8;

	while (off + 8 <= len) {
		uint32_t t, l;

		memcpy(&t, b + off, 4);
		memcpy(&l, b + off + 4, 4);
		if (t == tag)
			return (long)off;
		if (l > len - off - 8)
			return -1;
		off += 8 + l;
	}
	return -1;
}

static uint32_t part_len(const uint8_t *b, long off)
{
	uint32_t l;

	memcpy(&l, b + off + 4, 4);
	return l;
}

/* @b with part @tag's payload replaced by @p/@n (NULL: the part removed), into @out. */
static void blob_replace(const uint8_t *b, size_t len, uint32_t tag, const void *p, uint32_t n,
			 struct sbuf *out)
{
	long off = part_off(b, len, tag);
	size_t end;

	sbuf_reset(out);
	if (off < 0) { /* not there: unchanged */
		sbuf_put(out, b, len);
		return;
	}
	end = off + 8 + part_len(b, off);
	sbuf_put(out, b, off);
	if (p) {
		sbuf_put_u32(out, tag);
		sbuf_put_u32(out, n);
		sbuf_put(out, p, n);
	}
	sbuf_put(out, b + end, len - end);
}

/* Zero what legitimately moves between two saves (see src/vcpu/state.c). */
static void vcpu_blob_mask(uint8_t *b, size_t len)
{
	long off = part_off(b, len, VCPU_PART_MSRS);
	uint32_t n, i, idx;

	memcpy(&n, b + off + 8, 4);
	for (i = 0; i < n; i++) {
		uint8_t *ent = b + off + 12 + 12 * i;

		memcpy(&idx, ent, 4);
		if (idx == MSR_IA32_TSC)
			memset(ent + 4, 0, 8);
	}
	off = part_off(b, len, VCPU_PART_LAPIC);
	memset(b + off + 8 + APIC_TMCCT, 0, 4);
}

static void vm_blob_mask(uint8_t *b, size_t len)
{
	long off = part_off(b, len, VM_PART_PIT);
	unsigned int i;

	for (i = 0; i < 3; i++)
		memset(b + off + 8 + offsetof(struct kvm_pit_state2, channels[i].count_load_time),
		       0, sizeof(int64_t));
}

/* Same bytes but for the masked fields; names the parts that differ. */
static bool blobs_same(const struct sbuf *x, const struct sbuf *y, bool vm, const char *who)
{
	const char *(*name)(unsigned int) = vm ? vm_kvm_part_name : vcpu_kvm_part_name;
	unsigned int tag, count = vm ? VM_PART_COUNT : VCPU_PART_COUNT;
	uint8_t *a = malloc(x->len), *b = malloc(y->len);
	bool same = x->len == y->len;

	memcpy(a, x->data, x->len);
	memcpy(b, y->data, y->len);
	if (vm) {
		vm_blob_mask(a, x->len);
		vm_blob_mask(b, y->len);
	} else {
		vcpu_blob_mask(a, x->len);
		vcpu_blob_mask(b, y->len);
	}
	for (tag = 1; tag < count; tag++) {
		long oa = part_off(a, x->len, tag), ob = part_off(b, y->len, tag);

		if (oa < 0 && ob < 0)
			continue;
		if (oa < 0 || ob < 0 || part_len(a, oa) != part_len(b, ob) ||
		    memcmp(a + oa, b + ob, 8 + part_len(a, oa))) {
			fprintf(stderr, "%s: part %s differs after save -> load -> save\n", who,
				name(tag));
			same = false;
		}
	}
	same = same && !memcmp(a, b, x->len);
	free(a);
	free(b);
	return same;
}

/* A refused blob's message: "<prefix>: <part or header>: ...". */
static bool names_part(const char *msg, const char *prefix, bool vm)
{
	const char *(*name)(unsigned int) = vm ? vm_kvm_part_name : vcpu_kvm_part_name;
	unsigned int tag, count = vm ? VM_PART_COUNT : VCPU_PART_COUNT;
	size_t pl = strlen(prefix);

	if (strncmp(msg, prefix, pl) || strncmp(msg + pl, ": ", 2))
		return false;
	msg += pl + 2;
	if (!strncmp(msg, "header", 6))
		return true;
	for (tag = 1; tag < count; tag++)
		if (!strncmp(msg, name(tag), strlen(name(tag))) && msg[strlen(name(tag))] == ':')
			return true;
	return false;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* One hostile vCPU blob: refused, with a message naming @want (or any part if NULL). */
static int expect_vcpu_refused(struct vcpu *v, const uint8_t *b, size_t len, const char *want,
			       const char *what)
{
	struct qerr e = { 0 };
	char prefix[32];
	int failures = 0, ret;

	snprintf(prefix, sizeof(prefix), "vcpu %u", v->id);
	ret = vcpu_state_load(v, b, len, &e);
	if (ret >= 0 || !names_part(e.msg, prefix, false) || (want && !strstr(e.msg, want))) {
		fprintf(stderr, "%s (%zu bytes): ret %d, \"%s\"\n", what, len, ret, e.msg);
		failures++;
	}
	return failures;
}

/*
 * @blob with its CPU model changed: a feature bit the host lacks added
 * (@add), or one the model has taken away (!@add; from a short list the
 * test guest does not depend on). Returns the leaf's entry index in the
 * re-encoded state and the bit, or -1 if there is no such bit.
 */
static int cpuid_edit(const struct sbuf *blob, bool add, struct sbuf *out, uint32_t *fn,
		      uint32_t *mask)
{
	static const struct { uint32_t fn; uint8_t reg; uint32_t bit; } drop[] = {
		{ 0x80000001, 2, 1u << 0 }, /* LAHF/SAHF in long mode */
		{ 7, 1, 1u << 3 },	    /* BMI1 */
		{ 7, 1, 1u << 8 },	    /* BMI2 */
	};
	struct vcpu_kvm_limits lim = { .xsave_max = 1 << 20, .xcrs = true };
	struct vcpu_kvm_state *s = calloc(1, sizeof(*s));
	struct qerr e = { 0 };
	int found = -1;
	uint32_t i, k;

	if (!s || vcpu_kvm_state_decode(blob->data, blob->len, &lim, s, &e) || !s->has_cpuid) {
		free(s);
		return -1;
	}
	for (i = 0; i < s->ncpuid && found < 0; i++) {
		struct kvm_cpuid_entry2 *c = &s->cpuid[i];

		if (add && c->function == 7 && c->index == 0 && ~c->ebx) {
			*mask = 1u << __builtin_ctz(~c->ebx);
			c->ebx |= *mask;
			found = (int)i;
		}
		for (k = 0; !add && k < ARRAY_SIZE(drop) && found < 0; k++) {
			uint32_t *r = drop[k].reg == 1 ? &c->ebx : &c->ecx;

			if (c->function == drop[k].fn && c->index == 0 && (*r & drop[k].bit)) {
				*mask = drop[k].bit;
				*r &= ~drop[k].bit;
				found = (int)i;
			}
		}
		if (found >= 0)
			*fn = c->function;
	}
	sbuf_init(out);
	vcpu_kvm_state_encode(s, out);
	vcpu_kvm_state_release(s);
	free(s);
	return found;
}

/* The vCPU's CPUID leaf @fn.0, register ebx (leaf 7) or ecx (others). */
static uint32_t cpuid_now(struct vcpu *v, uint32_t fn)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 256 * sizeof(c->entries[0]));
	uint32_t r = 0, i;

	/* Entries past the real ones (Linux < 6.3 leaves nent at 256) are zero. */
	c->nent = 256;
	if (fn && ioctl(v->fd, KVM_GET_CPUID2, c) == 0)
		for (i = 0; i < c->nent && i < 256; i++)
			if (c->entries[i].function == fn && c->entries[i].index == 0)
				r = fn == 7 ? c->entries[i].ebx : c->entries[i].ecx;
	free(c);
	return r;
}

static int hostile_vcpu(struct vcpu *v, const struct sbuf *good, const struct sbuf *other)
{
	const uint8_t *g = good->data;
	size_t len = good->len, l;
	char prefix[32];
	struct sbuf b, b2;
	uint32_t u;
	long off;
	int failures = 0, i;
	uint8_t *big;

	sbuf_init(&b);
	sbuf_init(&b2);
	for (l = 0; l < len; l++)
		failures += expect_vcpu_refused(v, g, l, NULL, "truncated");

	sbuf_put(&b, g, len);
	u = VCPU_KVM_STATE_VERSION + 1;
	memcpy(b.data + 4, &u, 4);
	failures += expect_vcpu_refused(v, b.data, b.len, "version", "wrong version");
	memcpy(b.data, &u, 4);
	failures += expect_vcpu_refused(v, b.data, b.len, "magic", "wrong magic");

	failures += expect_vcpu_refused(v, other->data, other->len, "id:", "other vCPU's");

	/* Counts and lengths beyond anything. */
	off = part_off(g, len, VCPU_PART_MSRS);
	for (i = 0; i < 3; i++) {
		uint32_t counts[] = { 0xffffffffu, VCPU_KVM_STATE_MAX_MSRS + 1, 0 };

		sbuf_reset(&b);
		sbuf_put(&b, g, len);
		memcpy(&counts[2], b.data + off + 8, 4);
		counts[2]++;
		memcpy(b.data + off + 8, &counts[i], 4);
		failures += expect_vcpu_refused(v, b.data, b.len, "msrs:", "msr count");
	}
	sbuf_reset(&b);
	sbuf_put(&b, g, len);
	u = 0xffffffffu;
	memcpy(b.data + part_off(g, len, VCPU_PART_REGS) + 4, &u, 4);
	failures += expect_vcpu_refused(v, b.data, b.len, "regs:", "huge part length");

	/* Parts missing, repeated, unknown. */
	blob_replace(g, len, VCPU_PART_LAPIC, NULL, 0, &b);
	failures += expect_vcpu_refused(v, b.data, b.len, "lapic: missing", "no lapic");
	blob_replace(g, len, VCPU_PART_SREGS2, NULL, 0, &b);
	blob_replace(b.data, b.len, VCPU_PART_SREGS, NULL, 0, &b2);
	failures += expect_vcpu_refused(v, b2.data, b2.len, "missing", "no sregs");
	blob_replace(g, len, VCPU_PART_XSAVE, NULL, 0, &b);
	blob_replace(b.data, b.len, VCPU_PART_FPU, NULL, 0, &b2);
	failures += expect_vcpu_refused(v, b2.data, b2.len, "missing", "no fpu");
	sbuf_reset(&b);
	sbuf_put(&b, g, len);
	off = part_off(g, len, VCPU_PART_MP_STATE);
	sbuf_put(&b, g + off, 12);
	failures += expect_vcpu_refused(v, b.data, b.len, "mp-state: appears twice", "repeat");
	sbuf_reset(&b);
	sbuf_put(&b, g, len);
	sbuf_put_u32(&b, 99);
	sbuf_put_u32(&b, 0);
	failures += expect_vcpu_refused(v, b.data, b.len, "unknown tag", "unknown part");

	/* More XSAVE than this KVM takes, fewer than any. */
	off = part_off(g, len, VCPU_PART_XSAVE);
	if (off >= 0) {
		big = calloc(1, 1 << 20);
		blob_replace(g, len, VCPU_PART_XSAVE, big, 1 << 20, &b);
		failures += expect_vcpu_refused(v, b.data, b.len, "xsave:", "huge xsave");
		blob_replace(g, len, VCPU_PART_XSAVE, big, 512, &b);
		failures += expect_vcpu_refused(v, b.data, b.len, "xsave:", "short xsave");
		free(big);
	}

	/* An MSR this KVM does not have; one KVM refuses (EFER with reserved bits). */
	{
		uint8_t m[16] = { 1, 0, 0, 0 };

		u = 0x12345678;
		memcpy(m + 4, &u, 4);
		blob_replace(g, len, VCPU_PART_MSRS, m, 16, &b);
		failures += expect_vcpu_refused(v, b.data, b.len, "0x12345678", "unknown MSR");
		u = 0xc0000080;
		memcpy(m + 4, &u, 4);
		memset(m + 8, 0xff, 8);
		blob_replace(g, len, VCPU_PART_MSRS, m, 16, &b);
		failures += expect_vcpu_refused(v, b.data, b.len, "refused MSR 0xc0000080",
						"bad EFER");
	}

	/* A CPU model with a feature this host lacks; another vendor's. */
	{
		struct sbuf c;
		uint32_t fn = 0, mask = 0;
		long coff;

		CHECK(cpuid_edit(good, true, &c, &fn, &mask) >= 0);
		failures += expect_vcpu_refused(v, c.data, c.len, "features this host's KVM does not",
						"extra CPU feature");
		sbuf_free(&c);
		coff = part_off(g, len, VCPU_PART_CPUID);
		CHECK(coff > 0);
		if (coff > 0) {
			sbuf_reset(&b);
			sbuf_put(&b, g, len);
			/* Entry 0 is leaf 0 (KVM lists it first): ebx := "Cyri". */
			CHECK(memcmp(b.data + coff + 12, "\0\0\0\0", 4) == 0);
			memcpy(b.data + coff + 12 + 16, "Cyri", 4);
			failures += expect_vcpu_refused(v, b.data, b.len, "the guest's CPU is Cyri",
							"other vendor");
		}
	}

	/* Random bytes, with and without a valid header in front. */
	for (i = 0; i < 2000; i++) {
		size_t n = rng() % (len + 64), j;

		sbuf_reset(&b);
		for (j = 0; j < n; j++)
			sbuf_put_u8(&b, (uint8_t)rng());
		if ((i & 1) && n >= 8)
			memcpy(b.data, g, 8);
		failures += expect_vcpu_refused(v, b.data, b.len, NULL, "random");
	}
	/* Flipped bytes in the part headers: no crash; refused ones name a part. */
	snprintf(prefix, sizeof(prefix), "vcpu %u", v->id);
	for (i = 0; i < 2000; i++) {
		struct qerr e = { 0 };
		unsigned int tag = 1 + rng() % (VCPU_PART_COUNT - 1);

		off = part_off(g, len, tag);
		if (off < 0)
			continue;
		sbuf_reset(&b);
		sbuf_put(&b, g, len);
		b.data[off + rng() % 8] ^= (uint8_t)(1 + rng() % 255);
		if (vcpu_state_load(v, b.data, b.len, &e) < 0 &&
		    !names_part(e.msg, prefix, false)) {
			fprintf(stderr, "flipped header: \"%s\"\n", e.msg);
			failures++;
		}
	}
	sbuf_free(&b);
	sbuf_free(&b2);
	return failures;
}

static int expect_vm_refused(struct vm *vm, const uint8_t *b, size_t len, const char *want,
			     const char *what)
{
	struct qerr e = { 0 };
	int ret = vm_kvm_state_load(vm, b, len, &e);

	if (ret >= 0 || !names_part(e.msg, "vm", true) || (want && !strstr(e.msg, want))) {
		fprintf(stderr, "vm %s (%zu bytes): ret %d, \"%s\"\n", what, len, ret, e.msg);
		return 1;
	}
	return 0;
}

static int hostile_vm(struct vm *vm, const struct sbuf *good, const struct sbuf *vcpu_blob)
{
	struct sbuf b;
	size_t l;
	uint32_t u = VM_KVM_STATE_VERSION + 1;
	int failures = 0, i;

	for (l = 0; l < good->len; l++)
		failures += expect_vm_refused(vm, good->data, l, NULL, "truncated");
	sbuf_init(&b);
	sbuf_put(&b, good->data, good->len);
	memcpy(b.data + 4, &u, 4);
	failures += expect_vm_refused(vm, b.data, b.len, "version", "wrong version");
	failures += expect_vm_refused(vm, vcpu_blob->data, vcpu_blob->len, "magic", "vCPU blob");
	blob_replace(good->data, good->len, VM_PART_PIT, good->data, 17, &b);
	failures += expect_vm_refused(vm, b.data, b.len, "pit:", "short pit");
	blob_replace(good->data, good->len, VM_PART_CLOCK, NULL, 0, &b);
	failures += expect_vm_refused(vm, b.data, b.len, "clock: missing", "no clock");
	for (i = 0; i < 1000; i++) {
		size_t n = rng() % (good->len + 64), j;

		sbuf_reset(&b);
		for (j = 0; j < n; j++)
			sbuf_put_u8(&b, (uint8_t)rng());
		if ((i & 1) && n >= 8)
			memcpy(b.data, good->data, 8);
		failures += expect_vm_refused(vm, b.data, b.len, NULL, "random");
	}
	sbuf_free(&b);
	return failures;
}

/* ---- RAM --------------------------------------------------------------- */

static uint8_t *ram_save(struct vm *vm)
{
	uint8_t *buf = malloc(vm->mem.ram_size), *p = buf;
	unsigned int i;

	for (i = 0; buf && i < vm->mem.nr_regions; i++) {
		memcpy(p, vm->mem.regions[i].hva, vm->mem.regions[i].size);
		p += vm->mem.regions[i].size;
	}
	return buf;
}

/* Same configuration, same layout. */
static void ram_load(struct vm *vm, const uint8_t *buf)
{
	unsigned int i;

	for (i = 0; i < vm->mem.nr_regions; i++) {
		memcpy(vm->mem.regions[i].hva, buf, vm->mem.regions[i].size);
		buf += vm->mem.regions[i].size;
	}
}

/* ---- B: checkpoint a running VM ---------------------------------------- */

struct checkpoint {
	struct sbuf vcpu[NCPUS];
	struct sbuf vm;
	uint8_t *ram;
	uint64_t taken_ns;
	uint64_t progress[NCPUS];
};

struct driver {
	struct ktest *t;
	const char *sock;
	struct checkpoint *cp;
	int failures;
};

static bool qmp_ok(struct qmp_conn *q, const char *cmd)
{
	struct qerr e = { 0 };
	bool qmp_error = false;
	struct json_object *r = qmp_conn_execute(q, cmd, NULL, &qmp_error, &e);

	if (!r)
		fprintf(stderr, "QMP %s: %s\n", cmd, e.msg);
	json_object_put(r);
	return r != NULL;
}

static bool wait_progress(struct ktest *t, uint64_t units)
{
	volatile uint64_t *sh = ktest_shared(t);
	unsigned int i, ok;
	int n;

	for (n = 0; n < 20000; n++) { /* a hang guard, not a timing assertion */
		for (i = ok = 0; i < NCPUS; i++)
			ok += sh[SW_PROGRESS(i)] >= units;
		if (ok == NCPUS)
			return true;
		usleep(500);
	}
	return false;
}

/* Save -> load -> save on the paused VM: the same bytes but for time. */
static int check_resave(struct vm *vm, struct checkpoint *cp)
{
	struct qerr e = { 0 };
	struct sbuf again;
	int failures = 0;
	unsigned int i;
	char who[16];

	sbuf_init(&again);
	CHECK(vm_kvm_state_load(vm, cp->vm.data, cp->vm.len, &e) == 0);
	for (i = 0; i < NCPUS; i++)
		CHECK(vcpu_state_load(vm->vcpus[i], cp->vcpu[i].data, cp->vcpu[i].len, &e) == 0);
	if (e.msg[0])
		fprintf(stderr, "load: %s\n", e.msg);
	CHECK(vm_kvm_state_save(vm, &again, &e) == 0);
	CHECK(blobs_same(&cp->vm, &again, true, "vm"));
	for (i = 0; i < NCPUS; i++) {
		sbuf_reset(&again);
		CHECK(vcpu_state_save(vm->vcpus[i], &again, &e) == 0);
		snprintf(who, sizeof(who), "vcpu %u", i);
		CHECK(blobs_same(&cp->vcpu[i], &again, false, who));
	}
	sbuf_free(&again);
	return failures;
}

static void *driver_b(void *arg)
{
	struct driver *d = arg;
	struct ktest *t = d->t;
	struct checkpoint *cp = d->cp;
	struct qmp_conn q = { .fd = -1 };
	struct qerr e = { 0 };
	volatile uint64_t *sh = ktest_shared(t);
	struct vm *vm = t->vm;
	int failures = 0;
	unsigned int i;

	CHECK(qmp_conn_open(&q, d->sock, &e) == 0);
	CHECK(wait_progress(t, SW_UNITS / 8));
	/* Running vCPUs are refused. */
	CHECK(vcpu_state_save(vm->vcpus[1], &cp->vcpu[1], &e) == -EBUSY);
	CHECK(strstr(e.msg, "vcpu 1: running") != NULL);
	CHECK(vm_kvm_state_save(vm, &cp->vm, &e) == -EBUSY);
	CHECK(cp->vcpu[1].len == 0 && cp->vm.len == 0);
	memset(&e, 0, sizeof(e));
	CHECK(qmp_ok(&q, "stop"));

	CHECK(vm_kvm_state_save(vm, &cp->vm, &e) == 0);
	for (i = 0; i < NCPUS; i++) {
		cp->progress[i] = sh[SW_PROGRESS(i)];
		CHECK(vcpu_state_save(vm->vcpus[i], &cp->vcpu[i], &e) == 0);
	}
	if (e.msg[0])
		fprintf(stderr, "save: %s\n", e.msg);
	cp->ram = ram_save(vm);
	cp->taken_ns = time_now_ns();
	fprintf(stderr, "checkpoint at units %llu/%llu of %u; vCPU blobs %zu/%zu bytes, VM %zu\n",
		(unsigned long long)cp->progress[0], (unsigned long long)cp->progress[1],
		SW_UNITS, cp->vcpu[0].len, cp->vcpu[1].len, cp->vm.len);

	failures += check_resave(vm, cp);
	failures += hostile_vcpu(vm->vcpus[0], &cp->vcpu[0], &cp->vcpu[1]);
	failures += hostile_vcpu(vm->vcpus[1], &cp->vcpu[1], &cp->vcpu[0]);
	failures += hostile_vm(vm, &cp->vm, &cp->vcpu[0]);
	/* Back to the checkpoint (a refused MSR write may have set others). */
	memset(&e, 0, sizeof(e));
	CHECK(vm_kvm_state_load(vm, cp->vm.data, cp->vm.len, &e) == 0);
	for (i = 0; i < NCPUS; i++)
		CHECK(vcpu_state_load(vm->vcpus[i], cp->vcpu[i].data, cp->vcpu[i].len, &e) == 0);
	if (e.msg[0])
		fprintf(stderr, "reload: %s\n", e.msg);

	sh[SW_GO] = 1;
	CHECK(qmp_ok(&q, "cont"));
	qmp_conn_close(&q);
	d->failures = failures;
	return NULL;
}

static uint64_t msr_read(struct vcpu *v, uint32_t index, bool *ok)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry ent;
	} one = { .hdr.nmsrs = 1, .ent.index = index };

	*ok = ioctl(v->fd, KVM_GET_MSRS, &one) == 1;
	return one.ent.data;
}

/* The MSRs a running Linux guest needs are in the blob wherever this vCPU reads them. */
static int check_msr_coverage(struct vcpu *v, const struct sbuf *blob, volatile uint64_t *sh)
{
	static const uint32_t want[] = {
		0x10, 0x1b, 0x174, 0x175, 0x176, 0x1a0, 0x277, 0x6e0, /* TSC ... TSC_DEADLINE */
		0xc0000080, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102,
		0x4b564d00, 0x4b564d01, 0x4b564d02, 0x4b564d03, 0x4b564d04, /* kvmclock ... */
	};
	struct vcpu_kvm_limits lim = { .xsave_max = 1 << 20, .xcrs = true };
	struct vcpu_kvm_state *s = calloc(1, sizeof(*s));
	struct qerr e = { 0 };
	int failures = 0;
	unsigned int i, j;
	bool ok;

	CHECK(vcpu_kvm_state_decode(blob->data, blob->len, &lim, s, &e) == 0);
	for (i = 0; i < ARRAY_SIZE(want); i++) {
		for (j = 0; j < s->nmsrs && s->msrs[j].index != want[i]; j++)
			;
		if (j < s->nmsrs) {
			/* The guest's kvmclock and steal time areas. */
			if (want[i] == 0x4b564d01)
				CHECK(s->msrs[j].data == sh[SW_KVMCLOCK(v->id)]);
			if (want[i] == 0x4b564d03)
				CHECK(s->msrs[j].data == sh[SW_STEAL(v->id)]);
			continue;
		}
		msr_read(v, want[i], &ok);
		fprintf(stderr, "vcpu %u: MSR 0x%x %s\n", v->id, want[i],
			ok ? "readable but not saved" : "not on this KVM");
		CHECK(!ok);
		if (want[i] == 0x4b564d01)
			CHECK(!sh[SW_KVMCLOCK(v->id)]);
	}
	vcpu_kvm_state_release(s);
	free(s);
	return failures;
}

/* What KVM has after the load: the guest's kvmclock, steal time and TSC. */
static int check_loaded_msrs(struct vcpu *v, volatile uint64_t *sh)
{
	int failures = 0;
	bool ok;

	if (sh[SW_KVMCLOCK(v->id)])
		CHECK(msr_read(v, 0x4b564d01, &ok) == sh[SW_KVMCLOCK(v->id)] && ok);
	if (sh[SW_STEAL(v->id)])
		CHECK(msr_read(v, 0x4b564d03, &ok) == sh[SW_STEAL(v->id)] && ok);
	CHECK(msr_read(v, MSR_IA32_TSC, &ok) >= (1ULL << 44) && ok);
	return failures;
}

/* Resumes a VM started paused (-S), a while after. */
struct resumer {
	const char *sock;
	int failures;
};

static void *driver_resume(void *arg)
{
	struct resumer *r = arg;
	struct qmp_conn q = { .fd = -1 };
	struct qerr e = { 0 };
	int failures = 0;

	CHECK(qmp_conn_open(&q, r->sock, &e) == 0);
	usleep(1000 * 1000);
	CHECK(qmp_ok(&q, "cont"));
	qmp_conn_close(&q);
	r->failures = failures;
	return NULL;
}

/*
 * A new VM from the checkpoint, started well after it was taken and a
 * while after the load: directly (vm_start(vm, false)) or paused (-S) and
 * resumed over QMP (vm_start(vm, true), vm_resume()).
 */
static int run_restored(const char *name, struct checkpoint *cp, const struct result *ref,
			bool paused)
{
	struct resumer rs = { 0 };
	struct result r = { 0 };
	char sock[64], spec[80];
	struct qerr e = { 0 };
	struct ktest t;
	int failures = 0;
	unsigned int i;
	uint64_t age;
	pthread_t th;

	age = time_now_ns() - cp->taken_ns;
	if (age < CHECKPOINT_AGE_NS)
		usleep((CHECKPOINT_AGE_NS - age) / 1000);
	CHECK(ktest_create(&t, NCPUS, MEM) == 0);
	if (paused) {
		snprintf(sock, sizeof(sock), "/tmp/qlite-kvm-state-%d.sock", (int)getpid());
		snprintf(spec, sizeof(spec), "unix:%s", sock);
		unlink(sock);
		t.qmp = spec;
		t.paused = true;
		rs.sock = sock;
	}
	CHECK(ktest_start(&t, GT_STATE_WORK) == 0);
	if (!t.vm) {
		ktest_destroy(&t);
		return failures;
	}
	ram_load(t.vm, cp->ram);
	ktest_shared(&t)[SW_GO] = 1;
	CHECK(vm_kvm_state_load(t.vm, cp->vm.data, cp->vm.len, &e) == 0);
	for (i = 0; i < NCPUS; i++) {
		uint32_t fn = 0, mask = 0;
		struct sbuf c;

		/*
		 * Not started yet: C's vCPUs take a CPU model with a feature less
		 * (a source host with fewer), and the guest runs the same.
		 */
		if (!paused && cpuid_edit(&cp->vcpu[i], false, &c, &fn, &mask) >= 0) {
			CHECK(cpuid_now(t.vm->vcpus[i], fn) & mask);
			CHECK(vcpu_state_load(t.vm->vcpus[i], c.data, c.len, &e) == 0);
			/*
			 * kvm-pvm gives the guest the host's CPUID whatever is set
			 * (KVM_GET_CPUID2 shows it): there only the load is checked.
			 */
			fprintf(stderr, "%s: vcpu %u: CPUID leaf 0x%x without bit 0x%x: %s\n", name,
				i, fn, mask,
				cpuid_now(t.vm->vcpus[i], fn) & mask
					? "loaded; this KVM shows the bit anyway (kvm-pvm)"
					: "loaded, and KVM has it so");
			if (access("/sys/module/kvm_pvm", F_OK))
				CHECK(!(cpuid_now(t.vm->vcpus[i], fn) & mask));
			sbuf_free(&c);
		} else {
			CHECK(paused);
			CHECK(vcpu_state_load(t.vm->vcpus[i], cp->vcpu[i].data, cp->vcpu[i].len,
					      &e) == 0);
		}
		failures += check_msr_coverage(t.vm->vcpus[i], &cp->vcpu[i], ktest_shared(&t));
		failures += check_loaded_msrs(t.vm->vcpus[i], ktest_shared(&t));
	}
	if (e.msg[0])
		fprintf(stderr, "%s: load: %s\n", name, e.msg);
	/* One vCPU's state does not fit another. */
	memset(&e, 0, sizeof(e));
	CHECK(vcpu_state_load(t.vm->vcpus[0], cp->vcpu[1].data, cp->vcpu[1].len, &e) ==
	      -EINVAL);
	CHECK(strstr(e.msg, "vcpu 0: id:") != NULL);

	/* The guest clock must not run between load and start, nor while paused. */
	usleep(LOAD_TO_START_US);
	if (paused)
		pthread_create(&th, NULL, driver_resume, &rs);
	collect(&t, ktest_run(&t, 120), cp->progress, &r);
	if (paused) {
		pthread_join(th, NULL);
		failures += rs.failures;
		unlink(sock);
	}
	ktest_destroy(&t);
	return failures + check_run(name, &r, ref);
}

int main(void)
{
	struct checkpoint cp = { 0 };
	struct result ra = { 0 }, rb = { 0 };
	char sock[64], spec[80];
	struct driver d = { .cp = &cp };
	struct ktest a, b;
	int failures = 0, ret;
	unsigned int i;
	pthread_t th;

	/* A: the reference. */
	ret = ktest_create(&a, NCPUS, MEM);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	CHECK(ktest_start(&a, GT_STATE_WORK) == 0);
	if (a.vm) {
		ktest_shared(&a)[SW_GO] = 1;
		ktest_shared(&a)[SW_FPU] = fpu_ok();
	}
	collect(&a, ktest_run(&a, 120), NULL, &ra);
	ktest_destroy(&a);
	failures += check_run("A (uninterrupted)", &ra, NULL);

	/* B: checkpointed mid-run, then on to the end. */
	for (i = 0; i < NCPUS; i++)
		sbuf_init(&cp.vcpu[i]);
	sbuf_init(&cp.vm);
	CHECK(ktest_create(&b, NCPUS, MEM) == 0);
	snprintf(sock, sizeof(sock), "/tmp/qlite-kvm-state-%d.sock", (int)getpid());
	snprintf(spec, sizeof(spec), "unix:%s", sock);
	unlink(sock);
	b.qmp = spec;
	d.t = &b;
	d.sock = sock;
	CHECK(ktest_start(&b, GT_STATE_WORK) == 0);
	if (b.vm) {
		ktest_shared(&b)[SW_FPU] = fpu_ok();
		pthread_create(&th, NULL, driver_b, &d);
		collect(&b, ktest_run(&b, 120), cp.progress, &rb);
		pthread_join(th, NULL);
	}
	failures += d.failures;
	ktest_destroy(&b);
	unlink(sock);
	failures += check_run("B (checkpointed, continued)", &rb, &ra);
	CHECK(cp.ram != NULL);
	for (i = 0; i < NCPUS; i++)
		CHECK(cp.progress[i] > 0 && cp.progress[i] < SW_UNITS);

	if (cp.ram) {
		failures += run_restored("C (restored, started)", &cp, &ra, false);
		failures += run_restored("D (restored, started paused, resumed)", &cp, &ra, true);
	}

	for (i = 0; i < NCPUS; i++)
		sbuf_free(&cp.vcpu[i]);
	sbuf_free(&cp.vm);
	free(cp.ram);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
