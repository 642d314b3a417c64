// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "qlite/mem.h"

int mem_backend_parse(const char *s, enum mem_backend *out)
{
	if (!strcmp(s, "anon"))
		*out = MEM_BACKEND_ANON;
	else if (!strcmp(s, "memfd"))
		*out = MEM_BACKEND_MEMFD;
	else
		return -EINVAL;
	return 0;
}

static int mem_map(struct guest_mem *m, uint64_t ram_size, struct qerr *e)
{
	int flags = MAP_NORESERVE; /* backed only when the guest touches it */

	if (m->backend == MEM_BACKEND_MEMFD) {
		m->memfd = memfd_create("qlite-ram", MFD_CLOEXEC);
		if (m->memfd < 0)
			return qerr_set(e, errno, "memfd_create: %s", strerror(errno));
		if (ftruncate(m->memfd, ram_size) < 0)
			return qerr_set(e, errno, "cannot size guest RAM to %llu bytes: %s",
					(unsigned long long)ram_size, strerror(errno));
		flags |= MAP_SHARED;
	} else {
		flags |= MAP_PRIVATE | MAP_ANONYMOUS;
	}
	m->base = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, flags, m->memfd, 0);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		return qerr_set(e, errno, "cannot map %llu bytes of guest RAM: %s",
				(unsigned long long)ram_size, strerror(errno));
	}
	/* Huge pages let KVM map the guest 2 MiB at a time; advisory. */
	madvise(m->base, ram_size, MADV_HUGEPAGE);
	return 0;
}

int mem_init(struct guest_mem *m, uint64_t ram_size, enum mem_backend backend, struct qerr *e)
{
	uint64_t low;
	int ret;

	memset(m, 0, sizeof(*m));
	m->memfd = -1;
	m->backend = backend;
	if (ram_size == 0 || ram_size % (4 * KiB))
		return qerr_set(e, EINVAL, "memory size must be a non-zero multiple of 4 KiB");
	ret = mem_map(m, ram_size, e);
	if (ret) {
		mem_destroy(m);
		return ret;
	}
	m->ram_size = ram_size;
	m->dirty = calloc(ram_size / 4096 / (8 * sizeof(long)) + 1, sizeof(long));
	m->discarded = calloc(ram_size / 4096 / (8 * sizeof(long)) + 1, sizeof(long));
	if (!m->dirty || !m->discarded) {
		mem_destroy(m);
		return qerr_set(e, ENOMEM, "out of memory for the dirty bitmap");
	}

	low = MIN(ram_size, MEM_32BIT_GAP_START);
	m->regions[0] = (struct mem_region){ .gpa = 0, .size = low, .hva = m->base, .slot = 0 };
	m->nr_regions = 1;
	if (ram_size > low) {
		m->regions[1] = (struct mem_region){ .gpa = MEM_4G,
						     .size = ram_size - low,
						     .hva = m->base + low,
						     .fd_offset = low,
						     .slot = 1 };
		m->nr_regions = 2;
	}
	return 0;
}

void mem_destroy(struct guest_mem *m)
{
	if (m->base)
		munmap(m->base, m->ram_size);
	m->ram_size = 0;
	free(m->dirty);
	free(m->discarded);
	m->dirty = NULL;
	m->discarded = NULL;
	if (m->memfd >= 0)
		close(m->memfd);
	m->base = NULL;
	m->memfd = -1;
	m->nr_regions = 0;
}

void *mem_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	unsigned int i;

	for (i = 0; i < m->nr_regions; i++) {
		const struct mem_region *r = &m->regions[i];

		if (gpa < r->gpa || gpa - r->gpa >= r->size)
			continue;
		/* Whole range inside this region; written to avoid overflow. */
		if (len > r->size - (gpa - r->gpa))
			return NULL;
		return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

void mem_dirty_mark(struct guest_mem *m, const void *hva, size_t len)
{
	const uint8_t *p = hva;
	uint64_t first, last, pg;
	const unsigned int bits = 8 * sizeof(long);

	if (!len || p < m->base || p - m->base >= (ptrdiff_t)m->ram_size)
		return;
	first = (uint64_t)(p - m->base) / 4096;
	last = MIN((uint64_t)(p - m->base) + len - 1, m->ram_size - 1) / 4096;
	for (pg = first; pg <= last; pg++)
		__atomic_fetch_or(&m->dirty[pg / bits], 1UL << (pg % bits), __ATOMIC_RELAXED);
}

bool mem_dirty_test_clear(struct guest_mem *m, uint64_t page)
{
	const unsigned int bits = 8 * sizeof(long);
	unsigned long bit = 1UL << (page % bits);

	if (page >= m->ram_size / 4096)
		return false;
	return __atomic_fetch_and(&m->dirty[page / bits], ~bit, __ATOMIC_RELAXED) & bit;
}

static void mem_discard_bits(struct guest_mem *m, const uint8_t *hva, uint64_t len, bool set)
{
	const unsigned int bits = 8 * sizeof(long);
	uint64_t pg = (uint64_t)(hva - m->base) / 4096, end = pg + len / 4096;

	for (; pg < end; pg++) {
		if (set)
			__atomic_fetch_or(&m->discarded[pg / bits], 1UL << (pg % bits),
					  __ATOMIC_RELAXED);
		else
			__atomic_fetch_and(&m->discarded[pg / bits], ~(1UL << (pg % bits)),
					   __ATOMIC_RELAXED);
	}
}

int mem_discard(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint8_t *hva;

	if (gpa % 4096 || len % 4096 || !len)
		return -EINVAL;
	hva = mem_gpa_to_hva(m, gpa, len);
	if (!hva)
		return -EFAULT;
	if (m->backend == MEM_BACKEND_MEMFD) {
		/* The pages live in the memfd: only punching frees them. */
		if (fallocate(m->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      hva - m->base, len) < 0)
			return -errno;
	} else if (madvise(hva, len, MADV_DONTNEED) < 0) {
		return -errno;
	}
	mem_discard_bits(m, hva, len, true);
	/* The content changed (to zeros): incremental checkpoints must see it. */
	mem_dirty_mark(m, hva, len);
	return 0;
}

void mem_undiscard(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint8_t *hva = mem_gpa_to_hva(m, gpa, len);

	if (hva && gpa % 4096 == 0 && len % 4096 == 0)
		mem_discard_bits(m, hva, len, false);
}

bool mem_page_discarded(const struct guest_mem *m, uint64_t page)
{
	const unsigned int bits = 8 * sizeof(long);

	return page < m->ram_size / 4096 &&
	       (__atomic_load_n(&m->discarded[page / bits], __ATOMIC_RELAXED) & (1UL << (page % bits)));
}

int mem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len)
{
	void *p = mem_gpa_to_hva(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(buf, p, len);
	return 0;
}

int mem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len)
{
	void *p = mem_gpa_to_hva(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, buf, len);
	return 0;
}
