// SPDX-License-Identifier: MIT
/*
 * io_uring block backend (API and contract in include/qlite/blk.h).
 *
 * Each request has at most one SQE in the kernel at a time; short transfers,
 * EAGAIN and the write-zeroes fallbacks resubmit the same request with its
 * progress recorded in it. A ring admits at most as many SQEs as its CQ has
 * slots, so completions can never overflow; the rest wait in a backlog that
 * completions refill from. Completions wake the ring's eventfd
 * (io_uring_register_eventfd), which is what the main loop or an I/O thread
 * waits on.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qlite/blk.h"
#include "qlite/loop.h"
#include "qlite/mem.h"

enum { BLK_OP_READ, BLK_OP_WRITE, BLK_OP_FLUSH, BLK_OP_DISCARD, BLK_OP_WRITE_ZEROES };
/* Write-zeroes methods, tried in this order (each may be skipped). */
enum { WZ_PUNCH, WZ_ZERO_RANGE, WZ_WRITE };

#define SECTOR_SIZE 512
#define ZERO_BUF_SIZE (1 * MiB)
/* Bound on EAGAIN/EINTR resubmissions of one request. */
#define MAX_RETRIES 16
/* CQEs reaped per batch before their callbacks run. */
#define REAP_BATCH 64
#define RING_MAX_ENTRIES 4096

struct blk_backend {
	int fd;
	char *path;
	uint64_t size;
	bool readonly;
	bool direct;
	uint32_t block_size; /* offset/length alignment */
	uint32_t mem_align; /* guest buffer alignment O_DIRECT needs; 1 without */
	/* Learnt from EOPNOTSUPP; set from any ring's thread, only ever to true. */
	bool no_punch;
	bool no_zero_range;
	bool quiesced;
	struct guest_mem *mem;
	void *zero_buf; /* written by write-zeroes where nothing else works */
	struct blk_queue *queues;
};

struct blk_ring {
	struct io_uring uring;
	int efd;
	unsigned int cap; /* SQEs in the kernel at most: the CQ size */
	unsigned int in_kernel; /* SQEs prepared or submitted, not yet reaped */
	unsigned int pending; /* requests accepted and not completed */
	struct blk_req *backlog;
	struct blk_req **backlog_tail;
	struct loop *loop;
};

struct blk_queue {
	struct blk_backend *b;
	struct blk_ring *r;
	unsigned int inflight;
	struct blk_queue *next; /* the backend's queues */
};

static bool flag_get(const bool *f)
{
	return __atomic_load_n(f, __ATOMIC_RELAXED);
}

static void flag_set(bool *f, bool v)
{
	__atomic_store_n(f, v, __ATOMIC_RELAXED);
}

/* ---- opening an image ---------------------------------------------------- */

/*
 * O_DIRECT alignment: statx(STATX_DIOALIGN) where the kernel reports it
 * (6.1+); a block device's logical block size; else probe reads.
 */
static int blk_dio_align(struct blk_backend *b, const struct stat *st, struct qerr *e)
{
	struct statx stx;
	unsigned int a;
	int lbs;
	void *buf;

	if (!statx(b->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) &&
	    (stx.stx_mask & STATX_DIOALIGN)) {
		if (!stx.stx_dio_offset_align)
			return qerr_set(e, EINVAL,
					"disk image %s: its filesystem does not support O_DIRECT "
					"(direct=on); drop direct=on",
					b->path);
		b->block_size = MAX(stx.stx_dio_offset_align, SECTOR_SIZE);
		b->mem_align = MAX(stx.stx_dio_mem_align, 1);
		return 0;
	}
	if (S_ISBLK(st->st_mode) && !ioctl(b->fd, BLKSSZGET, &lbs) && lbs >= SECTOR_SIZE) {
		b->block_size = lbs;
		b->mem_align = lbs;
		return 0;
	}
	if (posix_memalign(&buf, 4096, 4096))
		return qerr_set(e, ENOMEM, "out of memory");
	for (a = SECTOR_SIZE; a <= 4096; a *= 2) {
		if (pread(b->fd, buf, a, 0) >= 0)
			break;
	}
	free(buf);
	if (a > 4096)
		return qerr_set(e, errno, "disk image %s: O_DIRECT reads fail (%s); drop direct=on",
				b->path, strerror(errno));
	b->block_size = a;
	b->mem_align = 4096; /* unknown: bounce anything not page-aligned */
	return 0;
}

