// SPDX-License-Identifier: MIT
/*
 * virtio-blk on the io_uring block backend. One virtqueue per vCPU (up to
 * VIRTIO_MAX_QUEUES), all feeding one ring driven by the main loop: a shared
 * ring costs 35-45% less CPU per I/O at low depth than a ring per queue
 * (tests/bench/blk_rings.c). Requests are batched: one io_uring_submit per
 * kick, and completions are coalesced into fewer interrupts while the guest
 * keeps queueing (vblk_defer_or_notify()). A malformed request (no status
 * byte, short header, buffers of the wrong direction for its type) puts the
 * device in NEEDS_RESET; a well-formed request the disk cannot serve (out of
 * range, read-only) gets IOERR/UNSUPP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "qlite/blk.h"
#include "qlite/checkpoint.h"
#include "qlite/loop.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VBLK_QUEUE_SIZE 256
#define VBLK_SEG_MAX (VBLK_QUEUE_SIZE - 2)
#define VBLK_MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per request */

/* Completion coalescing (see vblk_defer_or_notify()). */
#define COAL_TICK_MIN_NS 2000ULL
#define COAL_TICK_MAX_NS 2000000ULL
#define COAL_TICK_INIT_NS 20000ULL
#define COAL_WINDOW_MAX_NS 4000000ULL /* latency bound on one window */
#define COAL_WINDOW_MAX_REQS VBLK_QUEUE_SIZE
#define COAL_BACKOFF 128 /* batches signalled at once once windows keep failing, */
#define COAL_BACKOFF_MAX 4096 /* doubling per failed probe up to this */
#define COAL_SCORE_MAX 32 /* windows that found requests, recently (see below) */
#define COAL_IDLE_NS 10000000ULL /* a reaction this slow: the guest was idle */

struct __attribute__((packed)) vblk_config {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp, alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback, unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap, unused1[3];
};

struct vblk;

struct vblk_req {
	struct vblk *blk;
	unsigned int queue;
	uint8_t type;
	uint8_t *status;
	uint32_t in_len; /* bytes the device writes, status included */
	uint64_t bytes;
	uint64_t offset; /* reads: where on the disk, for page elision */
	const struct iovec *data;
	unsigned int ndata;
	struct blk_req req;
	struct vblk_req *next_free;
	struct virtq_elem elem; /* big: pooled, never on the stack */
};

struct vblk {
	struct virtio_dev *dev;
	struct blk_backend *be;
	struct blk_ring *ring;
	struct blk_queue *bq;
	struct vblk_config cfg;
	unsigned int nqueues;
	char serial[VIRTIO_BLK_ID_BYTES + 1];
	char name[32];
	struct vblk_req *free_reqs;
	unsigned int nreqs;
	uint32_t notify_mask; /* queues that completed requests in this batch */
	unsigned int inflight[VIRTIO_MAX_QUEUES];
	/* Completion coalescing: host-local tuning, never saved. */
	struct {
		bool on; /* --disk ...,coalesce=on (the default) */
		bool armed; /* a window is open: interrupts held, kicks off */
		int tfd;
		uint64_t tick_ns; /* how long a tick waits for the guest */
		uint64_t start_ns; /* when the window opened */
		/* EWMA of the guest's reaction: an interrupt to its next kick. */
		uint64_t notified_ns, react_ns;
		unsigned int popped; /* requests taken from the rings, ever */
		unsigned int tick_mark, window_mark; /* popped at the last tick, at opening */
		unsigned int skip; /* batches left to signal at once */
		unsigned int backoff; /* the next skip: COAL_BACKOFF..COAL_BACKOFF_MAX */
		unsigned int score; /* +4 per window that found requests, halved per failure */
		uint64_t windows, held; /* windows opened, requests signalled late */
	} coal;
	struct blk_disk_stats stats;
	struct virtio_dev_ops ops; /* per device: queue count depends on vCPUs */
	struct vblk *next; /* vm->disks */
	char *path;
	uint8_t readonly; /* a byte: it is loaded from saved state */
	unsigned int index; /* --disk order: checkpoints name disks by it */
};

static struct vblk_req *vblk_req_get(struct vblk *b)
{
	struct vblk_req *r = b->free_reqs;

