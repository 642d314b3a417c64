// SPDX-License-Identifier: MIT
/*
 * virtio-pci modern (virtio 1.x) transport. One 32 KiB memory BAR holds the
 * common, ISR, device-config and notify regions and the MSI-X table/PBA.
 * Queue notifications are ioeventfds (a write to a queue's notify address
 * never exits to userspace on the vCPU); interrupts are MSI-X over irqfd,
 * or INTx (pin A, level, following ISR) while the driver leaves MSI-X off.
 * The PCI configuration access capability reaches the same BAR handlers
 * through config space. Queue work runs on the main thread's loop, under
 * the device lock.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "qlite/loop.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040

#define BAR_SIZE 0x8000
#define COMMON_OFF 0x0000
#define COMMON_LEN 0x38
#define ISR_OFF 0x1000
#define DEVCFG_OFF 0x2000
#define NOTIFY_OFF 0x3000
#define NOTIFY_MULT 4
#define MSIX_TABLE_OFF 0x4000
#define MSIX_PBA_OFF 0x6000
#define REGION_LEN 0x1000

#define PCI_CAP_ID_VNDR 0x09
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4
#define CAP_PCI_CFG 5
#define PCI_CFG_CAP_LEN 20 /* struct virtio_pci_cfg_cap */
#define PCI_CFG_DATA 16 /* pci_cfg_data, from the capability's start */

/* Common configuration layout (virtio 1.x, 4.1.4.3). */
#define C_DFSELECT 0x00
#define C_DF 0x04
#define C_GFSELECT 0x08
#define C_GF 0x0c
#define C_MSIX 0x10
#define C_NUMQ 0x12
#define C_STATUS 0x14
#define C_CFGGEN 0x15
#define C_Q_SELECT 0x16
#define C_Q_SIZE 0x18
#define C_Q_MSIX 0x1a
#define C_Q_ENABLE 0x1c
#define C_Q_NOFF 0x1e
#define C_Q_DESCLO 0x20
#define C_Q_DESCHI 0x24
#define C_Q_AVAILLO 0x28
#define C_Q_AVAILHI 0x2c
#define C_Q_USEDLO 0x30
#define C_Q_USEDHI 0x34

static const uint64_t transport_features = (1ULL << VIRTIO_F_VERSION_1) |
					   (1ULL << VIRTIO_F_EVENT_IDX) |
					   (1ULL << VIRTIO_F_INDIRECT_DESC);

bool virtio_has_feature(const struct virtio_dev *d, unsigned int bit)
{
	return d->st.driver_features & (1ULL << bit);
}

void virtio_dev_set_broken(struct virtio_dev *d, const char *why)
{
	unsigned int q;

	log_ratelimited(&d->rl, "%s: driver error: %s; device needs reset", d->ops->name, why);
	if (d->broken)
		return;
	d->broken = true;
	for (q = 0; q < d->ops->nqueues; q++)
		vq_disable(&d->vq[q]);
	d->st.status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_config_changed(d);
}

/*
 * Caller holds the device lock. With MSI-X off the INTx line is the OR of
 * ISR's bits (virtio 1.x, 4.1.4.5.1); with it on, INTx is never used.
 */
static void virtio_intx_update(struct virtio_dev *d)
{
	pci_set_intx(&d->pci, d->st.isr && !msix_enabled(&d->msix));
}

void virtio_notify(struct virtio_dev *d, unsigned int q)
{
	if (!vq_should_notify(&d->vq[q]))
		return;
	if (msix_enabled(&d->msix)) {
		/* NO_VECTOR: the driver wants no interrupt for this queue. */
		if (d->st.q[q].msix_vector != MSIX_NO_VECTOR)
			msix_notify(&d->msix, d->st.q[q].msix_vector);
		return;
	}
	d->st.isr |= 1;
	virtio_intx_update(d);
}

void virtio_config_changed(struct virtio_dev *d)
{
	d->st.config_generation++;
	d->st.isr |= 2; /* set with MSI-X too (4.1.4.5.1) */
	if (!msix_enabled(&d->msix))
		virtio_intx_update(d);
	else if (d->st.msix_config != MSIX_NO_VECTOR)
		msix_notify(&d->msix, d->st.msix_config);
}

/* ---- notifications ------------------------------------------------------ */

static void virtio_on_kick(void *opaque, uint32_t events);

struct kick_ctx {
	struct virtio_dev *d;
	unsigned int q;
};

