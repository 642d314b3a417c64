// SPDX-License-Identifier: MIT
/*
 * virtio-net on a tap device (userspace datapath, no vhost). The tap uses
 * the same 12-byte virtio_net_hdr_v1 as the guest, so headers pass through:
 * transmit is zero-copy (the guest's buffers go straight to writev), receive
 * reads a packet into a host buffer and spreads it over as many mergeable
 * receive buffers as it needs (num_buffers). Checksum/TSO offloads are
 * offered where the tap supports them and set on the tap as the guest acks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "qlite/loop.h"
#include "qlite/tap.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"

#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_S_LINK_UP 1

#define VNET_RX 0
#define VNET_TX 1
#define VNET_HDR 12
#define VNET_MAX_PKT (65536 + VNET_HDR)
#define VNET_RX_BATCH 64 /* packets per tap wakeup before other work runs */
#define VNET_MAX_MRG 64 /* receive buffers one packet may span */
#define VNET_MTU 1500

struct __attribute__((packed)) vnet_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
};

struct vnet {
	struct virtio_dev *dev;
	struct tap tap;
	struct vnet_config cfg;
	char name[32];
	bool rx_waiting; /* a packet is held until the guest posts buffers */
	bool tap_watched;
	size_t pkt_len;
	uint8_t pkt[VNET_MAX_PKT];
	struct virtq_elem elems[VNET_MAX_MRG];
	struct virtio_dev_ops ops;
};

static void vnet_tx(struct vnet *n)
{
	struct virtq *vq = &n->dev->vq[VNET_TX];
	struct virtq_elem *e = &n->elems[0];
	const char *why;
	int ret;

	/* No kicks while we drain (each is a VM exit); on again, then a last look. */
	vq_set_kicks(vq, false);
	for (;;) {
		while ((ret = vq_pop(vq, e, &why)) == 1) {
			if (e->in_num || e->out_len < VNET_HDR) {
				virtio_dev_set_broken(n->dev,
						      "transmit buffer without a header, or writable");
				return;
			}
			/* A full tap drops the packet, like a full wire would. */
			tap_write(&n->tap, e->iov, (int)e->out_num);
			vq_push(vq, e, 0);
		}
		vq_set_kicks(vq, true);
		if (ret < 0 || !vq_has_work(vq))
			break;
		vq_set_kicks(vq, false);
	}
	if (ret < 0)
		virtio_dev_set_broken(n->dev, why);
	virtio_notify(n->dev, VNET_TX);
}

/* Device lock held. Place the held packet; false if buffers ran out. */
static bool vnet_deliver(struct vnet *n)
{
	struct virtq *vq = &n->dev->vq[VNET_RX];
	bool mrg = virtio_has_feature(n->dev, VIRTIO_NET_F_MRG_RXBUF);
	uint16_t saved_avail = vq->s->last_avail_idx;
	size_t off = 0;
	unsigned int used = 0, i;
	const char *why;

	while (off < n->pkt_len) {
		struct virtq_elem *e = &n->elems[used];
		size_t room = 0;
		int ret;

		if (used == VNET_MAX_MRG || (used && !mrg))
			goto drop; /* the guest's buffers cannot hold it: drop the packet */
		ret = vq_pop(vq, e, &why);
		if (ret < 0) {
			virtio_dev_set_broken(n->dev, why);
			return true;
		}
		if (ret == 0) {
			/* Not enough buffers yet: give back what we took and wait. */
			vq->s->last_avail_idx = saved_avail;
			return false;
		}
		if (e->out_num || (!used && e->in_len < VNET_HDR)) {
			virtio_dev_set_broken(n->dev, "receive buffer not writable or too small");
			return true;
		}
		for (i = 0; i < e->in_num && off < n->pkt_len; i++) {
			size_t k = MIN(e->iov[i].iov_len, n->pkt_len - off);

			memcpy(e->iov[i].iov_base, n->pkt + off, k);
			off += k;
			room += k;
		}
		vq_mark_dirty(vq, e, (uint32_t)room);
		e->out_len = room; /* reuse: bytes this buffer received */
		used++;
	}
	/* num_buffers lives in the header, in the first buffer. */
	if (mrg) {
		uint16_t nb = used;

		memcpy((uint8_t *)n->elems[0].iov[0].iov_base + 10, &nb, 2);
	}
	for (i = 0; i < used; i++)
		vq_push(vq, &n->elems[i], (uint32_t)n->elems[i].out_len);
	return true;
drop:
	for (i = 0; i < used; i++)
		vq_push(vq, &n->elems[i], 0);
	return true;
}

static void vnet_watch_tap(struct vnet *n, bool on)
{
	if (n->tap_watched == on)
		return;
	n->tap_watched = on;
	loop_mod(n->dev->vm->loop, n->tap.fd, on ? EPOLLIN : 0);
}