	if (r) {
		b->free_reqs = r->next_free;
		return r;
	}
	/* Grows to the deepest queue depth the guest used, then stays. */
	r = malloc(sizeof(*r));
	if (r)
		b->nreqs++;
	return r;
}

static void vblk_req_put(struct vblk *b, struct vblk_req *r)
{
	r->next_free = b->free_reqs;
	b->free_reqs = r;
}

/* Device lock held (queue_notify, or the ring handler below). */
static void vblk_finish(struct vblk_req *r, uint8_t status)
{
	struct vblk *b = r->blk;
	struct virtq *vq = &b->dev->vq[r->queue];

	*r->status = status;
	mem_dirty_mark(&b->dev->vm->mem, r->status, 1);
	vq_push(vq, &r->elem, status == VIRTIO_BLK_S_OK ? r->in_len : 1);
	b->notify_mask |= 1u << r->queue;
	vblk_req_put(b, r);
}

static void vblk_done(void *opaque, int result)
{
	struct vblk_req *r = opaque;
	struct blk_disk_stats *st = &r->blk->stats;

	r->blk->inflight[r->queue]--;
	if (result == 0) {
		if (r->type == VIRTIO_BLK_T_IN) {
			st->rd_bytes += r->bytes;
			st->rd_ops++;
			ckpt_disk_read_done(r->blk->dev->vm, r->blk->index, r->offset, r->data,
					    r->ndata);
		} else if (r->type == VIRTIO_BLK_T_OUT) {
			st->wr_bytes += r->bytes;
			st->wr_ops++;
		} else if (r->type == VIRTIO_BLK_T_FLUSH) {
			st->flush_ops++;
		}
	} else {
		st->failed_ops++;
	}
	vblk_finish(r, result == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR);
}

static void vblk_send_notifications(struct vblk *b)
{
	unsigned int q;

	if (b->notify_mask)
		b->coal.notified_ns = time_now_ns();

	for (q = 0; b->notify_mask; q++) {
		if (b->notify_mask & (1u << q)) {
			virtio_notify(b->dev, q);
			b->notify_mask &= ~(1u << q);
		}
	}
}

/* Copy @n bytes from the start of the out-buffers and consume them there. */
static bool elem_take(struct virtq_elem *e, unsigned int *first, void *dst, size_t n)
{
	uint8_t *d = dst;

	while (n && *first < e->out_num) {
		struct iovec *v = &e->iov[*first];
		size_t k = MIN(n, v->iov_len);

		memcpy(d, v->iov_base, k);
		d += k;
		n -= k;
		v->iov_base = (uint8_t *)v->iov_base + k;
		v->iov_len -= k;
		if (!v->iov_len)
			(*first)++;
	}
	return n == 0;
}

/* Range check in sectors against the disk, overflow-safe. */
static bool vblk_range_ok(struct vblk *b, uint64_t sector, uint64_t bytes)
{
	uint64_t cap = b->cfg.capacity * 512;

	return sector <= cap / 512 && bytes <= cap - sector * 512 &&
	       bytes % blk_backend_block_size(b->be) == 0 &&
	       (sector * 512) % blk_backend_block_size(b->be) == 0;
}

