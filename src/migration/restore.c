// SPDX-License-Identifier: MIT
/*
 * Restoring a checkpoint (checkpoint.h). The whole state stream is read and
 * checked (CRCs, versions, sizes, which sections exist) before anything is
 * applied; the RAM page maps of an incremental chain are resolved to one
 * source per page; disks the map refers to are checked for changes. Then
 * memory is filled (eager) or handed to the userfaultfd engine (lazy), and
 * KVM, vCPU and device state are loaded into the not yet started VM.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"
#include "qlite/device.h"
#include "qlite/mem.h"
#include "qlite/stream.h"
#include "qlite/uffd.h"
#include "qlite/vcpu.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"

#define STATE_MAX_SECTION CKPT_MAX_SECTION
#define MAX_DEV_SECTIONS CKPT_MAX_DEV_SECTIONS

struct ckpt_restore {
	struct vm *vm;
	enum ckpt_restore_mode mode;
	uint64_t npages;
	uint8_t *kind; /* resolved: ZERO, DATA or DISK */
	uint8_t *src; /* DATA: which memory file (0: this checkpoint, n: n-th parent) */
	struct elide_entry *ref;
	int fds[CKPT_MAX_CHAIN + 1];
	unsigned int nfds;
	int disk_fd[ELIDE_MAX_DISKS];
	struct uffd_lazy *lazy;
	struct uffd_lazy_stats last; /* of the engine, once it is gone */
	uint64_t start_ns, running_ns, done_ns;
};

void ckpt_state_free(struct ckpt_state *l)
{
	unsigned int i;

	free(l->vm_json);
	free(l->kvm);
	for (i = 0; i < VM_MAX_VCPUS; i++)
		free(l->cpu[i]);
	for (i = 0; i < l->ndev; i++)
		free(l->dev[i].data);
	for (i = 0; i < ELIDE_MAX_DISKS; i++)
		free(l->disk[i]);
	if (l->has_ram)
		ram_map_free(&l->ram);
	memset(l, 0, sizeof(*l));
}

static uint8_t *dup_data(const struct stream_section *s)
{
	uint8_t *p = malloc(s->len ? s->len : 1);

	if (p && s->len)
		memcpy(p, s->data, s->len);
	return p;
}

static int open_state(const char *dir, struct qerr *e)
{
	char path[PATH_MAX + 32];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, CKPT_STATE_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qerr_set(e, errno, "cannot open checkpoint %s: %s", path, strerror(errno));
	return fd;
}

/*
 * Read a whole state stream. @ram_only: a parent in a chain, whose RAM map
 * is all we need (the rest is still read, so its CRCs are checked).
 */
int ckpt_state_read(struct stream_reader *r, struct ckpt_state *l, bool ram_only,
		    struct qerr *e)
{
	struct stream_section s;
	struct qerr se = { 0 };
	int ret = 0;

