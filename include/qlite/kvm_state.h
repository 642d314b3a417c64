/* SPDX-License-Identifier: MIT */
/*
 * The KVM state blobs of checkpoint/restore in decoded form: what
 * vcpu_state_save() and vm_kvm_state_save() write (byte format: the comment
 * at the top of src/vcpu/state.c). Encoding and decoding are pure, apart
 * from the ioctls, so the parser of hostile blobs is tested without KVM.
 */
#ifndef QLITE_KVM_STATE_H
#define QLITE_KVM_STATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qlite/sbuf.h"
#include "qlite/util.h"

/* "Qvcp" and "Qvmk" as little-endian u32s: a blob of the other kind is refused. */
#define VCPU_KVM_STATE_MAGIC 0x70637651u
#define VM_KVM_STATE_MAGIC 0x6b6d7651u
/* Version 2 adds the CPU model (a required cpuid part); 1 still loads. */
#define VCPU_KVM_STATE_VERSION 2u
#define VCPU_KVM_STATE_VERSION_MIN 1u
#define VM_KVM_STATE_VERSION 1u

/* KVM lists 40-300 MSRs (more with a vPMU); a blob may claim no more than this. */
#define VCPU_KVM_STATE_MAX_MSRS 1024u
/* KVM reports ~40-80 CPUID entries; a blob may carry no more than this. */
#define VCPU_KVM_STATE_MAX_CPUID 256u
/* KVM_GET_XSAVE's size; KVM_GET_XSAVE2 may need more (AMX). */
#define VCPU_KVM_STATE_XSAVE_MIN 4096u

/* Part tags of a vCPU blob (0 is never a tag). */
enum vcpu_kvm_part {
	VCPU_PART_ID = 1,
	VCPU_PART_TSC_KHZ,
	VCPU_PART_REGS,
	VCPU_PART_SREGS,
	VCPU_PART_SREGS2,
	VCPU_PART_FPU,
	VCPU_PART_XSAVE,
	VCPU_PART_XCRS,
	VCPU_PART_MSRS,
	VCPU_PART_LAPIC,
	VCPU_PART_EVENTS,
	VCPU_PART_MP_STATE,
	VCPU_PART_DEBUGREGS,
	VCPU_PART_CPUID, /* version 2 */
	VCPU_PART_COUNT,
};

/* Part tags of the VM blob. */
enum vm_kvm_part {
	VM_PART_PIC_MASTER = 1,
	VM_PART_PIC_SLAVE,
	VM_PART_IOAPIC,
	VM_PART_PIT,
	VM_PART_CLOCK,
	VM_PART_COUNT,
};

/* A part's name as error messages use it ("msrs"); NULL for no such tag. */
const char *vcpu_kvm_part_name(unsigned int tag);
const char *vm_kvm_part_name(unsigned int tag);

struct vcpu_kvm_state {
	uint32_t vcpu_id;
	uint32_t tsc_khz; /* 0: the source could not tell */
	struct kvm_regs regs;
	bool has_sregs2; /* sregs2 (with PDPTRs), else sregs */
	struct kvm_sregs sregs;
	struct kvm_sregs2 sregs2;
	bool has_xsave; /* xsave, else fpu */
	struct kvm_fpu fpu;
	uint8_t *xsave; /* malloc()ed, xsave_len bytes */
	uint32_t xsave_len;
	bool has_xcrs;
	struct kvm_xcrs xcrs;
	uint32_t nmsrs;
	struct kvm_msr_entry msrs[VCPU_KVM_STATE_MAX_MSRS];
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp_state;
	struct kvm_debugregs debugregs;
	/* The CPU model the guest saw (KVM_GET_CPUID2); padding is zero. */
	bool has_cpuid;
	uint32_t ncpuid;
	struct kvm_cpuid_entry2 cpuid[VCPU_KVM_STATE_MAX_CPUID];
};

/* What the loading host's KVM takes; the decoder refuses anything beyond. */
struct vcpu_kvm_limits {
	uint32_t xsave_max; /* bytes KVM_SET_XSAVE copies; 0: no KVM_CAP_XSAVE */
	bool xcrs; /* KVM_CAP_XCRS */
};

void vcpu_kvm_state_encode(const struct vcpu_kvm_state *s, struct sbuf *b);
/*
 * @buf is hostile: every length is checked against the format and @lim.
 * Messages start with the part they are about ("msrs: ..."). On success
 * the caller owns s->xsave (vcpu_kvm_state_release); on failure nothing
 * is left allocated.
 */
int vcpu_kvm_state_decode(const uint8_t *buf, size_t len, const struct vcpu_kvm_limits *lim,
			  struct vcpu_kvm_state *s, struct qerr *e);
void vcpu_kvm_state_release(struct vcpu_kvm_state *s);

struct vm_kvm_state {
	struct kvm_pic_state pic[2]; /* master, slave */
	struct kvm_ioapic_state ioapic;
	struct kvm_pit_state2 pit;
	/* Only clock is loaded; flags, realtime and host_tsc say when it was read. */
	struct kvm_clock_data clock;
};

void vm_kvm_state_encode(const struct vm_kvm_state *s, struct sbuf *b);
int vm_kvm_state_decode(const uint8_t *buf, size_t len, struct vm_kvm_state *s, struct qerr *e);

#endif