static int blk_open_fd(struct blk_backend *b, const struct blk_opts *o, struct qerr *e)
{
	int flags = (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
	int err;

	if (o->direct)
		flags |= O_DIRECT;
	/* O_NONBLOCK: opening a FIFO must not hang; cleared again below. */
	b->fd = open(o->path, flags);
	if (b->fd >= 0)
		return 0;
	err = errno;
	switch (err) {
	case EISDIR:
		return qerr_set(e, err, "disk image %s is a directory", o->path);
	case EINVAL:
		if (o->direct)
			return qerr_set(e, err,
					"cannot open disk image %s with O_DIRECT (direct=on): "
					"its filesystem does not support it",
					o->path);
		break;
	case EACCES:
	case EROFS:
	case EPERM:
		if (!o->readonly)
			return qerr_set(e, err,
					"cannot open disk image %s for writing: %s "
					"(readonly=on opens it read-only)",
					o->path, strerror(err));
		break;
	}
	return qerr_set(e, err, "cannot open disk image %s: %s", o->path, strerror(err));
}

/* One writer or several readers per image, across processes (OFD locks). */
int blk_backend_lock(struct blk_backend *b, bool lock, struct qerr *e)
{
	struct flock fl = {
		.l_type = b->readonly ? F_RDLCK : F_WRLCK,
		.l_whence = SEEK_SET,
	};

	if (!lock)
		fl.l_type = F_UNLCK;

	if (!fcntl(b->fd, F_OFD_SETLK, &fl) || !lock)
		return 0; /* unlocking cannot conflict */
	if (errno == EAGAIN || errno == EACCES)
		return qerr_set(e, EBUSY,
				"disk image %s is in use by another process (%s lock held)",
				b->path, b->readonly ? "a write" : "a");
	return 0; /* filesystems without locks: nothing to enforce */
}

int blk_backend_open(struct blk_backend **out, const struct blk_opts *o, struct guest_mem *mem,
		     struct qerr *e)
{
	struct blk_backend *b;
	struct stat st;
	uint64_t size;
	int fl, ret;

	*out = NULL;
	if (!o->path || !o->path[0])
		return qerr_set(e, EINVAL, "disk: no image path given");
	b = calloc(1, sizeof(*b));
	if (!b)
		return qerr_set(e, ENOMEM, "out of memory");
	b->fd = -1;
	b->readonly = o->readonly;
	b->direct = o->direct;
	b->mem = mem;
	b->block_size = SECTOR_SIZE;
	b->mem_align = 1;
	b->path = strdup(o->path);
	if (!b->path) {
		ret = qerr_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	ret = blk_open_fd(b, o, e);
	if (ret)
		goto fail;
	if (fstat(b->fd, &st) < 0) {
		ret = qerr_set(e, errno, "disk image %s: fstat: %s", o->path, strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = qerr_set(e, EISDIR, "disk image %s is a directory", o->path);
		goto fail;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		ret = qerr_set(e, EINVAL, "disk image %s is not a regular file or block device",
			       o->path);
		goto fail;
	}
	fl = fcntl(b->fd, F_GETFL);
	if (fl < 0 || fcntl(b->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		ret = qerr_set(e, errno, "disk image %s: fcntl: %s", o->path, strerror(errno));
		goto fail;
	}
	size = st.st_size;
	if (S_ISBLK(st.st_mode) && ioctl(b->fd, BLKGETSIZE64, &size) < 0) {
		ret = qerr_set(e, errno, "disk image %s: cannot read the device size: %s", o->path,
			       strerror(errno));
		goto fail;
	}
	if (o->size) {
		if (size < o->size) {
			ret = qerr_set(e, EINVAL,
				       "disk image %s is %llu bytes, shorter than its declared "
				       "size of %llu bytes",
				       o->path, (unsigned long long)size,
				       (unsigned long long)o->size);
			goto fail;
		}
		size = o->size;
	}
	if (!size) {
		ret = qerr_set(e, EINVAL, "disk image %s is empty", o->path);
		goto fail;
	}
	b->size = size;
	if (o->direct) {
		ret = blk_dio_align(b, &st, e);
		if (ret)
			goto fail;
	}
	ret = o->no_lock ? 0 : blk_backend_lock(b, true, e);
	if (ret)
		goto fail;
	*out = b;
	return 0;
fail:
	if (b->fd >= 0)
		close(b->fd);
	free(b->path);
	free(b);
	return ret;
}

void blk_backend_close(struct blk_backend *b)
{
	if (!b)
		return;
	while (b->queues)
		blk_queue_destroy(b->queues); /* a caller bug; still drain first */
	close(b->fd);
	free(b->zero_buf);
	free(b->path);
	free(b);
}

uint64_t blk_backend_size(const struct blk_backend *b)
{
	return b->size;
}

bool blk_backend_readonly(const struct blk_backend *b)
{
	return b->readonly;
}

uint32_t blk_backend_block_size(const struct blk_backend *b)
{
	return b->block_size;
}

int blk_backend_fd(const struct blk_backend *b)
{
	return b->fd;
}

/* ---- submission ------------------------------------------------------------ */

static const struct iovec *req_iov(const struct blk_req *req, unsigned int *cnt)
{
	if (req->tmp_iov) {
		*cnt = req->tmp_cnt;
		return req->tmp_iov;
	}
	if (req->bounce) {
		*cnt = 1;
		return &req->one;
	}
	*cnt = req->iovcnt;
	return req->iov;
}

static void req_prep(struct blk_req *req, struct io_uring_sqe *sqe)
{
	struct blk_backend *b = req->q->b;
	uint64_t off = req->offset + req->done_bytes;
	const struct iovec *iov;
	unsigned int cnt;

	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		if (req->len == 0) {
			io_uring_prep_nop(sqe);
			break;
		}
		iov = req_iov(req, &cnt);
		/* One segment: the plain op skips the kernel's iovec import. */
		if (cnt == 1 && iov[0].iov_len <= 1U << 30) {
			void *p = iov[0].iov_base;
			unsigned int n = iov[0].iov_len;

			if (req->op == BLK_OP_READ)
				io_uring_prep_read(sqe, b->fd, p, n, off);
			else
				io_uring_prep_write(sqe, b->fd, p, n, off);
		} else if (req->op == BLK_OP_READ) {
			io_uring_prep_readv(sqe, b->fd, iov, cnt, off);
		} else {
			io_uring_prep_writev(sqe, b->fd, iov, cnt, off);
		}
		break;
	case BLK_OP_FLUSH:
		io_uring_prep_fsync(sqe, b->fd, IORING_FSYNC_DATASYNC);
		break;
	case BLK_OP_DISCARD:
		if (flag_get(&b->no_punch))
			io_uring_prep_nop(sqe);
		else
			io_uring_prep_fallocate(sqe, b->fd,
						FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						req->offset, req->len);
		break;
	case BLK_OP_WRITE_ZEROES:
		if (req->stage == WZ_PUNCH)
			io_uring_prep_fallocate(sqe, b->fd,
						FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						req->offset, req->len);
		else if (req->stage == WZ_ZERO_RANGE)
			io_uring_prep_fallocate(sqe, b->fd,
						FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
						req->offset, req->len);
		else
			io_uring_prep_write(sqe, b->fd, b->zero_buf,
					    MIN(req->len - req->done_bytes, ZERO_BUF_SIZE), off);
		break;
	}
	io_uring_sqe_set_data(sqe, req);
}

/* Give @req an SQE, or park it in the backlog while the ring is full. */
static void ring_queue(struct blk_ring *r, struct blk_req *req)
{
	struct io_uring_sqe *sqe = NULL;

	if (r->in_kernel < r->cap && !r->backlog) {
		sqe = io_uring_get_sqe(&r->uring);
		if (!sqe && io_uring_submit(&r->uring) >= 0)
			sqe = io_uring_get_sqe(&r->uring);
	}
	if (!sqe) {
		req->next = NULL;
		*r->backlog_tail = req;
		r->backlog_tail = &req->next;
		return;
	}
	req_prep(req, sqe);
	r->in_kernel++;
}

/* Move backlogged requests into free SQ slots (not submitted yet). */
static void ring_refill(struct blk_ring *r)
{
	while (r->backlog && r->in_kernel < r->cap) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
		struct blk_req *req = r->backlog;

		if (!sqe) {
			if (io_uring_submit(&r->uring) < 0)
				return;
			continue;
		}
		r->backlog = req->next;
		if (!r->backlog)
			r->backlog_tail = &r->backlog;
		req_prep(req, sqe);
		r->in_kernel++;
	}
}

int blk_ring_submit(struct blk_ring *r)
{
	int ret;

	ring_refill(r);
	if (!io_uring_sq_ready(&r->uring))
		return 0;
	ret = io_uring_submit(&r->uring);
	/* Kernel short of resources: the SQEs stay queued for the next submit. */
	if (ret == -EAGAIN || ret == -EBUSY || ret == -EINTR)
		return 0;
	return ret < 0 ? ret : 0;
}

/* Common entry of every request: checks, bookkeeping, queueing. */
static int req_start(struct blk_queue *q, struct blk_req *req, int op, uint64_t offset,
		     uint64_t len, blk_done_fn done, void *opaque)
{
	struct blk_backend *b = q->b;

	if (flag_get(&b->quiesced))
		return -EBUSY;
	if (b->readonly && op != BLK_OP_READ && op != BLK_OP_FLUSH)
		return -EROFS;
	if (op != BLK_OP_FLUSH) {
		if (offset > b->size || len > b->size - offset)
			return -EINVAL;
		if ((offset | len) % b->block_size)
			return -EINVAL;
	}
	req->q = q;
	req->op = op;
	req->offset = offset;
	req->len = len;
	req->done = done;
	req->opaque = opaque;
	req->done_bytes = 0;
	req->retries = 0;
	req->tmp_iov = NULL;
	req->tmp_cnt = 0;
	req->next = NULL;
	q->inflight++;
	q->r->pending++;
	ring_queue(q->r, req);
	return 0;
}

static bool iov_aligned(const struct iovec *iov, unsigned int cnt, uint32_t align)
{
	unsigned int i;

	for (i = 0; i < cnt; i++)
		if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (align - 1))
			return false;
	return true;
}

static int req_rw(struct blk_queue *q, struct blk_req *req, int op, uint64_t offset,
		  const struct iovec *iov, unsigned int iovcnt, blk_done_fn done, void *opaque)
{
	struct blk_backend *b = q->b;
	uint64_t len = 0;
	unsigned int i;
	int ret;

	if (iovcnt > BLK_MAX_IOV)
		return -EINVAL;
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > UINT64_MAX - len)
			return -EINVAL;
		len += iov[i].iov_len;
	}
	req->iov = iov;
	req->iovcnt = iovcnt;
	req->bounce = NULL;
	req->stage = 0;
	if (b->direct && len && !iov_aligned(iov, iovcnt, b->mem_align)) {
		/* Only checks that would refuse the request come first. */
		if (offset > b->size || len > b->size - offset || (offset | len) % b->block_size)
			return -EINVAL;
		if (posix_memalign(&req->bounce, MAX(b->mem_align, sizeof(void *)), len))
			return -ENOMEM;
		if (op == BLK_OP_WRITE) {
			uint8_t *p = req->bounce;

			for (i = 0; i < iovcnt; i++) {
				memcpy(p, iov[i].iov_base, iov[i].iov_len);
				p += iov[i].iov_len;
			}
		}
		req->one = (struct iovec){ req->bounce, len };
	}
	ret = req_start(q, req, op, offset, len, done, opaque);
	if (ret) {
		free(req->bounce);
		req->bounce = NULL;
	}
	return ret;
}

