/* SPDX-License-Identifier: MIT */
/*
 * Block backend: raw image files (or block devices) served through io_uring.
 *
 * Three objects:
 *  - struct blk_backend: one open image (fd, size, read-only, O_DIRECT
 *    alignment), refused at open with a message if unusable;
 *  - struct blk_ring: one io_uring and the eventfd its completions signal.
 *    A ring is driven by one thread at a time: the main loop
 *    (blk_ring_attach) or an I/O thread (blk_ring_wait);
 *  - struct blk_queue: one backend's requests on one ring. Queues of one or
 *    several backends may share a ring, or each have a ring of their own.
 *
 * Requests live in caller storage (struct blk_req, typically embedded in the
 * device's request) and their iovecs, which point into guest RAM, must stay
 * valid until the completion callback. A request call either returns 0, and
 * then the callback runs exactly once, from blk_ring_complete/_wait/_drain
 * on the ring's thread, with 0 or -errno; or it returns -errno and the
 * callback never runs. Requests are batched: they reach the kernel at the
 * next blk_ring_submit() (one io_uring_submit for all of them), or earlier
 * when the submission queue fills up.
 *
 * Reads mark the guest pages they wrote dirty (mem_dirty_mark) before their
 * callback runs: io_uring writes to guest RAM are invisible to KVM's dirty log.
 */
#ifndef QLITE_BLK_H
#define QLITE_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "qlite/util.h"

struct guest_mem;
struct loop;
struct blk_backend;
struct blk_ring;
struct blk_queue;

/* Most iovecs one read or write may carry (the kernel's UIO_MAXIOV). */
#define BLK_MAX_IOV 1024

struct blk_opts {
	const char *path;
	bool readonly;
	bool direct; /* O_DIRECT: bypass the host page cache */
	/* Declared size in bytes; 0 = the file's size. A shorter file is refused. */
	uint64_t size;
	/*
	 * Open without the image lock (a migration's destination: the source
	 * holds it until the switchover); blk_backend_lock() takes it later.
	 */
	bool no_lock;
};

typedef void (*blk_done_fn)(void *opaque, int result);

/* One request in flight. Fields are private to the backend. */
struct blk_req {
	struct blk_queue *q;
	blk_done_fn done;
	void *opaque;
	const struct iovec *iov; /* caller's */
	unsigned int iovcnt;
	uint8_t op;
	uint8_t stage; /* write-zeroes: which method is being tried */
	uint8_t retries;
	uint64_t offset;
	uint64_t len;
	uint64_t done_bytes; /* progress across short transfers */
	void *bounce; /* O_DIRECT with misaligned guest buffers */
	struct iovec *tmp_iov; /* the remainder after a short transfer */
	unsigned int tmp_cnt;
	struct iovec one; /* the bounce buffer as a segment */
	struct blk_req *next; /* ring backlog */
};

/*
 * Open @o->path: a regular file or block device, not a directory, FIFO, etc.
 * Refused with a message in @e if missing, unreadable, empty, shorter than
 * @o->size, locked by another process, or (direct) on a filesystem without
 * O_DIRECT. @mem (may be NULL) is the guest RAM reads get marked dirty in.
 */
int blk_backend_open(struct blk_backend **out, const struct blk_opts *o, struct guest_mem *mem,
		     struct qerr *e);
/* Every queue of @b must have been destroyed. */
void blk_backend_close(struct blk_backend *b);
/*
 * Take (@lock) or drop the image's lock: one writer or several readers
 * across processes. Taking it fails with -EBUSY while another holds it.
 */
int blk_backend_lock(struct blk_backend *b, bool lock, struct qerr *e);
uint64_t blk_backend_size(const struct blk_backend *b);
bool blk_backend_readonly(const struct blk_backend *b);
/*
 * Request offsets and lengths must be multiples of this: 512, or the
 * logical block size O_DIRECT needs (a virtio-blk device advertises it as
 * blk_size). Guest buffers need no alignment: misaligned ones are bounced.
 */
uint32_t blk_backend_block_size(const struct blk_backend *b);
/* The image's fd (diagnostics and tests). */
int blk_backend_fd(const struct blk_backend *b);
/*
 * Stop submitting and wait until every request of @b has completed (their
 * callbacks run). Until blk_backend_resume(), new requests get -EBUSY.
 * Call it on the thread that drives @b's rings (or with their I/O threads
 * parked): it reaps those rings' completions itself.
 */
int blk_backend_quiesce(struct blk_backend *b);
void blk_backend_resume(struct blk_backend *b);

/* A ring with @entries submission slots (rounded up to a power of two). */
int blk_ring_create(struct blk_ring **out, unsigned int entries, struct qerr *e);
/* Drains what is still in flight, detaches from its loop, frees. */
void blk_ring_destroy(struct blk_ring *r);
/* Readable when completions are pending; blk_ring_complete() resets it. */
int blk_ring_eventfd(const struct blk_ring *r);
/* Let @l's thread drive @r: on its eventfd, reap completions and submit. */
int blk_ring_attach(struct blk_ring *r, struct loop *l);
/* Hand every prepared request to the kernel with one io_uring_submit. */
int blk_ring_submit(struct blk_ring *r);
/*
 * Reap completions without blocking, run their callbacks, then submit what
 * the callbacks (and the backlog) queued. Returns requests completed or -errno.
 */
int blk_ring_complete(struct blk_ring *r);
/* Submit, block until at least one completion, reap as above (I/O threads). */
int blk_ring_wait(struct blk_ring *r);
/* Submit and reap until nothing is in flight on @r. */
int blk_ring_drain(struct blk_ring *r);
/* Requests accepted and not yet completed (in the kernel or backlogged). */
unsigned int blk_ring_inflight(const struct blk_ring *r);

int blk_queue_create(struct blk_queue **out, struct blk_backend *b, struct blk_ring *r);
/* Drains the queue's requests first. */
void blk_queue_destroy(struct blk_queue *q);
unsigned int blk_queue_inflight(const struct blk_queue *q);

/*
 * Requests. @offset and lengths are bytes, multiples of the block size and
 * within the backend's size (else -EINVAL); writes, discards and zeroing on
 * a read-only backend get -EROFS; any request while quiesced gets -EBUSY.
 */
int blk_read(struct blk_queue *q, struct blk_req *req, uint64_t offset, const struct iovec *iov,
	     unsigned int iovcnt, blk_done_fn done, void *opaque);
int blk_write(struct blk_queue *q, struct blk_req *req, uint64_t offset, const struct iovec *iov,
	      unsigned int iovcnt, blk_done_fn done, void *opaque);
/* fdatasync: the image's size never changes, so its metadata need not be synced. */
int blk_flush(struct blk_queue *q, struct blk_req *req, blk_done_fn done, void *opaque);
/* A hint: punches a hole (PUNCH_HOLE|KEEP_SIZE); filesystems without it report success. */
int blk_discard(struct blk_queue *q, struct blk_req *req, uint64_t offset, uint64_t len,
		blk_done_fn done, void *opaque);
/*
 * Make [offset, offset+len) read as zeros: with @unmap a punched hole is
 * fine; otherwise (or without hole punching) FALLOC_FL_ZERO_RANGE; where the
 * filesystem has neither, zeros are written.
 */
int blk_write_zeroes(struct blk_queue *q, struct blk_req *req, uint64_t offset, uint64_t len,
		     bool unmap, blk_done_fn done, void *opaque);

#endif