	while (!ret) {
		ret = stream_next(r, &s, &se);
		if (ret <= 0)
			break;
		ret = 0;
		switch (s.kind) {
		case STREAM_VM:
			if (l->vm_json) {
				ret = qerr_set(&se, EINVAL, "duplicate vm section");
				break;
			}
			if (s.version != CKPT_VM_VERSION) {
				ret = qerr_set(&se, EPROTO, "vm section version %u, this qlite reads %u",
					       s.version, CKPT_VM_VERSION);
				break;
			}
			if (ram_only)
				break;
			l->vm_json = (char *)dup_data(&s);
			l->vm_len = s.len;
			break;
		case STREAM_KVM:
			if (ram_only)
				break;
			if (l->kvm) {
				ret = qerr_set(&se, EINVAL, "duplicate kvm section");
				break;
			}
			l->kvm = dup_data(&s);
			l->kvm_len = s.len;
			break;
		case STREAM_CPU:
			if (ram_only)
				break;
			if (s.instance >= VM_MAX_VCPUS || l->cpu[s.instance]) {
				ret = qerr_set(&se, EINVAL, "cpu section %u: duplicate or out of range",
					       s.instance);
				break;
			}
			l->cpu[s.instance] = dup_data(&s);
			l->cpu_len[s.instance] = s.len;
			break;
		case STREAM_DEVICE: {
			struct dev_blob *d;
			unsigned int i;

			if (ram_only)
				break;
			for (i = 0; i < l->ndev; i++)
				if (!strcmp(l->dev[i].id, s.id) && l->dev[i].inst == s.instance)
					break;
			if (i < l->ndev || l->ndev == MAX_DEV_SECTIONS) {
				ret = qerr_set(&se, EINVAL, "device section %s/%u: duplicate or too many",
					       s.id, s.instance);
				break;
			}
			d = &l->dev[l->ndev++];
			snprintf(d->id, sizeof(d->id), "%s", s.id);
			d->inst = s.instance;
			d->version = s.version;
			d->data = dup_data(&s);
			d->len = s.len;
			break;
		}
		case STREAM_DISK:
			if (ram_only)
				break;
			if (s.instance >= ELIDE_MAX_DISKS || l->disk[s.instance]) {
				ret = qerr_set(&se, EINVAL, "disk section %u: duplicate or out of range",
					       s.instance);
				break;
			}
			if (s.version != CKPT_DISK_VERSION) {
				ret = qerr_set(&se, EPROTO, "disk section version %u, this qlite reads %u",
					       s.version, CKPT_DISK_VERSION);
				break;
			}
			l->disk[s.instance] = calloc(1, sizeof(struct ckpt_disk));
			if (!l->disk[s.instance])
				ret = qerr_set(&se, ENOMEM, "out of memory");
			else
				ret = ckpt_disk_decode(l->disk[s.instance], s.data, s.len, &se);
			break;
		case STREAM_RAM:
			if (l->has_ram) {
				ret = qerr_set(&se, EINVAL, "duplicate ram section");
				break;
			}
			if (s.version != CKPT_RAM_VERSION) {
				ret = qerr_set(&se, EPROTO, "ram section version %u, this qlite reads %u",
					       s.version, CKPT_RAM_VERSION);
				break;
			}
			ret = ram_map_decode(&l->ram, s.data, s.len, &se);
			l->has_ram = !ret;
			break;
		default:
			ret = qerr_set(&se, EINVAL, "unexpected section kind %u", s.kind);
		}
	}
	if (ret < 0)
		return qerr_set(e, -ret, "%s", se.msg);
	if (!ram_only && (!l->vm_json || !l->kvm))
		return qerr_set(e, EINVAL, "no %s section", l->vm_json ? "kvm" : "vm");
	return 0;
}

static int load_stream(const char *dir, struct ckpt_state *l, bool ram_only, struct qerr *e)
{
	struct stream_reader r;
	struct qerr se = { 0 };
	int fd, ret;

	fd = open_state(dir, e);
	if (fd < 0)
		return fd;
	stream_reader_init_fd(&r, fd, STATE_MAX_SECTION);
	ret = stream_open(&r, &se);
	if (!ret)
		ret = ckpt_state_read(&r, l, ram_only, &se);
	stream_reader_close(&r);
	close(fd);
	if (ret < 0)
		return qerr_set(e, -ret, "checkpoint %s: %s", dir, se.msg);
	if (!l->has_ram)
		return qerr_set(e, EINVAL, "checkpoint %s: no ram section", dir);
	return 0;
}

int ckpt_read_config(const char *dir, struct vm_config *cfg, struct json_object **store,
		     struct qerr *e)
{
	struct stream_reader r;
	struct stream_section s;
	struct qerr se = { 0 };
	int fd, ret;