/* Returns -EINVAL for a malformed request (device must reset), else 0. */
static int vblk_handle(struct vblk *b, struct vblk_req *r, const char **why)
{
	struct virtq_elem *e = &r->elem;
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} hdr;
	unsigned int first = 0, ndata;
	struct iovec *last, *data;
	int ret;

	/* Status: the last device-writable byte; header: the first 16 readable. */
	if (!e->in_num) {
		*why = "request without a status byte";
		return -EINVAL;
	}
	last = &e->iov[e->out_num + e->in_num - 1];
	if (!last->iov_len) {
		*why = "zero-length status buffer";
		return -EINVAL;
	}
	r->status = (uint8_t *)last->iov_base + last->iov_len - 1;
	last->iov_len--;
	r->in_len = e->in_len;
	if (!elem_take(e, &first, &hdr, sizeof(hdr))) {
		*why = "request header shorter than 16 bytes";
		return -EINVAL;
	}
	r->type = hdr.type;
	/* Data: the rest of the out-buffers (OUT) or the in-buffers (IN). */
	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		if (e->out_len != sizeof(hdr)) {
			*why = "read request with device-readable data";
			return -EINVAL;
		}
		data = &e->iov[e->out_num];
		ndata = e->in_num - (last->iov_len ? 0 : 1);
		r->bytes = e->in_len - 1;
		if (!vblk_range_ok(b, hdr.sector, r->bytes))
			goto ioerr;
		r->offset = hdr.sector * 512;
		r->data = data;
		r->ndata = ndata;
		ret = blk_read(b->bq, &r->req, hdr.sector * 512, data, ndata, vblk_done, r);
		break;
	case VIRTIO_BLK_T_OUT:
		if (e->in_len != 1) {
			*why = "write request with device-writable data";
			return -EINVAL;
		}
		data = &e->iov[first];
		ndata = e->out_num - first;
		r->bytes = e->out_len - sizeof(hdr);
		if (b->readonly)
			goto ioerr;
		if (!vblk_range_ok(b, hdr.sector, r->bytes))
			goto ioerr;
		ckpt_disk_write_begin(b->dev->vm, b->index, hdr.sector * 512, r->bytes);
		ret = blk_write(b->bq, &r->req, hdr.sector * 512, data, ndata, vblk_done, r);
		break;
	case VIRTIO_BLK_T_FLUSH:
		ret = blk_flush(b->bq, &r->req, vblk_done, r);
		break;
	case VIRTIO_BLK_T_GET_ID: {
		size_t n = MIN((size_t)VIRTIO_BLK_ID_BYTES, (size_t)e->in_len - 1), done = 0;
		unsigned int i;

		for (i = e->out_num; i < e->out_num + e->in_num && done < n; i++) {
			size_t k = MIN(e->iov[i].iov_len, n - done);

			memcpy(e->iov[i].iov_base, b->serial + done, k);
			mem_dirty_mark(&b->dev->vm->mem, e->iov[i].iov_base, k);
			done += k;
		}
		vblk_finish(r, VIRTIO_BLK_S_OK);
		return 0;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		struct {
			uint64_t sector;
			uint32_t num_sectors, flags;
		} seg;

		/* We advertise max_*_seg = 1: exactly one segment. */
		if (e->out_len != sizeof(hdr) + sizeof(seg) || !elem_take(e, &first, &seg, sizeof(seg))) {
			*why = "discard/write-zeroes request without exactly one segment";
			return -EINVAL;
		}
		r->bytes = (uint64_t)seg.num_sectors * 512;
		if (b->readonly || seg.num_sectors > VBLK_MAX_DISCARD_SECTORS ||
		    !vblk_range_ok(b, seg.sector, r->bytes) || (seg.flags & ~1u))
			goto ioerr;
		ckpt_disk_write_begin(b->dev->vm, b->index, seg.sector * 512, r->bytes);
		if (hdr.type == VIRTIO_BLK_T_DISCARD)
			ret = blk_discard(b->bq, &r->req, seg.sector * 512, r->bytes, vblk_done, r);
		else
			ret = blk_write_zeroes(b->bq, &r->req, seg.sector * 512, r->bytes,
					       seg.flags & 1, vblk_done, r);
		break;
	}
	default:
		vblk_finish(r, VIRTIO_BLK_S_UNSUPP);
		return 0;
	}
	if (ret == 0) {
		b->inflight[r->queue]++;
		return 0; /* vblk_done finishes it */
	}
ioerr:
	b->stats.failed_ops++;
	vblk_finish(r, VIRTIO_BLK_S_IOERR);
	return 0;
}

/* Pop and start every available request of queue @q (device lock held). */
static void vblk_process(struct vblk *b, unsigned int q)
{
	struct virtio_dev *d = b->dev;
	struct virtq *vq = &d->vq[q];
	const char *why = NULL;
	int ret;

	for (;;) {
		struct vblk_req *r = vblk_req_get(b);

		if (!r)
			break; /* out of memory: leave requests in the ring for later */
		r->blk = b;
		r->queue = q;
		ret = vq_pop(vq, &r->elem, &why);
		if (ret <= 0 || vblk_handle(b, r, &why)) {
			vblk_req_put(b, r);
			if (ret < 0 || why)
				virtio_dev_set_broken(d, why);
			break;
		}
		b->coal.popped++;
	}
}

