// SPDX-License-Identifier: MIT
/* KVM binary stats reader (see kvm_stats.h). The file is kernel input, but
 * still bounded: descriptor counts, name sizes and offsets are checked. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "qlite/kvm_stats.h"

struct kvm_stat_desc {
	char name[48];
	uint32_t flags;
	uint64_t offset; /* file offset of the value */
	uint64_t base; /* value at open, for cumulative stats */
};

struct kvm_stats {
	int fd;
	unsigned int n;
	struct kvm_stat_desc *d;
};

static int read_value(int fd, uint64_t off, uint64_t *v)
{
	return pread(fd, v, sizeof(*v), (off_t)off) == sizeof(*v) ? 0 : -EIO;
}

int kvm_stats_open_fd(int fd, struct kvm_stats **out)
{
	struct kvm_stats_header h;
	struct kvm_stats *s;
	size_t dsz;
	uint8_t *descs = NULL;
	unsigned int i;
	int ret = -EINVAL;

	if (pread(fd, &h, sizeof(h), 0) != sizeof(h))
		goto err_fd;
	if (!h.num_desc || h.num_desc > KVM_STATS_MAX_DESC || !h.name_size || h.name_size > 256)
		goto err_fd;
	dsz = sizeof(struct kvm_stats_desc) + h.name_size;
	descs = malloc(dsz * h.num_desc);
	s = calloc(1, sizeof(*s));
	if (!descs || !s) {
		free(s);
		ret = -ENOMEM;
		goto err_fd;
	}
	s->d = calloc(h.num_desc, sizeof(*s->d));
	if (!s->d) {
		free(s);
		ret = -ENOMEM;
		goto err_fd;
	}
	if (pread(fd, descs, dsz * h.num_desc, h.desc_offset) != (ssize_t)(dsz * h.num_desc)) {
		free(s->d);
		free(s);
		goto err_fd;
	}
	s->fd = fd;
	for (i = 0; i < h.num_desc; i++) {
		const struct kvm_stats_desc *d = (const void *)(descs + i * dsz);
		uint32_t type = d->flags & KVM_STATS_TYPE_MASK;
		struct kvm_stat_desc *o = &s->d[s->n];
		size_t nlen = strnlen(d->name, h.name_size);

		/* Scalars only: histograms would need their bucket layout. */
		if (d->size != 1 || !nlen ||
		    (type != KVM_STATS_TYPE_CUMULATIVE && type != KVM_STATS_TYPE_INSTANT &&
		     type != KVM_STATS_TYPE_PEAK))
			continue;
		memcpy(o->name, d->name, MIN(nlen, sizeof(o->name) - 1));
		o->name[MIN(nlen, sizeof(o->name) - 1)] = '\0';
		o->flags = d->flags;
		o->offset = (uint64_t)h.data_offset + d->offset;
		if (o->offset < h.data_offset || read_value(fd, o->offset, &o->base))
			continue;
		s->n++;
	}
	free(descs);
	*out = s;
	return 0;
err_fd:
	free(descs);
	close(fd);
	return ret;
}

int kvm_stats_open(int kvm_obj_fd, struct kvm_stats **out)
{
	int fd = ioctl(kvm_obj_fd, KVM_GET_STATS_FD, 0);

	if (fd < 0)
		return errno == EINVAL || errno == ENOTTY ? -ENOTSUP : -errno;
	return kvm_stats_open_fd(fd, out);
}

int kvm_stats_read(struct kvm_stats *s, struct prof_stat **out, unsigned int *n)
{
	struct prof_stat *r;
	unsigned int i, k = 0;

	*out = NULL;
	*n = 0;
	if (!s || !s->n)
		return 0;
	r = calloc(s->n, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (i = 0; i < s->n; i++) {
		const struct kvm_stat_desc *d = &s->d[i];
		uint64_t v;

		if (read_value(s->fd, d->offset, &v))
			continue;
		if ((d->flags & KVM_STATS_TYPE_MASK) == KVM_STATS_TYPE_CUMULATIVE)
			v -= d->base;
		memcpy(r[k].name, d->name, sizeof(r[k].name));
		r[k].value = v;
		k++;
	}
	*out = r;
	*n = k;
	return 0;
}

void kvm_stats_close(struct kvm_stats *s)
{
	if (!s)
		return;
	close(s->fd);
	free(s->d);
	free(s);
}
