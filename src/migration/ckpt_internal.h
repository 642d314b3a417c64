/* SPDX-License-Identifier: MIT */
/* Shared by the checkpoint writer, the restorer and the RAM page map codec. */
#ifndef QLITE_CKPT_INTERNAL_H
#define QLITE_CKPT_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "qlite/checkpoint.h"
#include "qlite/elide.h"
#include "qlite/sbuf.h"
#include "qlite/util.h"
#include "qlite/vm.h"
#include "qlite/stream.h"

struct vm_config;
struct json_object;

struct vm;
struct ckpt_restore;
struct ckpt_job;

enum ckpt_page {
	CKPT_PAGE_ZERO = 0,
	CKPT_PAGE_DATA = 1, /* in this checkpoint's memory.img, at page * 4096 */
	CKPT_PAGE_DISK = 2, /* a 4 KiB block of a disk image */
	CKPT_PAGE_PARENT = 3, /* as in the parent checkpoint */
	CKPT_PAGE_KINDS,
};

#define CKPT_ID_LEN 16
#define CKPT_RAM_VERSION 1
#define CKPT_DISK_VERSION 1
#define CKPT_VM_VERSION 1

struct ram_map {
	uint64_t npages;
	uint8_t id[CKPT_ID_LEN];
	bool has_parent;
	uint8_t parent_id[CKPT_ID_LEN];
	char parent_dir[PATH_MAX];
	uint8_t *kind; /* enum ckpt_page, per page */
	struct elide_entry *ref; /* per page; key/hash of CKPT_PAGE_DISK pages */
};

int ram_map_alloc(struct ram_map *m, uint64_t npages);
void ram_map_free(struct ram_map *m);
void ram_map_encode(const struct ram_map *m, struct sbuf *b);
/* Hostile input: every count and index is checked; @e names what is wrong. */
int ram_map_decode(struct ram_map *m, const uint8_t *buf, size_t len, struct qerr *e);

/* A disk a checkpoint refers to, and how to tell whether it changed since. */
struct ckpt_disk {
	char path[PATH_MAX];
	uint64_t size, dev, ino;
	int64_t mtime_sec, mtime_nsec;
};
void ckpt_disk_encode(const struct ckpt_disk *d, struct sbuf *b);
int ckpt_disk_decode(struct ckpt_disk *d, const uint8_t *buf, size_t len, struct qerr *e);

/* The VM's configuration as JSON text (the VM section). */
char *ckpt_config_to_json(const struct vm_config *cfg);
/* Parse it; strings and arrays live in *@store (json-c) until ckpt_config_free(). */
int ckpt_config_from_json(const char *text, size_t len, struct vm_config *cfg,
			  struct json_object **store, struct qerr *e);

/* vm->ckpt */
struct ckpt_vm {
	struct elide elide;
	bool elide_ready;
	/* The last checkpoint this VM wrote, which an incremental one builds on. */
	bool have_last;
	uint8_t last_id[CKPT_ID_LEN];
	char last_dir[PATH_MAX];
	unsigned long *last_disk; /* its disk-reference pages */
	struct ckpt_restore *rs; /* the restore this VM came from (lazy: in progress) */
};

/*
 * Everything but memory, as read from a state stream: the configuration,
 * KVM and vCPU blobs, device blobs, disk records and the RAM map. Shared by
 * restore (a file) and migration (a socket).
 */
#define CKPT_MAX_DEV_SECTIONS 256
#define CKPT_MAX_SECTION (256ULL * MiB)

struct dev_blob {
	char id[STREAM_ID_MAX + 1];
	uint32_t inst, version;
	uint8_t *data;
	size_t len;
	bool used;
};

struct ckpt_state {
	char *vm_json;
	size_t vm_len;
	uint8_t *kvm;
	size_t kvm_len;
	uint8_t *cpu[VM_MAX_VCPUS];
	size_t cpu_len[VM_MAX_VCPUS];
	struct dev_blob dev[CKPT_MAX_DEV_SECTIONS];
	unsigned int ndev;
	struct ckpt_disk *disk[ELIDE_MAX_DISKS];
	struct ram_map ram;
	bool has_ram;
};

struct stream_reader;
struct stream_writer;
/* Read sections until the end marker; refuses duplicates and unknown kinds. */
int ckpt_state_read(struct stream_reader *r, struct ckpt_state *l, bool ram_only,
		    struct qerr *e);
/* KVM, vCPU and device state into @vm (built, not started); leaves it paused. */
int ckpt_state_apply(struct vm *vm, struct ckpt_state *l, struct qerr *e);
void ckpt_state_free(struct ckpt_state *l);
/* VM, KVM, CPU, DEVICE and DISK sections of a paused VM (all but RAM). */
int ckpt_state_write(struct vm *vm, struct stream_writer *w, struct qerr *e);

struct ckpt_vm *ckpt_vm_get(struct vm *vm);
/*
 * Pages of @m ever populated (bitmap, calloc()ed): the rest read as zero
 * (never touched, or given back by the balloon). All of them if unknown.
 */
unsigned long *ckpt_find_populated(const struct guest_mem *m, uint64_t npages);
/* Finish a lazy restore now (a checkpoint must see all of memory). */
int ckpt_restore_complete(struct vm *vm, struct qerr *e);
void ckpt_restore_free(struct ckpt_restore *rs);
/* Lazy restore: make sure @page is present before something overwrites its source. */
void ckpt_restore_populate(struct ckpt_restore *rs, uint64_t page);

#endif
