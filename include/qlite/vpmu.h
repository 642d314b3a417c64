/* SPDX-License-Identifier: MIT */
/*
 * Guest PMU (vPMU): `qlite run --pmu off|on|allow=EVENTS`. Off (the default)
 * hides the PMU from CPUID (Intel leaf 0xA; AMD PerfCtrExtCore/NB/LLC and
 * PerfMonV2) and, where KVM has KVM_CAP_PMU_CAPABILITY, disables it so the
 * AMD legacy counters (which need no CPUID bit) are gone too. On exposes
 * what KVM offers, so the guest's own perf works; allow= also installs a
 * KVM_SET_PMU_EVENT_FILTER allow-list. Guest PMU state is vCPU state.
 *
 * The decisions are pure functions over CPUID tables (unit-tested with
 * Intel- and AMD-style input); vpmu_setup_vm() applies them to a VM.
 */
#ifndef QLITE_VPMU_H
#define QLITE_VPMU_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "qlite/util.h"

struct vm;

#define VPMU_MAX_EVENTS 64

enum vpmu_mode {
	VPMU_OFF = 0,
	VPMU_ON,
	VPMU_ALLOW, /* on, with an event allow-list */
};

enum cpu_vendor {
	CPU_VENDOR_OTHER,
	CPU_VENDOR_INTEL,
	CPU_VENDOR_AMD, /* and Hygon */
};

struct vpmu_event {
	char name[24]; /* as given */
	bool raw; /* 0x... : a KVM filter value (event select | umask << 8 | ...) */
	uint64_t value; /* raw only */
};

struct vpmu_config {
	enum vpmu_mode mode;
	unsigned int nevents;
	struct vpmu_event events[VPMU_MAX_EVENTS];
};

/* "off", "on", "allow=cycles,instructions,0x01c2"; -EINVAL with a message. */
int vpmu_parse(const char *arg, struct vpmu_config *c, struct qerr *e);

enum cpu_vendor cpuid_vendor(const struct kvm_cpuid2 *c);

/*
 * Can this KVM give guests a PMU? @supported: KVM_GET_SUPPORTED_CPUID;
 * @pmu_cap: KVM_CHECK_EXTENSION(KVM_CAP_PMU_CAPABILITY), -1 if the kernel
 * predates it; @host_pmu: the host kernel has a CPU PMU driver (sysfs).
 * 0, or -ENOTSUP with the reason in @e.
 */
int vpmu_host_check(const struct kvm_cpuid2 *supported, int pmu_cap, bool host_pmu,
		    struct qerr *e);

/* Hide (@expose false) or keep what KVM reports of the PMU in a vCPU's CPUID. */
void vpmu_cpuid_apply(struct kvm_cpuid2 *c, bool expose);

/*
 * The allow-list for @vendor as KVM_SET_PMU_EVENT_FILTER takes it (malloc()ed;
 * free()). Named events map to the vendor's encodings; Intel's fixed
 * counters are allowed when their event is.
 */
int vpmu_build_filter(const struct vpmu_config *c, enum cpu_vendor vendor,
		      struct kvm_pmu_event_filter **out, struct qerr *e);

/* Before vCPUs exist: disable, or check and filter, per vm->cfg.pmu. */
int vpmu_setup_vm(struct vm *vm, struct qerr *e);

#endif
