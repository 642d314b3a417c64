// SPDX-License-Identifier: MIT
/* virtio-rng: fills the driver's buffers from the host's getrandom(). */
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "qlite/virtio.h"
#include "qlite/vm.h"

#define RNG_MAX_PER_KICK (256 * 1024) /* bound the work one kick may cause */

struct virtio_rng {
	struct virtq_elem elem;
};

static void rng_queue_notify(struct virtio_dev *d, unsigned int q)
{
	struct virtio_rng *r = d->priv;
	struct virtq *vq = &d->vq[q];
	size_t budget = RNG_MAX_PER_KICK;
	const char *why;
	int ret;

	while (budget && (ret = vq_pop(vq, &r->elem, &why)) == 1) {
		uint32_t done = 0;
		unsigned int i;

		for (i = r->elem.out_num; i < r->elem.out_num + r->elem.in_num && budget; i++) {
			size_t want = MIN(r->elem.iov[i].iov_len, budget);
			ssize_t n = getrandom(r->elem.iov[i].iov_base, want, 0);

			if (n <= 0)
				break;
			done += n;
			budget -= n;
		}
		vq_mark_dirty(vq, &r->elem, done);
		vq_push(vq, &r->elem, done);
	}
	if (ret < 0)
		virtio_dev_set_broken(d, why);
	virtio_notify(d, q);
}

/*
 * Stateless: no config space, no device features, and every request is
 * completed within the kick that popped it (elem is scratch), so nothing
 * guest-visible lives outside the transport's state.
 */
static const struct device_class rng_class = {
	.name = "virtio-rng",
	.stateless = true,
};

static void rng_unrealize(struct virtio_dev *d)
{
	free(d->priv);
}

static const struct virtio_dev_ops rng_ops = {
	.name = "virtio-rng",
	.device_id = 4,
	.class_code = 0x00ff00,
	.nqueues = 1,
	.queue_size = 256,
	.cls = &rng_class,
	.queue_notify = rng_queue_notify,
	.unrealize = rng_unrealize,
};

int virtio_rng_create(struct vm *vm)
{
	struct virtio_rng *r = calloc(1, sizeof(*r));
	struct virtio_dev *d;

	if (!r)
		return -ENOMEM;
	return virtio_pci_create(vm, &rng_ops, r, &d); /* frees r on failure */
}
