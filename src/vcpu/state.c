// SPDX-License-Identifier: MIT
/*
 * KVM state of each vCPU and of the VM's in-kernel devices, as byte blobs
 * for checkpoint/restore and migration (the state stream carries them).
 *
 * Both blobs: u32 magic, u32 format version, then parts, each u32 tag,
 * u32 length, payload; integers little-endian. Every part appears once; a
 * missing, repeated or unknown part, or a length other than the part's,
 * makes the blob invalid. "ABI" payloads are KVM's x86 structure byte for
 * byte (fixed layouts, little-endian).
 *
 * vCPU blob: magic "Qvcp", version 2 (1: the same without cpuid, still
 * read); parts in this order:
 *   id         u32: the vCPU index; loads only into the vCPU with that index
 *   tsc-khz    u32: guest TSC frequency (KVM_GET_TSC_KHZ), 0 if unknown
 *   regs       ABI kvm_regs
 *   sregs2     ABI kvm_sregs2 (carries the PDPTRs) with KVM_CAP_SREGS2,
 *   or sregs   ABI kvm_sregs
 *   xsave      KVM_GET_XSAVE2 (size from KVM_CAP_XSAVE2) or KVM_GET_XSAVE area,
 *              4096 bytes or more,
 *   or fpu     ABI kvm_fpu, without KVM_CAP_XSAVE
 *   xcrs       u32 count (<= 16), u32 flags, count x (u32 xcr, u64 value);
 *              only with KVM_CAP_XCRS
 *   msrs       u32 count (<= 1024), count x (u32 index, u64 value)
 *   lapic      ABI kvm_lapic_state
 *   events     ABI kvm_vcpu_events
 *   mp-state   u32
 *   debugregs  ABI kvm_debugregs
 *   cpuid      u32 count (<= 256), count x (u32 function, index, flags, eax,
 *              ebx, ecx, edx): the CPU model the guest saw (a version 1
 *              blob has none: the loading host's model is kept). Each
 *              (function, index) once; flags only
 *              KVM's (SIGNIFCANT_INDEX, STATEFUL_FUNC, STATE_READ_NEXT).
 * The MSRs are those of KVM_GET_MSR_INDEX_LIST (TSC, TSC_ADJUST,
 * TSC_DEADLINE, SYSENTER/SYSCALL, PAT, MISC_ENABLE, kvmclock, async PF,
 * steal time, PV EOI, poll control, PMU, ...) and those it leaves out
 * (EFER, APIC base, MTRRs), each kept only if KVM_GET_MSRS reads it on
 * this vCPU: KVM lists MSRs the vCPU's CPUID does not have.
 *
 * VM blob: magic "Qvmk", version 1:
 *   pic-master, pic-slave  ABI kvm_pic_state (KVM_GET_IRQCHIP)
 *   ioapic     ABI kvm_ioapic_state
 *   pit        ABI kvm_pit_state2
 *   clock      u64 kvmclock (ns), u32 flags, u64 realtime, u64 host_tsc:
 *              KVM_GET_CLOCK, or the clock held since vm_pause()
 *
 * Loading, in the order real VMMs use: the CPU model first (MSRs and the
 * XSAVE layout depend on it; checked against this host: same vendor, no
 * feature bit this host's KVM does not offer, see cpuid_check()), memory (MSR writes
 * make KVM write the kvmclock, wall clock and steal time areas in guest
 * memory), then the VM blob (irqchip, PIT, clock), then each vCPU: TSC
 * frequency, regs, xsave/fpu, xcrs, sregs, MSRs (TSC and the async PF
 * vector first, the kvmclock MSRs last), mp-state, lapic, TSC_DEADLINE
 * (KVM drops it unless the LAPIC timer is already in deadline mode),
 * events (with nmi.pending marked valid, which older KVMs leave out),
 * debugregs. The guest's kvmclock stands still from save to start: the
 * loaded clock is set again when the vCPUs start or resume (vm.c).
 *
 * TSC frequency: when the host's differs, KVM_SET_TSC_KHZ with TSC
 * scaling (KVM_CAP_TSC_CONTROL). Without it a difference up to 250 ppm is
 * accepted: that is the tolerance below which KVM itself does not scale
 * (kvm.tsc_tolerance_ppm) and half of what NTP corrects in a Linux guest;
 * more is refused (Linux's TSC calibration, TSC deadline timer and any TSC
 * clocksource would run at the wrong rate).
 *
 * Saving twice with a load between gives the same bytes except what time
 * moves: MSR_IA32_TSC (the guest TSC counts while the VM is paused), the
 * LAPIC timer current count (TMCCT, at 0x390 of lapic), each PIT
 * channel's count_load_time (host ktime when its count was (re)loaded),
 * and the clock when the VM is not paused.
 *
 * Not covered: nested virtualization (saving refuses a guest in VMX
 * operation or running a nested guest), Hyper-V and Xen state.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "qlite/kvm_state.h"
#include "qlite/vcpu.h"
#include "qlite/vm.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_APICBASE 0x1b
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_MTRR_PHYS_FIRST 0x200 /* 8 variable ranges: base/mask pairs */
#define MSR_MTRR_PHYS_LAST 0x20f
#define MSR_MTRR_FIX64K_00000 0x250
#define MSR_MTRR_FIX16K_80000 0x258
#define MSR_MTRR_FIX16K_A0000 0x259
#define MSR_MTRR_FIX4K_FIRST 0x268
#define MSR_MTRR_FIX4K_LAST 0x26f
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_EFER 0xc0000080
#define MSR_KVM_WALL_CLOCK 0x11
#define MSR_KVM_SYSTEM_TIME 0x12
#define MSR_KVM_WALL_CLOCK_NEW 0x4b564d00
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_ASYNC_PF_INT 0x4b564d06

/* KVM_GET_MSRS and KVM_SET_MSRS take fewer than 256 entries per call. */
#define MSR_IO_CHUNK 255u
#define TSC_KHZ_TOLERANCE_PPM 250u
/* u32 function, index, flags, eax, ebx, ecx, edx */
#define CPUID_ENTRY_SIZE 28u
#define CPUID_FLAGS_KNOWN                                                                  \
	(KVM_CPUID_FLAG_SIGNIFCANT_INDEX | KVM_CPUID_FLAG_STATEFUL_FUNC |                   \
	 KVM_CPUID_FLAG_STATE_READ_NEXT)
/* u64 clock, u32 flags, u64 realtime, u64 host_tsc */
#define CLOCK_PART_SIZE 28u

struct part_spec {
	const char *name;
	uint32_t size; /* exact payload bytes; 0: variable, checked by its decoder */
	bool optional;
};

static const struct part_spec vcpu_parts[VCPU_PART_COUNT] = {
	[VCPU_PART_ID] = { "id", 4, false },
	[VCPU_PART_TSC_KHZ] = { "tsc-khz", 4, false },
	[VCPU_PART_REGS] = { "regs", sizeof(struct kvm_regs), false },
	/* One of sregs/sregs2 and one of fpu/xsave: checked by the decoder. */
	[VCPU_PART_SREGS] = { "sregs", sizeof(struct kvm_sregs), true },
	[VCPU_PART_SREGS2] = { "sregs2", sizeof(struct kvm_sregs2), true },
	[VCPU_PART_FPU] = { "fpu", sizeof(struct kvm_fpu), true },
	[VCPU_PART_XSAVE] = { "xsave", 0, true },
	[VCPU_PART_XCRS] = { "xcrs", 0, true },
	[VCPU_PART_MSRS] = { "msrs", 0, false },
	[VCPU_PART_LAPIC] = { "lapic", sizeof(struct kvm_lapic_state), false },
	[VCPU_PART_EVENTS] = { "events", sizeof(struct kvm_vcpu_events), false },
	[VCPU_PART_MP_STATE] = { "mp-state", 4, false },
	[VCPU_PART_DEBUGREGS] = { "debugregs", sizeof(struct kvm_debugregs), false },
	[VCPU_PART_CPUID] = { "cpuid", 0, true },
};

