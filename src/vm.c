// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "qlite/devices.h"
#include "qlite/pci.h"
#include "qlite/virtio.h"
#include "qlite/vcpu.h"
#include "qlite/checkpoint.h"
#include "qlite/vm.h"
#include "qlite/vpmu.h"

/* Below 4 GiB, outside RAM (which stops at 3 GiB) and the LAPIC/IOAPIC pages. */
#define KVM_TSS_ADDR 0xfffbd000ULL
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ULL

static int vm_check_cap(struct vm *vm, long cap)
{
	return ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, cap);
}

static int vm_open_kvm(struct vm *vm, struct qerr *e)
{
	int ver;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		int err = errno;

		if (err == ENOENT)
			return qerr_set(e, err,
					"/dev/kvm does not exist: load the kvm module "
					"(kvm-intel or kvm-amd) or enable virtualization in firmware");
		if (err == EACCES || err == EPERM)
			return qerr_set(e, err,
					"no permission to open /dev/kvm: run as root or add "
					"your user to the 'kvm' group");
		return qerr_set(e, err, "cannot open /dev/kvm: %s", strerror(err));
	}
	ver = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (ver != KVM_API_VERSION)
		return qerr_set(e, ENOTSUP, "KVM API version %d, qlite needs %d", ver,
				KVM_API_VERSION);
	return 0;
}

static int vm_check_caps(struct vm *vm, struct qerr *e)
{
	static const struct {
		long cap;
		const char *name;
	} need[] = {
		{ KVM_CAP_USER_MEMORY, "USER_MEMORY" },
		{ KVM_CAP_IRQCHIP, "IRQCHIP" },
		{ KVM_CAP_PIT2, "PIT2" },
		{ KVM_CAP_IRQ_ROUTING, "IRQ_ROUTING" },
		{ KVM_CAP_EXT_CPUID, "EXT_CPUID" },
		{ KVM_CAP_SET_TSS_ADDR, "SET_TSS_ADDR" },
		{ KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT" },
	};
	unsigned int i;
	int max;

	for (i = 0; i < ARRAY_SIZE(need); i++)
		if (vm_check_cap(vm, need[i].cap) <= 0)
			return qerr_set(e, ENOTSUP, "this KVM lacks KVM_CAP_%s", need[i].name);
	max = vm_check_cap(vm, KVM_CAP_MAX_VCPUS);
	if (max <= 0)
		max = vm_check_cap(vm, KVM_CAP_NR_VCPUS);
	if (max > 0 && vm->cfg.ncpus > (unsigned int)max)
		return qerr_set(e, EINVAL, "--cpus %u is more than this KVM supports (%d)",
				vm->cfg.ncpus, max);
	return 0;
}

static int vm_get_supported_cpuid(struct vm *vm, struct qerr *e)
{
	unsigned int nent = 64;

	for (;;) {
		struct kvm_cpuid2 *c =
			calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));

		if (!c)
			return qerr_set(e, ENOMEM, "out of memory");
		c->nent = nent;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			vm->supported_cpuid = c;
			return 0;
		}
		free(c);
		if (errno != E2BIG || nent >= 4096)
			return qerr_set(e, errno, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
		nent *= 2;
	}
}

/*
 * GSI routing as on a PC: GSI 0-15 reach both 8259s and the IOAPIC, except
 * that ISA IRQ 0 (the PIT) is wired to IOAPIC pin 2 (the MADT says so with
 * an interrupt source override), and GSI 16-23 are IOAPIC-only.
 */
static struct kvm_irq_routing_entry *vm_route_add(struct vm *vm)
{
	struct kvm_irq_routing *r = vm->routes;

	if (!r || r->nr == vm->routes_cap) {
		unsigned int cap = vm->routes_cap ? vm->routes_cap * 2 : 64;

		r = realloc(vm->routes, sizeof(*r) + cap * sizeof(r->entries[0]));
		if (!r)
			return NULL;
		if (!vm->routes) {
			r->nr = 0;
			r->flags = 0; /* KVM rejects anything else */
		}
		vm->routes = r;
		vm->routes_cap = cap;
	}
	memset(&r->entries[r->nr], 0, sizeof(r->entries[0]));
	return &r->entries[r->nr++];
}

