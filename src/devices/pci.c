// SPDX-License-Identifier: MIT
/* PCI bus 0 with configuration mechanism #1 (see include/qlite/pci.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/device.h"
#include "qlite/pci.h"
#include "qlite/vm.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CFG_ENABLE 0x80000000u

void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
		  uint32_t class_code, uint8_t revision)
{
	memset(d->cfg, 0, sizeof(d->cfg));
	memset(d->wmask, 0, sizeof(d->wmask));
	d->name = name;
	pci_set_u16(d, PCI_VENDOR_ID, vendor);
	pci_set_u16(d, PCI_DEVICE_ID, device);
	d->cfg[PCI_REVISION_ID] = revision;
	d->cfg[PCI_CLASS_PROG] = class_code & 0xff;
	pci_set_u16(d, PCI_CLASS_PROG + 1, class_code >> 8);
	/* Memory decode, bus mastering and INTx-disable are the guest's to set. */
	pci_set_u16(d, PCI_COMMAND, 0);
	d->wmask[PCI_COMMAND] = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	d->wmask[PCI_COMMAND + 1] = PCI_COMMAND_INTX_DISABLE >> 8;
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
	d->next_cap = 0x40;
}

void pci_dev_set_bar(struct pci_dev *d, int bar, uint64_t size, const struct bus_ops *ops,
		     void *opaque)
{
	uint32_t mask = ~(uint32_t)(size - 1) & ~0xfu;

	d->bars[bar] = (struct pci_bar){ .size = size, .ops = ops, .opaque = opaque };
	/* Address bits above the size are writable; the low bits say "32-bit mem". */
	pci_set_u32(d, PCI_BAR0 + 4 * bar, 0);
	d->wmask[PCI_BAR0 + 4 * bar] = mask & 0xff;
	d->wmask[PCI_BAR0 + 4 * bar + 1] = (mask >> 8) & 0xff;
	d->wmask[PCI_BAR0 + 4 * bar + 2] = (mask >> 16) & 0xff;
	d->wmask[PCI_BAR0 + 4 * bar + 3] = mask >> 24;
}

unsigned int pci_dev_add_cap(struct pci_dev *d, uint8_t id, unsigned int len)
{
	unsigned int off = ALIGN_UP((unsigned int)d->next_cap, 4u);

	if (off + len > PCI_CFG_SIZE || len < 2)
		return 0;
	d->cfg[off] = id;
	d->cfg[off + 1] = d->cfg[PCI_CAPABILITY_LIST]; /* push on the list head */
	d->cfg[PCI_CAPABILITY_LIST] = off;
	pci_set_u16(d, PCI_STATUS, pci_get_u16(d, PCI_STATUS) | PCI_STATUS_CAP_LIST);
	d->next_cap = off + len;
	return off;
}

/* Caller holds the bus lock. Map or unmap BAR @i to match config space. */
static void pci_bar_update(struct pci_dev *d, int i)
{
	struct pci_bar *bar = &d->bars[i];
	struct bus *mmio = &d->bus->vm->mmio;
	uint64_t addr = pci_get_u32(d, PCI_BAR0 + 4 * i) & ~0xfULL;
	bool enable = pci_get_u16(d, PCI_COMMAND) & PCI_COMMAND_MEMORY;
	/* Never over RAM, the LAPIC/IOAPIC, or wrapping: such a BAR stays unmapped. */
	bool valid = addr >= PCI_MMIO_WINDOW_START && addr + bar->size <= PCI_MMIO_WINDOW_END;

	if (!bar->size)
		return;
	if (bar->mapped && (!enable || addr != bar->addr)) {
		bus_unregister(mmio, bar->addr);
		bar->mapped = false;
		if (d->bar_moved)
			d->bar_moved(d, i);
	}
	if (!bar->mapped && enable && valid) {
		if (bus_register(mmio, addr, bar->size, bar->ops, bar->opaque, d->name) == 0) {
			bar->addr = addr;
			bar->mapped = true;
			if (d->bar_moved)
				d->bar_moved(d, i);
		}
	}
}

/*
 * Caller holds the bus lock. Count @d on its line if it should drive it and
 * tell KVM when the line (the OR of the slots sharing it) changes level.
 *
 * KVM_IRQ_LINE rather than an irqfd with KVM_IRQFD_FLAG_RESAMPLE: reading
 * ISR and setting Interrupt Disable must drop the line at once, which an
 * irqfd cannot (it only raises; KVM lowers at EOI and asks us to re-raise),
 * and the lines are shared, so the bus ORs levels itself either way (KVM
 * keeps one userspace level per GSI). INTx is the fallback when MSI-X is
 * off: an ioctl per edge costs nothing that matters there.
 */