static void virtio_kick_unassign(struct virtio_dev *d, unsigned int q)
{
	struct kvm_ioeventfd io = { .addr = d->kick_addr[q], .len = 2, .fd = d->kick_efd[q],
				    .flags = KVM_IOEVENTFD_FLAG_DEASSIGN };

	if (!d->kick_assigned[q])
		return;
	ioctl(d->vm->vm_fd, KVM_IOEVENTFD, &io);
	d->kick_assigned[q] = false;
}

/* Bind every queue's notify address to its eventfd (again, after a BAR move). */
static void virtio_kicks_update(struct virtio_dev *d)
{
	struct pci_bar *bar = &d->pci.bars[0];
	unsigned int q;

	for (q = 0; q < d->ops->nqueues; q++) {
		struct kvm_ioeventfd io = { .len = 2, .fd = d->kick_efd[q] };

		virtio_kick_unassign(d, q);
		if (!bar->mapped)
			continue;
		io.addr = bar->addr + NOTIFY_OFF + q * NOTIFY_MULT;
		if (ioctl(d->vm->vm_fd, KVM_IOEVENTFD, &io) == 0) {
			d->kick_addr[q] = io.addr;
			d->kick_assigned[q] = true;
		}
		/* Without ioeventfd the MMIO write lands in virtio_bar_write. */
	}
}

static void virtio_bar_moved(struct pci_dev *p, int bar)
{
	if (bar == 0)
		virtio_kicks_update(p->opaque);
}

static void virtio_reset_locked(struct virtio_dev *d);

static void virtio_on_reset(void *opaque, uint32_t events)
{
	struct virtio_dev *d = opaque;
	uint64_t v;

	(void)events;
	if (read(d->reset_efd, &v, sizeof(v)) < 0)
		return;
	pthread_mutex_lock(&d->lock);
	if (d->reset_pending) {
		virtio_reset_locked(d);
		d->reset_pending = false;
	}
	pthread_mutex_unlock(&d->lock);
}

static void virtio_on_kick(void *opaque, uint32_t events)
{
	struct virtio_dev *d = ((struct kick_ctx *)opaque)->d;
	unsigned int q = ((struct kick_ctx *)opaque)->q;
	uint64_t v;

	(void)events;
	if (read(d->kick_efd[q], &v, sizeof(v)) < 0)
		return;
	pthread_mutex_lock(&d->lock);
	/* While quiesced the kick is dropped: resume kicks every queue again. */
	if (!d->broken && !d->reset_pending && !d->quiesced &&
	    (d->st.status & VIRTIO_STATUS_DRIVER_OK) && d->vq[q].desc)
		d->ops->queue_notify(d, q);
	pthread_mutex_unlock(&d->lock);
}

/* ---- common configuration ------------------------------------------------ */

static void virtio_reset_locked(struct virtio_dev *d)
{
	unsigned int q;

	if (d->ops->reset)
		d->ops->reset(d);
	for (q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		vq_disable(&d->vq[q]);
		memset(&d->st.q[q], 0, sizeof(d->st.q[q]));
		/* Absent queues read as size 0 (and must load as such). */
		d->st.q[q].size = q < d->ops->nqueues ? d->ops->queue_size : 0;
		d->st.q[q].msix_vector = MSIX_NO_VECTOR;
	}
	d->st.driver_features = 0;
	d->st.device_feature_select = d->st.driver_feature_select = 0;
	d->st.msix_config = MSIX_NO_VECTOR;
	d->st.queue_select = 0;
	d->st.status = 0;
	d->st.isr = 0;
	pci_set_intx(&d->pci, false);
	d->broken = false;
}

static struct virtq_state *selected_queue(struct virtio_dev *d)
{
	return d->st.queue_select < d->ops->nqueues ? &d->st.q[d->st.queue_select] : NULL;
}

