// SPDX-License-Identifier: MIT
/*
 * virtio-balloon: inflate/deflate, guest memory statistics and free page
 * reporting. Inflated and reported pages go back to the host through
 * mem_discard() (MADV_DONTNEED, or a hole punched in the memfd) and are
 * marked discarded for checkpoint and migration.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/virtio.h"
#include "qlite/vm.h"

#define VIRTIO_BALLOON_F_MUST_TELL_HOST 0
#define VIRTIO_BALLOON_F_STATS_VQ 1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2
#define VIRTIO_BALLOON_F_REPORTING 5
#define BALLOON_PFN_SHIFT 12

enum balloon_queue { BQ_INFLATE, BQ_DEFLATE, BQ_STATS, BQ_REPORTING, BQ_NONE };

struct balloon_config {
	uint32_t num_pages; /* target, set by the host */
	uint32_t actual; /* written by the driver */
	uint32_t free_page_hint_cmd_id;
	uint32_t poison_val;
};

struct virtio_balloon {
	struct virtio_dev *dev;
	struct balloon_config cfg;
	bool stats_pending; /* we hold the driver's stats buffer */
	struct virtq_elem stats_elem;
	struct balloon_stats stats;
	uint64_t stats_updated_ns;
	struct virtq_elem elem;
};

/* Queues are numbered densely over the features the driver accepted. */
static enum balloon_queue balloon_role(struct virtio_dev *d, unsigned int q)
{
	unsigned int n = 2;

	if (q < n)
		return q == 0 ? BQ_INFLATE : BQ_DEFLATE;
	if (virtio_has_feature(d, VIRTIO_BALLOON_F_STATS_VQ) && q == n++)
		return BQ_STATS;
	if (virtio_has_feature(d, VIRTIO_BALLOON_F_REPORTING) && q == n)
		return BQ_REPORTING;
	return BQ_NONE;
}

static int balloon_stats_queue(struct virtio_dev *d)
{
	return virtio_has_feature(d, VIRTIO_BALLOON_F_STATS_VQ) ? 2 : -1;
}

static void balloon_pfns(struct virtio_balloon *b, struct virtq_elem *e, bool inflate)
{
	unsigned int i;

	for (i = 0; i < e->out_num; i++) {
		const uint32_t *pfn = e->iov[i].iov_base;
		size_t n = e->iov[i].iov_len / sizeof(uint32_t), k;

		for (k = 0; k < n; k++) {
			uint64_t gpa = (uint64_t)pfn[k] << BALLOON_PFN_SHIFT;

			/* A bad PFN is the driver's problem; skip it, never fail the VMM. */
			if (inflate)
				mem_discard(&b->dev->vm->mem, gpa, 4096);
			else
				mem_undiscard(&b->dev->vm->mem, gpa, 4096);
		}
	}
}

/* Free page reporting: each device-writable buffer is a free guest range. */
static void balloon_report(struct virtio_balloon *b, struct virtq_elem *e)
{
	struct guest_mem *m = &b->dev->vm->mem;
	unsigned int i;

	for (i = e->out_num; i < e->out_num + e->in_num; i++) {
		uint8_t *hva = e->iov[i].iov_base;
		uint64_t off = hva - m->base, len = e->iov[i].iov_len, gpa;
		unsigned int r;

		/* Back from hva to gpa through the region it lies in. */
		for (r = 0; r < m->nr_regions; r++) {
			const struct mem_region *reg = &m->regions[r];

			if (off >= reg->fd_offset && off - reg->fd_offset < reg->size) {
				gpa = reg->gpa + (off - reg->fd_offset);
				mem_discard(m, ALIGN_UP(gpa, 4096ULL),
					    ALIGN_DOWN(gpa + len, 4096ULL) - ALIGN_UP(gpa, 4096ULL));
				break;
			}
		}
	}
}