static int vm_routes_commit(struct vm *vm)
{
	return ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, vm->routes) < 0 ? -errno : 0;
}

/*
 * GSI routing as on a PC: GSI 0-15 reach both 8259s and the IOAPIC, except
 * that ISA IRQ 0 (the PIT) is wired to IOAPIC pin 2 (the MADT says so with
 * an interrupt source override), and GSI 16-23 are IOAPIC-only.
 */
static int vm_setup_irq_routing(struct vm *vm)
{
	struct kvm_irq_routing_entry *e;
	unsigned int gsi;

	pthread_mutex_init(&vm->routes_lock, NULL);
	vm->next_msi_gsi = 24;
	for (gsi = 0; gsi < 16; gsi++) {
		if (gsi == 2)
			continue; /* cascade */
		e = vm_route_add(vm);
		if (!e)
			return -ENOMEM;
		e->gsi = gsi;
		e->type = KVM_IRQ_ROUTING_IRQCHIP;
		e->u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
		e->u.irqchip.pin = gsi % 8;
	}
	for (gsi = 0; gsi < 24; gsi++) {
		if (gsi == 2)
			continue;
		e = vm_route_add(vm);
		if (!e)
			return -ENOMEM;
		e->gsi = gsi;
		e->type = KVM_IRQ_ROUTING_IRQCHIP;
		e->u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		e->u.irqchip.pin = gsi == 0 ? 2 : gsi;
	}
	return vm_routes_commit(vm);
}

int vm_msi_route_set(struct vm *vm, int *gsi, uint32_t addr_lo, uint32_t addr_hi,
		     uint32_t data)
{
	struct kvm_irq_routing_entry *e = NULL;
	unsigned int i;
	int ret;

	pthread_mutex_lock(&vm->routes_lock);
	if (*gsi >= 0) {
		for (i = 0; i < vm->routes->nr; i++)
			if (vm->routes->entries[i].gsi == (uint32_t)*gsi)
				e = &vm->routes->entries[i];
	}
	if (!e) {
		if (*gsi < 0) {
			if (vm->next_msi_gsi >= vm_check_cap(vm, KVM_CAP_IRQ_ROUTING)) {
				pthread_mutex_unlock(&vm->routes_lock);
				return -ENOSPC;
			}
			*gsi = vm->next_msi_gsi++;
		}
		e = vm_route_add(vm);
		if (!e) {
			pthread_mutex_unlock(&vm->routes_lock);
			return -ENOMEM;
		}
		e->gsi = *gsi;
		e->type = KVM_IRQ_ROUTING_MSI;
	}
	e->u.msi.address_lo = addr_lo;
	e->u.msi.address_hi = addr_hi;
	e->u.msi.data = data;
	ret = vm_routes_commit(vm);
	pthread_mutex_unlock(&vm->routes_lock);
	return ret;
}

void vm_msi_route_free(struct vm *vm, int gsi)
{
	struct kvm_irq_routing *r = vm->routes;
	unsigned int i;

	pthread_mutex_lock(&vm->routes_lock);
	for (i = 0; r && i < r->nr; i++)
		if (r->entries[i].gsi == (uint32_t)gsi && r->entries[i].type == KVM_IRQ_ROUTING_MSI) {
			r->entries[i] = r->entries[--r->nr];
			vm_routes_commit(vm);
			break;
		}
	pthread_mutex_unlock(&vm->routes_lock);
}

static int vm_setup_memory(struct vm *vm, struct qerr *e)
{
	unsigned int i;
	int ret;

	ret = mem_init(&vm->mem, vm->cfg.mem_size, vm->cfg.mem_backend, e);
	if (ret)
		return ret;
	for (i = 0; i < vm->mem.nr_regions; i++) {
		const struct mem_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region kr = {
			.slot = r->slot,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uintptr_t)r->hva,
		};

		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &kr) < 0)
			return qerr_set(e, errno, "KVM_SET_USER_MEMORY_REGION: %s",
					strerror(errno));
	}
	return 0;
}

