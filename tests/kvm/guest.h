/* SPDX-License-Identifier: MIT */
/* Shared between the freestanding guest and the host-side tests. */
#ifndef QLITE_TEST_GUEST_H
#define QLITE_TEST_GUEST_H

#define GUEST_UCALL_PORT 0xf0 /* outl: ucall code */
#define GUEST_UCALL_ARG_PORT 0xf4 /* outl: argument, latched before the code */
#define GUEST_TESTDEV_PORT 0x500 /* 16-byte PIO test device */
#define GUEST_TESTDEV_MMIO 0xd0000000ULL /* 4 KiB MMIO test device */
#define GUEST_SHARED_ADDR 0x300000ULL /* page the host can inspect */
#define GUEST_STACK_TOP 0x400000ULL /* per vCPU: top - id * 64 KiB */
#define GUEST_STACK_SIZE 0x10000ULL

enum guest_test {
	GT_PIO_MMIO = 1,
	GT_SERIAL,
	GT_SMP,
	GT_TRIPLE_FAULT,
	GT_COUNT_FOREVER,
	GT_HALT_DEAD, /* cli; hlt: nothing can wake it */
	GT_HALT_IDLE, /* sti; hlt on vCPU 0: idle, not dead */
};

enum guest_ucall {
	UC_VALUE = 1, /* report a value (argument) */
	UC_DONE, /* a vCPU finished its part */
	UC_FAIL, /* guest-side check failed: argument = line */
};

#endif
