// SPDX-License-Identifier: MIT
/*
 * Dirty tracking of guest RAM for checkpoints and migration: KVM's dirty
 * ring (KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]) when it is on, else the per-slot
 * bitmap (KVM_GET_DIRTY_LOG, which KVM refuses once a ring is enabled).
 *
 * The ring: each vCPU's ring is shared with KVM. KVM pushes an entry
 * (flags DIRTY, release) per page first written since its last reset; we
 * read the entry (acquire), mark it RESET (release) and move on; then
 * KVM_RESET_DIRTY_RINGS recycles the marked entries and write-protects
 * those pages again. A ring reaching its soft limit makes its vCPU exit
 * with KVM_EXIT_DIRTY_RING_FULL: that thread harvests every ring into
 * vm->dirty_pending, which the next collect merges. One mutex covers
 * harvest + reset + pending, so no entry is harvested twice or lost.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "qlite/vcpu.h"
#include "qlite/vm.h"

#define BITS (8 * sizeof(unsigned long))

static size_t dirty_words(const struct vm *vm)
{
	return vm->mem.ram_size / 4096 / BITS + 1;
}

static int dirty_set_slot_flags(struct vm *vm, uint32_t flags, struct qerr *e)
{
	unsigned int i;

	for (i = 0; i < vm->mem.nr_regions; i++) {
		const struct mem_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region kr = {
			.slot = r->slot,
			.flags = flags,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uintptr_t)r->hva,
		};

		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &kr) < 0)
			return qerr_set(e, errno, "cannot set dirty logging on memory slot %u: %s",
					r->slot, strerror(errno));
	}
	return 0;
}

const char *vm_dirty_tracking_name(const struct vm *vm)
{
	return vm->dirty_ring_entries ? "ring" : "bitmap";
}

int vm_dirty_ring_setup(struct vm *vm, struct qerr *e)
{
	enum vm_dirty_ring mode = vm->cfg.dirty_ring;
	unsigned int want = vm->cfg.dirty_ring_entries ? vm->cfg.dirty_ring_entries
						       : VM_DIRTY_RING_DEFAULT_ENTRIES;
	struct kvm_enable_cap ec = {.cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL};
	uint64_t bytes = (uint64_t)want * sizeof(struct kvm_dirty_gfn);
	int max;

	if (mode == VM_DIRTY_RING_OFF)
		return 0;
	/*
	 * kvm-pvm pushes an entry on every exit and overflowed even 16384-entry
	 * rings under load (measured in CI): by default it gets the bitmap.
	 */
	if (mode == VM_DIRTY_RING_AUTO && access("/sys/module/kvm_pvm", F_OK) == 0)
		return 0;
	if (want < VM_DIRTY_RING_MIN_ENTRIES || want > VM_DIRTY_RING_MAX_ENTRIES ||
	    (want & (want - 1)))
		return qerr_set(e, EINVAL,
				"dirty ring of %u entries: expected a power of two from %u to %u",
				want, VM_DIRTY_RING_MIN_ENTRIES, VM_DIRTY_RING_MAX_ENTRIES);
	/* ACQ_REL: the same ring, with the ordering spelled out; x86 offers both. */
	max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
	if (max <= 0) {
		ec.cap = KVM_CAP_DIRTY_LOG_RING;
		max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
	}
	if (max < 4096) {
		if (mode == VM_DIRTY_RING_ON)
			return qerr_set(e, ENOTSUP,
					"--dirty-ring: this KVM has no dirty ring "
					"(KVM_CAP_DIRTY_LOG_RING); use --dirty-ring=off");
		return 0;
	}
	if (bytes > (uint64_t)max) {
		if (vm->cfg.dirty_ring_entries)
			return qerr_set(
				e, EINVAL,
				"--dirty-ring=%u: this KVM's rings hold at most %zu entries", want,
				(size_t)max / sizeof(struct kvm_dirty_gfn));
		/* The default, clamped to what this KVM takes (a power of two). */
		while (bytes > (uint64_t)max)
			bytes /= 2;
	}
	ec.args[0] = bytes;
	if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec) < 0) {
		int err = errno;

		/* A host with PML reserves more entries: small rings are refused there. */
		if (mode == VM_DIRTY_RING_ON)
			return qerr_set(e, err, "KVM refused a dirty ring of %llu entries: %s%s",
					(unsigned long long)(bytes / sizeof(struct kvm_dirty_gfn)),
					strerror(err),
					err == EINVAL
						? " (too small for this host? try 1024 or more)"
						: "");
		return 0;
	}
	vm->dirty_pending = calloc(dirty_words(vm), sizeof(unsigned long));
	if (!vm->dirty_pending)
		return qerr_set(e, ENOMEM, "out of memory for the dirty bitmap");
	vm->dirty_ring_entries = (unsigned int)(bytes / sizeof(struct kvm_dirty_gfn));
	return 0;
}