	fd = open_state(dir, e);
	if (fd < 0)
		return fd;
	stream_reader_init_fd(&r, fd, STATE_MAX_SECTION);
	ret = stream_open(&r, &se);
	if (!ret) {
		ret = stream_next(&r, &s, &se);
		if (ret == 1 && (s.kind != STREAM_VM || s.version != CKPT_VM_VERSION))
			ret = qerr_set(&se, EINVAL, "the first section is not a vm section of version %u",
				       CKPT_VM_VERSION);
		else if (ret == 0)
			ret = qerr_set(&se, EINVAL, "no vm section");
		if (ret == 1) {
			ret = ckpt_config_from_json((const char *)s.data, s.len, cfg, store, &se);
		}
	}
	stream_reader_close(&r);
	close(fd);
	if (ret < 0)
		return qerr_set(e, -ret, "checkpoint %s: %s", dir, se.msg);
	return 0;
}

/* ---- page sources ----------------------------------------------------------- */

static int fill_disk_page(struct ckpt_restore *rs, uint64_t page, void *dst)
{
	const struct elide_entry *r = &rs->ref[page];
	unsigned int disk = (unsigned int)(r->key >> 48) - 1;
	uint64_t block = r->key & ((1ULL << 48) - 1);
	int ret;

	ret = file_pread_all(rs->disk_fd[disk], dst, 4096, (off_t)(block * ELIDE_BLOCK));
	if (ret)
		return ret;
	return elide_hash(dst) == r->hash ? 0 : -EILSEQ;
}

static enum uffd_page_kind src_kind(void *opaque, uint64_t page)
{
	struct ckpt_restore *rs = opaque;

	return rs->kind[page] == CKPT_PAGE_ZERO ? UFFD_PAGE_ZERO : UFFD_PAGE_DATA;
}

static int src_fill(void *opaque, uint64_t page, void *dst)
{
	struct ckpt_restore *rs = opaque;

	if (rs->kind[page] == CKPT_PAGE_DISK)
		return fill_disk_page(rs, page, dst);
	return file_pread_all(rs->fds[rs->src[page]], dst, 4096, (off_t)(page * 4096));
}

/* A prefetch run: one read when it is all data from one memory file. */
static int src_fill_run(void *opaque, uint64_t page, uint64_t n, void *dst)
{
	struct ckpt_restore *rs = opaque;
	uint64_t i;

	for (i = 0; i < n; i++)
		if (rs->kind[page + i] != CKPT_PAGE_DATA || rs->src[page + i] != rs->src[page])
			return -EAGAIN;
	return file_pread_all(rs->fds[rs->src[page]], dst, n * 4096, (off_t)(page * 4096));
}

/* ---- resolving the chain and the disks ------------------------------------ */

static int open_parent(const char *child_dir, const char *parent_dir, char *found, size_t flen)
{
	char tmp[PATH_MAX], child_copy[PATH_MAX], path[2 * PATH_MAX + 32];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", parent_dir, CKPT_STATE_FILE);
	if (access(path, R_OK) == 0) {
		snprintf(found, flen, "%s", parent_dir);
		return 0;
	}
	/* Moved together with its children: look beside the child. */
	snprintf(tmp, sizeof(tmp), "%s", parent_dir);
	snprintf(child_copy, sizeof(child_copy), "%s", child_dir);
	snprintf(path, sizeof(path), "%s/%s", dirname(child_copy), basename(tmp));
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode) || strlen(path) >= flen)
		return -ENOENT;
	snprintf(found, flen, "%s", path);
	return 0;
}

static int open_memory(struct ckpt_restore *rs, const char *dir, struct qerr *e)
{
	char path[PATH_MAX + 32];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, CKPT_MEMORY_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qerr_set(e, errno, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != rs->npages * 4096) {
		close(fd);
		return qerr_set(e, EINVAL, "%s is not %llu bytes long: truncated or foreign", path,
				(unsigned long long)(rs->npages * 4096));
	}
	rs->fds[rs->nfds++] = fd;
	return 0;
}