/* Device lock held: move packets from the tap to the guest. */
static void vnet_rx(struct vnet *n)
{
	bool delivered = false;
	int k;

	for (k = 0; k < VNET_RX_BATCH; k++) {
		if (!n->rx_waiting) {
			struct iovec iov = { n->pkt, sizeof(n->pkt) };
			ssize_t len = tap_read(&n->tap, &iov, 1);

			if (len < VNET_HDR)
				break; /* -EAGAIN: drained */
			n->pkt_len = len;
			n->rx_waiting = true;
		}
		if (!vnet_deliver(n)) {
			vnet_watch_tap(n, false); /* until the guest posts buffers */
			break;
		}
		n->rx_waiting = false;
		delivered = true;
	}
	if (!n->rx_waiting)
		vnet_watch_tap(n, true);
	if (delivered)
		virtio_notify(n->dev, VNET_RX);
}

static void vnet_on_tap(void *opaque, uint32_t events)
{
	struct vnet *n = opaque;

	(void)events;
	pthread_mutex_lock(&n->dev->lock);
	if (n->dev->quiesced) {
		/* Paused (this event was already queued): packets wait in the tap. */
		vnet_watch_tap(n, false);
	} else if ((n->dev->st.status & VIRTIO_STATUS_DRIVER_OK) && !n->dev->broken &&
		   n->dev->vq[VNET_RX].desc) {
		vnet_rx(n);
	} else {
		/* No driver: the wire drops what arrives. */
		uint8_t junk[2048];
		struct iovec iov = { junk, sizeof(junk) };

		while (tap_read(&n->tap, &iov, 1) > 0)
			;
	}
	pthread_mutex_unlock(&n->dev->lock);
}

static void vnet_queue_notify(struct virtio_dev *d, unsigned int q)
{
	struct vnet *n = d->priv;

	if (q == VNET_TX)
		vnet_tx(n);
	else
		vnet_rx(n); /* new receive buffers: deliver what waits */
}

/* The offloads the guest accepted on receive become the tap's. */
static unsigned int vnet_offloads(struct vnet *n)
{
	struct virtio_dev *d = n->dev;
	unsigned int off = 0;

	if (!(d->st.status & VIRTIO_STATUS_DRIVER_OK))
		return 0;
	if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_CSUM)) {
		off |= TAP_OFFLOAD_CSUM;
		if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO4))
			off |= TAP_OFFLOAD_TSO4;
		if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_TSO6))
			off |= TAP_OFFLOAD_TSO6;
		if (virtio_has_feature(d, VIRTIO_NET_F_GUEST_ECN))
			off |= TAP_OFFLOAD_TSO_ECN;
	}
	return off & n->tap.offloads_supported;
}

static int vnet_activate(struct virtio_dev *d)
{
	struct vnet *n = d->priv;

	tap_set_offloads(&n->tap, vnet_offloads(n));
	n->rx_waiting = false;
	vnet_watch_tap(n, true);
	return 0;
}

static void vnet_reset(struct virtio_dev *d)
{
	struct vnet *n = d->priv;

	n->rx_waiting = false;
	if (n->tap.fd >= 0)
		tap_set_offloads(&n->tap, 0);
}

static void vnet_config_read(struct virtio_dev *d, unsigned int off, uint8_t *data,
			     unsigned int len)
{
	struct vnet *n = d->priv;

	memcpy(data, (uint8_t *)&n->cfg + off, len);
}

