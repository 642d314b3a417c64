// SPDX-License-Identifier: MIT
/* Guest PMU set-up (see vpmu.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "qlite/vm.h"
#include "qlite/vpmu.h"

#define CPUID_1_ECX_PDCM (1u << 15) /* IA32_PERF_CAPABILITIES */
#define CPUID_80000001_ECX_PERFCTR_CORE (1u << 23)
#define CPUID_80000001_ECX_PERFCTR_NB (1u << 24)
#define CPUID_80000001_ECX_PERFCTR_LLC (1u << 28)
#define CPUID_80000022_EAX_PERFMON_V2 (1u << 0)

/*
 * Generic names, encoded as KVM's filter wants them (event select in bits
 * 7:0 and 35:32, unit mask in 15:8). Intel: architectural events (SDM vol.
 * 3B, table 20-1); AMD: Linux perf's Zen mapping. fixed: Intel fixed counter.
 */
static const struct {
	const char *name;
	uint64_t intel, amd;
	int fixed;
} named_events[] = {
	{ "instructions", 0x00c0, 0x00c0, 0 },
	{ "cycles", 0x003c, 0x0076, 1 },
	{ "ref-cycles", 0x013c, 0, 2 },
	{ "branches", 0x00c4, 0x00c2, -1 },
	{ "branch-misses", 0x00c5, 0x00c3, -1 },
	{ "cache-references", 0x4f2e, 0xff60, -1 },
	{ "cache-misses", 0x412e, 0x0964, -1 },
};

int vpmu_parse(const char *arg, struct vpmu_config *c, struct qerr *e)
{
	const char *p;

	memset(c, 0, sizeof(*c));
	if (!strcmp(arg, "off"))
		return 0;
	if (!strcmp(arg, "on")) {
		c->mode = VPMU_ON;
		return 0;
	}
	if (strncmp(arg, "allow=", 6))
		return qerr_set(e, EINVAL, "--pmu %s: expected off, on or allow=EVENT[,EVENT...]",
				arg);
	c->mode = VPMU_ALLOW;
	p = arg + 6;
	if (!*p)
		return qerr_set(e, EINVAL, "--pmu allow= needs at least one event");
	while (*p) {
		size_t len = strcspn(p, ",");
		struct vpmu_event *ev;
		unsigned int i;

		if (!len)
			return qerr_set(e, EINVAL, "--pmu %s: empty event name", arg);
		if (c->nevents == VPMU_MAX_EVENTS)
			return qerr_set(e, E2BIG, "--pmu: at most %u events", VPMU_MAX_EVENTS);
		ev = &c->events[c->nevents];
		if (len >= sizeof(ev->name))
			return qerr_set(e, EINVAL, "--pmu: event '%.*s' is too long", (int)len, p);
		memcpy(ev->name, p, len);
		ev->name[len] = '\0';
		if (!strncmp(ev->name, "0x", 2) || !strncmp(ev->name, "0X", 2)) {
			char *end;

			errno = 0;
			ev->value = strtoull(ev->name + 2, &end, 16);
			if (errno || *end || end == ev->name + 2)
				return qerr_set(e, EINVAL, "--pmu: '%s' is not a hexadecimal event",
						ev->name);
			ev->raw = true;
		} else {
			for (i = 0; i < ARRAY_SIZE(named_events); i++)
				if (!strcmp(ev->name, named_events[i].name))
					break;
			if (i == ARRAY_SIZE(named_events))
				return qerr_set(e, EINVAL,
						"--pmu: unknown event '%s' (known: instructions, cycles, "
						"ref-cycles, branches, branch-misses, cache-references, "
						"cache-misses; or a raw 0x... KVM filter value)",
						ev->name);
		}
		c->nevents++;
		p += len;
		if (*p == ',' && !*++p)
			return qerr_set(e, EINVAL, "--pmu %s: empty event name", arg);
	}
	return 0;
}