static uint32_t common_read(struct virtio_dev *d, unsigned int off)
{
	struct virtq_state *qs = selected_queue(d);

	switch (off) {
	case C_DFSELECT:
		return d->st.device_feature_select;
	case C_DF:
		return d->st.device_feature_select < 2 ?
			       (uint32_t)(d->device_features >> (32 * d->st.device_feature_select)) :
			       0;
	case C_GFSELECT:
		return d->st.driver_feature_select;
	case C_GF:
		return d->st.driver_feature_select < 2 ?
			       (uint32_t)(d->st.driver_features >>
					  (32 * d->st.driver_feature_select)) :
			       0;
	case C_MSIX:
		return d->st.msix_config;
	case C_NUMQ:
		return d->ops->nqueues;
	case C_STATUS:
		/* Non-zero until a pending reset has finished. */
		return d->reset_pending ? (d->st.status ? d->st.status : 0x80) : d->st.status;
	case C_CFGGEN:
		return d->st.config_generation;
	case C_Q_SELECT:
		return d->st.queue_select;
	}
	if (!qs)
		return 0; /* a queue that does not exist reads as size 0 */
	switch (off) {
	case C_Q_SIZE:
		return qs->size;
	case C_Q_MSIX:
		return qs->msix_vector;
	case C_Q_ENABLE:
		return qs->enabled;
	case C_Q_NOFF:
		return d->st.queue_select;
	case C_Q_DESCLO:
		return (uint32_t)qs->desc_gpa;
	case C_Q_DESCHI:
		return qs->desc_gpa >> 32;
	case C_Q_AVAILLO:
		return (uint32_t)qs->avail_gpa;
	case C_Q_AVAILHI:
		return qs->avail_gpa >> 32;
	case C_Q_USEDLO:
		return (uint32_t)qs->used_gpa;
	case C_Q_USEDHI:
		return qs->used_gpa >> 32;
	}
	return 0;
}

static void virtio_set_status(struct virtio_dev *d, uint8_t v)
{
	uint64_t generic = d->st.driver_features & transport_features;

	if (v == 0) {
		/*
		 * In-flight requests must end before the reset does, and only the
		 * main thread drives the backends: finish it there. The driver
		 * polls status until it reads 0 (virtio 1.x, 4.1.4.3.2).
		 */
		uint64_t one = 1;

		d->reset_pending = true;
		if (write(d->reset_efd, &one, sizeof(one)) < 0) {
			/* counter saturated: a reset is pending anyway */
		}
		return;
	}
	/* NEEDS_RESET is the device's to set (and means broken), never the driver's. */
	v = (v & ~VIRTIO_STATUS_NEEDS_RESET) | (d->st.status & VIRTIO_STATUS_NEEDS_RESET);
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(d->st.status & VIRTIO_STATUS_FEATURES_OK)) {
		/* Accept only what we offered, and only the modern interface. */
		if ((d->st.driver_features & ~d->device_features) ||
		    !(generic & (1ULL << VIRTIO_F_VERSION_1)))
			v &= ~VIRTIO_STATUS_FEATURES_OK;
	}
	/* No DRIVER_OK before FEATURES_OK (3.1.1): the device would run unnegotiated. */
	if (!(v & VIRTIO_STATUS_FEATURES_OK))
		v &= ~VIRTIO_STATUS_DRIVER_OK;
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(d->st.status & VIRTIO_STATUS_DRIVER_OK)) {
		unsigned int q;

		d->st.status = v;
		if (d->ops->activate && d->ops->activate(d)) {
			virtio_dev_set_broken(d, "device could not start");
			return;
		}
		/*
		 * Some drivers queue buffers and kick before DRIVER_OK (Linux's
		 * balloon does with its first stats buffer): serve what is there,
		 * on the main thread like any kick.
		 */
		for (q = 0; q < d->ops->nqueues; q++) {
			uint64_t one = 1;

			if (d->vq[q].desc && write(d->kick_efd[q], &one, sizeof(one)) < 0) {
				/* counter saturated: a kick is pending anyway */
			}
		}
		return;
	}
	d->st.status = v;
}

static void queue_enable(struct virtio_dev *d, unsigned int q)
{
	struct virtq_state *qs = &d->st.q[q];

	if (qs->enabled)
		return;
	qs->last_avail_idx = qs->used_idx = 0;
	if (vq_enable(&d->vq[q], qs, &d->vm->mem, virtio_has_feature(d, VIRTIO_F_EVENT_IDX),
		      virtio_has_feature(d, VIRTIO_F_INDIRECT_DESC))) {
		virtio_dev_set_broken(d, "queue rings outside guest RAM or misaligned");
		return;
	}
	qs->enabled = 1;
}