/*
 * While a queue has requests in flight its completions will come back to
 * us, so the driver need not kick (each kick is a VM exit): poll the ring
 * then. The same holds while a coalescing window is open (its timer polls).
 * Kicks come back on when the queue is idle, then a last look.
 */
static void vblk_poll_queues(struct vblk *b)
{
	unsigned int q;

	for (q = 0; q < b->nqueues && !b->dev->broken; q++) {
		struct virtq *vq = &b->dev->vq[q];

		if (!vq->desc)
			continue;
		vblk_process(b, q);
		if (b->inflight[q] || b->coal.armed) {
			vq_set_kicks(vq, false);
			continue;
		}
		vq_set_kicks(vq, true);
		if (vq_has_work(vq)) {
			vblk_process(b, q);
			if (b->inflight[q])
				vq_set_kicks(vq, false);
		}
	}
	blk_ring_submit(b->ring); /* the whole batch in one io_uring_submit */
}

/* Drop an open window without signalling (reset) or before signalling. */
static void vblk_coal_cancel(struct vblk *b)
{
	struct itimerspec off = { 0 };

	if (!b->coal.armed)
		return;
	b->coal.armed = false;
	timerfd_settime(b->coal.tfd, 0, &off, NULL);
}

static void vblk_coal_arm(struct vblk *b, uint64_t ns)
{
	struct itimerspec its = { .it_value = { .tv_sec = (time_t)(ns / 1000000000ULL),
						.tv_nsec = (long)(ns % 1000000000ULL) } };

	if (timerfd_settime(b->coal.tfd, 0, &its, NULL) == 0)
		return;
	/* No timer: signal now rather than never. */
	b->coal.armed = false;
	b->coal.on = false;
}

/*
 * Completion coalescing. A request the backend finishes at once (a read the
 * page cache or a RAM disk serves inside io_uring_submit) is done before the
 * guest has queued its next one: signalled at once, every request costs a
 * kick and an interrupt, each a VM exit. So when requests completed, hold
 * the interrupt for a tick (a timerfd); a tick that finds new requests
 * starts them and waits another, and the first tick that finds none (the
 * guest is waiting for us) signals them all. A window whose first tick
 * finds nothing is a failure; when failures outweigh recent successes (a
 * guest running one request at a time) the next COAL_BACKOFF batches are
 * signalled at once, twice as many after each further failed probe (up to
 * COAL_BACKOFF_MAX). The tick adapts: shorter when a tick finds several
 * requests, longer when the first tick finds none, but never longer than
 * the guest's reaction to an interrupt (a guest that keeps queueing does
 * so faster than that), so depth-1 I/O pays at most one reaction time per
 * COAL_BACKOFF requests, and ever less while it stays at depth 1.
 */
static void vblk_defer_or_notify(struct vblk *b)
{
	if (!b->notify_mask || b->coal.armed)
		return;
	if (!b->coal.on || b->coal.skip) {
		if (b->coal.skip)
			b->coal.skip--;
		vblk_send_notifications(b);
		return;
	}
	b->coal.armed = true;
	b->coal.windows++;
	b->coal.start_ns = time_now_ns();
	b->coal.tick_mark = b->coal.window_mark = b->coal.popped;
	vblk_coal_arm(b, b->coal.tick_ns);
	/*
	 * Kicks stay on until the guest's next request (its poll turns them
	 * off, the window being open): measured in the test host, turning them
	 * off here, so that only ticks find that request, made fewer windows
	 * succeed and cost 25-35% of 4k random reads at QD32.
	 */
	if (!b->coal.armed)
		vblk_send_notifications(b);
}

/* Close the window: signal, then kicks back on where queues are idle. */
static void vblk_coal_close(struct vblk *b)
{
	b->coal.armed = false;
	b->coal.held += b->coal.popped - b->coal.window_mark;
	vblk_send_notifications(b);
	vblk_poll_queues(b); /* a request queued since the last tick, too */
	vblk_defer_or_notify(b); /* one the device finished at once (get-id, errors) */
}