static const struct kvm_cpuid_entry2 *cpuid_leaf(const struct kvm_cpuid2 *c, uint32_t fn)
{
	unsigned int i;

	for (i = 0; c && i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == 0)
			return &c->entries[i];
	return NULL;
}

enum cpu_vendor cpuid_vendor(const struct kvm_cpuid2 *c)
{
	const struct kvm_cpuid_entry2 *l0 = cpuid_leaf(c, 0);

	if (!l0)
		return CPU_VENDOR_OTHER;
	/* "GenuineIntel", "AuthenticAMD", "HygonGenuine" in EBX, EDX, ECX. */
	if (l0->ebx == 0x756e6547 && l0->edx == 0x49656e69 && l0->ecx == 0x6c65746e)
		return CPU_VENDOR_INTEL;
	if ((l0->ebx == 0x68747541 && l0->edx == 0x69746e65 && l0->ecx == 0x444d4163) ||
	    (l0->ebx == 0x6f677948 && l0->edx == 0x6e65476e && l0->ecx == 0x656e6975))
		return CPU_VENDOR_AMD;
	return CPU_VENDOR_OTHER;
}

int vpmu_host_check(const struct kvm_cpuid2 *supported, int pmu_cap, bool host_pmu,
		    struct qerr *e)
{
	const struct kvm_cpuid_entry2 *l;

	if (pmu_cap == 0)
		return qerr_set(e, ENOTSUP,
				"this host's KVM offers guests no PMU (KVM_CAP_PMU_CAPABILITY is 0: "
				"no host PMU, or kvm.enable_pmu=0)");
	switch (cpuid_vendor(supported)) {
	case CPU_VENDOR_INTEL:
		l = cpuid_leaf(supported, 0xa);
		if (!l || !(l->eax & 0xff) || !((l->eax >> 8) & 0xff))
			return qerr_set(e, ENOTSUP,
					"this host's KVM offers guests no PMU (CPUID leaf 0xA "
					"reports no architectural performance monitoring)");
		return 0;
	case CPU_VENDOR_AMD:
		l = cpuid_leaf(supported, 0x80000001);
		if (l && (l->ecx & CPUID_80000001_ECX_PERFCTR_CORE))
			return 0;
		l = cpuid_leaf(supported, 0x80000022);
		if (l && (l->eax & CPUID_80000022_EAX_PERFMON_V2))
			return 0;
		/* The four legacy counters need no CPUID bit: ask KVM, or the host. */
		if (pmu_cap > 0 || (pmu_cap < 0 && host_pmu))
			return 0;
		return qerr_set(e, ENOTSUP,
				"this host's KVM offers guests no PMU (no PerfCtrExtCore or "
				"PerfMonV2 in CPUID, and no host PMU)");
	default:
		return qerr_set(e, ENOTSUP, "no vPMU support for this CPU vendor");
	}
}

void vpmu_cpuid_apply(struct kvm_cpuid2 *c, bool expose)
{
	unsigned int i;

	if (expose || !c)
		return; /* KVM's supported CPUID describes the vPMU it can give */
	for (i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *l = &c->entries[i];

		switch (l->function) {
		case 1:
			l->ecx &= ~CPUID_1_ECX_PDCM;
			break;
		case 0xa: /* Intel architectural PMU */
		case 0x23: /* Intel architectural PMU extensions */
		case 0x80000022: /* AMD PerfMonV2 and counter counts */
			l->eax = l->ebx = l->ecx = l->edx = 0;
			break;
		case 0x80000001:
			l->ecx &= ~(CPUID_80000001_ECX_PERFCTR_CORE | CPUID_80000001_ECX_PERFCTR_NB |
				    CPUID_80000001_ECX_PERFCTR_LLC);
			break;
		default:
			break;
		}
	}
}

int vpmu_build_filter(const struct vpmu_config *c, enum cpu_vendor vendor,
		      struct kvm_pmu_event_filter **out, struct qerr *e)
{
	struct kvm_pmu_event_filter *f;
	unsigned int i, j;