static const struct part_spec vm_parts[VM_PART_COUNT] = {
	[VM_PART_PIC_MASTER] = { "pic-master", sizeof(struct kvm_pic_state), false },
	[VM_PART_PIC_SLAVE] = { "pic-slave", sizeof(struct kvm_pic_state), false },
	[VM_PART_IOAPIC] = { "ioapic", sizeof(struct kvm_ioapic_state), false },
	[VM_PART_PIT] = { "pit", sizeof(struct kvm_pit_state2), false },
	[VM_PART_CLOCK] = { "clock", CLOCK_PART_SIZE, false },
};

const char *vcpu_kvm_part_name(unsigned int tag)
{
	return tag < VCPU_PART_COUNT ? vcpu_parts[tag].name : NULL;
}

const char *vm_kvm_part_name(unsigned int tag)
{
	return tag < VM_PART_COUNT ? vm_parts[tag].name : NULL;
}

/* ---- the byte format (pure) ------------------------------------------ */

struct part_view {
	const uint8_t *p;
	uint32_t len;
	bool seen;
};

static void part_begin(struct sbuf *b, uint32_t tag, uint32_t len)
{
	sbuf_put_u32(b, tag);
	sbuf_put_u32(b, len);
}

static void part_raw(struct sbuf *b, uint32_t tag, const void *p, uint32_t len)
{
	part_begin(b, tag, len);
	sbuf_put(b, p, len);
}

static uint32_t part_u32(const struct part_view *pv)
{
	uint32_t v;

	memcpy(&v, pv->p, 4);
	return le32toh(v);
}

/*
 * Split a blob into its parts, checking the header, that every tag is
 * known and appears once, every length fits and fixed-size parts have
 * their size, and that the required parts are there.
 */
static int blob_split(const uint8_t *buf, size_t len, uint32_t magic, uint32_t vmin,
		      uint32_t vmax, uint32_t *version, const struct part_spec *spec,
		      unsigned int nspec, struct part_view *pv, struct qerr *e)
{
	const char *prev = NULL;
	struct scur c;
	uint32_t m, ver;
	unsigned int i;

	memset(pv, 0, nspec * sizeof(*pv));
	scur_init(&c, buf, len);
	m = scur_u32(&c);
	ver = scur_u32(&c);
	if (!scur_ok(&c))
		return qerr_set(e, EINVAL, "header: %zu bytes, too short for magic and version",
				len);
	if (m != magic)
		return qerr_set(e, EINVAL, "header: magic 0x%08x, expected 0x%08x", m, magic);
	if (ver < vmin || ver > vmax)
		return vmin == vmax ? qerr_set(e, EINVAL,
					       "header: format version %u, this qlite reads %u",
					       ver, vmax)
				    : qerr_set(e, EINVAL,
					       "header: format version %u, this qlite reads %u "
					       "to %u",
					       ver, vmin, vmax);
	*version = ver;
	while (c.left) {
		uint32_t tag, plen;
		const uint8_t *p;

		tag = scur_u32(&c);
		plen = scur_u32(&c);
		if (!scur_ok(&c))
			return qerr_set(e, EINVAL, "header of the part after %s: truncated",
					prev ? prev : "the version");
		if (tag == 0 || tag >= nspec || !spec[tag].name)
			return qerr_set(e, EINVAL, "header of the part after %s: unknown tag %u",
					prev ? prev : "the version", tag);
		if (pv[tag].seen)
			return qerr_set(e, EINVAL, "%s: appears twice", spec[tag].name);
		if (spec[tag].size && plen != spec[tag].size)
			return qerr_set(e, EINVAL, "%s: %u bytes, expected %u", spec[tag].name,
					plen, spec[tag].size);
		p = scur_take(&c, plen);
		if (!p)
			return qerr_set(e, EINVAL, "%s: %u bytes claimed, only %zu left",
					spec[tag].name, plen, c.left);
		pv[tag] = (struct part_view){ .p = p, .len = plen, .seen = true };
		prev = spec[tag].name;
	}
	for (i = 1; i < nspec; i++)
		if (spec[i].name && !spec[i].optional && !pv[i].seen)
			return qerr_set(e, EINVAL, "%s: missing", spec[i].name);
	return 0;
}

/* Exactly one of two alternative parts. */
static int one_of(const struct part_view *pv, unsigned int a, unsigned int b,
		  const struct part_spec *spec, struct qerr *e)
{
	if (pv[a].seen && pv[b].seen)
		return qerr_set(e, EINVAL, "%s: present together with %s", spec[b].name,
				spec[a].name);
	if (!pv[a].seen && !pv[b].seen)
		return qerr_set(e, EINVAL, "%s: missing (and no %s either)", spec[a].name,
				spec[b].name);
	return 0;
}