static int resolve_chain(struct ckpt_restore *rs, const char *dir, const struct ram_map *top,
			 struct qerr *e)
{
	char cur[PATH_MAX], next[PATH_MAX];
	struct ram_map prev = { 0 };
	bool have_prev = false;
	uint64_t p, pending = 0;
	unsigned int level;
	int ret;

	for (p = 0; p < rs->npages; p++) {
		rs->kind[p] = top->kind[p];
		rs->ref[p] = top->ref[p];
		pending += top->kind[p] == CKPT_PAGE_PARENT;
	}
	ret = open_memory(rs, dir, e);
	if (ret)
		return ret;
	snprintf(cur, sizeof(cur), "%s", dir);
	for (level = 1; pending && !ret; level++) {
		const struct ram_map *m = have_prev ? &prev : top;
		struct ckpt_state pl;

		if (!m->has_parent) {
			ret = qerr_set(e, EINVAL, "checkpoint %s: pages refer to a parent it lacks", cur);
			break;
		}
		if (level > CKPT_MAX_CHAIN) {
			ret = qerr_set(e, ELOOP, "checkpoint %s: more than %u incremental steps", dir,
				       CKPT_MAX_CHAIN);
			break;
		}
		if (open_parent(cur, m->parent_dir, next, sizeof(next))) {
			ret = qerr_set(e, ENOENT, "checkpoint %s is incremental; its parent %s is missing",
				       cur, m->parent_dir);
			break;
		}
		memset(&pl, 0, sizeof(pl));
		ret = load_stream(next, &pl, true, e);
		if (!ret && (memcmp(pl.ram.id, m->parent_id, CKPT_ID_LEN) ||
			     pl.ram.npages != rs->npages))
			ret = qerr_set(e, EINVAL,
				       "checkpoint %s is not the parent checkpoint %s was built on", next,
				       cur);
		if (!ret)
			ret = open_memory(rs, next, e);
		for (p = 0; !ret && p < rs->npages; p++) {
			if (rs->kind[p] != CKPT_PAGE_PARENT)
				continue;
			switch (pl.ram.kind[p]) {
			case CKPT_PAGE_ZERO:
				rs->kind[p] = CKPT_PAGE_ZERO;
				pending--;
				break;
			case CKPT_PAGE_DATA:
				rs->kind[p] = CKPT_PAGE_DATA;
				rs->src[p] = (uint8_t)(rs->nfds - 1);
				pending--;
				break;
			case CKPT_PAGE_DISK:
				/* We never write these: a disk reference is re-checked each time. */
				ret = qerr_set(e, EINVAL, "checkpoint %s: page %llu inherits a disk reference",
					       cur, (unsigned long long)p);
				break;
			}
		}
		if (have_prev)
			ram_map_free(&prev);
		if (pl.has_ram) {
			prev = pl.ram;
			have_prev = true;
			pl.has_ram = false;
		}
		ckpt_state_free(&pl);
		snprintf(cur, sizeof(cur), "%s", next);
	}
	if (have_prev)
		ram_map_free(&prev);
	return ret;
}

/*
 * A disk the checkpoint refers to must hold what it held then. Same file,
 * same size and modification time: trusted (every block is still hashed as
 * it is read in). Otherwise every referenced block is read and hashed now,
 * and any difference refuses the restore.
 */
