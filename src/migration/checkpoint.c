// SPDX-License-Identifier: MIT
/*
 * Writing a checkpoint (checkpoint.h). The VM is paused for the whole
 * write: small state (configuration, KVM, vCPUs, devices, disks) is
 * captured on the main thread, guest memory is classified and written by a
 * worker so the main loop keeps answering QMP and sending progress events.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"
#include "qlite/device.h"
#include "qlite/mem.h"
#include "qlite/sbuf.h"
#include "qlite/stream.h"
#include "qlite/vcpu.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"

#define BITS (8 * sizeof(unsigned long))
#define RUN_MAX_PAGES 256 /* 1 MiB per write */

static inline bool bit_test(const unsigned long *b, uint64_t i)
{
	return b[i / BITS] & (1UL << (i % BITS));
}

static inline void bit_set(unsigned long *b, uint64_t i)
{
	b[i / BITS] |= 1UL << (i % BITS);
}

static unsigned long *bitmap_new(uint64_t n)
{
	return calloc(n / BITS + 1, sizeof(unsigned long));
}

struct ckpt_job {
	struct vm *vm;
	struct ckpt_params p;
	char dir[PATH_MAX];
	char tmp_state[PATH_MAX + 32], tmp_mem[PATH_MAX + 32];
	int state_fd, mem_fd, done_efd;
	struct stream_writer w;
	struct ram_map map;
	bool elide;
	int disk_fd[ELIDE_MAX_DISKS]; /* elision's compares: the images, buffered */
	unsigned long *save; /* incremental: the pages to look at again */
	unsigned long *populated;
	pthread_t thread;
	bool thread_started;
	int result;
	struct qerr err;
	_Atomic uint64_t bytes, pages_done;
	uint64_t start_ns, end_ns;
	struct ckpt_stats st;
};

struct ckpt_vm *ckpt_vm_get(struct vm *vm)
{
	if (!vm->ckpt)
		vm->ckpt = calloc(1, sizeof(*vm->ckpt));
	return vm->ckpt;
}

void ckpt_vm_destroy(struct vm *vm)
{
	struct ckpt_vm *cv = vm->ckpt;

	if (!cv)
		return;
	ckpt_restore_free(cv->rs);
	elide_destroy(&cv->elide);
	free(cv->last_disk);
	free(cv);
	vm->ckpt = NULL;
}

/* ---- virtio-blk hooks ---------------------------------------------------- */

void ckpt_disk_read_done(struct vm *vm, unsigned int disk, uint64_t off, const struct iovec *iov,
			 unsigned int iovcnt)
{
	struct ckpt_vm *cv = ckpt_vm_get(vm);
	const struct guest_mem *m = &vm->mem;
	unsigned int i;

	if (!cv || disk >= ELIDE_MAX_DISKS)
		return;
	if (!cv->elide_ready) {
		if (elide_init(&cv->elide, m->ram_size / 4096))
			return;
		cv->elide_ready = true;
	}
	for (i = 0; i < iovcnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		while (len) {
			uint64_t page = (uint64_t)(p - m->base) / 4096;
			size_t step = 4096 - ((uintptr_t)p & 4095);

			if (p < m->base || page >= cv->elide.npages)
				return; /* not guest RAM: nothing of ours */
			if (step == 4096 && len >= 4096 && off % ELIDE_BLOCK == 0) {
				elide_record(&cv->elide, page, disk, off / ELIDE_BLOCK);
			} else {
				step = MIN(step, len);
				elide_forget_page(&cv->elide, page); /* partly overwritten */
			}
			p += step;
			off += step;
			len -= step;
		}
	}
}

static void populate_page(void *opaque, uint64_t page)
{
	ckpt_restore_populate(opaque, page);
}

void ckpt_disk_write_begin(struct vm *vm, unsigned int disk, uint64_t off, uint64_t len)
{
	struct ckpt_vm *cv = vm->ckpt;

	if (!cv || !cv->elide_ready)
		return;
	/*
	 * A page still to come from this block in a lazy restore must be
	 * read before the write changes the block under it.
	 */
	elide_drop_range(&cv->elide, disk, off, len, cv->rs ? populate_page : NULL, cv->rs);
}

/* ---- capture (main thread, VM paused) ----------------------------------- */

static int put_sbuf(struct stream_writer *w, uint32_t kind, const char *id, uint32_t inst,
		    uint32_t version, struct sbuf *b, struct qerr *e)
{
	if (sbuf_status(b))
		return qerr_set(e, ENOMEM, "out of memory saving %s", id);
	return stream_put(w, kind, id, inst, version, b->data, b->len, e);
}