void vcpu_kvm_state_encode(const struct vcpu_kvm_state *s, struct sbuf *b)
{
	uint32_t i, nx, n = MIN(s->nmsrs, VCPU_KVM_STATE_MAX_MSRS);

	sbuf_put_u32(b, VCPU_KVM_STATE_MAGIC);
	/* Without a CPU model the blob is what version 1 was. */
	sbuf_put_u32(b, s->has_cpuid ? VCPU_KVM_STATE_VERSION : 1);
	part_begin(b, VCPU_PART_ID, 4);
	sbuf_put_u32(b, s->vcpu_id);
	part_begin(b, VCPU_PART_TSC_KHZ, 4);
	sbuf_put_u32(b, s->tsc_khz);
	part_raw(b, VCPU_PART_REGS, &s->regs, sizeof(s->regs));
	if (s->has_sregs2)
		part_raw(b, VCPU_PART_SREGS2, &s->sregs2, sizeof(s->sregs2));
	else
		part_raw(b, VCPU_PART_SREGS, &s->sregs, sizeof(s->sregs));
	if (s->has_xsave)
		part_raw(b, VCPU_PART_XSAVE, s->xsave, s->xsave_len);
	else
		part_raw(b, VCPU_PART_FPU, &s->fpu, sizeof(s->fpu));
	if (s->has_xcrs) {
		nx = MIN(s->xcrs.nr_xcrs, (uint32_t)KVM_MAX_XCRS);
		part_begin(b, VCPU_PART_XCRS, 8 + 12 * nx);
		sbuf_put_u32(b, nx);
		sbuf_put_u32(b, s->xcrs.flags);
		for (i = 0; i < nx; i++) {
			sbuf_put_u32(b, s->xcrs.xcrs[i].xcr);
			sbuf_put_u64(b, s->xcrs.xcrs[i].value);
		}
	}
	part_begin(b, VCPU_PART_MSRS, 4 + 12 * n);
	sbuf_put_u32(b, n);
	for (i = 0; i < n; i++) {
		sbuf_put_u32(b, s->msrs[i].index);
		sbuf_put_u64(b, s->msrs[i].data);
	}
	part_raw(b, VCPU_PART_LAPIC, &s->lapic, sizeof(s->lapic));
	part_raw(b, VCPU_PART_EVENTS, &s->events, sizeof(s->events));
	part_begin(b, VCPU_PART_MP_STATE, 4);
	sbuf_put_u32(b, s->mp_state.mp_state);
	part_raw(b, VCPU_PART_DEBUGREGS, &s->debugregs, sizeof(s->debugregs));
	if (s->has_cpuid) {
		n = MIN(s->ncpuid, VCPU_KVM_STATE_MAX_CPUID);
		part_begin(b, VCPU_PART_CPUID, 4 + CPUID_ENTRY_SIZE * n);
		sbuf_put_u32(b, n);
		for (i = 0; i < n; i++) {
			const struct kvm_cpuid_entry2 *c = &s->cpuid[i];

			sbuf_put_u32(b, c->function);
			sbuf_put_u32(b, c->index);
			sbuf_put_u32(b, c->flags);
			sbuf_put_u32(b, c->eax);
			sbuf_put_u32(b, c->ebx);
			sbuf_put_u32(b, c->ecx);
			sbuf_put_u32(b, c->edx);
		}
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int decode_msrs(const struct part_view *pv, struct vcpu_kvm_state *s, struct qerr *e)
{
	uint32_t idx[VCPU_KVM_STATE_MAX_MSRS];
	struct scur c;
	uint32_t n, i;

	scur_init(&c, pv->p, pv->len);
	n = scur_u32(&c);
	if (!scur_ok(&c))
		return qerr_set(e, EINVAL, "msrs: %u bytes, too short for the count", pv->len);
	if (n > VCPU_KVM_STATE_MAX_MSRS)
		return qerr_set(e, EINVAL, "msrs: %u of them, at most %u", n,
				VCPU_KVM_STATE_MAX_MSRS);
	if (pv->len != 4 + 12 * n)
		return qerr_set(e, EINVAL, "msrs: %u bytes for %u MSRs, expected %u", pv->len, n,
				4 + 12 * n);
	for (i = 0; i < n; i++) {
		s->msrs[i].index = idx[i] = scur_u32(&c);
		s->msrs[i].reserved = 0;
		s->msrs[i].data = scur_u64(&c);
	}
	s->nmsrs = n;
	qsort(idx, n, sizeof(idx[0]), cmp_u32);
	for (i = 1; i < n; i++)
		if (idx[i] == idx[i - 1])
			return qerr_set(e, EINVAL, "msrs: MSR 0x%x appears twice", idx[i]);
	return 0;
}

static int decode_xcrs(const struct part_view *pv, struct vcpu_kvm_state *s, struct qerr *e)
{
	struct scur c;
	uint32_t n, i;

	scur_init(&c, pv->p, pv->len);
	n = scur_u32(&c);
	s->xcrs.flags = scur_u32(&c);
	if (!scur_ok(&c))
		return qerr_set(e, EINVAL, "xcrs: %u bytes, too short for count and flags",
				pv->len);
	if (n > KVM_MAX_XCRS)
		return qerr_set(e, EINVAL, "xcrs: %u of them, at most %u", n, KVM_MAX_XCRS);
	if (pv->len != 8 + 12 * n)
		return qerr_set(e, EINVAL, "xcrs: %u bytes for %u XCRs, expected %u", pv->len, n,
				8 + 12 * n);
	s->xcrs.nr_xcrs = n;
	for (i = 0; i < n; i++) {
		s->xcrs.xcrs[i].xcr = scur_u32(&c);
		s->xcrs.xcrs[i].value = scur_u64(&c);
	}
	s->has_xcrs = true;
	return 0;
}

static int decode_cpuid(const struct part_view *pv, struct vcpu_kvm_state *s, struct qerr *e)
{
	struct scur c;
	uint32_t n, i, j;

	scur_init(&c, pv->p, pv->len);
	n = scur_u32(&c);
	if (!scur_ok(&c))
		return qerr_set(e, EINVAL, "cpuid: %u bytes, too short for the count", pv->len);
	if (n > VCPU_KVM_STATE_MAX_CPUID)
		return qerr_set(e, EINVAL, "cpuid: %u entries, at most %u", n,
				VCPU_KVM_STATE_MAX_CPUID);
	if (pv->len != 4 + CPUID_ENTRY_SIZE * n)
		return qerr_set(e, EINVAL, "cpuid: %u bytes for %u entries, expected %u", pv->len,
				n, 4 + CPUID_ENTRY_SIZE * n);
	for (i = 0; i < n; i++) {
		struct kvm_cpuid_entry2 *x = &s->cpuid[i];

		memset(x, 0, sizeof(*x));
		x->function = scur_u32(&c);
		x->index = scur_u32(&c);
		x->flags = scur_u32(&c);
		x->eax = scur_u32(&c);
		x->ebx = scur_u32(&c);
		x->ecx = scur_u32(&c);
		x->edx = scur_u32(&c);
		if (x->flags & ~(uint32_t)CPUID_FLAGS_KNOWN)
			return qerr_set(e, EINVAL, "cpuid: leaf 0x%x.%u: flags 0x%x", x->function,
					x->index, x->flags);
		for (j = 0; j < i; j++)
			if (s->cpuid[j].function == x->function && s->cpuid[j].index == x->index)
				return qerr_set(e, EINVAL, "cpuid: leaf 0x%x.%u appears twice",
						x->function, x->index);
	}
	s->ncpuid = n;
	s->has_cpuid = true;
	return 0;
}

int vcpu_kvm_state_decode(const uint8_t *buf, size_t len, const struct vcpu_kvm_limits *lim,
			  struct vcpu_kvm_state *s, struct qerr *e)
{
	struct part_view pv[VCPU_PART_COUNT];
	uint32_t ver = 0;
	const struct part_view *x;
	int ret;

	memset(s, 0, sizeof(*s));
	ret = blob_split(buf, len, VCPU_KVM_STATE_MAGIC, VCPU_KVM_STATE_VERSION_MIN,
			 VCPU_KVM_STATE_VERSION, &ver, vcpu_parts, VCPU_PART_COUNT, pv, e);
	if (!ret && ver >= 2 && !pv[VCPU_PART_CPUID].seen)
		ret = qerr_set(e, EINVAL, "cpuid: missing");
	if (!ret && ver < 2 && pv[VCPU_PART_CPUID].seen)
		ret = qerr_set(e, EINVAL, "cpuid: not part of a version %u blob", ver);
	if (!ret)
		ret = one_of(pv, VCPU_PART_SREGS2, VCPU_PART_SREGS, vcpu_parts, e);
	if (!ret)
		ret = one_of(pv, VCPU_PART_XSAVE, VCPU_PART_FPU, vcpu_parts, e);
	if (ret)
		return ret;

	s->vcpu_id = part_u32(&pv[VCPU_PART_ID]);
	s->tsc_khz = part_u32(&pv[VCPU_PART_TSC_KHZ]);
	memcpy(&s->regs, pv[VCPU_PART_REGS].p, sizeof(s->regs));
	s->has_sregs2 = pv[VCPU_PART_SREGS2].seen;
	if (s->has_sregs2)
		memcpy(&s->sregs2, pv[VCPU_PART_SREGS2].p, sizeof(s->sregs2));
	else
		memcpy(&s->sregs, pv[VCPU_PART_SREGS].p, sizeof(s->sregs));
	if (pv[VCPU_PART_FPU].seen)
		memcpy(&s->fpu, pv[VCPU_PART_FPU].p, sizeof(s->fpu));
	if (pv[VCPU_PART_XCRS].seen) {
		if (!lim->xcrs)
			return qerr_set(e, ENOTSUP, "xcrs: this KVM has no KVM_CAP_XCRS");
		ret = decode_xcrs(&pv[VCPU_PART_XCRS], s, e);
		if (ret)
			return ret;
	}
	ret = decode_msrs(&pv[VCPU_PART_MSRS], s, e);
	if (ret)
		return ret;
	if (pv[VCPU_PART_CPUID].seen) {
		ret = decode_cpuid(&pv[VCPU_PART_CPUID], s, e);
		if (ret)
			return ret;
	}
	memcpy(&s->lapic, pv[VCPU_PART_LAPIC].p, sizeof(s->lapic));
	memcpy(&s->events, pv[VCPU_PART_EVENTS].p, sizeof(s->events));
	s->mp_state.mp_state = part_u32(&pv[VCPU_PART_MP_STATE]);
	memcpy(&s->debugregs, pv[VCPU_PART_DEBUGREGS].p, sizeof(s->debugregs));

	/* Last: the only allocation. */
	x = &pv[VCPU_PART_XSAVE];
	if (x->seen) {
		if (!lim->xsave_max)
			return qerr_set(e, ENOTSUP, "xsave: this KVM has no KVM_CAP_XSAVE");
		if (x->len < VCPU_KVM_STATE_XSAVE_MIN || x->len > lim->xsave_max)
			return qerr_set(e, EINVAL, "xsave: %u bytes, this KVM takes %u to %u",
					x->len, VCPU_KVM_STATE_XSAVE_MIN, lim->xsave_max);
		s->xsave = malloc(x->len);
		if (!s->xsave)
			return qerr_set(e, ENOMEM, "xsave: out of memory");
		memcpy(s->xsave, x->p, x->len);
		s->xsave_len = x->len;
		s->has_xsave = true;
	}
	return 0;
}

void vcpu_kvm_state_release(struct vcpu_kvm_state *s)
{
	free(s->xsave);
	s->xsave = NULL;
	s->xsave_len = 0;
	s->has_xsave = false;
}

void vm_kvm_state_encode(const struct vm_kvm_state *s, struct sbuf *b)
{
	sbuf_put_u32(b, VM_KVM_STATE_MAGIC);
	sbuf_put_u32(b, VM_KVM_STATE_VERSION);
	part_raw(b, VM_PART_PIC_MASTER, &s->pic[0], sizeof(s->pic[0]));
	part_raw(b, VM_PART_PIC_SLAVE, &s->pic[1], sizeof(s->pic[1]));
	part_raw(b, VM_PART_IOAPIC, &s->ioapic, sizeof(s->ioapic));
	part_raw(b, VM_PART_PIT, &s->pit, sizeof(s->pit));
	part_begin(b, VM_PART_CLOCK, CLOCK_PART_SIZE);
	sbuf_put_u64(b, s->clock.clock);
	sbuf_put_u32(b, s->clock.flags);
	sbuf_put_u64(b, s->clock.realtime);
	sbuf_put_u64(b, s->clock.host_tsc);
}

int vm_kvm_state_decode(const uint8_t *buf, size_t len, struct vm_kvm_state *s, struct qerr *e)
{
	struct part_view pv[VM_PART_COUNT];
	uint32_t ver = 0;
	struct scur c;
	int ret;

	memset(s, 0, sizeof(*s));
	ret = blob_split(buf, len, VM_KVM_STATE_MAGIC, VM_KVM_STATE_VERSION,
			 VM_KVM_STATE_VERSION, &ver, vm_parts,
			 VM_PART_COUNT, pv, e);
	if (ret)
		return ret;
	memcpy(&s->pic[0], pv[VM_PART_PIC_MASTER].p, sizeof(s->pic[0]));
	memcpy(&s->pic[1], pv[VM_PART_PIC_SLAVE].p, sizeof(s->pic[1]));
	memcpy(&s->ioapic, pv[VM_PART_IOAPIC].p, sizeof(s->ioapic));
	memcpy(&s->pit, pv[VM_PART_PIT].p, sizeof(s->pit));
	scur_init(&c, pv[VM_PART_CLOCK].p, pv[VM_PART_CLOCK].len);
	s->clock.clock = scur_u64(&c);
	s->clock.flags = scur_u32(&c);
	s->clock.realtime = scur_u64(&c);
	s->clock.host_tsc = scur_u64(&c);
	return 0;
}

/* ---- KVM -------------------------------------------------------------- */

static int kvm_cap(struct vm *vm, long cap)
{
	int r = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, cap);

	return r > 0 ? r : 0;
}

/* Capabilities whose answer depends on the VM (KVM_CAP_XSAVE2's size). */
static int vm_cap(struct vm *vm, long cap)
{
	int r = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, cap);

	return r > 0 ? r : 0;
}