static int vm_setup_irqchip(struct vm *vm, struct qerr *e)
{
	struct kvm_pit_config pit = { .flags = 0 };
	int ret;

	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
		return qerr_set(e, errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
	if (vm_check_cap(vm, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
		uint64_t addr = KVM_IDENTITY_MAP_ADDR;

		if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0)
			return qerr_set(e, errno, "KVM_SET_IDENTITY_MAP_ADDR: %s",
					strerror(errno));
	}
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return qerr_set(e, errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	ret = vm_setup_irq_routing(vm);
	if (ret)
		return qerr_set(e, -ret, "KVM_SET_GSI_ROUTING: %s", strerror(-ret));
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return qerr_set(e, errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}

int vm_add_device(struct vm *vm, const struct device_class *cls, void *opaque)
{
	struct device *d, **tail;

	if (device_class_check(cls))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->cls = cls;
	d->opaque = opaque;
	for (tail = &vm->devices; *tail; tail = &(*tail)->next)
		;
	*tail = d;
	return 0;
}

int vm_check_savable(struct vm *vm, struct qerr *e)
{
	const struct device *d;

	/* vm_add_device refused such classes already; a save checks again. */
	for (d = vm->devices; d; d = d->next) {
		const struct device_class *c = d->cls;
		const char *name = c && c->name ? c->name : "(unnamed)";

		if (!c || (!c->state && !c->stateless))
			return qerr_set(e, EINVAL,
					"device %s declares no state description; save refused",
					name);
		if (device_class_check(c))
			return qerr_set(e, EINVAL,
					"device %s has an invalid state description; save refused",
					name);
	}
	return 0;
}

static int vm_create_devices(struct vm *vm, struct qerr *e)
{
	int ret;

	/* With hvc0 as the console the UART stays, unconnected (Linux probes it). */
	ret = serial_create(vm, SERIAL_COM1_BASE, SERIAL_COM1_IRQ,
			    vm->cfg.console_virtio ? -1 : vm->cfg.console_in,
			    vm->cfg.console_virtio ? -1 : vm->cfg.console_out, &vm->serial);
	if (!ret)
		ret = i8042_create(vm);
	if (!ret)
		ret = acpi_pm_create(vm);
	if (!ret)
		ret = pci_bus_create(vm, &vm->pci);
	if (!ret)
		ret = vm_add_device(vm, &pci_bus_class, vm->pci);
	if (ret)
		return qerr_set(e, -ret, "cannot create platform devices: %s", strerror(-ret));
	if (vm->cfg.rng) {
		ret = virtio_rng_create(vm);
		if (ret)
			return qerr_set(e, -ret, "cannot create virtio-rng: %s", strerror(-ret));
	}
	for (unsigned int i = 0; i < vm->cfg.ndisks; i++) {
		ret = virtio_blk_create(vm, &vm->cfg.disks[i], i, e);
		if (ret)
			return ret;
	}
	for (unsigned int i = 0; i < vm->cfg.nnets; i++) {
		ret = virtio_net_create(vm, &vm->cfg.nets[i], i, e);
		if (ret)
			return ret;
	}
	if (vm->cfg.console_virtio) {
		ret = virtio_console_create(vm, vm->cfg.console_out);
		if (ret)
			return qerr_set(e, -ret, "cannot create virtio-console: %s", strerror(-ret));
	}
	if (vm->cfg.balloon) {
		ret = virtio_balloon_create(vm, !vm->cfg.balloon_no_reporting);
		if (ret)
			return qerr_set(e, -ret, "cannot create virtio-balloon: %s", strerror(-ret));
	}
	return 0;
}

int vm_create(const struct vm_config *cfg, struct vm **out, struct qerr *e)
{
	struct vm *vm;
	unsigned int i;
	int ret;

	if (cfg->ncpus == 0 || cfg->ncpus > VM_MAX_VCPUS)
		return qerr_set(e, EINVAL, "vCPU count must be 1..%u", VM_MAX_VCPUS);
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return qerr_set(e, ENOMEM, "out of memory");
	vm->cfg = *cfg;
	vm->ncpus = cfg->ncpus;
	vm->loop = cfg->loop;
	vm->kvm_fd = vm->vm_fd = vm->stop_efd = -1;
	vm->mem.memfd = -1;
	pthread_mutex_init(&vm->dirty_lock, NULL);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");

	ret = vm_open_kvm(vm, e);
	if (ret)
		goto err;
	ret = vm_check_caps(vm, e);
	if (ret)
		goto err;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		ret = qerr_set(e, errno, "KVM_CREATE_VM: %s", strerror(errno));
		goto err;
	}
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size <= 0) {
		ret = qerr_set(e, EIO, "KVM_GET_VCPU_MMAP_SIZE failed");
		goto err;
	}
	vm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_efd < 0) {
		ret = qerr_set(e, errno, "eventfd: %s", strerror(errno));
		goto err;
	}
	ret = vm_get_supported_cpuid(vm, e);
	if (ret)
		goto err;
	/* Before any vCPU exists: KVM only changes the PMU of a VM without vCPUs. */
	ret = vpmu_setup_vm(vm, e);
	if (ret)
		goto err;
	ret = vm_setup_irqchip(vm, e);
	if (ret)
		goto err;
	ret = vm_setup_memory(vm, e);
	if (ret)
		goto err;
	ret = vm_create_devices(vm, e);
	if (ret)
		goto err;
	/* Before any vCPU exists: KVM sizes each vCPU's ring at its creation. */
	ret = vm_dirty_ring_setup(vm, e);
	if (ret)
		goto err;
	for (i = 0; i < vm->ncpus; i++) {
		ret = vcpu_create(vm, i, &vm->vcpus[i]);
		if (ret) {
			ret = qerr_set(e, -ret, "cannot create vCPU %u: %s", i, strerror(-ret));
			goto err;
		}
		ret = vcpu_setup_x86(vm->vcpus[i]);
		if (ret) {
			ret = qerr_set(e, -ret, "cannot set up vCPU %u: %s", i, strerror(-ret));
			goto err;
		}
	}
	*out = vm;
	return 0;
err:
	vm_destroy(vm);
	return ret;
}