static void vblk_coal_tick(struct vblk *b)
{
	struct virtio_dev *d = b->dev;
	uint64_t now = time_now_ns(), cap;
	unsigned int found;

	if (!(d->st.status & VIRTIO_STATUS_DRIVER_OK) || d->reset_pending || d->quiesced ||
	    d->broken) {
		/* Stopping: signal what completed, start nothing. */
		b->coal.armed = false;
		vblk_send_notifications(b);
		return;
	}
	vblk_poll_queues(b);
	found = b->coal.popped - b->coal.tick_mark;
	b->coal.tick_mark = b->coal.popped;
	if (found && now - b->coal.start_ns < COAL_WINDOW_MAX_NS &&
	    b->coal.popped - b->coal.window_mark < COAL_WINDOW_MAX_REQS) {
		if (found > 1)
			b->coal.tick_ns = MAX(COAL_TICK_MIN_NS, b->coal.tick_ns * 7 / 8);
		vblk_coal_arm(b, b->coal.tick_ns);
		if (b->coal.armed)
			return;
	} else if (!found && b->coal.popped == b->coal.window_mark) {
		/* Nothing came: depth 1, or a tick shorter than the guest's pace. */
		b->coal.score /= 2;
		if (b->coal.score < 4) {
			b->coal.skip = b->coal.backoff;
			b->coal.backoff = MIN(COAL_BACKOFF_MAX, 2 * b->coal.backoff);
		}
		cap = MIN(COAL_TICK_MAX_NS, MAX(b->coal.react_ns, COAL_TICK_MIN_NS));
		b->coal.tick_ns = MIN(cap, 2 * b->coal.tick_ns);
	} else {
		b->coal.score = MIN(COAL_SCORE_MAX, b->coal.score + 4);
		b->coal.backoff = COAL_BACKOFF;
	}
	vblk_coal_close(b);
}

static void vblk_on_timer(void *opaque, uint32_t events)
{
	struct vblk *b = opaque;
	uint64_t n;

	(void)events;
	pthread_mutex_lock(&b->dev->lock);
	if (read(b->coal.tfd, &n, sizeof(n)) == sizeof(n) && b->coal.armed)
		vblk_coal_tick(b);
	pthread_mutex_unlock(&b->dev->lock);
}

static void vblk_queue_notify(struct virtio_dev *d, unsigned int q)
{
	struct vblk *b = d->priv;

	(void)q;
	if (b->coal.notified_ns) {
		uint64_t r = time_now_ns() - b->coal.notified_ns;

		if (r < COAL_IDLE_NS)
			b->coal.react_ns = b->coal.react_ns ? (7 * b->coal.react_ns + r) / 8 : r;
		b->coal.notified_ns = 0;
	}
	vblk_poll_queues(b);
	vblk_defer_or_notify(b);
}

/* Completions: reap under the device lock, look for new requests, interrupt. */
static void vblk_on_ring(void *opaque, uint32_t events)
{
	struct vblk *b = opaque;

	(void)events;
	pthread_mutex_lock(&b->dev->lock);
	blk_ring_complete(b->ring);
	if ((b->dev->st.status & VIRTIO_STATUS_DRIVER_OK) && !b->dev->reset_pending &&
	    !b->dev->quiesced) {
		vblk_poll_queues(b);
		vblk_defer_or_notify(b);
	} else {
		vblk_send_notifications(b);
	}
	pthread_mutex_unlock(&b->dev->lock);
}

static int vblk_activate(struct virtio_dev *d)
{
	(void)d;
	return 0;
}

static void vblk_reset(struct virtio_dev *d)
{
	struct vblk *b = d->priv;

	/* Main thread, lock held: in-flight requests end before the reset does. */
	blk_ring_drain(b->ring);
	b->notify_mask = 0;
	memset(b->inflight, 0, sizeof(b->inflight));
	vblk_coal_cancel(b);
}