static int capture_devices(struct vm *vm, struct stream_writer *w, struct qerr *e)
{
	struct device *list[256], *d;
	unsigned int n = 0, i, k;
	uint8_t *buf = NULL;
	size_t cap = 0;
	int ret = 0;

	for (d = vm->devices; d; d = d->next) {
		if (n == ARRAY_SIZE(list))
			return qerr_set(e, E2BIG, "too many devices");
		if (device_class_check(d->cls))
			return qerr_set(e, EINVAL,
					"device %s declares no state description; save refused",
					d->cls && d->cls->name ? d->cls->name : "(unnamed)");
		list[n++] = d;
	}
	/* Leaves first (reverse creation order); instance = ordinal in its class. */
	for (i = n; i-- > 0 && !ret;) {
		unsigned int inst = 0;
		size_t need = 0, used;

		d = list[i];
		if (!d->cls->state)
			continue; /* stateless: nothing to carry */
		for (k = 0; k < i; k++)
			inst += !strcmp(list[k]->cls->name, d->cls->name);
		device_state_save(d, NULL, 0, &need);
		if (need > cap) {
			free(buf);
			cap = need;
			buf = malloc(cap);
			if (!buf)
				return qerr_set(e, ENOMEM, "out of memory");
		}
		ret = device_state_save(d, buf, cap, &used);
		if (ret)
			ret = qerr_set(e, -ret, "cannot save device %s", d->cls->name);
		else
			ret = stream_put(w, STREAM_DEVICE, d->cls->name, inst,
					 d->cls->state->version, buf, used, e);
	}
	free(buf);
	return ret;
}

static int capture_disks(struct vm *vm, struct stream_writer *w, struct qerr *e)
{
	struct blk_disk_info info;
	struct vblk *b = NULL;
	struct sbuf sb;
	int ret = 0;

	sbuf_init(&sb);
	while (!ret && (b = virtio_blk_next(vm, b, &info))) {
		struct ckpt_disk d = { 0 };
		struct stat st;

		if (stat(info.path, &st) < 0) {
			ret = qerr_set(e, errno, "cannot stat disk %s: %s", info.path, strerror(errno));
			break;
		}
		snprintf(d.path, sizeof(d.path), "%s", info.path);
		d.size = (uint64_t)st.st_size;
		d.dev = st.st_dev;
		d.ino = st.st_ino;
		d.mtime_sec = st.st_mtim.tv_sec;
		d.mtime_nsec = st.st_mtim.tv_nsec;
		sbuf_reset(&sb);
		ckpt_disk_encode(&d, &sb);
		ret = put_sbuf(w, STREAM_DISK, "disk", info.index, CKPT_DISK_VERSION, &sb, e);
	}
	sbuf_free(&sb);
	return ret;
}

int ckpt_state_write(struct vm *vm, struct stream_writer *w, struct qerr *e)
{
	struct sbuf sb;
	char *json;
	unsigned int i;
	int ret;

	ret = vm_check_savable(vm, e);
	if (ret)
		return ret;
	json = ckpt_config_to_json(&vm->cfg);
	if (!json)
		return qerr_set(e, ENOMEM, "out of memory");
	ret = stream_put(w, STREAM_VM, "vm", 0, CKPT_VM_VERSION, json, strlen(json), e);
	free(json);
	sbuf_init(&sb);
	if (!ret)
		ret = vm_kvm_state_save(vm, &sb, e);
	if (!ret)
		ret = put_sbuf(w, STREAM_KVM, "kvm", 0, 1, &sb, e);
	for (i = 0; !ret && i < vm->ncpus; i++) {
		sbuf_reset(&sb);
		ret = vcpu_state_save(vm->vcpus[i], &sb, e);
		if (!ret)
			ret = put_sbuf(w, STREAM_CPU, "cpu", i, 1, &sb, e);
	}
	sbuf_free(&sb);
	if (!ret)
		ret = capture_devices(vm, w, e);
	if (!ret)
		ret = capture_disks(vm, w, e);
	return ret;
}

static int capture(struct ckpt_job *j, struct qerr *e)
{
	int ret = stream_begin(&j->w, e);

	return ret ? ret : ckpt_state_write(j->vm, &j->w, e);
}

/*
 * Guest writes since the last checkpoint: KVM's log plus the VMM's own
 * bitmap (device DMA, balloon discards). The first checkpoint turns KVM's
 * logging on, so the next one can be incremental.
 */
