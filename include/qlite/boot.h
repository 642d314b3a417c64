/* SPDX-License-Identifier: MIT */
/*
 * The Linux x86 boot protocol (64-bit entry of a bzImage) and the firmware
 * tables a Linux guest expects: e820 and ACPI (RSDP, XSDT, FADT, DSDT, MADT).
 * The pure builders are separate from the loader so unit tests can run them
 * against a plain buffer.
 */
#ifndef QLITE_BOOT_H
#define QLITE_BOOT_H

#include <asm/bootparam.h>
#include <stddef.h>
#include <stdint.h>
#include "qlite/util.h"

struct vm;

/* Guest-physical layout of what the loader writes (below 1 MiB). */
#define BOOT_GDT_ADDR 0x500
#define BOOT_PARAMS_ADDR 0x7000
#define BOOT_STACK_TOP 0x8ff0
#define BOOT_PML4_ADDR 0x9000
#define BOOT_PDPT_ADDR 0xa000
#define BOOT_PD_ADDR 0xb000 /* four pages: 4 GiB of 2 MiB pages */
#define BOOT_CMDLINE_ADDR 0x20000
#define BOOT_CMDLINE_MAX 0x10000
#define BOOT_EBDA_START 0x9fc00
#define BOOT_ACPI_START 0xe0000 /* RSDP must sit in [0xe0000, 0x100000) */
#define BOOT_ACPI_END 0x100000
#define BOOT_KERNEL_ADDR 0x100000

#define E820_TYPE_RAM 1
#define E820_TYPE_RESERVED 2

struct bzimage_info {
	uint16_t version;
	uint32_t setup_size; /* bytes of real-mode setup, incl. boot sector */
	uint32_t kernel_size; /* protected-mode part */
	uint32_t init_size; /* memory the kernel needs from its load address */
	uint32_t initrd_addr_max;
	uint32_t cmdline_size;
	uint64_t pref_address;
	uint32_t kernel_alignment;
	uint16_t xloadflags;
};

int bzimage_parse(const uint8_t *img, size_t len, struct bzimage_info *info, struct qerr *e);

/* Fill the e820 map for @ram_size bytes of RAM laid out by mem_init(). */
int e820_build(struct boot_params *bp, uint64_t ram_size);

/*
 * Place the initrd: highest page-aligned address that keeps it under
 * @addr_max, under the end of low RAM, and above @min_addr. -ENOSPC if it
 * does not fit.
 */
int initrd_place(uint64_t ram_size, uint64_t initrd_size, uint64_t addr_max, uint64_t min_addr,
		 uint64_t *gpa);

struct acpi_config {
	unsigned int ncpus;
};

/*
 * Build all ACPI tables into @buf, which the guest sees at @gpa. Returns the
 * number of bytes used (> 0) or -errno; the RSDP is at offset 0.
 */
int acpi_build(uint8_t *buf, size_t len, uint64_t gpa, const struct acpi_config *cfg);
uint8_t acpi_checksum(const void *p, size_t len);

struct vcpu;
/* Identity page tables for the low 4 GiB and the boot GDT. */
int boot_setup_gdt_pagetables(struct vm *vm);
/* Put @v in 64-bit mode at @entry (flat segments, boot page tables). */
int boot_setup_vcpu_long_mode(struct vcpu *v, uint64_t entry, uint64_t rsi, uint64_t rdi,
			      uint64_t rsp);

struct guest_mem;
/* Copy a static x86-64 ELF's PT_LOAD segments to their physical addresses. */
int elf_load(const struct guest_mem *m, const char *path, uint64_t *entry, struct qerr *e);

/* Load kernel/initrd/cmdline, write tables and set the BSP's registers. */
int linux_boot_setup(struct vm *vm, struct qerr *e);

#endif