static void common_write(struct virtio_dev *d, unsigned int off, uint32_t v)
{
	struct virtq_state *qs = selected_queue(d);

	switch (off) {
	case C_DFSELECT:
		d->st.device_feature_select = v;
		return;
	case C_GFSELECT:
		d->st.driver_feature_select = v;
		return;
	case C_GF:
		if (d->st.driver_feature_select < 2 &&
		    !(d->st.status & VIRTIO_STATUS_FEATURES_OK)) {
			unsigned int sh = 32 * d->st.driver_feature_select;

			d->st.driver_features &= ~(0xffffffffULL << sh);
			d->st.driver_features |= (uint64_t)v << sh;
		}
		return;
	case C_MSIX:
		d->st.msix_config = v < d->msix.nvec ? v : MSIX_NO_VECTOR;
		return;
	case C_STATUS:
		virtio_set_status(d, v);
		return;
	case C_Q_SELECT:
		d->st.queue_select = v;
		return;
	}
	/* Queue registers: ignored for absent queues and once a queue runs. */
	if (!qs || (qs->enabled && off != C_Q_MSIX))
		return;
	switch (off) {
	case C_Q_SIZE:
		if (v && v <= d->ops->queue_size && !(v & (v - 1)))
			qs->size = v;
		break;
	case C_Q_MSIX:
		qs->msix_vector = v < d->msix.nvec ? v : MSIX_NO_VECTOR;
		break;
	case C_Q_ENABLE:
		if (v == 1)
			queue_enable(d, d->st.queue_select);
		break;
	case C_Q_DESCLO:
		qs->desc_gpa = (qs->desc_gpa & ~0xffffffffULL) | v;
		break;
	case C_Q_DESCHI:
		qs->desc_gpa = (qs->desc_gpa & 0xffffffffULL) | (uint64_t)v << 32;
		break;
	case C_Q_AVAILLO:
		qs->avail_gpa = (qs->avail_gpa & ~0xffffffffULL) | v;
		break;
	case C_Q_AVAILHI:
		qs->avail_gpa = (qs->avail_gpa & 0xffffffffULL) | (uint64_t)v << 32;
		break;
	case C_Q_USEDLO:
		qs->used_gpa = (qs->used_gpa & ~0xffffffffULL) | v;
		break;
	case C_Q_USEDHI:
		qs->used_gpa = (qs->used_gpa & 0xffffffffULL) | (uint64_t)v << 32;
		break;
	}
}

/* Field widths of the common configuration, for access checks. */
static unsigned int common_width(unsigned int off)
{
	if (off == C_STATUS || off == C_CFGGEN)
		return 1;
	if (off >= C_MSIX && off < C_STATUS)
		return 2;
	if (off >= C_Q_SELECT && off < C_Q_DESCLO)
		return 2;
	return 4;
}

/* ---- the BAR ------------------------------------------------------------ */