/* What the disk shows the driver: from the image and the VM's vCPU count. */
static void vblk_config_init(const struct vblk *b, struct vblk_config *cfg)
{
	uint32_t bs = blk_backend_block_size(b->be);

	memset(cfg, 0, sizeof(*cfg));
	cfg->capacity = blk_backend_size(b->be) / 512;
	cfg->size_max = 1u << 20;
	cfg->seg_max = VBLK_SEG_MAX;
	cfg->blk_size = bs;
	cfg->num_queues = b->nqueues;
	cfg->max_discard_sectors = VBLK_MAX_DISCARD_SECTORS;
	cfg->max_discard_seg = 1;
	cfg->discard_sector_alignment = bs / 512;
	cfg->max_write_zeroes_sectors = VBLK_MAX_DISCARD_SECTORS;
	cfg->max_write_zeroes_seg = 1;
	cfg->write_zeroes_may_unmap = 1;
}

/*
 * The config space and read-only flag the driver saw. Nothing in it is
 * driver-writable: a restore checks the disk under it is the same (size,
 * block size, queues, read-only), since the guest's view of it is in RAM.
 * Requests are never held: quiesce completes them all.
 */
static const struct state_field vblk_fields[] = {
	STATE_FIELD(struct vblk, cfg),
	STATE_FIELD(struct vblk, readonly),
};

static int vblk_post_load(void *opaque)
{
	struct vblk *b = opaque;
	struct vblk_config want;

	vblk_config_init(b, &want);
	if (memcmp(&b->cfg, &want, sizeof(want)) || b->readonly != blk_backend_readonly(b->be))
		return -EINVAL;
	return 0;
}

static const struct state_desc vblk_state = {
	.name = "virtio-blk",
	.version = 1,
	.fields = vblk_fields,
	.nr_fields = ARRAY_SIZE(vblk_fields),
	.post_load = vblk_post_load,
};

static const struct device_class vblk_class = {
	.name = "virtio-blk",
	.state = &vblk_state,
};

static void vblk_config_read(struct virtio_dev *d, unsigned int off, uint8_t *data,
			     unsigned int len)
{
	struct vblk *b = d->priv;

	memcpy(data, (uint8_t *)&b->cfg + off, len);
}

static void vblk_free(struct vblk *b)
{
	while (b->free_reqs) {
		struct vblk_req *r = b->free_reqs;

		b->free_reqs = r->next_free;
		free(r);
	}
	if (b->bq)
		blk_queue_destroy(b->bq);
	if (b->ring)
		blk_ring_destroy(b->ring);
	if (b->be)
		blk_backend_close(b->be);
	if (b->coal.tfd >= 0)
		close(b->coal.tfd);
	free(b->path);
	free(b);
}

