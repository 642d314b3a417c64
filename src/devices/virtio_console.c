// SPDX-License-Identifier: MIT
/*
 * virtio-console, one port (no multiport): the guest's hvc0 on the VMM's
 * stdio, as an alternative to the 16550. Output is written as it comes;
 * host input waits in a small buffer until the driver posts receive buffers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qlite/virtio.h"
#include "qlite/vm.h"

#define VCON_RX 0
#define VCON_TX 1
#define VCON_BUF 4096

struct virtio_console {
	struct virtio_dev *dev;
	int out_fd;
	uint8_t pending[VCON_BUF]; /* host input not yet taken by the guest */
	size_t npending;
	struct virtq_elem elem;
};

/* Device lock held. Move pending input into the driver's receive buffers. */
static void vcon_fill_rx(struct virtio_console *c)
{
	struct virtq *vq = &c->dev->vq[VCON_RX];
	const char *why;
	bool pushed = false;
	int ret = 0;

	while (c->npending && (ret = vq_pop(vq, &c->elem, &why)) == 1) {
		size_t done = 0;
		unsigned int i;

		for (i = c->elem.out_num; i < c->elem.out_num + c->elem.in_num && done < c->npending;
		     i++) {
			size_t n = MIN(c->elem.iov[i].iov_len, c->npending - done);

			memcpy(c->elem.iov[i].iov_base, c->pending + done, n);
			done += n;
		}
		memmove(c->pending, c->pending + done, c->npending - done);
		c->npending -= done;
		vq_mark_dirty(vq, &c->elem, done);
		vq_push(vq, &c->elem, done);
		pushed = true;
	}
	if (ret < 0)
		virtio_dev_set_broken(c->dev, why);
	else if (pushed)
		virtio_notify(c->dev, VCON_RX);
}

static void vcon_tx(struct virtio_console *c)
{
	struct virtq *vq = &c->dev->vq[VCON_TX];
	const char *why;
	int ret;

	while ((ret = vq_pop(vq, &c->elem, &why)) == 1) {
		unsigned int i;

		for (i = 0; i < c->elem.out_num && c->out_fd >= 0; i++) {
			const uint8_t *p = c->elem.iov[i].iov_base;
			size_t left = c->elem.iov[i].iov_len;

			while (left) {
				ssize_t n = write(c->out_fd, p, left);

				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0)
					break; /* output gone: drop it, the guest carries on */
				p += n;
				left -= n;
			}
		}
		vq_push(vq, &c->elem, 0);
	}
	if (ret < 0)
		virtio_dev_set_broken(c->dev, why);
	virtio_notify(c->dev, VCON_TX);
}

static void vcon_queue_notify(struct virtio_dev *d, unsigned int q)
{
	struct virtio_console *c = d->priv;

	if (q == VCON_TX)
		vcon_tx(c);
	else
		vcon_fill_rx(c);
}

static void vcon_reset(struct virtio_dev *d)
{
	((struct virtio_console *)d->priv)->npending = 0;
}

static void vcon_config_read(struct virtio_dev *d, unsigned int off, uint8_t *data,
			     unsigned int len)
{
	/* cols, rows, max_nr_ports, emerg_wr: 80x25, one port. */
	static const uint8_t cfg[12] = { 80, 0, 25, 0, 1, 0, 0, 0 };

	memcpy(data, cfg + off, len);
}

/*
 * Host input the guest has not taken yet is the device's state. Nothing is
 * held from the rings between calls: receive buffers are popped only with
 * input to put in them, transmit buffers are written out as they come.
 */
static const struct state_field vcon_fields[] = {
	STATE_FIELD(struct virtio_console, npending),
	STATE_FIELD(struct virtio_console, pending),
};

static int vcon_post_load(void *opaque)
{
	struct virtio_console *c = opaque;

	return c->npending <= VCON_BUF ? 0 : -EINVAL;
}

static const struct state_desc vcon_state = {
	.name = "virtio-console",
	.version = 1,
	.fields = vcon_fields,
	.nr_fields = ARRAY_SIZE(vcon_fields),
	.post_load = vcon_post_load,
};

static const struct device_class vcon_class = {
	.name = "virtio-console",
	.state = &vcon_state,
};

static void vcon_unrealize(struct virtio_dev *d)
{
	d->vm->vconsole = NULL;
	free(d->priv);
}

static const struct virtio_dev_ops vcon_ops = {
	.name = "virtio-console",
	.device_id = 3,
	.class_code = 0x078000,
	.nqueues = 2,
	.queue_size = 256,
	.cls = &vcon_class,
	.config_size = 12,
	.config_read = vcon_config_read,
	.queue_notify = vcon_queue_notify,
	.reset = vcon_reset,
	.unrealize = vcon_unrealize,
};

int virtio_console_create(struct vm *vm, int out_fd)
{
	struct virtio_console *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->out_fd = out_fd;
	ret = virtio_pci_create(vm, &vcon_ops, c, &c->dev); /* frees c on failure */
	if (!ret)
		vm->vconsole = c;
	return ret;
}

size_t virtio_console_space(struct virtio_console *c)
{
	size_t n;

	pthread_mutex_lock(&c->dev->lock);
	n = VCON_BUF - c->npending;
	pthread_mutex_unlock(&c->dev->lock);
	return n;
}

size_t virtio_console_push_input(struct virtio_console *c, const uint8_t *buf, size_t len)
{
	size_t n;

	pthread_mutex_lock(&c->dev->lock);
	n = MIN(len, VCON_BUF - c->npending);
	memcpy(c->pending + c->npending, buf, n);
	c->npending += n;
	/* While paused input only waits (resume kicks the receive queue). */
	if (c->dev->st.status & VIRTIO_STATUS_DRIVER_OK && !c->dev->broken && !c->dev->quiesced)
		vcon_fill_rx(c);
	pthread_mutex_unlock(&c->dev->lock);
	return n;
}
