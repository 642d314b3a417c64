/* SPDX-License-Identifier: MIT */
/*
 * PCI bus 0: configuration mechanism #1 (ports 0xcf8/0xcfc), a host bridge at
 * 00:00.0 and endpoint devices with memory BARs, pre-assigned the way
 * firmware would. BARs are (re)mapped on the MMIO bus when the guest moves
 * them or toggles memory decoding.
 *
 * Legacy INTx: pin P (1 = INTA) of slot S drives IOAPIC GSI
 * 16 + (S + P - 1) % 8, the usual swizzle (the DSDT's _PRT says so),
 * level-triggered; lines are shared and the bus ORs its devices onto them.
 */
#ifndef QLITE_PCI_H
#define QLITE_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "qlite/bus.h"
#include "qlite/device.h"
#include "qlite/util.h"

struct vm;
struct pci_dev;

#define PCI_SLOTS 32
#define PCI_CFG_SIZE 256
#define PCI_MMIO_WINDOW_START 0xc0000000ULL /* 32-bit BARs live here ... */
#define PCI_MMIO_WINDOW_END 0xfec00000ULL /* ... up to the IOAPIC */

#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS 0x06
#define PCI_STATUS_INTERRUPT 0x08
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d
#define PCI_INTERRUPT_PIN_A 1

#define PCI_INTX_GSI_BASE 16 /* IOAPIC-only GSIs 16-23 (src/vm.c) */
#define PCI_INTX_GSIS 8

struct pci_bar {
	uint64_t size; /* power of two, >= 4 KiB; 0: unused */
	uint64_t addr; /* current guest address */
	bool mapped;
	const struct bus_ops *ops;
	void *opaque;
};

struct pci_dev {
	const char *name;
	uint8_t slot;
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE]; /* guest-writable bits */
	uint8_t cfg_init[PCI_CFG_SIZE]; /* as registered: the read-only bits' truth */
	uint8_t next_cap; /* where the next capability goes */
	struct pci_bar bars[6];
	struct pci_bus *bus;
	/* After a config write lands (MSI-X enable, ...); may be NULL. */
	void (*config_written)(struct pci_dev *d, unsigned int off, unsigned int len);
	/*
	 * Before a config read of [off, off + len) is served, bus lock not
	 * held: a device may refresh bytes it computes (taking the bus lock to
	 * write cfg). May be NULL.
	 */
	void (*config_read)(struct pci_dev *d, unsigned int off, unsigned int len);
	/* A BAR moved or (un)mapped: ioeventfds follow the notify area. */
	void (*bar_moved)(struct pci_dev *d, int bar);
	void *opaque;
	/* INTx, host side (derived from device state, never saved; bus lock). */
	bool intx_pending; /* the device's request: Status.Interrupt Status */
	bool intx_asserted; /* counted on the line: pending, pin set, not disabled */
	unsigned int intx_line; /* which line (GSI - 16) while asserted */
};

struct pci_bus {
	struct vm *vm;
	pthread_mutex_t lock; /* config space: accessed by every vCPU */
	uint32_t cfg_addr;
	struct pci_dev *devs[PCI_SLOTS];
	struct pci_dev host_bridge;
	uint64_t mmio_next; /* bump allocator for BAR pre-assignment */
	uint32_t intx_slots[PCI_INTX_GSIS]; /* slots asserting each shared line */
	struct ratelimit rl;
};

extern const struct device_class pci_bus_class;
int pci_bus_create(struct vm *vm, struct pci_bus **out);
void pci_bus_destroy(struct pci_bus *b);

/* Fill IDs and class; 0 or -errno. */
void pci_dev_init(struct pci_dev *d, const char *name, uint16_t vendor, uint16_t device,
		  uint32_t class_code, uint8_t revision);
/* A 32-bit memory BAR of @size bytes served by @ops. */
void pci_dev_set_bar(struct pci_dev *d, int bar, uint64_t size, const struct bus_ops *ops,
		     void *opaque);
/* Reserve @len bytes of capability @id; returns its offset (0: no room). */
unsigned int pci_dev_add_cap(struct pci_dev *d, uint8_t id, unsigned int len);
/* Put @d in a free slot, assign its BARs and map them. */
int pci_dev_register(struct pci_bus *b, struct pci_dev *d);
void pci_dev_unregister(struct pci_dev *d);
/* Config space was loaded from saved state: map BARs to match it. */
void pci_dev_refresh(struct pci_dev *d);
/* 0 if @d's (loaded) config differs from the registered one only in writable bits. */
int pci_dev_check_config(const struct pci_dev *d);
/* The same against another reference (an older layout of the device); 0 or -EINVAL. */
int pci_dev_check_config_as(const struct pci_dev *d, const uint8_t ref[PCI_CFG_SIZE]);

/* The GSI pin @pin (1-4: INTA-INTD) of slot @slot drives. */
static inline unsigned int pci_intx_gsi(unsigned int slot, unsigned int pin)
{
	return PCI_INTX_GSI_BASE + (slot + pin - 1) % PCI_INTX_GSIS;
}

/*
 * The device wants (@pending) or no longer wants an INTx interrupt. The line
 * follows unless the function has no pin or the guest set Interrupt
 * Disable; Status.Interrupt Status reads @pending either way. Safe from any
 * thread; a no-op for the line until the device is registered.
 */
void pci_set_intx(struct pci_dev *d, bool pending);

/* Config space access as the guest does it (bounds-checked); for tests too. */
uint32_t pci_config_read(struct pci_bus *b, uint8_t slot, unsigned int off, unsigned int len);
void pci_config_write(struct pci_bus *b, uint8_t slot, unsigned int off, unsigned int len,
		      uint32_t val);

static inline void pci_set_u16(struct pci_dev *d, unsigned int off, uint16_t v)
{
	d->cfg[off] = v & 0xff;
	d->cfg[off + 1] = v >> 8;
}

static inline void pci_set_u32(struct pci_dev *d, unsigned int off, uint32_t v)
{
	pci_set_u16(d, off, v & 0xffff);
	pci_set_u16(d, off + 2, v >> 16);
}

static inline uint16_t pci_get_u16(const struct pci_dev *d, unsigned int off)
{
	return d->cfg[off] | d->cfg[off + 1] << 8;
}

static inline uint32_t pci_get_u32(const struct pci_dev *d, unsigned int off)
{
	return pci_get_u16(d, off) | (uint32_t)pci_get_u16(d, off + 2) << 16;
}

#endif