static int check_disks(struct ckpt_restore *rs, struct ckpt_state *l, struct qerr *e)
{
	uint64_t refs[ELIDE_MAX_DISKS] = { 0 }, p;
	uint8_t buf[4096];
	unsigned int d;

	for (p = 0; p < rs->npages; p++)
		if (rs->kind[p] == CKPT_PAGE_DISK)
			refs[(rs->ref[p].key >> 48) - 1]++;
	for (d = 0; d < ELIDE_MAX_DISKS; d++) {
		const struct ckpt_disk *cd = l->disk[d];
		uint64_t bad = 0;
		struct stat st;
		const char *path;

		if (!refs[d])
			continue;
		if (!cd || d >= rs->vm->cfg.ndisks)
			return qerr_set(e, EINVAL,
					"the checkpoint refers to disk %u, which this VM does not have", d);
		path = rs->vm->cfg.disks[d].path;
		rs->disk_fd[d] = open(path, O_RDONLY | O_CLOEXEC);
		if (rs->disk_fd[d] < 0 || fstat(rs->disk_fd[d], &st) < 0)
			return qerr_set(e, errno, "cannot open disk %u (%s): %s", d, path,
					strerror(errno));
		if ((uint64_t)st.st_size != cd->size)
			return qerr_set(e, EINVAL,
					"disk %u (%s) is %llu bytes; at the checkpoint it was %llu: restore refused",
					d, path, (unsigned long long)st.st_size,
					(unsigned long long)cd->size);
		if (st.st_dev == cd->dev && st.st_ino == cd->ino &&
		    st.st_mtim.tv_sec == cd->mtime_sec && st.st_mtim.tv_nsec == cd->mtime_nsec)
			continue;
		for (p = 0; p < rs->npages; p++) {
			if (rs->kind[p] != CKPT_PAGE_DISK || (rs->ref[p].key >> 48) - 1 != d)
				continue;
			if (fill_disk_page(rs, p, buf))
				bad++;
		}
		if (bad)
			return qerr_set(e, ESTALE,
					"disk %u (%s) changed since the checkpoint: %llu of the %llu blocks it refers to differ; restore refused",
					d, path, (unsigned long long)bad, (unsigned long long)refs[d]);
	}
	return 0;
}

static int fill_eager(struct ckpt_restore *rs, struct qerr *e)
{
	uint8_t *base = rs->vm->mem.base;
	uint64_t p = 0;
	int ret;

	while (p < rs->npages) {
		uint64_t n = 1;

		switch (rs->kind[p]) {
		case CKPT_PAGE_ZERO:
			break; /* fresh memory reads as zero */
		case CKPT_PAGE_DATA:
			while (p + n < rs->npages && n < 256 && rs->kind[p + n] == CKPT_PAGE_DATA &&
			       rs->src[p + n] == rs->src[p])
				n++;
			ret = file_pread_all(rs->fds[rs->src[p]], base + p * 4096, n * 4096,
					(off_t)(p * 4096));
			if (ret)
				return qerr_set(e, -ret, "cannot read guest memory (page %llu): %s",
						(unsigned long long)p, strerror(-ret));
			break;
		case CKPT_PAGE_DISK:
			ret = fill_disk_page(rs, p, base + p * 4096);
			if (ret)
				return qerr_set(e, -ret,
						"page %llu: its disk block cannot be read or changed: %s",
						(unsigned long long)p, strerror(-ret));
			break;
		}
		p += n;
	}
	return 0;
}

/* ---- loading ------------------------------------------------------------------ */

static int load_devices(struct vm *vm, struct ckpt_state *l, struct qerr *e)
{
	struct device *list[MAX_DEV_SECTIONS], *d;
	unsigned int n = 0, i, k;
	int ret;

	for (d = vm->devices; d && n < MAX_DEV_SECTIONS; d = d->next)
		list[n++] = d;
	for (i = 0; i < n; i++) {
		unsigned int inst = 0;
		struct dev_blob *b = NULL;

		d = list[i];
		for (k = 0; k < i; k++)
			inst += !strcmp(list[k]->cls->name, d->cls->name);
		for (k = 0; k < l->ndev; k++)
			if (!strcmp(l->dev[k].id, d->cls->name) && l->dev[k].inst == inst)
				b = &l->dev[k];
		if (!d->cls->state) {
			if (b)
				return qerr_set(e, EINVAL,
						"checkpoint has state for %s/%u, which is stateless here",
						d->cls->name, inst);
			continue;
		}
		if (!b)
			return qerr_set(e, ENOENT, "checkpoint has no state for device %s/%u",
					d->cls->name, inst);
		b->used = true;
		ret = device_state_load(d, b->data, b->len, e);
		if (ret)
			return ret;
	}
	for (k = 0; k < l->ndev; k++)
		if (!l->dev[k].used)
			return qerr_set(e, EINVAL,
					"checkpoint has state for device %s/%u, which this VM does not have",
					l->dev[k].id, l->dev[k].inst);
	return 0;
}