static int collect_dirty(struct ckpt_job *j, struct ckpt_vm *cv, struct qerr *e)
{
	struct guest_mem *m = &j->vm->mem;
	uint64_t npages = j->map.npages, w, nw = npages / BITS + 1;
	unsigned long *dirty = NULL;
	int ret;

	if (j->vm->dirty_logging) {
		dirty = bitmap_new(npages);
		if (!dirty)
			return qerr_set(e, ENOMEM, "out of memory");
		ret = vm_dirty_log_collect(j->vm, dirty, e);
		if (ret) {
			free(dirty);
			return ret;
		}
	} else {
		ret = vm_dirty_log_start(j->vm, e);
		if (ret)
			return ret;
	}
	for (w = 0; w < nw; w++) {
		unsigned long v = __atomic_exchange_n(&m->dirty[w], 0, __ATOMIC_RELAXED);

		if (dirty)
			dirty[w] |= v;
	}
	if (j->p.incremental) {
		if (!dirty)
			return qerr_set(e, EINVAL, "no dirty log to build an incremental checkpoint on");
		/* Disk references are re-checked every time: the disk may have moved on. */
		if (cv->last_disk)
			for (w = 0; w < nw; w++)
				dirty[w] |= cv->last_disk[w];
		j->save = dirty;
	} else {
		free(dirty);
	}
	return 0;
}

/* ---- memory (worker thread) ---------------------------------------------- */

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/*
 * Which pages were ever populated: the rest read as zero and need no look
 * (never touched, or given back by the balloon). Anonymous memory asks
 * /proc/self/pagemap (present or swapped); a memfd asks for its holes.
 * Without either, every page counts as populated.
 */
unsigned long *ckpt_find_populated(const struct guest_mem *m, uint64_t npages)
{
	unsigned long *pop = bitmap_new(npages);
	uint64_t p;

	if (!pop)
		return NULL;
	if (m->backend == MEM_BACKEND_MEMFD) {
		off_t off = 0, end = (off_t)(npages * 4096);

		while (off < end) {
			off_t data = lseek(m->memfd, off, SEEK_DATA), hole;

			if (data < 0)
				break; /* ENXIO: no data after @off */
			hole = lseek(m->memfd, data, SEEK_HOLE);
			if (hole < 0)
				hole = end;
			for (p = (uint64_t)data / 4096; p < (uint64_t)(hole + 4095) / 4096 && p < npages;
			     p++)
				bit_set(pop, p);
			off = hole;
		}
		return pop;
	}
	{
		int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		uint64_t ent[512];

		if (fd < 0)
			goto all;
		for (p = 0; p < npages;) {
			size_t n = (size_t)MIN((uint64_t)ARRAY_SIZE(ent), npages - p), i;
			off_t off = (off_t)(((uintptr_t)m->base / 4096 + p) * 8);

			if (pread(fd, ent, n * 8, off) != (ssize_t)(n * 8)) {
				close(fd);
				memset(pop, 0, (npages / BITS + 1) * sizeof(unsigned long));
				goto all;
			}
			for (i = 0; i < n; i++)
				if (ent[i] & (3ULL << 62)) /* present | swapped */
					bit_set(pop, p + i);
			p += n;
		}
		close(fd);
		return pop;
	}
all:
	for (p = 0; p < npages; p++)
		bit_set(pop, p);
	return pop;
}

static const uint8_t zero_page[4096];

/*
 * Disks by index, for elision's compares. The image's own fd may be
 * O_DIRECT (aligned buffers only): a second, plain read-only open of the
 * same path needs no alignment, and the path is what restore reads from.
 * A disk that cannot be opened just gets no references. elide_verify()
 * reads up to 1 MiB of consecutive blocks at a time, in block order.
 */
static void open_disks(struct ckpt_job *j)
{
	struct blk_disk_info info;
	struct vblk *b = NULL;

	while ((b = virtio_blk_next(j->vm, b, &info)))
		if (info.index < ELIDE_MAX_DISKS && j->disk_fd[info.index] < 0)
			j->disk_fd[info.index] = open(info.path, O_RDONLY | O_CLOEXEC);
}