static void pci_intx_update(struct pci_dev *d)
{
	struct pci_bus *b = d->bus;
	uint8_t pin = d->cfg[PCI_INTERRUPT_PIN];
	bool assert = d->intx_pending && pin >= 1 && pin <= 4 &&
		      !(pci_get_u16(d, PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE);
	uint32_t *slots;
	bool before;

	if (!b || b->devs[d->slot] != d || assert == d->intx_asserted)
		return;
	if (assert)
		d->intx_line = pci_intx_gsi(d->slot, pin) - PCI_INTX_GSI_BASE;
	slots = &b->intx_slots[d->intx_line];
	before = *slots;
	if (assert)
		*slots |= 1u << d->slot;
	else
		*slots &= ~(1u << d->slot);
	d->intx_asserted = assert;
	if (before != !!*slots && b->vm &&
	    vm_set_irq(b->vm, PCI_INTX_GSI_BASE + d->intx_line, !!*slots))
		log_ratelimited(&b->rl, "%s: KVM_IRQ_LINE GSI %u failed", d->name,
				PCI_INTX_GSI_BASE + d->intx_line);
}

void pci_set_intx(struct pci_dev *d, bool pending)
{
	struct pci_bus *b = d->bus;

	if (!b) {
		d->intx_pending = pending;
		return;
	}
	pthread_mutex_lock(&b->lock);
	d->intx_pending = pending;
	pci_intx_update(d);
	pthread_mutex_unlock(&b->lock);
}

uint32_t pci_config_read(struct pci_bus *b, uint8_t slot, unsigned int off, unsigned int len)
{
	struct pci_dev *d = slot < PCI_SLOTS ? b->devs[slot] : NULL;
	uint32_t v = 0;
	unsigned int i;

	if (!d || off >= PCI_CFG_SIZE || len > PCI_CFG_SIZE - off)
		return len == 4 ? 0xffffffffu : (1u << (8 * len)) - 1;
	if (d->config_read)
		d->config_read(d, off, len);
	pthread_mutex_lock(&b->lock);
	for (i = 0; i < len; i++)
		v |= (uint32_t)d->cfg[off + i] << (8 * i);
	/* Interrupt Status is live, not stored (saved config never holds it). */
	if (d->intx_pending && off <= PCI_STATUS && PCI_STATUS < off + len)
		v |= (uint32_t)PCI_STATUS_INTERRUPT << (8 * (PCI_STATUS - off));
	pthread_mutex_unlock(&b->lock);
	return v;
}

void pci_config_write(struct pci_bus *b, uint8_t slot, unsigned int off, unsigned int len,
		      uint32_t val)
{
	struct pci_dev *d = slot < PCI_SLOTS ? b->devs[slot] : NULL;
	bool bars = false, command = false;
	unsigned int i;

	if (!d || off >= PCI_CFG_SIZE || len > PCI_CFG_SIZE - off)
		return;
	pthread_mutex_lock(&b->lock);
	for (i = 0; i < len; i++) {
		unsigned int o = off + i;
		uint8_t m = d->wmask[o], byte = val >> (8 * i);

		d->cfg[o] = (d->cfg[o] & ~m) | (byte & m);
		bars |= o >= PCI_BAR0 && o < PCI_BAR0 + 24;
		command |= o == PCI_COMMAND || o == PCI_COMMAND + 1;
	}
	if (bars || command)
		for (i = 0; i < 6; i++)
			pci_bar_update(d, i);
	if (command)
		pci_intx_update(d); /* Interrupt Disable */
	pthread_mutex_unlock(&b->lock);
	if (d->config_written)
		d->config_written(d, off, len);
}

static void pci_io_read(void *opaque, uint64_t off, uint8_t *data, unsigned int len)
{
	struct pci_bus *b = opaque;
	uint32_t v;

	if (off < 4) {
		/* The address register: dword accesses only (0xcf9 is not ours). */
		v = len == 4 && off == 0 ? b->cfg_addr : 0xffffffffu;
	} else {
		uint32_t a = b->cfg_addr;
		unsigned int reg = (a & 0xfc) + (unsigned int)(off - 4);

		if (!(a & PCI_CFG_ENABLE) || ((a >> 16) & 0xff) != 0 || ((a >> 8) & 7) != 0)
			v = 0xffffffffu; /* other buses and functions: nothing there */
		else
			v = pci_config_read(b, (a >> 11) & 0x1f, reg, len);
	}
	memcpy(data, &v, len);
}

static void pci_io_write(void *opaque, uint64_t off, const uint8_t *data, unsigned int len)
{
	struct pci_bus *b = opaque;
	uint32_t v = 0, a;

	memcpy(&v, data, len);
	if (off < 4) {
		if (len == 4 && off == 0)
			b->cfg_addr = v;
		return;
	}
	a = b->cfg_addr;
	if (!(a & PCI_CFG_ENABLE) || ((a >> 16) & 0xff) != 0 || ((a >> 8) & 7) != 0)
		return;
	pci_config_write(b, (a >> 11) & 0x1f, (a & 0xfc) + (unsigned int)(off - 4), len, v);
}

static const struct bus_ops pci_io_ops = {
	.read = pci_io_read,
	.write = pci_io_write,
};

int pci_dev_register(struct pci_bus *b, struct pci_dev *d)
{
	unsigned int slot, i;

	for (slot = 0; slot < PCI_SLOTS && b->devs[slot]; slot++)
		;
	if (slot == PCI_SLOTS)
		return -ENOSPC;
	d->bus = b;
	d->slot = slot;
	pthread_mutex_lock(&b->lock);
	/* Firmware's job: naturally aligned addresses in the window, decoding on. */
	for (i = 0; i < 6; i++) {
		uint64_t addr;

		if (!d->bars[i].size)
			continue;
		addr = ALIGN_UP(b->mmio_next, d->bars[i].size);
		if (addr + d->bars[i].size > PCI_MMIO_WINDOW_END) {
			pthread_mutex_unlock(&b->lock);
			return -ENOSPC;
		}
		pci_set_u32(d, PCI_BAR0 + 4 * i, (uint32_t)addr);
		b->mmio_next = addr + d->bars[i].size;
	}
	pci_set_u16(d, PCI_COMMAND, pci_get_u16(d, PCI_COMMAND) | PCI_COMMAND_MEMORY);
	memcpy(d->cfg_init, d->cfg, sizeof(d->cfg));
	b->devs[slot] = d;
	for (i = 0; i < 6; i++)
		pci_bar_update(d, i);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

void pci_dev_unregister(struct pci_dev *d)
{
	struct pci_bus *b = d->bus;
	unsigned int i;

	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	for (i = 0; i < 6; i++)
		if (d->bars[i].mapped) {
			bus_unregister(&b->vm->mmio, d->bars[i].addr);
			d->bars[i].mapped = false;
		}
	d->intx_pending = false;
	pci_intx_update(d);
	b->devs[d->slot] = NULL;
	pthread_mutex_unlock(&b->lock);
}

int pci_bus_create(struct vm *vm, struct pci_bus **out)
{
	struct pci_bus *b = calloc(1, sizeof(*b));
	int ret;

	if (!b)
		return -ENOMEM;
	b->vm = vm;
	b->mmio_next = PCI_MMIO_WINDOW_START;
	pthread_mutex_init(&b->lock, NULL);
	/* 00:00.0: a host bridge, which Linux's conf1 sanity check looks for. */
	pci_dev_init(&b->host_bridge, "pci-host", 0x1b36, 0x0008, 0x060000, 0);
	b->host_bridge.bus = b;
	memcpy(b->host_bridge.cfg_init, b->host_bridge.cfg, PCI_CFG_SIZE);
	b->devs[0] = &b->host_bridge;
	ret = bus_register(&vm->pio, PCI_CONFIG_ADDRESS, 8, &pci_io_ops, b, "pci-config");
	if (ret) {
		pci_bus_destroy(b);
		return ret;
	}
	*out = b;
	return 0;
}

void pci_bus_destroy(struct pci_bus *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->lock);
	free(b);
}

void pci_dev_refresh(struct pci_dev *d)
{
	unsigned int i;

	pthread_mutex_lock(&d->bus->lock);
	for (i = 0; i < 6; i++)
		pci_bar_update(d, i);
	pthread_mutex_unlock(&d->bus->lock);
}

int pci_dev_check_config_as(const struct pci_dev *d, const uint8_t ref[PCI_CFG_SIZE])
{
	unsigned int i;

	for (i = 0; i < PCI_CFG_SIZE; i++)
		if ((d->cfg[i] ^ ref[i]) & ~d->wmask[i])
			return -EINVAL;
	return 0;
}

int pci_dev_check_config(const struct pci_dev *d)
{
	return pci_dev_check_config_as(d, d->cfg_init);
}

/* The bus's own state: the address latch and the host bridge's config. */
static int pci_bus_post_load(void *opaque)
{
	struct pci_bus *b = opaque;

	return pci_dev_check_config(&b->host_bridge);
}

static const struct state_field pci_bus_fields[] = {
	STATE_FIELD(struct pci_bus, cfg_addr),
	STATE_FIELD(struct pci_bus, host_bridge.cfg),
};

static const struct state_desc pci_bus_state = {
	.name = "pci-host",
	.version = 1,
	.fields = pci_bus_fields,
	.nr_fields = ARRAY_SIZE(pci_bus_fields),
	.post_load = pci_bus_post_load,
};

const struct device_class pci_bus_class = {
	.name = "pci-host",
	.state = &pci_bus_state,
};
