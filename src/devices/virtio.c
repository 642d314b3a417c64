// SPDX-License-Identifier: MIT
/* Split virtqueues: the rules are in include/qlite/virtio.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/virtio.h"

#define smp_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define smp_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#define smp_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* avail: flags, idx, ring[size], used_event. used: flags, idx, ring[size], avail_event. */
#define AVAIL_IDX 1
#define AVAIL_RING(i) (2 + (i))
#define USED_EVENT(vq) (2 + (vq)->s->size)

static volatile uint16_t *used_idx_ptr(struct virtq *vq)
{
	return (volatile uint16_t *)vq->used + 1;
}

static volatile uint16_t *avail_event_ptr(struct virtq *vq)
{
	return (volatile uint16_t *)(vq->used + 1 + 2 * vq->s->size);
}

int vq_enable(struct virtq *vq, struct virtq_state *s, struct guest_mem *mem, bool event_idx,
	      bool indirect)
{
	uint16_t n = s->size;

	memset(vq, 0, sizeof(*vq));
	vq->s = s;
	vq->mem = mem;
	if (!n || n > VIRTQ_MAX_SIZE || (n & (n - 1)))
		return -EINVAL;
	/* Alignment per spec (16/2/4), and every byte of each ring in RAM. */
	if (s->desc_gpa % 16 || s->avail_gpa % 2 || s->used_gpa % 4)
		return -EINVAL;
	vq->desc = mem_gpa_to_hva(mem, s->desc_gpa, 16ULL * n);
	vq->avail = mem_gpa_to_hva(mem, s->avail_gpa, 6 + 2ULL * n);
	vq->used = mem_gpa_to_hva(mem, s->used_gpa, 6 + 8ULL * n);
	if (!vq->desc || !vq->avail || !vq->used) {
		vq->desc = NULL;
		return -EINVAL;
	}
	vq->event_idx = event_idx;
	vq->indirect = indirect;
	return 0;
}

void vq_disable(struct virtq *vq)
{
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
}

struct range {
	uintptr_t start, end;
	bool writable;
};

static int range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* A device-writable buffer overlapping any other buffer of the request. */
static bool elem_overlaps(const struct virtq_elem *e)
{
	unsigned int n = e->out_num + e->in_num, i;
	struct range stack[16], *r = n <= 16 ? stack : malloc(n * sizeof(*r));
	uintptr_t end_any = 0, end_w = 0;
	bool bad = false;

	if (!r)
		return true;
	for (i = 0; i < n; i++) {
		r[i].start = (uintptr_t)e->iov[i].iov_base;
		r[i].end = r[i].start + e->iov[i].iov_len;
		r[i].writable = i >= e->out_num;
	}
	qsort(r, n, sizeof(*r), range_cmp);
	for (i = 0; i < n && !bad; i++) {
		if (r[i].start == r[i].end)
			continue;
		bad = r[i].start < end_w || (r[i].writable && r[i].start < end_any);
		end_any = MAX(end_any, r[i].end);
		if (r[i].writable)
			end_w = MAX(end_w, r[i].end);
	}
	if (r != stack)
		free(r);
	return bad;
}

/* Add one buffer to @e, enforcing order, bounds and the iov limit. */
static int elem_add(struct virtq *vq, struct virtq_elem *e, const struct vring_desc *d,
		    const char **why)
{
	void *p;

	if (e->out_num + e->in_num >= VIRTQ_MAX_IOV) {
		*why = "too many buffers in one request";
		return -EINVAL;
	}
	if (!(d->flags & VRING_DESC_F_WRITE) && e->in_num) {
		*why = "device-readable buffer after a device-writable one";
		return -EINVAL;
	}
	p = mem_gpa_to_hva(vq->mem, d->addr, d->len);
	if (!p) {
		*why = "buffer outside guest RAM";
		return -EINVAL;
	}
	e->iov[e->out_num + e->in_num] = (struct iovec){ p, d->len };
	if (d->flags & VRING_DESC_F_WRITE) {
		e->in_num++;
		e->in_len += d->len;
	} else {
		e->out_num++;
		e->out_len += d->len;
	}
	return 0;
}

static int vq_walk_indirect(struct virtq *vq, struct virtq_elem *e, const struct vring_desc *d,
			    const char **why)
{
	const struct vring_desc *table;
	unsigned int n = d->len / sizeof(struct vring_desc), i = 0, hops = 0;

	if (!vq->indirect) {
		*why = "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
		return -EINVAL;
	}
	if (d->flags & VRING_DESC_F_NEXT || !d->len || d->len % sizeof(struct vring_desc) ||
	    n > VIRTQ_MAX_IOV) {
		*why = "malformed indirect descriptor";
		return -EINVAL;
	}
	table = mem_gpa_to_hva(vq->mem, d->addr, d->len);
	if (!table) {
		*why = "indirect table outside guest RAM";
		return -EINVAL;
	}
	for (;;) {
		/* One copy per entry: the guest may change the table meanwhile. */
		struct vring_desc cur = table[i];
		int ret;

		if (++hops > n) {
			*why = "descriptor loop in indirect table";
			return -EINVAL;
		}
		if (cur.flags & VRING_DESC_F_INDIRECT) {
			*why = "indirect descriptor inside an indirect table";
			return -EINVAL;
		}
		ret = elem_add(vq, e, &cur, why);
		if (ret)
			return ret;
		if (!(cur.flags & VRING_DESC_F_NEXT))
			return 0;
		if (cur.next >= n) {
			*why = "indirect next index out of range";
			return -EINVAL;
		}
		i = cur.next;
	}
}