static void vblk_unrealize(struct virtio_dev *d)
{
	struct vblk *b = d->priv;
	struct vblk **pp;

	for (pp = &d->vm->disks; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	if (b->ring)
		loop_del(d->vm->loop, blk_ring_eventfd(b->ring));
	if (b->coal.tfd >= 0)
		loop_del(d->vm->loop, b->coal.tfd);
	vblk_free(b);
}

/*
 * Pause: the backend drains, so every request popped has completed and is
 * in the used ring (saved state holds none). Kicks go back on: the rings
 * in guest RAM are saved too, and a restored device polls nothing.
 */
static int vblk_quiesce(struct virtio_dev *d)
{
	struct vblk *b = d->priv;
	unsigned int q;
	int ret;

	pthread_mutex_lock(&d->lock);
	ret = blk_backend_quiesce(b->be);
	vblk_coal_cancel(b);
	vblk_send_notifications(b);
	for (q = 0; !ret && q < b->nqueues; q++)
		vq_set_kicks(&d->vq[q], true);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

static void vblk_resume(struct virtio_dev *d)
{
	blk_backend_resume(((struct vblk *)d->priv)->be);
}

int virtio_blk_create(struct vm *vm, const struct disk_config *dc, unsigned int index,
		      struct qerr *e)
{
	struct blk_opts o = {.path = dc->path,
			     .readonly = dc->readonly,
			     .direct = dc->direct,
			     .no_lock = vm->cfg.disks_unlocked};
	struct vblk *b = calloc(1, sizeof(*b));
	int ret;

	if (!b)
		return qerr_set(e, ENOMEM, "out of memory");
	snprintf(b->name, sizeof(b->name), "virtio-disk%u", index);
	/* The ID is 20 bytes, not NUL-terminated when full. */
	snprintf(b->serial, sizeof(b->serial), "%.20s", dc->serial ? dc->serial : b->name);
	b->path = strdup(dc->path);
	b->readonly = dc->readonly;
	b->index = index;
	b->coal.on = !dc->no_coalesce;
	b->coal.tick_ns = COAL_TICK_INIT_NS;
	b->coal.backoff = COAL_BACKOFF;
	b->coal.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (b->coal.tfd < 0) {
		ret = qerr_set(e, errno, "timerfd_create: %s", strerror(errno));
		vblk_free(b);
		return ret;
	}
	ret = blk_backend_open(&b->be, &o, &vm->mem, e);
	if (!ret)
		ret = blk_ring_create(&b->ring, 2 * VBLK_QUEUE_SIZE, e);
	if (!ret && blk_queue_create(&b->bq, b->be, b->ring))
		ret = qerr_set(e, ENOMEM, "cannot create a block queue");
	if (ret) {
		vblk_free(b);
		return ret;
	}
	b->nqueues = MIN(vm->ncpus, (unsigned int)VIRTIO_MAX_QUEUES);
	vblk_config_init(b, &b->cfg);

	b->ops = (struct virtio_dev_ops){
		.name = b->name,
		.device_id = 2,
		.class_code = 0x010000,
		.nqueues = b->nqueues,
		.queue_size = VBLK_QUEUE_SIZE,
		.features = (1ULL << VIRTIO_BLK_F_SIZE_MAX) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
			    (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH) |
			    (1ULL << VIRTIO_BLK_F_MQ) | (1ULL << VIRTIO_BLK_F_DISCARD) |
			    (1ULL << VIRTIO_BLK_F_WRITE_ZEROES) |
			    (b->readonly ? 1ULL << VIRTIO_BLK_F_RO : 0),
		.cls = &vblk_class,
		.config_size = sizeof(struct vblk_config),
		.config_read = vblk_config_read,
		.queue_notify = vblk_queue_notify,
		.activate = vblk_activate,
		.reset = vblk_reset,
		.quiesce = vblk_quiesce,
		.resume = vblk_resume,
		.unrealize = vblk_unrealize,
	};
	ret = virtio_pci_create(vm, &b->ops, b, &b->dev); /* frees b on failure */
	if (ret)
		return qerr_set(e, -ret, "cannot create %s: %s", b->name, strerror(-ret));
	ret = loop_add(vm->loop, blk_ring_eventfd(b->ring), EPOLLIN, vblk_on_ring, b);
	if (ret)
		return qerr_set(e, -ret, "cannot watch the block ring: %s", strerror(-ret));
	ret = loop_add(vm->loop, b->coal.tfd, EPOLLIN, vblk_on_timer, b);
	if (ret)
		return qerr_set(e, -ret, "cannot watch the block timer: %s", strerror(-ret));
	b->next = vm->disks;
	vm->disks = b;
	return 0;
}

struct vblk *virtio_blk_next(struct vm *vm, struct vblk *prev, struct blk_disk_info *info)
{
	struct vblk *b = prev ? prev->next : vm->disks;

	if (b && info) {
		info->name = b->name;
		info->path = b->path;
		info->index = b->index;
		info->readonly = b->readonly;
		info->size = blk_backend_size(b->be);
		pthread_mutex_lock(&b->dev->lock);
		info->stats = b->stats;
		info->stats.coalesce = b->coal.on;
		info->stats.coalesce_windows = b->coal.windows;
		info->stats.coalesced_reqs = b->coal.held;
		info->stats.coalesce_tick_ns = b->coal.tick_ns;
		pthread_mutex_unlock(&b->dev->lock);
	}
	return b;
}

int virtio_blk_lock_all(struct vm *vm, bool lock, struct qerr *e)
{
	struct vblk *b;
	int ret = 0, r;

	for (b = vm->disks; b; b = b->next) {
		r = blk_backend_lock(b->be, lock, e);
		if (r && !ret)
			ret = r;
	}
	return ret;
}