void vm_destroy(struct vm *vm)
{
	struct device *d;
	unsigned int i;

	if (!vm)
		return;
	vm_stop_vcpus(vm);
	for (i = 0; i < VM_MAX_VCPUS; i++)
		vcpu_destroy(vm->vcpus[i]);
	/* Leaves first: reverse of creation order. */
	while (vm->devices) {
		struct device *prev = NULL;

		for (d = vm->devices; d->next; d = d->next)
			prev = d;
		if (d->cls->unrealize)
			d->cls->unrealize(d->opaque);
		if (prev)
			prev->next = NULL;
		else
			vm->devices = NULL;
		free(d);
	}
	/* No device touches guest RAM any more: the lazy restore may end. */
	ckpt_vm_destroy(vm);
	pci_bus_destroy(vm->pci);
	mem_destroy(&vm->mem);
	free(vm->routes);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	free(vm->supported_cpuid);
	free(vm->dirty_pending);
	pthread_mutex_destroy(&vm->dirty_lock);
	if (vm->stop_efd >= 0)
		close(vm->stop_efd);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	free(vm);
}

int vm_start(struct vm *vm, bool paused)
{
	unsigned int i;
	int ret;

	if (paused) {
		ret = vm_pause(vm); /* nothing runs yet: only records the state */
		if (ret)
			return ret;
	} else if (vm->clock_loaded) {
		/* A checkpoint's clock: no time passes between loading and running. */
		struct kvm_clock_data c = { .clock = vm->paused_clock.clock };

		if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &c) < 0)
			log_msg("cannot restore the guest clock: %s", strerror(errno));
		vm->clock_loaded = false;
	}
	for (i = 0; i < vm->ncpus; i++) {
		ret = vcpu_start(vm->vcpus[i]);
		if (ret) {
			vm_request_stop(vm, VM_STOP_ERROR);
			return ret;
		}
	}
	return 0;
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason why)
{
	int expected = VM_STOP_NONE;
	uint64_t one = 1;
	unsigned int i;

	atomic_compare_exchange_strong(&vm->stop_reason, &expected, (int)why);
	for (i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i])
			vcpu_request(vm->vcpus[i], VCPU_EXITING);
	if (write(vm->stop_efd, &one, sizeof(one)) < 0) {
		/* counter saturated: the main loop is already woken */
	}
}