static void balloon_stats_parse(struct virtio_balloon *b, struct virtq_elem *e)
{
	uint8_t buf[10 * 16];
	size_t len = 0, off;
	unsigned int i;

	for (i = 0; i < e->out_num && len < sizeof(buf); i++) {
		size_t n = MIN(e->iov[i].iov_len, sizeof(buf) - len);

		memcpy(buf + len, e->iov[i].iov_base, n);
		len += n;
	}
	for (off = 0; off + 10 <= len; off += 10) {
		uint16_t tag;
		uint64_t val;

		memcpy(&tag, buf + off, 2);
		memcpy(&val, buf + off + 2, 8);
		if (tag < BALLOON_STAT_MAX) {
			b->stats.val[tag] = val;
			b->stats.valid |= 1u << tag;
		}
	}
	b->stats_updated_ns = time_now_ns();
}

static void balloon_queue_notify(struct virtio_dev *d, unsigned int q)
{
	struct virtio_balloon *b = d->priv;
	enum balloon_queue role = balloon_role(d, q);
	struct virtq *vq = &d->vq[q];
	const char *why;
	int ret;

	if (role == BQ_STATS) {
		/*
		 * The driver hands its stats buffer over; keep it until we want
		 * more. We hold one at most: a second one returns the first.
		 */
		if (b->stats_pending && vq_has_work(vq)) {
			vq_push(vq, &b->stats_elem, 0);
			b->stats_pending = false;
			virtio_notify(d, q);
		}
		ret = vq_pop(vq, &b->stats_elem, &why);
		if (ret == 1) {
			balloon_stats_parse(b, &b->stats_elem);
			b->stats_pending = true;
		}
		if (ret < 0)
			virtio_dev_set_broken(d, why);
		return;
	}
	while ((ret = vq_pop(vq, &b->elem, &why)) == 1) {
		switch (role) {
		case BQ_INFLATE:
			balloon_pfns(b, &b->elem, true);
			break;
		case BQ_DEFLATE:
			balloon_pfns(b, &b->elem, false);
			break;
		case BQ_REPORTING:
			balloon_report(b, &b->elem);
			break;
		default:
			break;
		}
		vq_push(vq, &b->elem, 0);
	}
	if (ret < 0)
		virtio_dev_set_broken(d, why);
	virtio_notify(d, q);
}

static int balloon_activate(struct virtio_dev *d)
{
	struct virtio_balloon *b = d->priv;

	b->stats_pending = false;
	return 0;
}

static void balloon_reset(struct virtio_dev *d)
{
	struct virtio_balloon *b = d->priv;

	b->cfg.actual = 0;
	b->stats_pending = false;
}

static void balloon_config_read(struct virtio_dev *d, unsigned int off, uint8_t *data,
				unsigned int len)
{
	struct virtio_balloon *b = d->priv;

	memcpy(data, (uint8_t *)&b->cfg + off, len);
}

static void balloon_config_write(struct virtio_dev *d, unsigned int off, const uint8_t *data,
				 unsigned int len)
{
	struct virtio_balloon *b = d->priv;

	struct balloon_config cfg = b->cfg;

	/* Only "actual" is the driver's to write, and never beyond RAM. */
	if (off >= offsetof(struct balloon_config, actual) &&
	    off + len <= offsetof(struct balloon_config, actual) + 4) {
		memcpy((uint8_t *)&cfg + off, data, len);
		b->cfg.actual =
			MIN(cfg.actual, (uint32_t)(d->vm->mem.ram_size >> BALLOON_PFN_SHIFT));
	}
}

/*
 * Pause: the stats buffer we hold goes back to the ring, un-popped (it is
 * the last request taken from its queue and nothing was pushed after it).
 * Saved state then holds no request, and resume (or a restore) pops it
 * again, re-walking and validating its descriptors from guest memory. The
 * driver never notices, unlike completing the buffer would make it send
 * fresh statistics on every pause.
 */