static int vnet_quiesce(struct virtio_dev *d)
{
	struct vnet *n = d->priv;

	pthread_mutex_lock(&d->lock);
	vnet_watch_tap(n, false); /* nothing is in flight: just stop reading */
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/* Also after a restore: the tap follows what the loaded driver negotiated. */
static void vnet_resume(struct virtio_dev *d)
{
	struct vnet *n = d->priv;

	pthread_mutex_lock(&d->lock);
	if (n->tap.fd >= 0 && n->tap.offloads != vnet_offloads(n))
		tap_set_offloads(&n->tap, vnet_offloads(n));
	if (!n->rx_waiting)
		vnet_watch_tap(n, true);
	pthread_mutex_unlock(&d->lock);
}

/*
 * The config space the driver read (the MAC it uses, link status). A
 * restore keeps the saved MAC: the guest already uses it. Nothing from the
 * rings is held between calls: transmit completes each buffer as it goes,
 * receive gives back partly filled buffers (vnet_deliver). A packet read
 * from the tap and waiting for receive buffers is host-side and is not
 * saved: after a restore it is lost, as a wire may lose it.
 */
static const struct state_field vnet_fields[] = {
	STATE_FIELD(struct vnet, cfg),
};

static int vnet_post_load(void *opaque)
{
	struct vnet *n = opaque;
	static const uint8_t zero[6];

	/* A unicast MAC; link up is the only status; one queue pair, MTU unchanged. */
	if ((n->cfg.mac[0] & 1) || !memcmp(n->cfg.mac, zero, 6) ||
	    (n->cfg.status & ~VIRTIO_NET_S_LINK_UP) || n->cfg.max_virtqueue_pairs != 1 ||
	    n->cfg.mtu != VNET_MTU)
		return -EINVAL;
	return 0;
}

static const struct state_desc vnet_state = {
	.name = "virtio-net",
	.version = 1,
	.fields = vnet_fields,
	.nr_fields = ARRAY_SIZE(vnet_fields),
	.post_load = vnet_post_load,
};

static const struct device_class vnet_class = {
	.name = "virtio-net",
	.state = &vnet_state,
};

static void vnet_unrealize(struct virtio_dev *d)
{
	struct vnet *n = d->priv;

	if (n->tap.fd >= 0) {
		loop_del(d->vm->loop, n->tap.fd);
		tap_close(&n->tap);
	}
	free(n);
}

int virtio_net_create(struct vm *vm, const struct net_config *nc, unsigned int index,
		      struct qerr *e)
{
	struct vnet *n = calloc(1, sizeof(*n));
	uint64_t features;
	unsigned int sup;
	int ret;

	if (!n)
		return qerr_set(e, ENOMEM, "out of memory");
	n->tap.fd = -1;
	snprintf(n->name, sizeof(n->name), "virtio-net%u", index);
	ret = nc->tap ? tap_open(&n->tap, nc->tap, e) : tap_open_fd(&n->tap, nc->fd, e);
	if (!ret && tap_set_vnet_hdr_len(&n->tap, VNET_HDR))
		ret = qerr_set(e, EINVAL, "%s: the tap does not take a 12-byte vnet header",
			       n->name);
	if (ret) {
		if (n->tap.fd >= 0)
			tap_close(&n->tap);
		free(n);
		return ret;
	}
	if (nc->has_mac) {
		memcpy(n->cfg.mac, nc->mac, 6);
	} else {
		static const uint8_t base[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

		memcpy(n->cfg.mac, base, 6);
		n->cfg.mac[5] += index;
	}
	n->cfg.status = VIRTIO_NET_S_LINK_UP;
	n->cfg.max_virtqueue_pairs = 1;
	n->cfg.mtu = VNET_MTU;

	/* Offer receive offloads only if the tap can take them. */
	sup = n->tap.offloads_supported;
	features = (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_MRG_RXBUF) |
		   (1ULL << VIRTIO_NET_F_STATUS) | (1ULL << VIRTIO_NET_F_CSUM) |
		   (1ULL << VIRTIO_NET_F_HOST_TSO4) | (1ULL << VIRTIO_NET_F_HOST_TSO6) |
		   (1ULL << VIRTIO_NET_F_HOST_ECN);
	if (sup & TAP_OFFLOAD_CSUM) {
		features |= 1ULL << VIRTIO_NET_F_GUEST_CSUM;
		if (sup & TAP_OFFLOAD_TSO4)
			features |= 1ULL << VIRTIO_NET_F_GUEST_TSO4;
		if (sup & TAP_OFFLOAD_TSO6)
			features |= 1ULL << VIRTIO_NET_F_GUEST_TSO6;
		if (sup & TAP_OFFLOAD_TSO_ECN)
			features |= 1ULL << VIRTIO_NET_F_GUEST_ECN;
	}
	n->ops = (struct virtio_dev_ops){
		.name = n->name,
		.device_id = 1,
		.class_code = 0x020000,
		.nqueues = 2,
		.queue_size = 256,
		.features = features,
		.cls = &vnet_class,
		.config_size = sizeof(struct vnet_config),
		.config_read = vnet_config_read,
		.queue_notify = vnet_queue_notify,
		.activate = vnet_activate,
		.reset = vnet_reset,
		.quiesce = vnet_quiesce,
		.resume = vnet_resume,
		.unrealize = vnet_unrealize,
	};
	ret = virtio_pci_create(vm, &n->ops, n, &n->dev); /* frees n on failure */
	if (ret)
		return qerr_set(e, -ret, "cannot create %s: %s", n->name, strerror(-ret));
	/* Watched from the start (and drained while no driver runs). */
	ret = loop_add(vm->loop, n->tap.fd, EPOLLIN, vnet_on_tap, n);
	if (ret)
		return qerr_set(e, -ret, "cannot watch the tap: %s", strerror(-ret));
	n->tap_watched = true;
	return 0;
}