int blk_read(struct blk_queue *q, struct blk_req *req, uint64_t offset, const struct iovec *iov,
	     unsigned int iovcnt, blk_done_fn done, void *opaque)
{
	return req_rw(q, req, BLK_OP_READ, offset, iov, iovcnt, done, opaque);
}

int blk_write(struct blk_queue *q, struct blk_req *req, uint64_t offset, const struct iovec *iov,
	      unsigned int iovcnt, blk_done_fn done, void *opaque)
{
	return req_rw(q, req, BLK_OP_WRITE, offset, iov, iovcnt, done, opaque);
}

int blk_flush(struct blk_queue *q, struct blk_req *req, blk_done_fn done, void *opaque)
{
	req->iov = NULL;
	req->iovcnt = 0;
	req->bounce = NULL;
	req->stage = 0;
	return req_start(q, req, BLK_OP_FLUSH, 0, 0, done, opaque);
}

int blk_discard(struct blk_queue *q, struct blk_req *req, uint64_t offset, uint64_t len,
		blk_done_fn done, void *opaque)
{
	req->iov = NULL;
	req->iovcnt = 0;
	req->bounce = NULL;
	req->stage = 0;
	return req_start(q, req, BLK_OP_DISCARD, offset, len, done, opaque);
}

static int wz_first_stage(struct blk_backend *b, bool unmap)
{
	if (unmap && !flag_get(&b->no_punch))
		return WZ_PUNCH;
	if (!flag_get(&b->no_zero_range))
		return WZ_ZERO_RANGE;
	return WZ_WRITE;
}