int vq_pop(struct virtq *vq, struct virtq_elem *e, const char **why)
{
	uint16_t size = vq->s->size, avail_idx, head, i;
	unsigned int hops = 0;
	int ret;

	*why = NULL;
	if (!vq->desc)
		return 0;
	avail_idx = __atomic_load_n(&vq->avail[AVAIL_IDX], __ATOMIC_ACQUIRE);
	if (avail_idx == vq->s->last_avail_idx)
		return 0;
	if ((uint16_t)(avail_idx - vq->s->last_avail_idx) > size) {
		*why = "available index moved further than the queue size";
		return -EINVAL;
	}
	smp_rmb();
	head = vq->avail[AVAIL_RING(vq->s->last_avail_idx % size)];
	if (head >= size) {
		*why = "head descriptor index out of range";
		return -EINVAL;
	}
	e->head = head;
	e->out_num = e->in_num = 0;
	e->out_len = e->in_len = 0;
	i = head;
	for (;;) {
		struct vring_desc cur = vq->desc[i];

		if (++hops > size) {
			*why = "descriptor loop";
			return -EINVAL;
		}
		if (cur.flags & VRING_DESC_F_INDIRECT) {
			/* An indirect descriptor is the whole chain (spec 2.7.5.3.1). */
			if (hops != 1) {
				*why = "indirect descriptor inside a chain";
				return -EINVAL;
			}
			ret = vq_walk_indirect(vq, e, &cur, why);
			if (ret)
				return ret;
			break;
		}
		ret = elem_add(vq, e, &cur, why);
		if (ret)
			return ret;
		if (!(cur.flags & VRING_DESC_F_NEXT))
			break;
		if (cur.next >= size) {
			*why = "next descriptor index out of range";
			return -EINVAL;
		}
		i = cur.next;
	}
	if (elem_overlaps(e)) {
		*why = "device-writable buffer overlaps another buffer";
		return -EINVAL;
	}
	vq->s->last_avail_idx++;
	if (vq->event_idx && !vq->kicks_off) {
		/* Kick us again only once the driver passes what we consumed. */
		*avail_event_ptr(vq) = vq->s->last_avail_idx;
		smp_mb();
	}
	return 1;
}

void vq_set_kicks(struct virtq *vq, bool enable)
{
	volatile uint16_t *used_flags = (volatile uint16_t *)vq->used;

	if (!vq->used || vq->kicks_off == !enable)
		return;
	vq->kicks_off = !enable;
	if (vq->event_idx) {
		/* An event index just behind ours is one the driver never crosses. */
		*avail_event_ptr(vq) = vq->s->last_avail_idx - (enable ? 0 : 1);
		mem_dirty_mark(vq->mem, (const void *)avail_event_ptr(vq), 2);
	} else {
		if (enable)
			*used_flags &= ~1; /* VRING_USED_F_NO_NOTIFY */
		else
			*used_flags |= 1;
		mem_dirty_mark(vq->mem, (const void *)used_flags, 2);
	}
	smp_mb(); /* before the caller re-reads the available index */
}

bool vq_has_work(struct virtq *vq)
{
	return vq->avail &&
	       __atomic_load_n(&vq->avail[AVAIL_IDX], __ATOMIC_ACQUIRE) != vq->s->last_avail_idx;
}

void vq_push(struct virtq *vq, const struct virtq_elem *e, uint32_t len)
{
	uint16_t idx = vq->s->used_idx;
	volatile uint32_t *slot;

	if (!vq->used)
		return;
	slot = vq->used + 1 + 2 * (idx % vq->s->size);
	slot[0] = e->head;
	slot[1] = len;
	smp_wmb(); /* the entry before the index that publishes it */
	vq->s->used_idx = idx + 1;
	__atomic_store_n(used_idx_ptr(vq), vq->s->used_idx, __ATOMIC_RELEASE);
	/* The used ring is guest RAM the VMM writes: migration must resend it. */
	mem_dirty_mark(vq->mem, (const void *)slot, 8);
	mem_dirty_mark(vq->mem, (const void *)used_idx_ptr(vq), 2);
}

bool vq_should_notify(struct virtq *vq)
{
	uint16_t old, new, event;
	bool valid;

	if (!vq->used)
		return false;
	/* Our used index store must be visible before we read the driver's wish. */
	smp_mb();
	old = vq->signalled_used;
	valid = vq->signalled_used_valid;
	new = vq->signalled_used = vq->s->used_idx;
	vq->signalled_used_valid = true;
	/* Nothing used since the last interrupt: none (a shared INTx line counts it). */
	if (valid && new == old)
		return false;
	if (!vq->event_idx)
		return !(vq->avail[0] & 1); /* VRING_AVAIL_F_NO_INTERRUPT */
	if (!valid)
		return true;
	event = vq->avail[USED_EVENT(vq)];
	/* vring_need_event(): did [old, new) cross the driver's used_event? */
	return (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

void vq_mark_dirty(struct virtq *vq, const struct virtq_elem *e, uint32_t len)
{
	unsigned int i;

	for (i = e->out_num; i < e->out_num + e->in_num && len; i++) {
		size_t n = MIN((size_t)len, e->iov[i].iov_len);

		mem_dirty_mark(vq->mem, e->iov[i].iov_base, n);
		len -= n;
	}
}