/* One entry: KVM's slot (as_id << 16 | id) and page offset to a bit of @bitmap. */
static void dirty_ring_mark(struct vm *vm, unsigned long *bitmap, uint32_t slot, uint64_t offset)
{
	uint64_t npages = vm->mem.ram_size / 4096;
	unsigned int i;

	/* Address space 0 only: qlite has no SMM. */
	for (i = 0; slot >> 16 == 0 && i < vm->mem.nr_regions; i++) {
		const struct mem_region *r = &vm->mem.regions[i];
		uint64_t page;

		if (r->slot != slot)
			continue;
		if (offset >= r->size / 4096)
			break;
		page = r->fd_offset / 4096 + offset;
		if (page >= npages)
			break;
		bitmap[page / BITS] |= 1UL << (page % BITS);
		return;
	}
	vm->dirty_ring_bad++;
}

/*
 * Entries of @v's ring from dirty_fetch on: @bitmap gets their pages, they
 * are marked for KVM_RESET_DIRTY_RINGS. Returns how many.
 */
static uint32_t dirty_ring_take(struct vm *vm, struct vcpu *v, unsigned long *bitmap)
{
	uint32_t n = vm->dirty_ring_entries, done;

	/* At most a ring's worth: KVM cannot refill an entry before the reset. */
	for (done = 0; done < n; done++) {
		struct kvm_dirty_gfn *g = &v->dirty_gfns[v->dirty_fetch & (n - 1)];

		if (__atomic_load_n(&g->flags, __ATOMIC_ACQUIRE) != KVM_DIRTY_GFN_F_DIRTY)
			break;
		dirty_ring_mark(vm, bitmap, g->slot, g->offset);
		__atomic_store_n(&g->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		v->dirty_fetch++;
	}
	return done;
}

/*
 * KVM wrote past the end of @v's ring (it pushed more than its reserved
 * entries after the soft limit): it overwrote entries we had not taken,
 * and its index ran ahead of ours, over entries its reset cleared. From
 * dirty_fetch: empty entries, then dirty ones. Skip the empty ones (marked
 * for reset, so KVM's reset gets past them too) and go on; what was
 * overwritten is lost, so the caller reports the ring as overflowed.
 */
static bool dirty_ring_resync(struct vm *vm, struct vcpu *v)
{
	uint32_t n = vm->dirty_ring_entries, gap;

	for (gap = 0; gap < n; gap++) {
		struct kvm_dirty_gfn *g = &v->dirty_gfns[(v->dirty_fetch + gap) & (n - 1)];

		if (__atomic_load_n(&g->flags, __ATOMIC_ACQUIRE) == KVM_DIRTY_GFN_F_DIRTY)
			break;
	}
	if (gap == 0 || gap == n)
		return false; /* in step, or nothing pushed */
	for (; gap; gap--) {
		struct kvm_dirty_gfn *g = &v->dirty_gfns[v->dirty_fetch & (n - 1)];

		__atomic_store_n(&g->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		v->dirty_fetch++;
	}
	return true;
}

/*
 * Every ring's new entries into @bitmap, then recycle them. Under
 * dirty_lock. @full: a vCPU's ring is at its soft limit (its exit), so its
 * ring cannot be empty.
 */
static int dirty_ring_harvest(struct vm *vm, unsigned long *bitmap, struct vcpu *full)
{
	uint32_t n = vm->dirty_ring_entries, done;
	unsigned int i;

	for (i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = vm->vcpus[i];

		if (!v || !v->dirty_gfns)
			continue;
		done = dirty_ring_take(vm, v, bitmap);
		/* A whole ring at once: KVM may have gone past it already. */
		if (done == n || (v == full && done == 0 && dirty_ring_resync(vm, v))) {
			if (!vm->dirty_ring_overflows++)
				log_msg("vcpu%u: KVM overflowed its dirty ring of %u entries; "
					"dirty pages may be missing (use a larger --dirty-ring, or off)",
					v->id, n);
			vm->dirty_ring_overflow = true;
			dirty_ring_take(vm, v, bitmap);
		}
	}
	/* Even with nothing harvested here: a full vCPU waits for its reset. */
	if (ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
		return -errno;
	return 0;
}

int vm_dirty_ring_reap(struct vm *vm, struct vcpu *v)
{
	int ret;

	__atomic_fetch_add(&vm->dirty_ring_full, 1, __ATOMIC_RELAXED);
	if (!vm->dirty_ring_entries)
		return -EINVAL;
	pthread_mutex_lock(&vm->dirty_lock);
	ret = dirty_ring_harvest(vm, vm->dirty_pending, v);
	pthread_mutex_unlock(&vm->dirty_lock);
	return ret;
}

/* Empty every ring and the pending bitmap (a fresh start, or tracking off). */
static int dirty_ring_drain(struct vm *vm)
{
	int ret;

	pthread_mutex_lock(&vm->dirty_lock);
	ret = dirty_ring_harvest(vm, vm->dirty_pending, NULL);
	memset(vm->dirty_pending, 0, dirty_words(vm) * sizeof(unsigned long));
	vm->dirty_ring_overflow = false;
	pthread_mutex_unlock(&vm->dirty_lock);
	return ret;
}

int vm_dirty_log_start(struct vm *vm, struct qerr *e)
{
	int ret;

	if (vm->dirty_logging)
		return 0;
	if (vm->dirty_ring_entries) {
		ret = dirty_ring_drain(vm);
		if (ret)
			return qerr_set(e, -ret, "KVM_RESET_DIRTY_RINGS: %s", strerror(-ret));
	}
	ret = dirty_set_slot_flags(vm, KVM_MEM_LOG_DIRTY_PAGES, e);
	if (ret) {
		dirty_set_slot_flags(vm, 0, NULL);
		return ret;
	}
	vm->dirty_logging = true;
	return 0;
}

int vm_dirty_log_stop(struct vm *vm, struct qerr *e)
{
	int ret;

	if (!vm->dirty_logging)
		return 0;
	ret = dirty_set_slot_flags(vm, 0, e);
	if (ret)
		return ret;
	vm->dirty_logging = false;
	/* No entries come any more: what is left would only confuse a later start. */
	if (vm->dirty_ring_entries) {
		ret = dirty_ring_drain(vm);
		if (ret)
			return qerr_set(e, -ret, "KVM_RESET_DIRTY_RINGS: %s", strerror(-ret));
	}
	return 0;
}

static int dirty_ring_collect(struct vm *vm, unsigned long *bitmap, struct qerr *e)
{
	size_t w, nw = dirty_words(vm);
	int ret;

	bool overflow;

	pthread_mutex_lock(&vm->dirty_lock);
	ret = dirty_ring_harvest(vm, vm->dirty_pending, NULL);
	/* Merged even if the reset failed: the entries were taken. */
	for (w = 0; w < nw; w++) {
		bitmap[w] |= vm->dirty_pending[w];
		vm->dirty_pending[w] = 0;
	}
	/* Reported once: the caller starts over (a full checkpoint, a failed migration). */
	overflow = vm->dirty_ring_overflow;
	vm->dirty_ring_overflow = false;
	pthread_mutex_unlock(&vm->dirty_lock);
	if (ret)
		return qerr_set(e, -ret, "KVM_RESET_DIRTY_RINGS: %s", strerror(-ret));
	/* Never a silently incomplete log: the migration or checkpoint fails. */
	if (overflow)
		return qerr_set(e, EOVERFLOW,
				"KVM overflowed a dirty ring of %u entries: dirty pages may be "
				"missing (use a larger --dirty-ring, or --dirty-ring=off)",
				vm->dirty_ring_entries);
	return 0;
}

static int dirty_bitmap_collect(struct vm *vm, unsigned long *bitmap, struct qerr *e)
{
	unsigned long *log = NULL;
	size_t cap = 0;
	unsigned int i;

	for (i = 0; i < vm->mem.nr_regions; i++) {
		const struct mem_region *r = &vm->mem.regions[i];
		uint64_t npages = r->size / 4096, first = r->fd_offset / 4096, p;
		size_t need = (npages + 63) / 64 * 8;
		struct kvm_dirty_log dl = {.slot = r->slot};

		if (need > cap) {
			free(log);
			log = calloc(1, need);
			cap = need;
			if (!log)
				return qerr_set(e, ENOMEM, "out of memory");
		}
		memset(log, 0, need);
		dl.dirty_bitmap = log;
		if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &dl) < 0) {
			int err = errno;

			free(log);
			return qerr_set(e, err, "KVM_GET_DIRTY_LOG: %s", strerror(err));
		}
		for (p = 0; p < npages; p++)
			if (log[p / BITS] & (1UL << (p % BITS)))
				bitmap[(first + p) / BITS] |= 1UL << ((first + p) % BITS);
	}
	free(log);
	return 0;
}

int vm_dirty_log_collect(struct vm *vm, unsigned long *bitmap, struct qerr *e)
{
	if (!vm->dirty_logging)
		return qerr_set(e, EINVAL, "dirty logging is off");
	if (vm->dirty_ring_entries)
		return dirty_ring_collect(vm, bitmap, e);
	return dirty_bitmap_collect(vm, bitmap, e);
}