int ckpt_state_apply(struct vm *vm, struct ckpt_state *l, struct qerr *e)
{
	unsigned int i;
	int ret;

	for (i = 0; i < VM_MAX_VCPUS; i++)
		if ((i < vm->ncpus) != !!l->cpu[i])
			return qerr_set(e, EINVAL, "%s state for vCPU %u",
					l->cpu[i] ? "unexpected" : "no", i);
	ret = vm_kvm_state_load(vm, l->kvm, l->kvm_len, e);
	for (i = 0; !ret && i < vm->ncpus; i++)
		ret = vcpu_state_load(vm->vcpus[i], l->cpu[i], l->cpu_len[i], e);
	if (!ret)
		ret = load_devices(vm, l, e);
	if (ret)
		return ret;
	/*
	 * Paused, devices quiesced, the loaded clock held: starting it is a
	 * resume, which kicks the queues and lets the clock run on from there.
	 */
	ret = vm_pause(vm);
	if (ret)
		return qerr_set(e, -ret, "cannot hold the restored VM: %s", strerror(-ret));
	return 0;
}

void ckpt_restore_free(struct ckpt_restore *rs)
{
	unsigned int i;

	if (!rs)
		return;
	uffd_lazy_destroy(rs->lazy);
	for (i = 0; i < rs->nfds; i++)
		close(rs->fds[i]);
	for (i = 0; i < ELIDE_MAX_DISKS; i++)
		if (rs->disk_fd[i] >= 0)
			close(rs->disk_fd[i]);
	free(rs->kind);
	free(rs->src);
	free(rs->ref);
	free(rs);
}

int ckpt_restore(struct vm *vm, const char *dir, enum ckpt_restore_mode mode, struct qerr *e)
{
	struct ckpt_vm *cv = ckpt_vm_get(vm);
	struct ckpt_restore *rs;
	struct ckpt_state l;
	unsigned int i;
	uint64_t p;
	int ret;

	memset(&l, 0, sizeof(l));
	rs = calloc(1, sizeof(*rs));
	if (!cv || !rs) {
		free(rs);
		return qerr_set(e, ENOMEM, "out of memory");
	}
	rs->vm = vm;
	rs->mode = mode;
	rs->start_ns = time_now_ns();
	rs->npages = vm->mem.ram_size / 4096;
	for (i = 0; i < ELIDE_MAX_DISKS; i++)
		rs->disk_fd[i] = -1;
	rs->kind = calloc(rs->npages, 1);
	rs->src = calloc(rs->npages, 1);
	rs->ref = calloc(rs->npages, sizeof(*rs->ref));
	if (!rs->kind || !rs->src || !rs->ref) {
		ret = qerr_set(e, ENOMEM, "out of memory");
		goto err;
	}
	/* 1. Read and check everything. */
	ret = load_stream(dir, &l, false, e);
	if (ret)
		goto err;
	if (l.ram.npages != rs->npages) {
		ret = qerr_set(e, EINVAL, "checkpoint %s: %llu pages of RAM, this VM has %llu", dir,
			       (unsigned long long)l.ram.npages, (unsigned long long)rs->npages);
		goto err;
	}
	ret = resolve_chain(rs, dir, &l.ram, e);
	if (!ret)
		ret = check_disks(rs, &l, e);
	if (ret)
		goto err;
	/* 2. Memory: in place now, or on demand. */
	if (mode == CKPT_RESTORE_EAGER) {
		ret = fill_eager(rs, e);
	} else {
		struct uffd_source src = { .kind = src_kind,
					   .fill = src_fill,
					   .fill_run = src_fill_run,
					   .opaque = rs,
					   .run_pages = UFFD_RUN_MAX };

		ret = uffd_lazy_start(&vm->mem, &src, &rs->lazy, e);
	}
	if (ret)
		goto err;
	/* 3. KVM, vCPUs, devices. */
	ret = ckpt_state_apply(vm, &l, e);
	if (ret)
		goto err;
	/* 4. Pages that equal disk blocks still do: the next checkpoint may elide them. */
	if (!cv->elide_ready && !elide_init(&cv->elide, rs->npages))
		cv->elide_ready = true;
	if (cv->elide_ready)
		for (p = 0; p < rs->npages; p++)
			if (rs->kind[p] == CKPT_PAGE_DISK)
				elide_record_hash(&cv->elide, p,
						  (unsigned int)(rs->ref[p].key >> 48) - 1,
						  rs->ref[p].key & ((1ULL << 48) - 1), rs->ref[p].hash);
	ckpt_restore_free(cv->rs);
	cv->rs = rs;
	ckpt_state_free(&l);
	return 0;
err:
	ckpt_state_free(&l);
	ckpt_restore_free(rs);
	return ret;
}