/* Bytes KVM_SET_XSAVE copies; 0 without XSAVE. */
static uint32_t xsave_size(struct vm *vm)
{
	int n = vm_cap(vm, KVM_CAP_XSAVE2);

	if (n >= (int)VCPU_KVM_STATE_XSAVE_MIN)
		return (uint32_t)n;
	return kvm_cap(vm, KVM_CAP_XSAVE) ? VCPU_KVM_STATE_XSAVE_MIN : 0;
}

static int ioctl_err(struct vcpu *v, const char *part, const char *op, struct qerr *e)
{
	int err = errno;

	return qerr_set(e, err, "vcpu %u: %s: %s: %s", v->id, part, op, strerror(err));
}

/*
 * The vCPU must be out of KVM_RUN and stay there: never started, parked
 * by vm_pause(), or gone. One that is about to park is waited for.
 */
static int vcpu_quiesced(struct vcpu *v, struct qerr *e)
{
	bool running;

	if (!__atomic_load_n(&v->thread_started, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&v->lock);
	running = v->target == VCPU_RUNNING;
	pthread_mutex_unlock(&v->lock);
	if (running)
		return qerr_set(e, EBUSY, "vcpu %u: running (pause the VM first)", v->id);
	vcpu_wait_state(v, VCPU_PAUSED);
	return 0;
}

/* MSRs KVM_GET_MSR_INDEX_LIST leaves out that a guest's state includes. */
static unsigned int msr_extra(uint32_t *out)
{
	static const uint32_t fixed[] = {
		MSR_EFER,
		MSR_IA32_APICBASE,
		MSR_IA32_TSC_DEADLINE,
		MSR_MTRR_DEF_TYPE,
		MSR_MTRR_FIX64K_00000,
		MSR_MTRR_FIX16K_80000,
		MSR_MTRR_FIX16K_A0000,
	};
	unsigned int n = 0, i;

	for (i = 0; i < ARRAY_SIZE(fixed); i++)
		out[n++] = fixed[i];
	for (i = MSR_MTRR_FIX4K_FIRST; i <= MSR_MTRR_FIX4K_LAST; i++)
		out[n++] = i;
	for (i = MSR_MTRR_PHYS_FIRST; i <= MSR_MTRR_PHYS_LAST; i++)
		out[n++] = i;
	return n;
}

#define MSR_EXTRA_MAX 40

/* Every MSR this host could save, sorted and without repeats. */
static int msr_candidates(struct vcpu *v, uint32_t **out, unsigned int *nout, struct qerr *e)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list;
	unsigned int n, i, j;
	uint32_t *idx;

	if (ioctl(v->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return ioctl_err(v, "msrs", "KVM_GET_MSR_INDEX_LIST", e);
	if (probe.nmsrs > VCPU_KVM_STATE_MAX_MSRS)
		return qerr_set(e, E2BIG, "vcpu %u: msrs: KVM lists %u, the format carries %u",
				v->id, probe.nmsrs, VCPU_KVM_STATE_MAX_MSRS);
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(list->indices[0]));
	idx = calloc(probe.nmsrs + MSR_EXTRA_MAX, sizeof(*idx));
	if (!list || !idx) {
		free(list);
		free(idx);
		return qerr_set(e, ENOMEM, "vcpu %u: msrs: out of memory", v->id);
	}
	list->nmsrs = probe.nmsrs;
	if (probe.nmsrs && ioctl(v->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		free(idx);
		return ioctl_err(v, "msrs", "KVM_GET_MSR_INDEX_LIST", e);
	}
	n = MIN(list->nmsrs, probe.nmsrs);
	memcpy(idx, list->indices, n * sizeof(*idx));
	free(list);
	n += msr_extra(idx + n);
	qsort(idx, n, sizeof(*idx), cmp_u32);
	for (i = j = 0; i < n; i++)
		if (!j || idx[i] != idx[j - 1])
			idx[j++] = idx[i];
	*out = idx;
	*nout = j;
	return 0;
}

static struct kvm_msrs *msr_buf(void)
{
	return calloc(1, sizeof(struct kvm_msrs) + MSR_IO_CHUNK * sizeof(struct kvm_msr_entry));
}

/* Read every candidate KVM_GET_MSRS reads; it stops at the first it cannot. */
static int vcpu_get_msrs(struct vcpu *v, struct vcpu_kvm_state *s, struct qerr *e)
{
	unsigned int ncand = 0, i = 0, j;
	struct kvm_msrs *m;
	uint32_t *cand;
	int ret;

	ret = msr_candidates(v, &cand, &ncand, e);
	if (ret)
		return ret;
	m = msr_buf();
	if (!m) {
		free(cand);
		return qerr_set(e, ENOMEM, "vcpu %u: msrs: out of memory", v->id);
	}
	s->nmsrs = 0;
	while (i < ncand) {
		unsigned int chunk = MIN(ncand - i, MSR_IO_CHUNK);
		int r;

		memset(m->entries, 0, chunk * sizeof(m->entries[0]));
		m->nmsrs = chunk;
		for (j = 0; j < chunk; j++)
			m->entries[j].index = cand[i + j];
		r = ioctl(v->fd, KVM_GET_MSRS, m);
		if (r < 0 || (unsigned int)r > chunk) {
			ret = ioctl_err(v, "msrs", "KVM_GET_MSRS", e);
			break;
		}
		if (s->nmsrs + r > VCPU_KVM_STATE_MAX_MSRS) {
			ret = qerr_set(e, E2BIG, "vcpu %u: msrs: more than %u readable", v->id,
				       VCPU_KVM_STATE_MAX_MSRS);
			break;
		}
		for (j = 0; j < (unsigned int)r; j++)
			s->msrs[s->nmsrs++] = m->entries[j];
		i += r;
		if ((unsigned int)r < chunk)
			i++; /* not readable on this vCPU: not part of its state */
	}
	free(m);
	free(cand);
	return ret;
}

/* KVM has no ioctl to ask how a vCPU's nested state looks; refuse what we cannot carry. */
static int vcpu_check_nested(struct vcpu *v, struct qerr *e)
{
	int size = vm_cap(v->vm, KVM_CAP_NESTED_STATE);
	struct kvm_nested_state *ns;
	bool active;

	if (size < (int)sizeof(*ns))
		return 0;
	ns = calloc(1, size);
	if (!ns)
		return qerr_set(e, ENOMEM, "vcpu %u: out of memory", v->id);
	ns->size = size;
	if (ioctl(v->fd, KVM_GET_NESTED_STATE, ns) < 0) {
		free(ns);
		return ioctl_err(v, "nested", "KVM_GET_NESTED_STATE", e);
	}
	active = (ns->flags & KVM_STATE_NESTED_GUEST_MODE) ||
		 (ns->format == KVM_STATE_NESTED_FORMAT_VMX && ns->hdr.vmx.vmxon_pa != ~0ULL);
	free(ns);
	if (active)
		return qerr_set(e, ENOTSUP,
				"vcpu %u: the guest uses VMX/SVM itself (nested virtualization), "
				"whose state qlite does not save",
				v->id);
	return 0;
}

/*
 * The vCPU's CPUID as KVM has it (what the guest sees), padding zeroed.
 * How many entries: Linux 6.3+ sets nent when KVM_GET_CPUID2 succeeds;
 * before, nent stays as passed (and E2BIG does not say either), so the
 * buffer starts filled with entries KVM never writes (flags all ones) and
 * the count is where they begin.
 */
static int vcpu_get_cpuid(struct vcpu *v, struct kvm_cpuid_entry2 *out, uint32_t *n,
			  struct qerr *e)
{
	const uint32_t max = VCPU_KVM_STATE_MAX_CPUID;
	struct kvm_cpuid2 *c;
	uint32_t i, got;

	c = calloc(1, sizeof(*c) + max * sizeof(c->entries[0]));
	if (!c)
		return qerr_set(e, ENOMEM, "vcpu %u: cpuid: out of memory", v->id);
	c->nent = max;
	for (i = 0; i < max; i++)
		c->entries[i].flags = UINT32_MAX;
	if (ioctl(v->fd, KVM_GET_CPUID2, c) < 0) {
		int ret = ioctl_err(v, "cpuid", "KVM_GET_CPUID2", e);

		free(c);
		return ret;
	}
	got = MIN(c->nent, max);
	for (i = 0; i < got; i++)
		if (c->entries[i].flags == UINT32_MAX)
			break;
	got = i;
	*n = got;
	for (i = 0; i < got; i++) {
		out[i] = c->entries[i];
		memset(out[i].padding, 0, sizeof(out[i].padding));
	}
	free(c);
	return 0;
}

static int vcpu_get_state(struct vcpu *v, struct vcpu_kvm_state *s, struct qerr *e)
{
	struct vm *vm = v->vm;
	uint32_t xsize;
	int ret;

	s->vcpu_id = v->id;
	if (kvm_cap(vm, KVM_CAP_GET_TSC_KHZ)) {
		int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);

		s->tsc_khz = khz > 0 ? (uint32_t)khz : 0;
	}
	if (ioctl(v->fd, KVM_GET_REGS, &s->regs) < 0)
		return ioctl_err(v, "regs", "KVM_GET_REGS", e);
	if (kvm_cap(vm, KVM_CAP_SREGS2)) {
		if (ioctl(v->fd, KVM_GET_SREGS2, &s->sregs2) < 0)
			return ioctl_err(v, "sregs2", "KVM_GET_SREGS2", e);
		s->has_sregs2 = true;
	} else if (ioctl(v->fd, KVM_GET_SREGS, &s->sregs) < 0) {
		return ioctl_err(v, "sregs", "KVM_GET_SREGS", e);
	}
	xsize = xsave_size(vm);
	if (xsize) {
		s->xsave = calloc(1, xsize);
		if (!s->xsave)
			return qerr_set(e, ENOMEM, "vcpu %u: xsave: out of memory", v->id);
		s->xsave_len = xsize;
		s->has_xsave = true;
		if (vm_cap(vm, KVM_CAP_XSAVE2) >= (int)VCPU_KVM_STATE_XSAVE_MIN) {
			if (ioctl(v->fd, KVM_GET_XSAVE2, s->xsave) < 0)
				return ioctl_err(v, "xsave", "KVM_GET_XSAVE2", e);
		} else if (ioctl(v->fd, KVM_GET_XSAVE, s->xsave) < 0) {
			return ioctl_err(v, "xsave", "KVM_GET_XSAVE", e);
		}
	} else if (ioctl(v->fd, KVM_GET_FPU, &s->fpu) < 0) {
		return ioctl_err(v, "fpu", "KVM_GET_FPU", e);
	}
	if (kvm_cap(vm, KVM_CAP_XCRS)) {
		if (ioctl(v->fd, KVM_GET_XCRS, &s->xcrs) < 0)
			return ioctl_err(v, "xcrs", "KVM_GET_XCRS", e);
		if (s->xcrs.nr_xcrs > KVM_MAX_XCRS)
			return qerr_set(e, EIO, "vcpu %u: xcrs: KVM returned %u", v->id,
					s->xcrs.nr_xcrs);
		s->has_xcrs = true;
	}
	ret = vcpu_get_msrs(v, s, e);
	if (ret)
		return ret;
	if (ioctl(v->fd, KVM_GET_LAPIC, &s->lapic) < 0)
		return ioctl_err(v, "lapic", "KVM_GET_LAPIC", e);
	if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &s->events) < 0)
		return ioctl_err(v, "events", "KVM_GET_VCPU_EVENTS", e);
	if (ioctl(v->fd, KVM_GET_MP_STATE, &s->mp_state) < 0)
		return ioctl_err(v, "mp-state", "KVM_GET_MP_STATE", e);
	if (ioctl(v->fd, KVM_GET_DEBUGREGS, &s->debugregs) < 0)
		return ioctl_err(v, "debugregs", "KVM_GET_DEBUGREGS", e);
	ret = vcpu_get_cpuid(v, s->cpuid, &s->ncpuid, e);
	if (ret)
		return ret;
	s->has_cpuid = s->ncpuid > 0; /* none set: version 1 */
	return vcpu_check_nested(v, e);
}

