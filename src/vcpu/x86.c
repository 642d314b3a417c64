// SPDX-License-Identifier: MIT
/* x86 reset state for a vCPU: CPUID, MSRs, FPU, LAPIC. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "qlite/vcpu.h"
#include "qlite/vm.h"
#include "qlite/vpmu.h"

#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_ECX_X2APIC (1u << 21)
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID_1_EDX_HTT (1u << 28)

/*
 * Make KVM's supported CPUID into what one vCPU of an @ncpus guest sees:
 * its own APIC id everywhere the topology is reported, the hypervisor bit,
 * and no PMU unless @pmu (--pmu on/allow=; see vpmu.h).
 */
int cpuid_filter(struct kvm_cpuid2 *c, unsigned int vcpu_id, unsigned int ncpus, bool pmu)
{
	unsigned int i;

	if (!c || ncpus == 0 || vcpu_id >= ncpus)
		return -EINVAL;
	for (i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		switch (e->function) {
		case 1:
			/* EBX[31:24] initial APIC id, [23:16] logical processors per package. */
			e->ebx = (e->ebx & 0x0000ffffu) | (vcpu_id << 24) |
				 ((ncpus > 255 ? 255 : ncpus) << 16);
			e->ecx |= CPUID_1_ECX_HYPERVISOR;
			if (ncpus > 1)
				e->edx |= CPUID_1_EDX_HTT;
			break;
		case 0xb:
		case 0x1f:
			/* x2APIC topology: EDX is this CPU's x2APIC id on every subleaf. */
			e->edx = vcpu_id;
			break;
		case 0x8000001e:
			/* AMD extended APIC id. */
			e->eax = vcpu_id;
			break;
		default:
			break;
		}
	}
	vpmu_cpuid_apply(c, pmu);
	return 0;
}

static int vcpu_setup_cpuid(struct vcpu *v)
{
	const struct kvm_cpuid2 *sup = v->vm->supported_cpuid;
	size_t sz = sizeof(*sup) + sup->nent * sizeof(sup->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	int ret;

	if (!c)
		return -ENOMEM;
	memcpy(c, sup, sz);
	ret = cpuid_filter(c, v->id, v->vm->ncpus,
			   v->vm->cfg.pmu && v->vm->cfg.pmu->mode != VPMU_OFF);
	/* KVM emulates the TSC deadline timer but reports it as a capability. */
	if (!ret && ioctl(v->vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0) {
		unsigned int i;

		for (i = 0; i < c->nent; i++)
			if (c->entries[i].function == 1)
				c->entries[i].ecx |= CPUID_1_ECX_TSC_DEADLINE;
	}
	if (!ret && ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		ret = -errno;
	free(c);
	return ret;
}

#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_IA32_TSC 0x10

static bool msr_supported(const struct kvm_msr_list *list, uint32_t index)
{
	unsigned int i;

	for (i = 0; list && i < list->nmsrs; i++)
		if (list->indices[i] == index)
			return true;
	return false;
}

static int vcpu_setup_msrs(struct vcpu *v)
{
	static const struct {
		uint32_t index;
		uint64_t value;
	} init[] = {
		{ MSR_IA32_SYSENTER_CS, 0 },
		{ MSR_IA32_SYSENTER_ESP, 0 },
		{ MSR_IA32_SYSENTER_EIP, 0 },
		{ MSR_STAR, 0 },
		{ MSR_CSTAR, 0 },
		{ MSR_KERNEL_GS_BASE, 0 },
		{ MSR_SYSCALL_MASK, 0 },
		{ MSR_LSTAR, 0 },
		{ MSR_IA32_TSC, 0 },
		/* Fast string operations, as firmware enables them. */
		{ MSR_IA32_MISC_ENABLE, 1 },
		/* MTRRs enabled with write-back default: RAM is cacheable. */
		{ MSR_MTRR_DEF_TYPE, (1u << 11) | 6 },
	};
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list = NULL;
	/* kvm_msrs ends in a flexible array: give it room in a plain buffer. */
	union {
		struct kvm_msrs hdr;
		uint8_t raw[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry) * ARRAY_SIZE(init)];
	} msrs;
	unsigned int i, n = 0;
	int ret = 0;

	/* Only set what this KVM reports; kvm-pvm and old kernels differ. */
	if (ioctl(v->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno == E2BIG) {
		list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
		if (!list)
			return -ENOMEM;
		list->nmsrs = probe.nmsrs;
		if (ioctl(v->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
			free(list);
			list = NULL;
		}
	}
	memset(&msrs, 0, sizeof(msrs));
	for (i = 0; i < ARRAY_SIZE(init); i++) {
		if (list && !msr_supported(list, init[i].index))
			continue;
		msrs.hdr.entries[n].index = init[i].index;
		msrs.hdr.entries[n].data = init[i].value;
		n++;
	}
	msrs.hdr.nmsrs = n;
	if (n && ioctl(v->fd, KVM_SET_MSRS, &msrs) != (int)n)
		ret = -EIO;
	free(list);
	return ret;
}

static int vcpu_setup_fpu(struct vcpu *v)
{
	struct kvm_fpu fpu;

	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f; /* FNINIT state */
	fpu.mxcsr = 0x1f80; /* all SSE exceptions masked */
	return ioctl(v->fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_NMI 0x4
#define APIC_MODE_EXTINT 0x7

static void apic_set_delivery_mode(struct kvm_lapic_state *l, unsigned int reg, uint32_t mode)
{
	uint32_t v;

	memcpy(&v, &l->regs[reg], 4);
	v = (v & ~0x700u) | (mode << 8);
	memcpy(&l->regs[reg], &v, 4);
}

/* LINT0 takes the 8259's ExtINT and LINT1 NMIs, as PC firmware wires them. */
static int vcpu_setup_lapic(struct vcpu *v)
{
	struct kvm_lapic_state l;

	if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0)
		return -errno;
	apic_set_delivery_mode(&l, APIC_LVT0, APIC_MODE_EXTINT);
	apic_set_delivery_mode(&l, APIC_LVT1, APIC_MODE_NMI);
	return ioctl(v->fd, KVM_SET_LAPIC, &l) < 0 ? -errno : 0;
}

int vcpu_setup_x86(struct vcpu *v)
{
	int ret;

	ret = vcpu_setup_cpuid(v);
	if (ret)
		return ret;
	ret = vcpu_setup_msrs(v);
	if (ret)
		return ret;
	ret = vcpu_setup_fpu(v);
	if (ret)
		return ret;
	return vcpu_setup_lapic(v);
}
