/* SPDX-License-Identifier: MIT */
/* Legacy x86 platform devices: 16550 UART, i8042 (reset), ACPI PM block. */
#ifndef QLITE_DEVICES_H
#define QLITE_DEVICES_H

#include <stdint.h>
#include <stddef.h>
#include "qlite/util.h"

struct vm;
struct serial;
struct acpi_pm;

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ 4

/* ACPI fixed hardware, port I/O (see docs/platform.md). */
#define ACPI_PM_BASE 0x600
#define ACPI_PM1_EVT 0x600 /* status (2) + enable (2) */
#define ACPI_PM1_CNT 0x604 /* control (2) */
#define ACPI_RESET_PORT 0x608 /* FADT reset register */
#define ACPI_PM_LEN 0x10
#define ACPI_RESET_VALUE 0x1
#define ACPI_SCI_IRQ 9
#define ACPI_S5_TYP 5 /* SLP_TYP for S5 in our DSDT's _S5 package */

int serial_create(struct vm *vm, uint16_t base, unsigned int irq, int in_fd, int out_fd,
		  struct serial **out);
/* Feed host input; returns bytes accepted (the FIFO may be full). */
size_t serial_push_input(struct serial *s, const uint8_t *buf, size_t len);
size_t serial_rx_space(struct serial *s);

int i8042_create(struct vm *vm);
int acpi_pm_create(struct vm *vm);
/* Fixed-feature power button: the guest's ACPI driver sees a press. */
void acpi_pm_power_button(struct vm *vm);

#endif
