/* SPDX-License-Identifier: MIT */
/* One VM: KVM handles, guest memory, buses, devices and vCPUs. */
#ifndef QLITE_VM_H
#define QLITE_VM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <linux/kvm.h>
#include "qlite/bus.h"
#include "qlite/device.h"
#include "qlite/mem.h"
#include "qlite/util.h"

struct vcpu;
struct serial;
struct acpi_pm;
struct loop;
struct pci_bus;
struct virtio_balloon;
struct virtio_console;
struct vblk;
struct disk_config;
struct net_config;
struct vpmu_config;
struct ckpt_vm;
struct sbuf;

#define VM_MAX_VCPUS 64

/*
 * Dirty tracking of guest RAM: KVM's per-vCPU dirty ring, or the per-slot
 * bitmap (KVM_GET_DIRTY_LOG). A host-local choice: never in a checkpoint
 * or a migration stream.
 */
enum vm_dirty_ring {
	VM_DIRTY_RING_AUTO = 0, /* the ring when KVM offers it, else the bitmap */
	VM_DIRTY_RING_OFF, /* the bitmap */
	VM_DIRTY_RING_ON, /* the ring, or vm_create() fails */
};
/* 256 KiB per vCPU: kvm-pvm overflowed 4096 (it pushes a page per exit). */
#define VM_DIRTY_RING_DEFAULT_ENTRIES 16384
#define VM_DIRTY_RING_MIN_ENTRIES 256 /* KVM: at least a page */
#define VM_DIRTY_RING_MAX_ENTRIES 65536 /* KVM_DIRTY_RING_MAX_ENTRIES */

enum vm_stop_reason {
	VM_STOP_NONE = 0,
	VM_STOP_POWEROFF, /* guest powered off (ACPI S5) */
	VM_STOP_RESET, /* guest asked for a reset */
	VM_STOP_QUIT, /* user asked (escape key, signal) */
	VM_STOP_GUEST_CRASH, /* triple fault, KVM internal error */
	VM_STOP_ERROR, /* the VMM failed */
};

struct vm_config {
	uint64_t mem_size;
	enum mem_backend mem_backend;
	unsigned int ncpus;
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	bool no_reboot; /* a guest reset ends the VM instead of rebuilding it */
	struct loop *loop; /* where devices register their fds */
	bool rng; /* virtio-rng */
	bool balloon; /* virtio-balloon */
	bool balloon_no_reporting;
	const struct disk_config *disks;
	unsigned int ndisks;
	/* Incoming migration: open the images unlocked (virtio_blk_lock_all()). */
	bool disks_unlocked;
	const struct net_config *nets;
	unsigned int nnets;
	bool console_virtio; /* stdio on virtio-console (hvc0), not the UART */
	/* Console: where the UART (or hvc0) reads and writes (-1: none). */
	int console_in;
	int console_out;
	const struct vpmu_config *pmu; /* guest PMU (vpmu.h); NULL: off */
	/* Host-local (like the console): carried over to a restored or arriving VM. */
	enum vm_dirty_ring dirty_ring;
	unsigned int dirty_ring_entries; /* 0: VM_DIRTY_RING_DEFAULT_ENTRIES */
};

struct vm {
	struct vm_config cfg;
	int kvm_fd;
	int vm_fd;
	int run_size;
	struct kvm_cpuid2 *supported_cpuid;
	struct guest_mem mem;
	struct bus pio;
	struct bus mmio;
	unsigned int ncpus;
	struct vcpu *vcpus[VM_MAX_VCPUS];
	struct device *devices;
	struct serial *serial;
	struct acpi_pm *acpi_pm;

	/* First stop reason wins; stop_efd wakes the main loop. */
	_Atomic int stop_reason;
	int stop_efd;

	pthread_mutex_t routes_lock;
	struct kvm_irq_routing *routes; /* PC wiring + MSI routes */
	unsigned int routes_cap;
	int next_msi_gsi;

	struct loop *loop; /* the controller's event loop (device fds) */
	struct pci_bus *pci;
	struct virtio_balloon *balloon;
	struct virtio_console *vconsole;
	struct vblk *disks;

	bool paused;
	unsigned int dead_rounds; /* consecutive probes that found the guest dead */
	int probe_seq[VM_MAX_VCPUS];
	struct kvm_clock_data paused_clock; /* guest clock held while paused */