int vcpu_state_save(struct vcpu *v, struct sbuf *b, struct qerr *e)
{
	struct vcpu_kvm_state *s;
	int ret;

	ret = vcpu_quiesced(v, e);
	if (ret)
		return ret;
	s = calloc(1, sizeof(*s));
	if (!s)
		return qerr_set(e, ENOMEM, "vcpu %u: out of memory", v->id);
	ret = vcpu_get_state(v, s, e);
	if (!ret) {
		vcpu_kvm_state_encode(s, b);
		if (sbuf_status(b))
			ret = qerr_set(e, ENOMEM, "vcpu %u: out of memory", v->id);
	}
	vcpu_kvm_state_release(s);
	free(s);
	return ret;
}

/*
 * The checkpoint's TSC frequency on this host: equal, scaled by KVM, or
 * within what KVM itself would not scale (see the top of the file).
 */
static int vcpu_set_tsc_khz(struct vcpu *v, uint32_t want, struct qerr *e)
{
	struct vm *vm = v->vm;
	uint64_t diff;
	int have = 0;

	if (!want)
		return 0; /* the source could not tell */
	if (kvm_cap(vm, KVM_CAP_GET_TSC_KHZ))
		have = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (have > 0 && (uint32_t)have == want)
		return 0;
	if (kvm_cap(vm, KVM_CAP_TSC_CONTROL)) {
		if (ioctl(v->fd, KVM_SET_TSC_KHZ, (unsigned long)want) < 0)
			return ioctl_err(v, "tsc-khz", "KVM_SET_TSC_KHZ", e);
		return 0;
	}
	if (have <= 0)
		return qerr_set(e, ENOTSUP,
				"vcpu %u: tsc-khz: the guest's TSC ran at %u kHz; this host can "
				"neither tell its own TSC frequency nor scale the guest's",
				v->id, want);
	diff = (uint64_t)(want > (uint32_t)have ? want - have : have - want) * 1000000u;
	if (diff <= (uint64_t)TSC_KHZ_TOLERANCE_PPM * want)
		return 0;
	return qerr_set(e, ENOTSUP,
			"vcpu %u: tsc-khz: the guest's TSC ran at %u kHz, this host's runs at %d "
			"kHz (%llu ppm apart, more than %u) and KVM cannot scale it "
			"(no KVM_CAP_TSC_CONTROL)",
			v->id, want, have, (unsigned long long)(diff / want),
			TSC_KHZ_TOLERANCE_PPM);
}