void ckpt_restore_started(struct vm *vm)
{
	struct ckpt_restore *rs = vm->ckpt ? vm->ckpt->rs : NULL;

	if (rs && !rs->running_ns) {
		rs->running_ns = time_now_ns();
		if (rs->mode == CKPT_RESTORE_EAGER)
			rs->done_ns = rs->running_ns;
	}
}

void ckpt_restore_populate(struct ckpt_restore *rs, uint64_t page)
{
	if (rs && rs->lazy)
		uffd_lazy_populate(rs->lazy, page, 1);
}

int ckpt_restore_complete(struct vm *vm, struct qerr *e)
{
	struct ckpt_restore *rs = vm->ckpt ? vm->ckpt->rs : NULL;
	int ret;

	if (!rs || !rs->lazy)
		return 0;
	ret = uffd_lazy_finish(rs->lazy, e);
	if (ret)
		return ret;
	uffd_lazy_stats(rs->lazy, &rs->last);
	uffd_lazy_destroy(rs->lazy);
	rs->lazy = NULL;
	if (!rs->done_ns)
		rs->done_ns = time_now_ns();
	return 0;
}

void ckpt_restore_stats(struct vm *vm, struct ckpt_restore_stats *st)
{
	struct ckpt_restore *rs = vm && vm->ckpt ? vm->ckpt->rs : NULL;
	struct uffd_lazy_stats ls;

	memset(st, 0, sizeof(*st));
	if (!rs)
		return;
	st->mode = rs->mode;
	if (rs->running_ns)
		st->to_running_ns = rs->running_ns - rs->start_ns;
	ls = rs->last;
	if (rs->lazy) {
		uffd_lazy_stats(rs->lazy, &ls);
		if (ls.done && !rs->done_ns)
			rs->done_ns = time_now_ns();
	}
	st->faults = ls.faults;
	st->prefetched = ls.prefetch_pages;
	st->fault_p50_ns = ls.fault_p50_ns;
	st->fault_p99_ns = ls.fault_p99_ns;
	st->done = rs->mode == CKPT_RESTORE_EAGER || !rs->lazy || ls.done;
	if (rs->done_ns)
		st->total_ns = rs->done_ns - rs->start_ns;
}

int ckpt_restore_error_fd(struct vm *vm)
{
	struct ckpt_restore *rs = vm && vm->ckpt ? vm->ckpt->rs : NULL;

	return rs && rs->lazy ? uffd_lazy_error_fd(rs->lazy) : -1;
}

int ckpt_restore_error(struct vm *vm, struct qerr *e)
{
	struct ckpt_restore *rs = vm && vm->ckpt ? vm->ckpt->rs : NULL;

	return rs && rs->lazy ? uffd_lazy_error(rs->lazy, e) : 0;
}
