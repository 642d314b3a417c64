/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint and restore (docs/checkpoint.md). A checkpoint is a directory:
 *  - state.qst: a state stream (stream.h): VM configuration, VM-wide KVM
 *    state, each vCPU, each device, each disk it refers to, and the RAM page
 *    map, CRC-checked section by section;
 *  - memory.img: guest RAM, sparse: only pages the map says are data are
 *    written, at their own offset, so restore can read or fault them in.
 * The page map classifies every page: zero (never populated, balloon-freed,
 * or all zero bytes), data (in memory.img), disk (equal to a 4 KiB block of
 * a disk image, stored as a reference: I/O-aware elision, elide.h) or
 * parent (unchanged since the previous checkpoint, for incremental ones).
 */
#ifndef QLITE_CHECKPOINT_H
#define QLITE_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "qlite/util.h"

struct vm;
struct vm_config;
struct json_object;

#define CKPT_STATE_FILE "state.qst"
#define CKPT_MEMORY_FILE "memory.img"
#define CKPT_MAX_CHAIN 32 /* incremental checkpoints on top of one full one */

enum ckpt_restore_mode {
	CKPT_RESTORE_LAZY = 0, /* vCPUs start at once, memory faults in (userfaultfd) */
	CKPT_RESTORE_EAGER,
};

struct ckpt_params {
	const char *dir;
	bool stop; /* leave the VM paused afterwards */
	bool incremental; /* only pages changed since this VM's previous checkpoint */
	bool no_elide; /* store disk-backed pages as data too */
};

/* What a checkpoint (or restore) did; also the figures query-snapshot reports. */
struct ckpt_stats {
	uint64_t pages_total;
	uint64_t pages_data, pages_zero, pages_disk, pages_parent, pages_balloon;
	uint64_t bytes_memory; /* written to memory.img */
	uint64_t bytes_state; /* written to state.qst */
	uint64_t pause_ns; /* VM paused for */
	uint64_t total_ns;
};

struct ckpt_restore_stats {
	enum ckpt_restore_mode mode;
	uint64_t to_running_ns; /* restore start to vCPUs started */
	uint64_t total_ns; /* to all memory present (lazy: when prefetch ends) */
	uint64_t faults, prefetched, fault_p50_ns, fault_p99_ns;
	bool done;
};

/* A save in progress (one at a time per VM). */
struct ckpt_job;

/*
 * Start a checkpoint: checks that @p->dir can be written first (before the
 * VM is paused), then pauses, captures vCPU/KVM/device state on this thread
 * and writes memory on a worker thread. @done_efd becomes readable when it
 * ends; then ckpt_job_finish() resumes the VM (unless @p->stop) and reports.
 */
int ckpt_save_start(struct vm *vm, const struct ckpt_params *p, bool was_running,
		    struct ckpt_job **out, struct qerr *e);
int ckpt_job_eventfd(const struct ckpt_job *j);
/* Progress so far (any thread). */
void ckpt_job_progress(const struct ckpt_job *j, uint64_t *bytes, uint64_t *pages_done,
		       uint64_t *pages_total, uint64_t *elapsed_ns);
/* Join the worker; 0 or -errno with @e. The VM stays paused either way. */
int ckpt_job_finish(struct ckpt_job *j, struct ckpt_stats *st, struct qerr *e);
const char *ckpt_job_dir(const struct ckpt_job *j);
bool ckpt_job_stop(const struct ckpt_job *j);
void ckpt_job_free(struct ckpt_job *j);

/*
 * The VM configuration a checkpoint was taken with, into @cfg. Strings and
 * arrays live in *@store (json-c) until ckpt_config_free().
 */
int ckpt_read_config(const char *dir, struct vm_config *cfg, struct json_object **store,
		     struct qerr *e);
void ckpt_config_free(struct json_object *store);

/*
 * Load a checkpoint into @vm, freshly built by vm_create() from the same
 * configuration and not started: memory (eagerly, or lazily through
 * userfaultfd), KVM state, vCPUs and devices. Any failure leaves @vm to be
 * destroyed by the caller; nothing runs before everything validated.
 */
int ckpt_restore(struct vm *vm, const char *dir, enum ckpt_restore_mode mode, struct qerr *e);
void ckpt_restore_stats(struct vm *vm, struct ckpt_restore_stats *st);
/*
 * A lazy restore that cannot read a page (the memory file or a disk went
 * bad) cannot let the guest go on: this fd becomes readable then (-1 when
 * no lazy restore runs), and ckpt_restore_error() says what happened.
 */
int ckpt_restore_error_fd(struct vm *vm);
int ckpt_restore_error(struct vm *vm, struct qerr *e);
/* Called once the vCPUs started, for the restore's time-to-running figure. */
void ckpt_restore_started(struct vm *vm);

/* virtio-blk hooks (main thread): a read completed / a write is about to start. */
void ckpt_disk_read_done(struct vm *vm, unsigned int disk, uint64_t off, const struct iovec *iov,
			 unsigned int iovcnt);
void ckpt_disk_write_begin(struct vm *vm, unsigned int disk, uint64_t off, uint64_t len);

/* Per-VM checkpoint state (vm->ckpt): freed with the VM, before its memory. */
void ckpt_vm_destroy(struct vm *vm);

#endif