static int vcpu_set_msrs(struct vcpu *v, const struct kvm_msr_entry *ents, unsigned int n,
			 struct qerr *e)
{
	struct kvm_msrs *m = msr_buf();
	unsigned int i = 0;
	int ret = 0;

	if (!m)
		return qerr_set(e, ENOMEM, "vcpu %u: msrs: out of memory", v->id);
	while (i < n) {
		unsigned int chunk = MIN(n - i, MSR_IO_CHUNK);
		int r;

		m->nmsrs = chunk;
		memcpy(m->entries, ents + i, chunk * sizeof(m->entries[0]));
		r = ioctl(v->fd, KVM_SET_MSRS, m);
		if (r < 0) {
			ret = ioctl_err(v, "msrs", "KVM_SET_MSRS", e);
			break;
		}
		if ((unsigned int)r < chunk) {
			ret = qerr_set(e, EINVAL, "vcpu %u: msrs: KVM refused MSR 0x%x = 0x%llx",
				       v->id, ents[i + r].index,
				       (unsigned long long)ents[i + r].data);
			break;
		}
		i += chunk;
	}
	free(m);
	return ret;
}

/* When each MSR is written (see the top of the file). */
enum msr_phase {
	MSR_FIRST, /* the TSC before kvmclock; the async PF vector before its enable */
	MSR_MIDDLE,
	MSR_CLOCK, /* kvmclock and wall clock, after the TSC */
	MSR_AFTER_LAPIC, /* TSC_DEADLINE: dropped unless the timer is in deadline mode */
	MSR_PHASES,
};

static enum msr_phase msr_phase(uint32_t index)
{
	switch (index) {
	case MSR_IA32_TSC:
	case MSR_KVM_ASYNC_PF_INT:
		return MSR_FIRST;
	case MSR_KVM_SYSTEM_TIME:
	case MSR_KVM_SYSTEM_TIME_NEW:
	case MSR_KVM_WALL_CLOCK:
	case MSR_KVM_WALL_CLOCK_NEW:
		return MSR_CLOCK;
	case MSR_IA32_TSC_DEADLINE:
		return MSR_AFTER_LAPIC;
	default:
		return MSR_MIDDLE;
	}
}

/* Every MSR of the blob must be one this host saves: KVM would take some others. */
static int msrs_check_known(struct vcpu *v, const struct vcpu_kvm_state *s, struct qerr *e)
{
	unsigned int ncand = 0, i;
	uint32_t *cand;
	int ret;

	ret = msr_candidates(v, &cand, &ncand, e);
	if (ret)
		return ret;
	for (i = 0; i < s->nmsrs; i++)
		if (!bsearch(&s->msrs[i].index, cand, ncand, sizeof(*cand), cmp_u32)) {
			ret = qerr_set(e, EINVAL, "vcpu %u: msrs: MSR 0x%x is not one this KVM has",
				       v->id, s->msrs[i].index);
			break;
		}
	free(cand);
	return ret;
}

static void sregs_from_sregs2(struct kvm_sregs *d, const struct kvm_sregs2 *s)
{
	memset(d, 0, sizeof(*d));
	d->cs = s->cs;
	d->ds = s->ds;
	d->es = s->es;
	d->fs = s->fs;
	d->gs = s->gs;
	d->ss = s->ss;
	d->tr = s->tr;
	d->ldt = s->ldt;
	d->gdt = s->gdt;
	d->idt = s->idt;
	d->cr0 = s->cr0;
	d->cr2 = s->cr2;
	d->cr3 = s->cr3;
	d->cr4 = s->cr4;
	d->cr8 = s->cr8;
	d->efer = s->efer;
	d->apic_base = s->apic_base;
	/* The PDPTRs are lost: KVM reloads them from CR3, as before SREGS2. */
}