/* The zero buffer, allocated the first time a filesystem needs it. */
static int wz_zero_buf(struct blk_backend *b)
{
	void *p, *expected = NULL;

	if (__atomic_load_n(&b->zero_buf, __ATOMIC_ACQUIRE))
		return 0;
	if (posix_memalign(&p, 4096, ZERO_BUF_SIZE))
		return -ENOMEM;
	memset(p, 0, ZERO_BUF_SIZE);
	/* Rings on other threads may race to set it; the loser frees its copy. */
	if (!__atomic_compare_exchange_n(&b->zero_buf, &expected, p, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		free(p);
	return 0;
}

int blk_write_zeroes(struct blk_queue *q, struct blk_req *req, uint64_t offset, uint64_t len,
		     bool unmap, blk_done_fn done, void *opaque)
{
	int stage = wz_first_stage(q->b, unmap);
	int ret;

	if (stage == WZ_WRITE && !q->b->readonly) {
		ret = wz_zero_buf(q->b);
		if (ret)
			return ret;
	}
	req->iov = NULL;
	req->iovcnt = 0;
	req->bounce = NULL;
	req->stage = stage;
	return req_start(q, req, BLK_OP_WRITE_ZEROES, offset, len, done, opaque);
}

/* ---- completion ------------------------------------------------------------ */

static void iov_zero_from(const struct iovec *iov, unsigned int cnt, uint64_t skip)
{
	unsigned int i;

	for (i = 0; i < cnt; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		memset((uint8_t *)iov[i].iov_base + skip, 0, iov[i].iov_len - skip);
		skip = 0;
	}
}

static void req_finish(struct blk_req *req, int res)
{
	struct blk_queue *q = req->q;
	struct blk_backend *b = q->b;
	unsigned int i;

	if (req->op == BLK_OP_READ) {
		if (req->bounce && res == 0) {
			const uint8_t *p = req->bounce;

			for (i = 0; i < req->iovcnt; i++) {
				memcpy(req->iov[i].iov_base, p, req->iov[i].iov_len);
				p += req->iov[i].iov_len;
			}
		}
		/* Even a failed read may have written part of the buffers. */
		if (b->mem)
			for (i = 0; i < req->iovcnt; i++)
				mem_dirty_mark(b->mem, req->iov[i].iov_base, req->iov[i].iov_len);
	}
	free(req->bounce);
	req->bounce = NULL;
	free(req->tmp_iov);
	req->tmp_iov = NULL;
	q->inflight--;
	q->r->pending--;
	req->done(req->opaque, res); /* last: the callback may reuse @req */
}

/* After a short transfer: point tmp_iov at what is left of the request. */
static int req_advance(struct blk_req *req)
{
	const struct iovec *src = req->bounce ? &req->one : req->iov;
	unsigned int cnt = req->bounce ? 1 : req->iovcnt;
	uint64_t skip = req->done_bytes;
	unsigned int i, n = 0;

	if (!req->tmp_iov) {
		req->tmp_iov = calloc(cnt, sizeof(*req->tmp_iov));
		if (!req->tmp_iov)
			return -ENOMEM;
	}
	for (i = 0; i < cnt; i++) {
		if (skip >= src[i].iov_len) {
			skip -= src[i].iov_len;
			continue;
		}
		req->tmp_iov[n].iov_base = (uint8_t *)src[i].iov_base + skip;
		req->tmp_iov[n].iov_len = src[i].iov_len - skip;
		skip = 0;
		n++;
	}
	req->tmp_cnt = n;
	return 0;
}

/* The kernel may not support the next write-zeroes method either. */
static int wz_next_stage(struct blk_req *req)
{
	struct blk_backend *b = req->q->b;

	if (req->stage == WZ_PUNCH) {
		flag_set(&b->no_punch, true);
		req->stage = flag_get(&b->no_zero_range) ? WZ_WRITE : WZ_ZERO_RANGE;
	} else {
		flag_set(&b->no_zero_range, true);
		req->stage = WZ_WRITE;
	}
	return req->stage == WZ_WRITE ? wz_zero_buf(b) : 0;
}

/* Returns true when @req finished (its callback ran). */
static bool req_cqe(struct blk_ring *r, struct blk_req *req, int res)
{
	int ret;

	if ((res == -EAGAIN || res == -EINTR) && req->retries < MAX_RETRIES) {
		req->retries++;
		ring_queue(r, req);
		return false;
	}
	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		if (res < 0)
			break;
		if (res == 0 && req->done_bytes < req->len) {
			if (req->op == BLK_OP_WRITE) {
				res = -EIO;
				break;
			}
			/* End of file (the image shrank under us): reads as zeros. */
			if (req->bounce)
				iov_zero_from(&req->one, 1, req->done_bytes);
			else
				iov_zero_from(req->iov, req->iovcnt, req->done_bytes);
			res = 0;
			break;
		}
		req->done_bytes += res;
		if (req->done_bytes >= req->len) {
			res = 0;
			break;
		}
		ret = req_advance(req);
		if (ret) {
			res = ret;
			break;
		}
		ring_queue(r, req);
		return false;
	case BLK_OP_FLUSH:
		break;
	case BLK_OP_DISCARD:
		/* A hint: where holes cannot be punched, doing nothing is correct. */
		if (res == -EOPNOTSUPP) {
			flag_set(&req->q->b->no_punch, true);
			res = 0;
		}
		break;
	case BLK_OP_WRITE_ZEROES:
		if (res == -EOPNOTSUPP && req->stage != WZ_WRITE) {
			ret = wz_next_stage(req);
			if (ret) {
				res = ret;
				break;
			}
			ring_queue(r, req);
			return false;
		}
		if (req->stage != WZ_WRITE || res < 0)
			break;
		if (res == 0) {
			res = -EIO;
			break;
		}
		req->done_bytes += res;
		if (req->done_bytes >= req->len) {
			res = 0;
			break;
		}
		ring_queue(r, req);
		return false;
	}
	req_finish(req, res > 0 ? 0 : res);
	return true;
}

/* Reap what the CQ holds now; returns requests finished. */
static int ring_reap(struct blk_ring *r)
{
	struct io_uring_cqe *cqes[REAP_BATCH];
	struct {
		struct blk_req *req;
		int res;
	} done[REAP_BATCH];
	unsigned int n, i;
	int finished = 0;

	do {
		n = io_uring_peek_batch_cqe(&r->uring, cqes, REAP_BATCH);
		/* Copy out and free the CQ slots before callbacks queue more. */
		for (i = 0; i < n; i++) {
			done[i].req = io_uring_cqe_get_data(cqes[i]);
			done[i].res = cqes[i]->res;
		}
		io_uring_cq_advance(&r->uring, n);
		r->in_kernel -= n;
		for (i = 0; i < n; i++)
			finished += req_cqe(r, done[i].req, done[i].res);
	} while (n == REAP_BATCH);
	return finished;
}

int blk_ring_complete(struct blk_ring *r)
{
	eventfd_t v;
	int finished, ret;

	/* Reset the eventfd before reaping: a completion after this re-arms it. */
	if (eventfd_read(r->efd, &v) < 0 && errno != EAGAIN)
		return -errno;
	finished = ring_reap(r);
	ret = blk_ring_submit(r);
	return ret < 0 ? ret : finished;
}

int blk_ring_wait(struct blk_ring *r)
{
	struct io_uring_cqe *cqe;
	int ret;

	ret = blk_ring_submit(r);
	if (ret < 0)
		return ret;
	if (!r->in_kernel)
		return 0;
	do {
		ret = io_uring_wait_cqe(&r->uring, &cqe);
	} while (ret == -EINTR);
	if (ret < 0)
		return ret;
	return blk_ring_complete(r);
}

int blk_ring_drain(struct blk_ring *r)
{
	int ret;

	while (r->pending) {
		ret = blk_ring_wait(r);
		if (ret < 0)
			return ret;
		/* Requests pending but none in the kernel: submission keeps failing. */
		if (!r->in_kernel && r->pending && !ret)
			return -EIO;
	}
	return 0;
}

unsigned int blk_ring_inflight(const struct blk_ring *r)
{
	return r->pending;
}

int blk_ring_eventfd(const struct blk_ring *r)
{
	return r->efd;
}

static void ring_loop_cb(void *opaque, uint32_t events)
{
	struct blk_ring *r = opaque;
	int ret = blk_ring_complete(r);

	if (ret < 0)
		log_err("block ring: %s", strerror(-ret));
}

int blk_ring_attach(struct blk_ring *r, struct loop *l)
{
	int ret;

	if (r->loop)
		return -EBUSY;
	ret = loop_add(l, r->efd, EPOLLIN, ring_loop_cb, r);
	if (ret)
		return ret;
	r->loop = l;
	return 0;
}

int blk_ring_create(struct blk_ring **out, unsigned int entries, struct qerr *e)
{
	struct io_uring_params p = { 0 };
	struct blk_ring *r;
	int ret;

	*out = NULL;
	if (!entries || entries > RING_MAX_ENTRIES)
		return qerr_set(e, EINVAL, "block ring: %u entries (1..%u)", entries,
				RING_MAX_ENTRIES);
	r = calloc(1, sizeof(*r));
	if (!r)
		return qerr_set(e, ENOMEM, "out of memory");
	r->backlog_tail = &r->backlog;
	r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->efd < 0) {
		ret = qerr_set(e, errno, "eventfd: %s", strerror(errno));
		free(r);
		return ret;
	}
	ret = io_uring_queue_init_params(entries, &r->uring, &p);
	if (ret < 0) {
		ret = qerr_set(e, -ret, "cannot set up io_uring: %s%s", strerror(-ret),
			       ret == -EPERM || ret == -ENOSYS ?
				       " (disabled? see sysctl kernel.io_uring_disabled)" :
				       "");
		close(r->efd);
		free(r);
		return ret;
	}
	ret = io_uring_register_eventfd(&r->uring, r->efd);
	if (ret < 0) {
		ret = qerr_set(e, -ret, "io_uring_register_eventfd: %s", strerror(-ret));
		io_uring_queue_exit(&r->uring);
		close(r->efd);
		free(r);
		return ret;
	}
	r->cap = p.cq_entries;
	*out = r;
	return 0;
}