	if (vendor != CPU_VENDOR_INTEL && vendor != CPU_VENDOR_AMD)
		return qerr_set(e, ENOTSUP, "--pmu allow=: unknown CPU vendor");
	f = calloc(1, sizeof(*f) + c->nevents * sizeof(f->events[0]));
	if (!f)
		return qerr_set(e, ENOMEM, "out of memory");
	f->action = KVM_PMU_EVENT_ALLOW;
	for (i = 0; i < c->nevents; i++) {
		const struct vpmu_event *ev = &c->events[i];
		uint64_t v = ev->value;

		if (!ev->raw) {
			for (j = 0; j < ARRAY_SIZE(named_events); j++)
				if (!strcmp(ev->name, named_events[j].name))
					break;
			if (j == ARRAY_SIZE(named_events)) {
				free(f);
				return qerr_set(e, EINVAL, "--pmu: unknown event '%s'", ev->name);
			}
			v = vendor == CPU_VENDOR_INTEL ? named_events[j].intel : named_events[j].amd;
			if (!v) {
				free(f);
				return qerr_set(e, ENOTSUP, "--pmu: '%s' exists on Intel only",
						ev->name);
			}
			if (vendor == CPU_VENDOR_INTEL && named_events[j].fixed >= 0)
				f->fixed_counter_bitmap |= 1u << named_events[j].fixed;
		}
		f->events[f->nevents++] = v;
	}
	*out = f;
	return 0;
}

/* -1: this kernel cannot tell (no capability and no enable_pmu parameter). */
static int vpmu_kvm_cap(struct vm *vm)
{
	char buf[4] = "";
	int cap = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_PMU_CAPABILITY), fd;

	if (cap > 0)
		return cap;
	/* 0 means "disabled" only where the kernel knows the capability. */
	fd = open("/sys/module/kvm/parameters/enable_pmu", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (read(fd, buf, sizeof(buf) - 1) <= 0)
		buf[0] = '\0';
	close(fd);
	return buf[0] == 'N' || buf[0] == '0' ? 0 : -1;
}

static bool host_has_pmu(void)
{
	return !access("/sys/bus/event_source/devices/cpu", F_OK) ||
	       !access("/sys/bus/event_source/devices/cpu_core", F_OK);
}

int vpmu_setup_vm(struct vm *vm, struct qerr *e)
{
	const struct vpmu_config *c = vm->cfg.pmu;
	struct kvm_pmu_event_filter *f;
	int cap = vpmu_kvm_cap(vm), ret;

	if (!c || c->mode == VPMU_OFF) {
		/* AMD's legacy counters have no CPUID bit to clear: switch the PMU off. */
		if (cap > 0 && (cap & KVM_PMU_CAP_DISABLE)) {
			struct kvm_enable_cap ec = { .cap = KVM_CAP_PMU_CAPABILITY,
						     .args = { KVM_PMU_CAP_DISABLE } };

			if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec) < 0)
				log_msg("cannot disable the guest PMU (KVM_CAP_PMU_CAPABILITY): %s",
					strerror(errno));
		}
		return 0;
	}
	{
		struct qerr why = { 0 };

		if (vpmu_host_check(vm->supported_cpuid, cap, host_has_pmu(), &why))
			return qerr_set(e, ENOTSUP, "--pmu %s: %s",
					c->mode == VPMU_ON ? "on" : "allow", why.msg);
	}
	if (c->mode != VPMU_ALLOW)
		return 0;
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_PMU_EVENT_FILTER) <= 0)
		return qerr_set(e, ENOTSUP, "--pmu allow=: this KVM has no KVM_SET_PMU_EVENT_FILTER");
	ret = vpmu_build_filter(c, cpuid_vendor(vm->supported_cpuid), &f, e);
	if (ret)
		return ret;
	ret = ioctl(vm->vm_fd, KVM_SET_PMU_EVENT_FILTER, f) < 0 ? -errno : 0;
	free(f);
	if (ret)
		return qerr_set(e, -ret, "KVM_SET_PMU_EVENT_FILTER: %s", strerror(-ret));
	return 0;
}