static int vcpu_set_sregs(struct vcpu *v, const struct vcpu_kvm_state *s, struct qerr *e)
{
	struct kvm_sregs sr;

	if (!s->has_sregs2) {
		if (ioctl(v->fd, KVM_SET_SREGS, &s->sregs) < 0)
			return ioctl_err(v, "sregs", "KVM_SET_SREGS", e);
		return 0;
	}
	if (kvm_cap(v->vm, KVM_CAP_SREGS2)) {
		if (ioctl(v->fd, KVM_SET_SREGS2, &s->sregs2) < 0)
			return ioctl_err(v, "sregs2", "KVM_SET_SREGS2", e);
		return 0;
	}
	sregs_from_sregs2(&sr, &s->sregs2);
	if (ioctl(v->fd, KVM_SET_SREGS, &sr) < 0)
		return ioctl_err(v, "sregs2", "KVM_SET_SREGS", e);
	return 0;
}

static int vcpu_set_fpu(struct vcpu *v, const struct vcpu_kvm_state *s, uint32_t xsave_max,
			struct qerr *e)
{
	uint8_t *buf;
	int ret = 0;

	if (!s->has_xsave) {
		if (ioctl(v->fd, KVM_SET_FPU, &s->fpu) < 0)
			return ioctl_err(v, "fpu", "KVM_SET_FPU", e);
		return 0;
	}
	/* KVM copies xsave_max bytes; a shorter area (older host) ends in zeros. */
	buf = calloc(1, xsave_max);
	if (!buf)
		return qerr_set(e, ENOMEM, "vcpu %u: xsave: out of memory", v->id);
	memcpy(buf, s->xsave, s->xsave_len);
	if (ioctl(v->fd, KVM_SET_XSAVE, buf) < 0)
		ret = ioctl_err(v, "xsave", "KVM_SET_XSAVE", e);
	free(buf);
	return ret;
}

static int vcpu_set_state(struct vcpu *v, const struct vcpu_kvm_state *s, uint32_t xsave_max,
			  struct qerr *e)
{
	struct kvm_msr_entry *order;
	struct kvm_vcpu_events ev;
	unsigned int n = 0, late = 0, i;
	int ret, p;

	ret = vcpu_set_tsc_khz(v, s->tsc_khz, e);
	if (ret)
		return ret;
	if (ioctl(v->fd, KVM_SET_REGS, &s->regs) < 0)
		return ioctl_err(v, "regs", "KVM_SET_REGS", e);
	ret = vcpu_set_fpu(v, s, xsave_max, e);
	if (ret)
		return ret;
	if (s->has_xcrs && ioctl(v->fd, KVM_SET_XCRS, &s->xcrs) < 0)
		return ioctl_err(v, "xcrs", "KVM_SET_XCRS", e);
	ret = vcpu_set_sregs(v, s, e);
	if (ret)
		return ret;

	order = calloc(s->nmsrs + 1, sizeof(*order));
	if (!order)
		return qerr_set(e, ENOMEM, "vcpu %u: msrs: out of memory", v->id);
	for (p = 0; p < MSR_PHASES; p++) {
		if (p == MSR_AFTER_LAPIC)
			late = n;
		for (i = 0; i < s->nmsrs; i++)
			if (msr_phase(s->msrs[i].index) == (enum msr_phase)p)
				order[n++] = s->msrs[i];
	}
	ret = vcpu_set_msrs(v, order, late, e);
	if (ret)
		goto out;
	if (ioctl(v->fd, KVM_SET_MP_STATE, &s->mp_state) < 0) {
		ret = ioctl_err(v, "mp-state", "KVM_SET_MP_STATE", e);
		goto out;
	}
	if (ioctl(v->fd, KVM_SET_LAPIC, &s->lapic) < 0) {
		ret = ioctl_err(v, "lapic", "KVM_SET_LAPIC", e);
		goto out;
	}
	ret = vcpu_set_msrs(v, order + late, n - late, e);
	if (ret)
		goto out;
	/* Older KVMs report nmi.pending without saying it is valid. */
	ev = s->events;
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING;
	if (ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev) < 0) {
		ret = ioctl_err(v, "events", "KVM_SET_VCPU_EVENTS", e);
		goto out;
	}
	if (ioctl(v->fd, KVM_SET_DEBUGREGS, &s->debugregs) < 0)
		ret = ioctl_err(v, "debugregs", "KVM_SET_DEBUGREGS", e);
out:
	free(order);
	return ret;
}

static const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid_entry2 *ents,
						  uint32_t n, uint32_t fn, uint32_t idx)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if (ents[i].function == fn &&
		    (ents[i].index == idx || !(ents[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX)))
			return &ents[i];
	return NULL;
}

/* CPUID registers that are feature bitmaps, less bits that follow guest state. */
static const struct cpuid_feature {
	uint32_t fn, idx;
	uint8_t reg; /* 0 eax, 1 ebx, 2 ecx, 3 edx */
	uint32_t dynamic;
} cpuid_features[] = {
	{ 1, 0, 2, 1u << 27 },	/* OSXSAVE follows CR4 */
	{ 1, 0, 3, 1u << 9 },	/* APIC follows the APIC base MSR */
	{ 6, 0, 0, 0 },		{ 7, 0, 1, 0 },	     { 7, 0, 2, 1u << 4 }, /* OSPKE follows CR4 */
	{ 7, 0, 3, 0 },		{ 7, 1, 0, 0 },	     { 0xd, 0, 0, 0 }, /* XCR0 components */
	{ 0xd, 0, 3, 0 },	{ 0xd, 1, 0, 0 },    { 0x80000001, 0, 2, 0 },
	{ 0x80000001, 0, 3, 0 }, { 0x80000007, 0, 3, 0 }, { 0x80000008, 0, 1, 0 },
	{ 0x40000001, 0, 0, 0 }, /* KVM's paravirtual features */
};

static uint32_t cpuid_reg(const struct kvm_cpuid_entry2 *x, unsigned int reg)
{
	if (!x)
		return 0;
	return reg == 0 ? x->eax : reg == 1 ? x->ebx : reg == 2 ? x->ecx : x->edx;
}

/*
 * Can this host give the guest the CPU it saw? Same vendor, and every
 * feature bit it saw is one KVM offers here (the vCPU's CPUID as qlite set
 * it from KVM_GET_SUPPORTED_CPUID, @have). Other leaves (caches, topology,
 * brand) are the source's as they are: the guest keeps what it read.
 */
static int cpuid_check(struct vcpu *v, const struct vcpu_kvm_state *s,
		       const struct kvm_cpuid_entry2 *have, uint32_t nhave, struct qerr *e)
{
	static const char *const regs[] = { "eax", "ebx", "ecx", "edx" };
	const struct kvm_cpuid_entry2 *a = cpuid_find(s->cpuid, s->ncpuid, 0, 0);
	const struct kvm_cpuid_entry2 *b = cpuid_find(have, nhave, 0, 0);
	unsigned int i;

	if (!a)
		return qerr_set(e, EINVAL, "vcpu %u: cpuid: no leaf 0", v->id);
	if (b && (a->ebx != b->ebx || a->ecx != b->ecx || a->edx != b->edx)) {
		char va[13], vb[13];

		memcpy(va, &a->ebx, 4), memcpy(va + 4, &a->edx, 4), memcpy(va + 8, &a->ecx, 4);
		memcpy(vb, &b->ebx, 4), memcpy(vb + 4, &b->edx, 4), memcpy(vb + 8, &b->ecx, 4);
		va[12] = vb[12] = '\0';
		for (i = 0; i < 12; i++)
			if (va[i] < 0x20 || va[i] > 0x7e)
				va[i] = '?';
		return qerr_set(e, ENOTSUP, "vcpu %u: cpuid: the guest's CPU is %s, this host's %s",
				v->id, va, vb);
	}
	for (i = 0; i < ARRAY_SIZE(cpuid_features); i++) {
		const struct cpuid_feature *f = &cpuid_features[i];
		uint32_t want = cpuid_reg(cpuid_find(s->cpuid, s->ncpuid, f->fn, f->idx), f->reg);
		uint32_t can = cpuid_reg(cpuid_find(have, nhave, f->fn, f->idx), f->reg);
		uint32_t extra = want & ~can & ~f->dynamic;

		if (extra)
			return qerr_set(e, ENOTSUP,
					"vcpu %u: cpuid: the guest's CPU has features this host's "
					"KVM does not offer: leaf 0x%x.%u %s bits 0x%08x",
					v->id, f->fn, f->idx, regs[f->reg], extra);
	}
	return 0;
}