void blk_ring_destroy(struct blk_ring *r)
{
	int ret;

	if (!r)
		return;
	ret = blk_ring_drain(r);
	if (ret < 0)
		log_err("block ring: %u requests lost at teardown: %s", r->pending,
			strerror(-ret));
	if (r->loop)
		loop_del(r->loop, r->efd);
	io_uring_queue_exit(&r->uring);
	close(r->efd);
	free(r);
}

/* ---- queues and quiesce ----------------------------------------------------- */

int blk_queue_create(struct blk_queue **out, struct blk_backend *b, struct blk_ring *r)
{
	struct blk_queue *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->b = b;
	q->r = r;
	q->next = b->queues;
	b->queues = q;
	*out = q;
	return 0;
}

static int queue_drain(struct blk_queue *q)
{
	int ret;

	while (q->inflight) {
		ret = blk_ring_wait(q->r);
		if (ret < 0)
			return ret;
		if (!q->r->in_kernel && q->inflight && !ret)
			return -EIO;
	}
	return 0;
}

void blk_queue_destroy(struct blk_queue *q)
{
	struct blk_queue **pp;
	int ret;

	if (!q)
		return;
	ret = queue_drain(q);
	if (ret < 0)
		log_err("block queue: %u requests lost at teardown: %s", q->inflight,
			strerror(-ret));
	for (pp = &q->b->queues; *pp; pp = &(*pp)->next) {
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	}
	free(q);
}

unsigned int blk_queue_inflight(const struct blk_queue *q)
{
	return q->inflight;
}

int blk_backend_quiesce(struct blk_backend *b)
{
	struct blk_queue *q;
	int ret;

	flag_set(&b->quiesced, true);
	for (q = b->queues; q; q = q->next) {
		ret = queue_drain(q);
		if (ret < 0)
			return ret;
	}
	return 0;
}

void blk_backend_resume(struct blk_backend *b)
{
	flag_set(&b->quiesced, false);
}