static void virtio_bar_read(void *opaque, uint64_t off, uint8_t *data, unsigned int len)
{
	struct virtio_dev *d = opaque;
	uint32_t v = 0;

	memset(data, 0, len);
	if (off >= MSIX_TABLE_OFF && off < MSIX_TABLE_OFF + REGION_LEN * 2) {
		msix_table_read(&d->msix, off - MSIX_TABLE_OFF, data, len);
		return;
	}
	if (off >= MSIX_PBA_OFF && off < MSIX_PBA_OFF + REGION_LEN) {
		msix_pba_read(&d->msix, off - MSIX_PBA_OFF, data, len);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (off < COMMON_OFF + COMMON_LEN) {
		/* Natural-width accesses only; anything else reads as zero. */
		if (common_width(off) == len)
			v = common_read(d, off);
		memcpy(data, &v, MIN(len, 4u));
	} else if (off == ISR_OFF) {
		data[0] = d->st.isr; /* reading acknowledges, and drops INTx */
		d->st.isr = 0;
		pci_set_intx(&d->pci, false);
	} else if (off >= DEVCFG_OFF && off < DEVCFG_OFF + d->ops->config_size &&
		   len <= d->ops->config_size - (off - DEVCFG_OFF) && d->ops->config_read) {
		d->ops->config_read(d, off - DEVCFG_OFF, data, len);
	}
	pthread_mutex_unlock(&d->lock);
}

static void virtio_bar_write(void *opaque, uint64_t off, const uint8_t *data, unsigned int len)
{
	struct virtio_dev *d = opaque;
	uint32_t v = 0;

	if (off >= MSIX_TABLE_OFF && off < MSIX_TABLE_OFF + REGION_LEN * 2) {
		msix_table_write(&d->msix, off - MSIX_TABLE_OFF, data, len);
		return;
	}
	if (off >= NOTIFY_OFF && off < NOTIFY_OFF + d->ops->nqueues * NOTIFY_MULT) {
		/* No ioeventfd (or not yet bound): same path as one. */
		uint64_t one = 1;
		unsigned int q = (off - NOTIFY_OFF) / NOTIFY_MULT;

		if (write(d->kick_efd[q], &one, sizeof(one)) < 0) {
			/* counter saturated: a kick is pending anyway */
		}
		return;
	}
	memcpy(&v, data, MIN(len, 4u));
	pthread_mutex_lock(&d->lock);
	if (off < COMMON_OFF + COMMON_LEN) {
		if (common_width(off) == len)
			common_write(d, off, v);
	} else if (off >= DEVCFG_OFF && off < DEVCFG_OFF + d->ops->config_size &&
		   len <= d->ops->config_size - (off - DEVCFG_OFF) && d->ops->config_write) {
		d->ops->config_write(d, off - DEVCFG_OFF, data, len);
	}
	pthread_mutex_unlock(&d->lock);
}

static const struct bus_ops virtio_bar_ops = {
	.read = virtio_bar_read,
	.write = virtio_bar_write,
};

/* ---- PCI config space ---------------------------------------------------- */

static unsigned int virtio_add_cap(struct pci_dev *p, uint8_t type, uint32_t off, uint32_t len,
				   unsigned int extra)
{
	unsigned int c = pci_dev_add_cap(p, PCI_CAP_ID_VNDR, 16 + extra);

	if (!c)
		return 0;
	p->cfg[c + 2] = 16 + extra; /* cap_len */
	p->cfg[c + 3] = type;
	p->cfg[c + 4] = 0; /* BAR 0 */
	pci_set_u32(p, c + 8, off);
	pci_set_u32(p, c + 12, len);
	return c;
}

/* ---- VIRTIO_PCI_CAP_PCI_CFG: the BAR through config space (4.1.4.9) ----- */

/* Does config access [off, off + len) touch pci_cfg_data? */
static bool pci_cfg_window(const struct virtio_dev *d, unsigned int off, unsigned int len)
{
	unsigned int w = d->pci_cfg_cap + PCI_CFG_DATA;

	return d->pci_cfg_cap && off < w + 4 && w < off + len;
}

/*
 * Where the driver pointed the window, if it may point there: BAR 0, length
 * 1, 2 or 4, offset aligned to it and inside the BAR. The fields are the
 * guest's to write (another vCPU may be writing them): read under the bus
 * lock, and anything else means no access. A capability absent from the
 * loaded config (an older layout) never matches.
 */
static bool pci_cfg_target(struct virtio_dev *d, uint32_t *off, unsigned int *len)
{
	struct pci_dev *p = &d->pci;
	unsigned int c = d->pci_cfg_cap;
	uint32_t o, l;
	bool ok;

	pthread_mutex_lock(&p->bus->lock);
	ok = p->cfg[c] == PCI_CAP_ID_VNDR && p->cfg[c + 3] == CAP_PCI_CFG && p->cfg[c + 4] == 0;
	o = pci_get_u32(p, c + 8);
	l = pci_get_u32(p, c + 12);
	pthread_mutex_unlock(&p->bus->lock);
	if (!ok || (l != 1 && l != 2 && l != 4) || o % l || o >= BAR_SIZE || l > BAR_SIZE - o)
		return false;
	*off = o;
	*len = l;
	return true;
}

/* A read of pci_cfg_data reads the BAR into it first (zeros if misdirected). */
static void virtio_config_read(struct pci_dev *p, unsigned int off, unsigned int len)
{
	struct virtio_dev *d = p->opaque;
	uint8_t data[4] = { 0 };
	unsigned int blen;
	uint32_t boff;

	if (!pci_cfg_window(d, off, len))
		return;
	if (pci_cfg_target(d, &boff, &blen))
		virtio_bar_read(d, boff, data, blen);
	pthread_mutex_lock(&p->bus->lock);
	memcpy(p->cfg + d->pci_cfg_cap + PCI_CFG_DATA, data, sizeof(data));
	pthread_mutex_unlock(&p->bus->lock);
}

/* A write to pci_cfg_data writes its first cap.length bytes to the BAR. */
static void pci_cfg_written(struct virtio_dev *d)
{
	struct pci_dev *p = &d->pci;
	uint8_t data[4];
	unsigned int blen;
	uint32_t boff;

	if (!pci_cfg_target(d, &boff, &blen))
		return;
	pthread_mutex_lock(&p->bus->lock);
	memcpy(data, p->cfg + d->pci_cfg_cap + PCI_CFG_DATA, sizeof(data));
	pthread_mutex_unlock(&p->bus->lock);
	virtio_bar_write(d, boff, data, blen);
}

static void virtio_config_written(struct pci_dev *p, unsigned int off, unsigned int len)
{
	struct virtio_dev *d = p->opaque;

	if (pci_cfg_window(d, off, len))
		pci_cfg_written(d);
	msix_config_written(&d->msix);
	/* MSI-X enable switches between MSI-X and INTx. */
	pthread_mutex_lock(&d->lock);
	virtio_intx_update(d);
	pthread_mutex_unlock(&d->lock);
}

static void virtio_pci_unrealize(void *opaque)
{
	struct virtio_dev *d = opaque;
	unsigned int q;

	pci_dev_unregister(&d->pci);
	for (q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		virtio_kick_unassign(d, q);
		if (d->kick_efd[q] >= 0) {
			if (d->vm->loop)
				loop_del(d->vm->loop, d->kick_efd[q]);
			close(d->kick_efd[q]);
		}
	}
	if (d->reset_efd >= 0) {
		if (d->vm->loop)
			loop_del(d->vm->loop, d->reset_efd);
		close(d->reset_efd);
	}
	msix_destroy(&d->msix);
	if (d->ops->unrealize)
		d->ops->unrealize(d);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* Hand every running queue to the main loop, as if the driver had kicked. */
static void virtio_kick_all(struct virtio_dev *d)
{
	unsigned int q;

	for (q = 0; q < d->ops->nqueues; q++) {
		uint64_t one = 1;

		if (d->vq[q].desc && write(d->kick_efd[q], &one, sizeof(one)) < 0) {
			/* counter saturated: a kick is pending anyway */
		}
	}
}

static bool virtq_state_is_reset(const struct virtq_state *qs)
{
	static const struct virtq_state absent = { .msix_vector = MSIX_NO_VECTOR };

	return !memcmp(qs, &absent, sizeof(*qs));
}

/*
 * Restore is construction from validated state: every check passes before
 * anything is applied. What the driver acked must be what we offer, queues
 * must fit and sit in RAM, nothing may be left in flight (quiesce completes
 * or gives back every request), config space may differ only in
 * guest-writable bits. Then the host side follows: BARs, MSI routes, rings.
 */
static int virtio_state_post_load(void *opaque)
{
	struct virtio_dev *d = opaque;
	const struct virtio_state *st = &d->st;
	bool broken = st->status & VIRTIO_STATUS_NEEDS_RESET;
	unsigned int q;

	if (st->status & VIRTIO_STATUS_FEATURES_OK) {
		if ((st->driver_features & ~d->device_features) ||
		    !(st->driver_features & (1ULL << VIRTIO_F_VERSION_1)))
			return -EINVAL;
	} else if (st->status & VIRTIO_STATUS_DRIVER_OK) {
		return -EINVAL; /* virtio_set_status never lets this happen */
	}
	if ((st->isr & ~3u) || st->pad)
		return -EINVAL;
	/* Config as registered, or as qlite laid it out before INTx and PCI_CFG. */
	if ((pci_dev_check_config(&d->pci) && pci_dev_check_config_as(&d->pci, d->cfg_old)) ||
	    msix_state_check(&d->msix) ||
	    (st->msix_config != MSIX_NO_VECTOR && st->msix_config >= d->msix.nvec))
		return -EINVAL;
	for (q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		struct virtq_state *qs = &d->st.q[q];
		uint16_t n = qs->size;
		struct virtq probe;

		if (q >= d->ops->nqueues) {
			if (!virtq_state_is_reset(qs))
				return -EINVAL;
			continue;
		}
		if (qs->msix_vector != MSIX_NO_VECTOR && qs->msix_vector >= d->msix.nvec)
			return -EINVAL;
		if (!n || n > d->ops->queue_size || (n & (n - 1)) || qs->enabled > 1 ||
		    qs->pad[0] || qs->pad[1] || qs->pad[2])
			return -EINVAL;
		if (!qs->enabled) {
			/* Indices start at 0 when a queue is enabled, and reset clears them. */
			if (qs->last_avail_idx || qs->used_idx)
				return -EINVAL;
			continue;
		}
		/*
		 * A working device holds no request across a save; one that went to
		 * NEEDS_RESET may have dropped the request that broke it.
		 */
		if (broken ? (uint16_t)(qs->last_avail_idx - qs->used_idx) > n :
			     qs->last_avail_idx != qs->used_idx)
			return -EINVAL;
		if (vq_enable(&probe, qs, &d->vm->mem, virtio_has_feature(d, VIRTIO_F_EVENT_IDX),
			      virtio_has_feature(d, VIRTIO_F_INDIRECT_DESC)))
			return -EINVAL; /* rings misaligned or outside guest RAM */
	}

	d->broken = broken;
	d->reset_pending = false;
	for (q = 0; q < d->ops->nqueues; q++) {
		if (!st->q[q].enabled || broken)
			vq_disable(&d->vq[q]);
		else
			vq_enable(&d->vq[q], &d->st.q[q], &d->vm->mem,
				  virtio_has_feature(d, VIRTIO_F_EVENT_IDX),
				  virtio_has_feature(d, VIRTIO_F_INDIRECT_DESC));
	}
	pci_dev_refresh(&d->pci);
	msix_state_loaded(&d->msix);
	/* The line is derived state: ISR, MSI-X enable, pin, Interrupt Disable. */
	pci_set_intx(&d->pci, st->isr && !msix_enabled(&d->msix));
	return 0;
}

/* The config space and the MSI-X table are device state too. */
static const struct state_field virtio_fields[] = {
	STATE_FIELD(struct virtio_dev, st),
	STATE_FIELD(struct virtio_dev, pci.cfg),
	STATE_FIELD(struct virtio_dev, msix.entry),
	STATE_FIELD(struct virtio_dev, msix.pba),
};

static const struct state_desc virtio_state = {
	.name = "virtio-pci",
	.version = 1,
	.fields = virtio_fields,
	.nr_fields = ARRAY_SIZE(virtio_fields),
	.post_load = virtio_state_post_load,
};

static void virtio_pci_reset(void *opaque)
{
	struct virtio_dev *d = opaque;

	pthread_mutex_lock(&d->lock);
	virtio_reset_locked(d);
	pthread_mutex_unlock(&d->lock);
	msix_reset(&d->msix);
}

/*
 * Queue work stops first (late kicks, completions, host input wait), then
 * the model drains its backend and gives back what it holds, then a reset
 * the driver asked for finishes: saved state never has one half done (the
 * driver would poll for status 0 forever).
 */
static int virtio_pci_quiesce(void *opaque)
{
	struct virtio_dev *d = opaque;
	int ret;

	pthread_mutex_lock(&d->lock);
	d->quiesced = true;
	pthread_mutex_unlock(&d->lock);
	ret = d->ops->quiesce ? d->ops->quiesce(d) : 0;
	if (ret && d->ops->resume)
		d->ops->resume(d); /* undo a partial quiesce */
	pthread_mutex_lock(&d->lock);
	if (ret) {
		d->quiesced = false;
		virtio_kick_all(d);
	} else if (d->reset_pending) {
		virtio_reset_locked(d);
		d->reset_pending = false;
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/*
 * Every running queue gets a kick: requests queued while we were quiesced
 * (or, after a restore, given back at save time) are served now.
 */
static void virtio_pci_resume(void *opaque)
{
	struct virtio_dev *d = opaque;

	pthread_mutex_lock(&d->lock);
	d->quiesced = false;
	pthread_mutex_unlock(&d->lock);
	if (d->ops->resume)
		d->ops->resume(d);
	pthread_mutex_lock(&d->lock);
	virtio_kick_all(d);
	pthread_mutex_unlock(&d->lock);
}

static const struct device_class virtio_pci_class = {
	.name = "virtio-pci",
	.state = &virtio_state,
	.reset = virtio_pci_reset,
	.quiesce = virtio_pci_quiesce,
	.resume = virtio_pci_resume,
	.unrealize = virtio_pci_unrealize,
};

/* The model's class only describes its state: the transport drives the rest. */
static bool virtio_model_class_ok(const struct device_class *cls)
{
	return cls && !device_class_check(cls) && !cls->reset && !cls->quiesce && !cls->resume &&
	       !cls->unrealize;
}

/*
 * On failure @priv has been released through ops->unrealize, or will be
 * with the VM's device list once the transport was registered.
 */
int virtio_pci_create(struct vm *vm, const struct virtio_dev_ops *ops, void *priv,
		      struct virtio_dev **out)
{
	struct virtio_dev *d;
	struct kick_ctx *kc;
	unsigned int q, c;
	int ret;

	d = calloc(1, sizeof(*d) + VIRTIO_MAX_QUEUES * sizeof(*kc));
	if (!d) {
		struct virtio_dev tmp = { .ops = ops, .priv = priv };

		if (ops->unrealize)
			ops->unrealize(&tmp);
		return -ENOMEM;
	}
	kc = (struct kick_ctx *)(d + 1);
	d->ops = ops;
	d->priv = priv;
	d->vm = vm;
	d->device_features = ops->features | transport_features;
	pthread_mutex_init(&d->lock, NULL);
	for (q = 0; q < VIRTIO_MAX_QUEUES; q++)
		d->kick_efd[q] = -1;
	d->reset_efd = -1;
	if (ops->nqueues == 0 || ops->nqueues > VIRTIO_MAX_QUEUES || !vm->pci || !vm->loop ||
	    !virtio_model_class_ok(ops->cls)) {
		ret = -EINVAL;
		goto err;
	}
	virtio_reset_locked(d);

	pci_dev_init(&d->pci, ops->name, VIRTIO_PCI_VENDOR, VIRTIO_PCI_DEVICE_BASE + ops->device_id,
		     ops->class_code, 1 /* modern-only */);
	pci_set_u16(&d->pci, PCI_SUBSYSTEM_VENDOR_ID, VIRTIO_PCI_VENDOR);
	pci_set_u16(&d->pci, PCI_SUBSYSTEM_ID, 0x40);
	d->pci.cfg[PCI_INTERRUPT_PIN] = PCI_INTERRUPT_PIN_A;
	d->pci.opaque = d;
	d->pci.config_written = virtio_config_written;
	d->pci.config_read = virtio_config_read;
	d->pci.bar_moved = virtio_bar_moved;
	pci_dev_set_bar(&d->pci, 0, BAR_SIZE, &virtio_bar_ops, d);
	virtio_add_cap(&d->pci, CAP_COMMON, COMMON_OFF, COMMON_LEN, 0);
	virtio_add_cap(&d->pci, CAP_ISR, ISR_OFF, 1, 0);
	if (ops->config_size)
		virtio_add_cap(&d->pci, CAP_DEVICE, DEVCFG_OFF, ops->config_size, 0);
	c = virtio_add_cap(&d->pci, CAP_NOTIFY, NOTIFY_OFF, ops->nqueues * NOTIFY_MULT, 4);
	if (c)
		pci_set_u32(&d->pci, c + 16, NOTIFY_MULT);
	/* One vector per queue plus one for configuration changes. */
	ret = msix_init(&d->msix, &d->pci, ops->nqueues + 1, 0, MSIX_TABLE_OFF, MSIX_PBA_OFF);
	if (ret)
		goto err;
	/* Last, so the layout before it is the older one (cfg_old). */
	c = virtio_add_cap(&d->pci, CAP_PCI_CFG, 0, 0, PCI_CFG_CAP_LEN - 16);
	if (!c) {
		ret = -ENOSPC;
		goto err;
	}
	d->pci_cfg_cap = c;
	d->pci.wmask[c + 4] = 0xff; /* cap.bar */
	memset(d->pci.wmask + c + 8, 0xff, 12); /* cap.offset, cap.length, pci_cfg_data */
	for (q = 0; q < ops->nqueues; q++) {
		d->kick_efd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		kc[q] = (struct kick_ctx){ d, q };
		if (d->kick_efd[q] < 0 ||
		    loop_add(vm->loop, d->kick_efd[q], EPOLLIN, virtio_on_kick, &kc[q])) {
			ret = -errno;
			goto err;
		}
	}
	d->reset_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->reset_efd < 0 || loop_add(vm->loop, d->reset_efd, EPOLLIN, virtio_on_reset, d)) {
		ret = -errno;
		goto err;
	}
	ret = vm_add_device(vm, &virtio_pci_class, d);
	if (ret)
		goto err;
	/*
	 * From here on failures leave d (and priv) to the VM's device list.
	 * The model comes right after its transport: teardown runs backwards,
	 * so its entry goes first (no hooks) and the transport then frees priv.
	 */
	ret = vm_add_device(vm, ops->cls, priv);
	if (!ret)
		ret = pci_dev_register(vm->pci, &d->pci);
	if (ret)
		return ret;
	/*
	 * The layout saved by a qlite without INTx and PCI_CFG (same section
	 * version): no interrupt pin, no PCI_CFG capability on the list. Such a
	 * state loads as it was: the guest saw neither, and keeps not seeing them.
	 */
	memcpy(d->cfg_old, d->pci.cfg_init, PCI_CFG_SIZE);
	d->cfg_old[PCI_INTERRUPT_PIN] = 0;
	d->cfg_old[PCI_CAPABILITY_LIST] = d->cfg_old[d->pci_cfg_cap + 1];
	memset(d->cfg_old + d->pci_cfg_cap, 0, PCI_CFG_CAP_LEN);
	*out = d;
	return 0;
err:
	virtio_pci_unrealize(d);
	return ret;
}
