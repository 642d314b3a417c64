// SPDX-License-Identifier: MIT
/* MSI-X capability, table/PBA and irqfd delivery (see include/qlite/msix.h). */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "qlite/msix.h"
#include "qlite/pci.h"
#include "qlite/vm.h"

#define PCI_CAP_ID_MSIX 0x11
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_MASKALL 0x4000
#define MSIX_VEC_MASKED 0x1

int msix_init(struct msix *m, struct pci_dev *d, unsigned int nvec, int bar, uint32_t table_off,
	      uint32_t pba_off)
{
	unsigned int i;

	if (nvec == 0 || nvec > MSIX_MAX_VECTORS)
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	m->dev = d;
	m->nvec = nvec;
	pthread_mutex_init(&m->lock, NULL);
	for (i = 0; i < nvec; i++)
		m->vec[i].efd = -1; /* so a failure below closes only what it opened */
	for (i = 0; i < nvec; i++) {
		m->vec[i].gsi = -1;
		m->entry[i].ctrl = MSIX_VEC_MASKED;
		m->vec[i].efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (m->vec[i].efd < 0) {
			msix_destroy(m);
			return -errno;
		}
	}
	m->cap = pci_dev_add_cap(d, PCI_CAP_ID_MSIX, 12);
	if (!m->cap) {
		msix_destroy(m);
		return -ENOSPC;
	}
	pci_set_u16(d, m->cap + 2, nvec - 1);
	pci_set_u32(d, m->cap + 4, table_off | bar);
	pci_set_u32(d, m->cap + 8, pba_off | bar);
	d->wmask[m->cap + 3] = (MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL) >> 8;
	return 0;
}

void msix_destroy(struct msix *m)
{
	unsigned int i;

	if (!m->nvec)
		return;
	for (i = 0; i < m->nvec; i++) {
		if (m->vec[i].routed) {
			struct kvm_irqfd irqfd = { .fd = m->vec[i].efd, .gsi = m->vec[i].gsi,
						   .flags = KVM_IRQFD_FLAG_DEASSIGN };

			ioctl(m->dev->bus->vm->vm_fd, KVM_IRQFD, &irqfd);
		}
		if (m->vec[i].gsi >= 0)
			vm_msi_route_free(m->dev->bus->vm, m->vec[i].gsi);
		if (m->vec[i].efd >= 0)
			close(m->vec[i].efd);
	}
	m->nvec = 0;
	pthread_mutex_destroy(&m->lock);
}

static uint16_t msix_ctrl(struct msix *m)
{
	return pci_get_u16(m->dev, m->cap + 2);
}

bool msix_enabled(struct msix *m)
{
	return msix_ctrl(m) & MSIX_CTRL_ENABLE;
}

static bool msix_masked(struct msix *m, unsigned int v)
{
	uint16_t ctrl = msix_ctrl(m);

	return !(ctrl & MSIX_CTRL_ENABLE) || (ctrl & MSIX_CTRL_MASKALL) ||
	       (m->entry[v].ctrl & MSIX_VEC_MASKED);
}

/* Caller holds the lock. Point vector @v's GSI at its current message. */
static void msix_route(struct msix *m, unsigned int v)
{
	struct msix_vector *vec = &m->vec[v];
	struct msix_entry *ent = &m->entry[v];
	struct vm *vm = m->dev->bus->vm;

	if (vm_msi_route_set(vm, &vec->gsi, ent->addr_lo, ent->addr_hi, ent->data)) {
		log_msg("%s: cannot route MSI-X vector %u", m->dev->name, v);
		return;
	}
	if (!vec->routed) {
		struct kvm_irqfd irqfd = { .fd = vec->efd, .gsi = vec->gsi };

		if (ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0) {
			log_msg("%s: KVM_IRQFD: %s", m->dev->name, strerror(errno));
			return;
		}
		vec->routed = true;
	}
}

/* Caller holds the lock: deliver vector @v's latched interrupt if now unmasked. */
static void msix_deliver_pending(struct msix *m, unsigned int v)
{
	uint64_t one = 1;

	if (!(m->pba[v / 64] & (1ULL << (v % 64))) || msix_masked(m, v))
		return;
	m->pba[v / 64] &= ~(1ULL << (v % 64));
	if (m->vec[v].routed && write(m->vec[v].efd, &one, sizeof(one)) < 0) {
		/* counter full: an interrupt is pending anyway */
	}
}