	/* Checkpoint/restore: page elision, dirty tracking, lazy restore (checkpoint.h). */
	struct ckpt_vm *ckpt;
	bool dirty_logging; /* KVM_MEM_LOG_DIRTY_PAGES on every RAM slot */
	/*
	 * The dirty ring (src/dirty.c): entries per vCPU ring, 0 for the
	 * bitmap. @dirty_lock covers harvesting and KVM_RESET_DIRTY_RINGS
	 * (worker and vCPU threads) and @dirty_pending: what vCPUs harvested
	 * on a full ring, not collected yet (one bit per page of the mapping).
	 */
	unsigned int dirty_ring_entries;
	pthread_mutex_t dirty_lock;
	unsigned long *dirty_pending;
	uint64_t dirty_ring_full; /* KVM_EXIT_DIRTY_RING_FULL exits (atomic) */
	uint64_t dirty_ring_bad; /* entries naming no RAM page: skipped */
	bool dirty_ring_overflow; /* KVM wrote past a ring: the next collect fails */
	uint64_t dirty_ring_overflows; /* times (logged the first time) */
	/* paused_clock came from a checkpoint; set it when the vCPUs (re)start. */
	bool clock_loaded;
};

/* KVM VM, memory, irqchip, PIT, legacy devices and vCPUs (not started). */
int vm_create(const struct vm_config *cfg, struct vm **out, struct qerr *e);
void vm_destroy(struct vm *vm);
int vm_add_device(struct vm *vm, const struct device_class *cls, void *opaque);
/*
 * Before a save pauses anything: -EINVAL, naming the device, if any device's
 * class declares neither a state description nor statelessness.
 */
int vm_check_savable(struct vm *vm, struct qerr *e);
/* Start the vCPU threads, running or parked (-S). */
int vm_start(struct vm *vm, bool paused);
/* Called from any thread: record why and make every vCPU exit. */
void vm_request_stop(struct vm *vm, enum vm_stop_reason why);
/* Stop all vCPU threads and join them. */
void vm_stop_vcpus(struct vm *vm);
/*
 * Pause: park every vCPU (waiting until all are out of KVM_RUN), quiesce
 * devices (backends stop submitting and drain) and hold the guest clock.
 * Resume reverses it in the opposite order. Both are idempotent.
 */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
/*
 * Liveness, called about once a second while running: true once every vCPU
 * has twice in a row been found halted with interrupts off (or waiting for
 * a SIPI): nothing can wake such a guest, so it is as good as crashed.
 */
bool vm_check_dead(struct vm *vm);
/* Host console input to whichever device owns the console. */
size_t vm_console_space(struct vm *vm);
size_t vm_console_push(struct vm *vm, const uint8_t *buf, size_t len);
/* Raise/lower an ISA/IOAPIC interrupt line. */
int vm_set_irq(struct vm *vm, unsigned int gsi, int level);
/*
 * MSI routes (GSIs from 24 up). *gsi < 0 allocates one. The whole table is
 * handed to KVM on each change (KVM_SET_GSI_ROUTING replaces it).
 */
int vm_msi_route_set(struct vm *vm, int *gsi, uint32_t addr_lo, uint32_t addr_hi,
		     uint32_t data);
void vm_msi_route_free(struct vm *vm, int gsi);

/*
 * KVM dirty logging of guest RAM (checkpoints, migration), through the
 * dirty ring or the bitmap (src/dirty.c). Start turns it on for every slot;
 * collect ORs the pages the guest wrote since the last collect into
 * @bitmap (one bit per 4 KiB page of the RAM mapping) and clears KVM's log
 * (resets the rings). With every vCPU out of KVM_RUN a collect is complete.
 * Device writes are in mem.dirty, not here. Collect may run on any thread
 * while vCPUs run; start and stop not concurrently with a collect.
 */
int vm_dirty_log_start(struct vm *vm, struct qerr *e);
/* Off again (a migration that failed): KVM maps guest RAM with huge pages again. */
int vm_dirty_log_stop(struct vm *vm, struct qerr *e);
int vm_dirty_log_collect(struct vm *vm, unsigned long *bitmap, struct qerr *e);
/*
 * In vm_create(), before any vCPU: enable the ring as cfg.dirty_ring asks
 * (AUTO falls back to the bitmap, ON fails with a message naming why).
 */
int vm_dirty_ring_setup(struct vm *vm, struct qerr *e);
/*
 * vCPU @v got KVM_EXIT_DIRTY_RING_FULL: harvest every ring into
 * vm->dirty_pending and reset them, so the vCPU can re-enter. A ring KVM
 * overflowed is brought back in step (and the next collect fails).
 */
int vm_dirty_ring_reap(struct vm *vm, struct vcpu *v);
/* "ring" or "bitmap": what vm_dirty_log_* use on this VM. */
const char *vm_dirty_tracking_name(const struct vm *vm);

/*
 * The VM's in-kernel KVM state as a blob (format: src/vcpu/state.c): PIC
 * master and slave, IOAPIC, PIT and kvmclock (vm->paused_clock while
 * paused). Every vCPU must be out of KVM_RUN (paused or never started).
 * Loading sets the clock, and keeps it for vm_start()/vm_resume(), so the
 * guest continues from the saved time. @buf is hostile; appends to @b.
 */
int vm_kvm_state_save(struct vm *vm, struct sbuf *b, struct qerr *e);
int vm_kvm_state_load(struct vm *vm, const uint8_t *buf, size_t len, struct qerr *e);

#endif