void vm_stop_vcpus(struct vm *vm)
{
	unsigned int i;

	for (i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i])
			vcpu_request(vm->vcpus[i], VCPU_EXITING);
	for (i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i])
			vcpu_join(vm->vcpus[i]);
}

int vm_pause(struct vm *vm)
{
	struct device *d;
	unsigned int i;
	int ret;

	if (vm->paused)
		return 0;
	for (i = 0; i < vm->ncpus; i++)
		vcpu_request(vm->vcpus[i], VCPU_PAUSED);
	for (i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i]->thread_started)
			vcpu_wait_state(vm->vcpus[i], VCPU_PAUSED);
	for (d = vm->devices; d; d = d->next) {
		if (!d->cls->quiesce)
			continue;
		ret = d->cls->quiesce(d->opaque);
		if (ret) {
			log_msg("cannot quiesce %s: %s", d->cls->name, strerror(-ret));
			/* Roll back: resume what was quiesced, restart the vCPUs. */
			for (struct device *u = vm->devices; u != d; u = u->next)
				if (u->cls->resume)
					u->cls->resume(u->opaque);
			for (i = 0; i < vm->ncpus; i++)
				vcpu_request(vm->vcpus[i], VCPU_RUNNING);
			return ret;
		}
	}
	/*
	 * Hold kvmclock: the guest must not see the paused time pass. A clock
	 * loaded from a checkpoint is held already.
	 */
	if (!vm->clock_loaded && ioctl(vm->vm_fd, KVM_GET_CLOCK, &vm->paused_clock) < 0)
		memset(&vm->paused_clock, 0, sizeof(vm->paused_clock));
	vm->paused = true;
	return 0;
}

int vm_resume(struct vm *vm)
{
	struct device *d;
	unsigned int i;

	if (!vm->paused)
		return 0;
	if (vm->paused_clock.clock) {
		struct kvm_clock_data c = { .clock = vm->paused_clock.clock };

		if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &c) < 0)
			log_msg("cannot restore the guest clock: %s", strerror(errno));
	}
	vm->clock_loaded = false;
	for (d = vm->devices; d; d = d->next)
		if (d->cls->resume)
			d->cls->resume(d->opaque);
	for (i = 0; i < vm->ncpus; i++)
		vcpu_request(vm->vcpus[i], VCPU_RUNNING);
	vm->paused = false;
	return 0;
}

bool vm_check_dead(struct vm *vm)
{
	bool all_dead = true;
	unsigned int i;

	/* Read last round's answers, then ask again. */
	for (i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = vm->vcpus[i];
		int seq = __atomic_load_n(&v->probe_seq, __ATOMIC_SEQ_CST);

		if (seq == vm->probe_seq[i] || !v->probe_dead)
			all_dead = false; /* no answer yet (busy in the guest), or alive */
		vm->probe_seq[i] = seq;
	}
	vm->dead_rounds = all_dead ? vm->dead_rounds + 1 : 0;
	if (vm->dead_rounds >= 2) {
		struct vcpu *v = vm->vcpus[0];

		log_msg("the guest stopped for good: every vCPU is halted with interrupts off "
			"or waits for a SIPI (a kernel that failed to decompress, or 'halt')");
		log_msg("  vcpu0: mp_state %u rip=%016llx rflags=%016llx", v->probe_mp_state,
			(unsigned long long)v->probe_rip, (unsigned long long)v->probe_rflags);
		return true;
	}
	for (i = 0; i < vm->ncpus; i++)
		vcpu_probe(vm->vcpus[i]);
	return false;
}

size_t vm_console_space(struct vm *vm)
{
	if (vm->vconsole)
		return virtio_console_space(vm->vconsole);
	return serial_rx_space(vm->serial);
}

size_t vm_console_push(struct vm *vm, const uint8_t *buf, size_t len)
{
	if (vm->vconsole)
		return virtio_console_push_input(vm->vconsole, buf, len);
	return serial_push_input(vm->serial, buf, len);
}

int vm_set_irq(struct vm *vm, unsigned int gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = level };

	return ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0 ? -errno : 0;
}