static bool cpuid_same(const struct kvm_cpuid_entry2 *a, uint32_t na,
		       const struct kvm_cpuid_entry2 *b, uint32_t nb)
{
	uint32_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++) {
		const struct kvm_cpuid_entry2 *y = cpuid_find(b, nb, a[i].function, a[i].index);

		if (!y || y->flags != a[i].flags || y->eax != a[i].eax || y->ebx != a[i].ebx ||
		    y->ecx != a[i].ecx || y->edx != a[i].edx)
			return false;
	}
	return true;
}

/* Give the vCPU the CPU model of the state, if it has one and this host can. */
static int vcpu_set_cpuid(struct vcpu *v, const struct vcpu_kvm_state *s, struct qerr *e)
{
	struct kvm_cpuid_entry2 *have;
	struct kvm_cpuid2 *c;
	uint32_t nhave = 0;
	int ret;

	if (!s->has_cpuid)
		return 0;
	have = calloc(VCPU_KVM_STATE_MAX_CPUID, sizeof(*have));
	if (!have)
		return qerr_set(e, ENOMEM, "vcpu %u: cpuid: out of memory", v->id);
	ret = vcpu_get_cpuid(v, have, &nhave, e);
	if (!ret)
		ret = cpuid_check(v, s, have, nhave, e);
	/* KVM refuses a changed CPUID once the vCPU ran (snapshot-load into a VM). */
	if (ret || cpuid_same(s->cpuid, s->ncpuid, have, nhave)) {
		free(have);
		return ret;
	}
	free(have);
	c = calloc(1, sizeof(*c) + s->ncpuid * sizeof(c->entries[0]));
	if (!c)
		return qerr_set(e, ENOMEM, "vcpu %u: cpuid: out of memory", v->id);
	c->nent = s->ncpuid;
	memcpy(c->entries, s->cpuid, s->ncpuid * sizeof(c->entries[0]));
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		ret = qerr_set(e, errno,
			       "vcpu %u: cpuid: KVM_SET_CPUID2: %s (a vCPU that ran keeps its "
			       "CPU model)",
			       v->id, strerror(errno));
	free(c);
	return ret;
}

int vcpu_state_load(struct vcpu *v, const uint8_t *buf, size_t len, struct qerr *e)
{
	struct vcpu_kvm_limits lim = {
		.xsave_max = xsave_size(v->vm),
		.xcrs = kvm_cap(v->vm, KVM_CAP_XCRS) > 0,
	};
	struct vcpu_kvm_state *s;
	struct qerr de = { 0 };
	int ret;

	ret = vcpu_quiesced(v, e);
	if (ret)
		return ret;
	s = calloc(1, sizeof(*s));
	if (!s)
		return qerr_set(e, ENOMEM, "vcpu %u: out of memory", v->id);
	ret = vcpu_kvm_state_decode(buf, len, &lim, s, &de);
	if (ret)
		ret = qerr_set(e, -ret, "vcpu %u: %s", v->id, de.msg);
	else if (s->vcpu_id != v->id)
		ret = qerr_set(e, EINVAL, "vcpu %u: id: the state is vCPU %u's", v->id,
			       s->vcpu_id);
	if (!ret)
		ret = msrs_check_known(v, s, e);
	if (!ret)
		ret = vcpu_set_cpuid(v, s, e);
	if (!ret)
		ret = vcpu_set_state(v, s, lim.xsave_max, e);
	vcpu_kvm_state_release(s);
	free(s);
	return ret;
}

/* ---- the VM ----------------------------------------------------------- */

static int vm_quiesced(struct vm *vm, struct qerr *e)
{
	unsigned int i;
	int ret;

	for (i = 0; i < vm->ncpus; i++) {
		ret = vcpu_quiesced(vm->vcpus[i], e);
		if (ret)
			return ret;
	}
	return 0;
}

static int vm_ioctl_err(const char *part, const char *op, struct qerr *e)
{
	int err = errno;

	return qerr_set(e, err, "vm: %s: %s: %s", part, op, strerror(err));
}

int vm_kvm_state_save(struct vm *vm, struct sbuf *b, struct qerr *e)
{
	struct vm_kvm_state s;
	struct kvm_irqchip chip;
	unsigned int i;
	int ret;

	ret = vm_quiesced(vm, e);
	if (ret)
		return ret;
	memset(&s, 0, sizeof(s));
	for (i = KVM_IRQCHIP_PIC_MASTER; i <= KVM_IRQCHIP_IOAPIC; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = i;
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
			return vm_ioctl_err(vm_parts[VM_PART_PIC_MASTER + i].name,
					    "KVM_GET_IRQCHIP", e);
		if (i == KVM_IRQCHIP_IOAPIC)
			s.ioapic = chip.chip.ioapic;
		else
			s.pic[i] = chip.chip.pic;
	}
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &s.pit) < 0)
		return vm_ioctl_err("pit", "KVM_GET_PIT2", e);
	/* Paused (or loaded and not started): the clock the guest will resume with. */
	if ((vm->paused || vm->clock_loaded) && vm->paused_clock.clock)
		s.clock = vm->paused_clock;
	else if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &s.clock) < 0)
		return vm_ioctl_err("clock", "KVM_GET_CLOCK", e);
	vm_kvm_state_encode(&s, b);
	if (sbuf_status(b))
		return qerr_set(e, ENOMEM, "vm: out of memory");
	return 0;
}

int vm_kvm_state_load(struct vm *vm, const uint8_t *buf, size_t len, struct qerr *e)
{
	struct kvm_clock_data clock = { 0 };
	struct vm_kvm_state s;
	struct kvm_irqchip chip;
	struct qerr de = { 0 };
	unsigned int i;
	int ret;

	ret = vm_quiesced(vm, e);
	if (ret)
		return ret;
	ret = vm_kvm_state_decode(buf, len, &s, &de);
	if (ret)
		return qerr_set(e, -ret, "vm: %s", de.msg);
	for (i = KVM_IRQCHIP_PIC_MASTER; i <= KVM_IRQCHIP_IOAPIC; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = i;
		if (i == KVM_IRQCHIP_IOAPIC)
			chip.chip.ioapic = s.ioapic;
		else
			chip.chip.pic = s.pic[i];
		if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
			return vm_ioctl_err(vm_parts[VM_PART_PIC_MASTER + i].name,
					    "KVM_SET_IRQCHIP", e);
	}
	if (ioctl(vm->vm_fd, KVM_SET_PIT2, &s.pit) < 0)
		return vm_ioctl_err("pit", "KVM_SET_PIT2", e);
	/* No KVM_CLOCK_REALTIME: the guest must not see the checkpointed time pass. */
	clock.clock = s.clock.clock;
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0)
		return vm_ioctl_err("clock", "KVM_SET_CLOCK", e);
	/* vm_start()/vm_resume() set it again as the vCPUs (re)start. */
	vm->paused_clock = s.clock;
	vm->clock_loaded = true;
	return 0;
}