static int read_blocks(void *opaque, unsigned int disk, uint64_t block, uint64_t nblocks, void *buf)
{
	struct ckpt_job *j = opaque;

	if (disk >= ELIDE_MAX_DISKS || j->disk_fd[disk] < 0)
		return -EBADF;
	/* -ENODATA past the end: the image shrank. */
	return file_pread_all(j->disk_fd[disk], buf, nblocks * ELIDE_BLOCK,
			      (off_t)(block * ELIDE_BLOCK));
}

static int flush_run(struct ckpt_job *j, uint64_t first, uint64_t n)
{
	const struct guest_mem *m = &j->vm->mem;
	int ret;

	if (!n)
		return 0;
	ret = pwrite_all(j->mem_fd, m->base + first * 4096, n * 4096, (off_t)(first * 4096));
	if (ret)
		return qerr_set(&j->err, -ret, "cannot write %s/%s: %s", j->dir, CKPT_MEMORY_FILE,
				strerror(-ret));
	j->st.bytes_memory += n * 4096;
	atomic_fetch_add(&j->bytes, n * 4096);
	return 0;
}

static void *worker(void *opaque)
{
	struct ckpt_job *j = opaque;
	struct vm *vm = j->vm;
	struct ckpt_vm *cv = vm->ckpt;
	const struct guest_mem *m = &vm->mem;
	struct ram_map *map = &j->map;
	uint64_t p, run = 0, run_start = 0;
	unsigned long *same = NULL; /* unverified pages equal to their block */
	struct sbuf sb;
	int ret = 0;

	j->populated = ckpt_find_populated(m, map->npages);
	if (!j->populated) {
		ret = qerr_set(&j->err, ENOMEM, "out of memory");
		goto out;
	}
	if (j->elide) {
		/* The pages the loop below would look at; out of memory: no references. */
		uint64_t w, nw = map->npages / BITS + 1;
		unsigned long *want = bitmap_new(map->npages);

		same = bitmap_new(map->npages);
		if (want && same) {
			for (w = 0; w < nw; w++)
				want[w] = j->populated[w] & (j->save ? j->save[w] : ~0UL);
			if (elide_verify(&cv->elide, m->base, want, read_blocks, j, same))
				log_msg("checkpoint: no memory to check disk references");
		}
		free(want);
	}
	for (p = 0; p < map->npages && !ret; p++) {
		const uint8_t *hva = m->base + p * 4096;
		unsigned int disk;
		uint64_t block, hash;
		uint8_t k;

		if (j->save && !bit_test(j->save, p)) {
			k = CKPT_PAGE_PARENT;
			j->st.pages_parent++;
		} else if (!bit_test(j->populated, p)) {
			k = CKPT_PAGE_ZERO;
			j->st.pages_zero++;
			if (mem_page_discarded(m, p))
				j->st.pages_balloon++;
		} else if (j->elide &&
			   elide_lookup(&cv->elide, p, hva, same, &disk, &block, &hash)) {
			k = CKPT_PAGE_DISK;
			map->ref[p].key = ((uint64_t)(disk + 1) << 48) | block;
			map->ref[p].hash = hash;
			j->st.pages_disk++;
		} else if (!memcmp(hva, zero_page, 4096)) {
			k = CKPT_PAGE_ZERO;
			j->st.pages_zero++;
		} else {
			k = CKPT_PAGE_DATA;
			j->st.pages_data++;
		}
		map->kind[p] = k;
		if (k == CKPT_PAGE_DATA && run && run < RUN_MAX_PAGES) {
			run++; /* pages are visited in order: the run stays contiguous */
		} else {
			ret = flush_run(j, run_start, run);
			run = k == CKPT_PAGE_DATA;
			run_start = p;
		}
		if (p % 1024 == 0)
			atomic_store(&j->pages_done, p);
	}
	if (!ret)
		ret = flush_run(j, run_start, run);
	if (ret)
		goto out;
	atomic_store(&j->pages_done, map->npages);
	sbuf_init(&sb);
	ram_map_encode(map, &sb);
	ret = put_sbuf(&j->w, STREAM_RAM, "ram", 0, CKPT_RAM_VERSION, &sb, &j->err);
	sbuf_free(&sb);
	if (!ret)
		ret = stream_finish(&j->w, &j->err);
	if (!ret && (fsync(j->mem_fd) < 0 || fsync(j->state_fd) < 0))
		ret = qerr_set(&j->err, errno, "cannot sync the checkpoint in %s: %s", j->dir,
			       strerror(errno));
out:
	free(same);
	j->result = ret;
	j->end_ns = time_now_ns();
	{
		uint64_t one = 1;

		if (write(j->done_efd, &one, sizeof(one)) < 0)
			log_msg("checkpoint: cannot signal completion: %s", strerror(errno));
	}
	return NULL;
}

