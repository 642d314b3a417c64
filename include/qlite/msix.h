/* SPDX-License-Identifier: MIT */
/*
 * MSI-X for a PCI device: the capability, the vector table and pending-bit
 * array (served from one of the device's BARs), and delivery through irqfd:
 * each vector has an eventfd bound with KVM_IRQFD to a GSI whose route KVM
 * holds as an MSI message. Masked vectors latch in the PBA.
 */
#ifndef QLITE_MSIX_H
#define QLITE_MSIX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct pci_dev;

#define MSIX_NO_VECTOR 0xffff
#define MSIX_ENTRY_SIZE 16

#define MSIX_MAX_VECTORS 32

/* The guest-visible table entry: device state (saved and restored). */
struct msix_entry {
	uint32_t addr_lo, addr_hi, data, ctrl;
};

/* Host-side delivery for one vector: never saved. */
struct msix_vector {
	int efd; /* irqfd */
	int gsi; /* -1 until first routed */
	bool routed; /* KVM route matches the entry and irqfd is bound */
};

struct msix {
	struct pci_dev *dev;
	unsigned int nvec;
	unsigned int cap; /* offset of the capability in config space */
	struct msix_entry entry[MSIX_MAX_VECTORS];
	uint64_t pba[MSIX_MAX_VECTORS / 64 + 1];
	struct msix_vector vec[MSIX_MAX_VECTORS];
	pthread_mutex_t lock;
};

/* Add the capability; table and PBA at @table_off/@pba_off of BAR @bar. */
int msix_init(struct msix *m, struct pci_dev *d, unsigned int nvec, int bar, uint32_t table_off,
	      uint32_t pba_off);
void msix_destroy(struct msix *m);
/* BAR accesses to the table (@off from table start) and to the PBA. */
void msix_table_read(struct msix *m, uint64_t off, uint8_t *data, unsigned int len);
void msix_table_write(struct msix *m, uint64_t off, const uint8_t *data, unsigned int len);
void msix_pba_read(struct msix *m, uint64_t off, uint8_t *data, unsigned int len);
/* The guest wrote config space (message control may have changed). */
void msix_config_written(struct msix *m);
bool msix_enabled(struct msix *m);
/* Interrupt on @vector: delivered, or latched if masked. */
void msix_notify(struct msix *m, unsigned int vector);
/* Back to power-on state (disabled, all vectors masked). */
void msix_reset(struct msix *m);
/*
 * Loaded entries/PBA must be ones the device can reach: nothing beyond its
 * vectors, no control bits but the mask bit. 0 or -EINVAL.
 */
int msix_state_check(const struct msix *m);
/* Entries/PBA/capability were loaded from saved state: route what is live. */
void msix_state_loaded(struct msix *m);

#endif