void msix_table_read(struct msix *m, uint64_t off, uint8_t *data, unsigned int len)
{
	unsigned int v = off / MSIX_ENTRY_SIZE, word = (off % MSIX_ENTRY_SIZE) / 4;
	uint32_t w[4];

	memset(data, 0xff, len);
	/* Dword or qword accesses within one entry, as the spec allows. */
	if (v >= m->nvec || (len != 4 && len != 8) || off % len || (len == 8 && word % 2))
		return;
	pthread_mutex_lock(&m->lock);
	w[0] = m->entry[v].addr_lo;
	w[1] = m->entry[v].addr_hi;
	w[2] = m->entry[v].data;
	w[3] = m->entry[v].ctrl;
	memcpy(data, &w[word], len);
	pthread_mutex_unlock(&m->lock);
}

void msix_table_write(struct msix *m, uint64_t off, const uint8_t *data, unsigned int len)
{
	unsigned int v = off / MSIX_ENTRY_SIZE, word = (off % MSIX_ENTRY_SIZE) / 4, i;
	uint32_t w[2] = { 0, 0 };

	if (v >= m->nvec || (len != 4 && len != 8) || off % len || (len == 8 && word % 2))
		return;
	memcpy(w, data, len);
	pthread_mutex_lock(&m->lock);
	for (i = 0; i < len / 4; i++) {
		struct msix_entry *ent = &m->entry[v];

		switch (word + i) {
		case 0:
			ent->addr_lo = w[i];
			break;
		case 1:
			ent->addr_hi = w[i];
			break;
		case 2:
			ent->data = w[i];
			break;
		case 3:
			ent->ctrl = w[i] & MSIX_VEC_MASKED;
			break;
		}
	}
	/* Route whenever the vector is live; messages may change while unmasked. */
	if (!msix_masked(m, v))
		msix_route(m, v);
	msix_deliver_pending(m, v);
	pthread_mutex_unlock(&m->lock);
}

void msix_pba_read(struct msix *m, uint64_t off, uint8_t *data, unsigned int len)
{
	memset(data, 0, len);
	if (off + len > sizeof(m->pba))
		return;
	pthread_mutex_lock(&m->lock);
	memcpy(data, (uint8_t *)m->pba + off, len);
	pthread_mutex_unlock(&m->lock);
}

void msix_config_written(struct msix *m)
{
	unsigned int v;

	pthread_mutex_lock(&m->lock);
	for (v = 0; v < m->nvec; v++) {
		if (!msix_masked(m, v))
			msix_route(m, v);
		msix_deliver_pending(m, v);
	}
	pthread_mutex_unlock(&m->lock);
}

void msix_notify(struct msix *m, unsigned int v)
{
	uint64_t one = 1;

	if (v >= m->nvec)
		return;
	pthread_mutex_lock(&m->lock);
	if (msix_masked(m, v) || !m->vec[v].routed) {
		if (msix_enabled(m))
			m->pba[v / 64] |= 1ULL << (v % 64);
	} else if (write(m->vec[v].efd, &one, sizeof(one)) < 0) {
		/* counter full: an interrupt is pending anyway */
	}
	pthread_mutex_unlock(&m->lock);
}

void msix_reset(struct msix *m)
{
	unsigned int v;

	pthread_mutex_lock(&m->lock);
	pci_set_u16(m->dev, m->cap + 2, m->nvec - 1);
	for (v = 0; v < m->nvec; v++) {
		m->entry[v].addr_lo = m->entry[v].addr_hi = m->entry[v].data = 0;
		m->entry[v].ctrl = MSIX_VEC_MASKED;
	}
	memset(m->pba, 0, sizeof(m->pba));
	pthread_mutex_unlock(&m->lock);
}

int msix_state_check(const struct msix *m)
{
	static const struct msix_entry unused;
	unsigned int v;

	for (v = 0; v < MSIX_MAX_VECTORS; v++)
		if (v < m->nvec ? m->entry[v].ctrl & ~MSIX_VEC_MASKED :
				  !!memcmp(&m->entry[v], &unused, sizeof(unused)))
			return -EINVAL;
	for (v = m->nvec; v < 64 * ARRAY_SIZE(m->pba); v++)
		if (m->pba[v / 64] & (1ULL << (v % 64)))
			return -EINVAL;
	return 0;
}

void msix_state_loaded(struct msix *m)
{
	unsigned int v;

	pthread_mutex_lock(&m->lock);
	for (v = 0; v < m->nvec; v++) {
		m->entry[v].ctrl &= MSIX_VEC_MASKED;
		if (!msix_masked(m, v))
			msix_route(m, v);
		msix_deliver_pending(m, v); /* latched before the save, unmasked now */
	}
	pthread_mutex_unlock(&m->lock);
}