/* ---- the job -------------------------------------------------------------- */

static int prepare_dir(struct ckpt_job *j, struct qerr *e)
{
	struct stat st;

	if (!j->p.dir || !j->p.dir[0])
		return qerr_set(e, EINVAL, "no checkpoint directory given");
	if (mkdir(j->p.dir, 0755) < 0 && errno != EEXIST)
		return qerr_set(e, errno, "cannot create checkpoint directory %s: %s", j->p.dir,
				strerror(errno));
	if (stat(j->p.dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return qerr_set(e, ENOTDIR, "%s is not a directory", j->p.dir);
	if (!realpath(j->p.dir, j->dir))
		return qerr_set(e, errno, "%s: %s", j->p.dir, strerror(errno));
	snprintf(j->tmp_state, sizeof(j->tmp_state), "%s/.%s.tmp", j->dir, CKPT_STATE_FILE);
	snprintf(j->tmp_mem, sizeof(j->tmp_mem), "%s/.%s.tmp", j->dir, CKPT_MEMORY_FILE);
	j->state_fd = open(j->tmp_state, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	if (j->state_fd < 0)
		return qerr_set(e, errno, "cannot write in %s: %s", j->dir, strerror(errno));
	j->mem_fd = open(j->tmp_mem, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	if (j->mem_fd < 0)
		return qerr_set(e, errno, "cannot write in %s: %s", j->dir, strerror(errno));
	/* Sparse: pages that are not data stay holes. */
	if (ftruncate(j->mem_fd, (off_t)(j->map.npages * 4096)) < 0)
		return qerr_set(e, errno, "cannot size %s/%s: %s", j->dir, CKPT_MEMORY_FILE,
				strerror(errno));
	return 0;
}

void ckpt_job_free(struct ckpt_job *j)
{
	unsigned int i;

	if (!j)
		return;
	if (j->thread_started)
		pthread_join(j->thread, NULL);
	for (i = 0; i < ELIDE_MAX_DISKS; i++) /* after the worker that reads them */
		if (j->disk_fd[i] >= 0)
			close(j->disk_fd[i]);
	if (j->state_fd >= 0)
		close(j->state_fd);
	if (j->mem_fd >= 0)
		close(j->mem_fd);
	if (j->done_efd >= 0)
		close(j->done_efd);
	/* Whatever was not renamed into place is a failed attempt's leftover. */
	if (j->tmp_state[0])
		unlink(j->tmp_state);
	if (j->tmp_mem[0])
		unlink(j->tmp_mem);
	ram_map_free(&j->map);
	free(j->save);
	free(j->populated);
	free(j);
}

int ckpt_save_start(struct vm *vm, const struct ckpt_params *p, bool was_running,
		    struct ckpt_job **out, struct qerr *e)
{
	struct ckpt_vm *cv = ckpt_vm_get(vm);
	struct ckpt_job *j;
	int ret;

	(void)was_running;
	if (!cv)
		return qerr_set(e, ENOMEM, "out of memory");
	j = calloc(1, sizeof(*j));
	if (!j)
		return qerr_set(e, ENOMEM, "out of memory");
	j->vm = vm;
	j->p = *p;
	j->state_fd = j->mem_fd = -1;
	for (unsigned int i = 0; i < ELIDE_MAX_DISKS; i++)
		j->disk_fd[i] = -1;
	j->start_ns = time_now_ns();
	j->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	j->elide = !p->no_elide && cv->elide_ready;
	if (j->done_efd < 0) {
		ret = qerr_set(e, errno, "eventfd: %s", strerror(errno));
		goto err;
	}
	ret = ram_map_alloc(&j->map, vm->mem.ram_size / 4096);
	if (ret) {
		qerr_set(e, -ret, "out of memory for the page map");
		goto err;
	}
	/* Everything that can fail for the user's reasons, before pausing. */
	ret = prepare_dir(j, e);
	if (ret)
		goto err;
	if (p->incremental) {
		if (!cv->have_last || !vm->dirty_logging) {
			ret = qerr_set(e, EINVAL,
				       "no earlier checkpoint of this VM to build an incremental one on");
			goto err;
		}
		if (!strcmp(cv->last_dir, j->dir)) {
			ret = qerr_set(e, EINVAL,
				       "an incremental checkpoint needs its own directory (%s holds its parent)",
				       j->dir);
			goto err;
		}
		j->map.has_parent = true;
		memcpy(j->map.parent_id, cv->last_id, CKPT_ID_LEN);
		snprintf(j->map.parent_dir, sizeof(j->map.parent_dir), "%s", cv->last_dir);
	}
	if (getrandom(j->map.id, CKPT_ID_LEN, 0) != CKPT_ID_LEN) {
		ret = qerr_set(e, errno, "getrandom: %s", strerror(errno));
		goto err;
	}
	/* A lazy restore still filling memory must finish: we read all of it. */
	ret = ckpt_restore_complete(vm, e);
	if (ret)
		goto err;
	ret = vm_pause(vm);
	if (ret) {
		qerr_set(e, -ret, "cannot pause the VM: %s", strerror(-ret));
		goto err;
	}
	if (j->elide)
		open_disks(j);
	stream_writer_init(&j->w, j->state_fd);
	ret = capture(j, e);
	if (!ret)
		ret = collect_dirty(j, cv, e);
	if (ret) {
		cv->have_last = false; /* the dirty logs may be gone: no increment on this */
		goto err;
	}
	j->map.npages = vm->mem.ram_size / 4096;
	j->st.pages_total = j->map.npages;
	if (pthread_create(&j->thread, NULL, worker, j)) {
		ret = qerr_set(e, EAGAIN, "cannot start the checkpoint thread");
		cv->have_last = false;
		goto err;
	}
	j->thread_started = true;
	*out = j;
	return 0;
err:
	ckpt_job_free(j);
	return ret;
}

int ckpt_job_eventfd(const struct ckpt_job *j)
{
	return j->done_efd;
}

const char *ckpt_job_dir(const struct ckpt_job *j)
{
	return j->dir;
}

bool ckpt_job_stop(const struct ckpt_job *j)
{
	return j->p.stop;
}

void ckpt_job_progress(const struct ckpt_job *j, uint64_t *bytes, uint64_t *pages_done,
		       uint64_t *pages_total, uint64_t *elapsed_ns)
{
	*bytes = atomic_load(&j->bytes);
	*pages_done = atomic_load(&j->pages_done);
	*pages_total = j->map.npages;
	*elapsed_ns = time_now_ns() - j->start_ns;
}

static int install(struct ckpt_job *j, struct qerr *e)
{
	char path[PATH_MAX + 32];
	int dfd;

	/* Memory first: a state file in place always has its memory beside it. */
	snprintf(path, sizeof(path), "%s/%s", j->dir, CKPT_MEMORY_FILE);
	if (rename(j->tmp_mem, path) < 0)
		return qerr_set(e, errno, "cannot install %s: %s", path, strerror(errno));
	j->tmp_mem[0] = 0;
	snprintf(path, sizeof(path), "%s/%s", j->dir, CKPT_STATE_FILE);
	if (rename(j->tmp_state, path) < 0)
		return qerr_set(e, errno, "cannot install %s: %s", path, strerror(errno));
	j->tmp_state[0] = 0;
	dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

int ckpt_job_finish(struct ckpt_job *j, struct ckpt_stats *st, struct qerr *e)
{
	struct ckpt_vm *cv = j->vm->ckpt;
	uint64_t p;
	int ret;

	if (j->thread_started) {
		pthread_join(j->thread, NULL);
		j->thread_started = false;
	}
	ret = j->result;
	if (ret)
		qerr_set(e, j->err.errnum ? j->err.errnum : EIO, "%s", j->err.msg);
	else
		ret = install(j, e);
	j->st.bytes_state = j->w.bytes;
	j->st.total_ns = j->end_ns - j->start_ns;
	j->st.pause_ns = j->st.total_ns;
	if (st)
		*st = j->st;
	if (ret) {
		cv->have_last = false;
		return ret;
	}
	/* The next incremental checkpoint builds on this one. */
	if (!cv->last_disk)
		cv->last_disk = bitmap_new(j->map.npages);
	if (cv->last_disk) {
		memset(cv->last_disk, 0, (j->map.npages / BITS + 1) * sizeof(unsigned long));
		for (p = 0; p < j->map.npages; p++)
			if (j->map.kind[p] == CKPT_PAGE_DISK)
				bit_set(cv->last_disk, p);
	}
	memcpy(cv->last_id, j->map.id, CKPT_ID_LEN);
	snprintf(cv->last_dir, sizeof(cv->last_dir), "%s", j->dir);
	cv->have_last = cv->last_disk != NULL;
	return 0;
}