static int balloon_quiesce(struct virtio_dev *d)
{
	struct virtio_balloon *b = d->priv;
	int q = balloon_stats_queue(d);

	pthread_mutex_lock(&d->lock);
	if (b->stats_pending && q >= 0) {
		d->st.q[q].last_avail_idx--;
		b->stats_pending = false;
	}
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/*
 * Guest-visible state beyond the transport: the config space (the host's
 * target, the driver's actual). The held stats buffer is given back at
 * quiesce (above); the last statistics are host-side and come back with it.
 */
static const struct state_field balloon_fields[] = {
	STATE_FIELD(struct virtio_balloon, cfg),
};

static int balloon_post_load(void *opaque)
{
	struct virtio_balloon *b = opaque;
	uint64_t pages = b->dev->vm->mem.ram_size >> BALLOON_PFN_SHIFT;

	/* Neither free page hinting nor page poisoning is offered. */
	if (b->cfg.num_pages > pages || b->cfg.actual > pages || b->cfg.free_page_hint_cmd_id ||
	    b->cfg.poison_val)
		return -EINVAL;
	b->stats_pending = false; /* quiesce gave it back already: never push a stale one */
	return 0;
}

static const struct state_desc balloon_state = {
	.name = "virtio-balloon",
	.version = 1,
	.fields = balloon_fields,
	.nr_fields = ARRAY_SIZE(balloon_fields),
	.post_load = balloon_post_load,
};

static const struct device_class balloon_class = {
	.name = "virtio-balloon",
	.state = &balloon_state,
};

static void balloon_unrealize(struct virtio_dev *d)
{
	d->vm->balloon = NULL;
	free(d->priv);
}

static const struct virtio_dev_ops balloon_ops = {
	.name = "virtio-balloon",
	.device_id = 5,
	.class_code = 0x00ff00,
	.nqueues = 4,
	.queue_size = 128,
	.features = (1ULL << VIRTIO_BALLOON_F_STATS_VQ) | (1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM) |
		    (1ULL << VIRTIO_BALLOON_F_REPORTING),
	.cls = &balloon_class,
	.config_size = sizeof(struct balloon_config),
	.config_read = balloon_config_read,
	.config_write = balloon_config_write,
	.queue_notify = balloon_queue_notify,
	.activate = balloon_activate,
	.reset = balloon_reset,
	.quiesce = balloon_quiesce,
	.unrealize = balloon_unrealize,
};

int virtio_balloon_create(struct vm *vm, bool reporting)
{
	struct virtio_balloon *b = calloc(1, sizeof(*b));
	int ret;

	if (!b)
		return -ENOMEM;
	ret = virtio_pci_create(vm, &balloon_ops, b, &b->dev); /* frees b on failure */
	if (ret)
		return ret;
	if (!reporting)
		b->dev->device_features &= ~(1ULL << VIRTIO_BALLOON_F_REPORTING);
	vm->balloon = b;
	return 0;
}

int virtio_balloon_set_target(struct vm *vm, uint64_t guest_bytes)
{
	struct virtio_balloon *b = vm->balloon;

	if (!b)
		return -ENODEV;
	if (guest_bytes > vm->mem.ram_size)
		guest_bytes = vm->mem.ram_size;
	pthread_mutex_lock(&b->dev->lock);
	b->cfg.num_pages = (uint32_t)((vm->mem.ram_size - guest_bytes) >> BALLOON_PFN_SHIFT);
	virtio_config_changed(b->dev);
	pthread_mutex_unlock(&b->dev->lock);
	return 0;
}

int virtio_balloon_query(struct vm *vm, uint64_t *actual_bytes, struct balloon_stats *stats)
{
	struct virtio_balloon *b = vm->balloon;

	if (!b)
		return -ENODEV;
	pthread_mutex_lock(&b->dev->lock);
	*actual_bytes = vm->mem.ram_size - ((uint64_t)b->cfg.actual << BALLOON_PFN_SHIFT);
	if (stats)
		*stats = b->stats;
	/* Ask for fresh numbers: returning the buffer tells the driver to refill it. */
	if (b->stats_pending && balloon_stats_queue(b->dev) >= 0) {
		unsigned int q = balloon_stats_queue(b->dev);

		b->stats_pending = false;
		vq_push(&b->dev->vq[q], &b->stats_elem, 0);
		virtio_notify(b->dev, q);
	}
	pthread_mutex_unlock(&b->dev->lock);
	return 0;
}
