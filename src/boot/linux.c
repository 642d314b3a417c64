// SPDX-License-Identifier: MIT
/* Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "qlite/boot.h"
#include "qlite/vcpu.h"
#include "qlite/vm.h"

#define SETUP_HDR_OFFSET 0x1f1
#define HDRS_MAGIC 0x53726448 /* "HdrS" */
#define BOOT_FLAG_MAGIC 0xaa55
#define MIN_BOOT_PROTOCOL 0x20c /* 2.12: xloadflags, 64-bit entry */
#define KERNEL_MAX_SIZE (256 * MiB)
#define INITRD_MAX_SIZE (4 * GiB)

int bzimage_parse(const uint8_t *img, size_t len, struct bzimage_info *info, struct qerr *e)
{
	struct setup_header h;
	unsigned int setup_sects;

	if (len < SETUP_HDR_OFFSET + sizeof(h))
		return qerr_set(e, ENOEXEC, "not a Linux kernel image (only %zu bytes)", len);
	memcpy(&h, img + SETUP_HDR_OFFSET, sizeof(h));
	if (h.header != HDRS_MAGIC || h.boot_flag != BOOT_FLAG_MAGIC)
		return qerr_set(e, ENOEXEC,
				"not a Linux bzImage (no boot protocol header; an ELF vmlinux "
				"or a compressed image needs unpacking first)");
	if (h.version < MIN_BOOT_PROTOCOL)
		return qerr_set(e, ENOEXEC,
				"kernel boot protocol %u.%02u is too old (need 2.12 or later)",
				h.version >> 8, h.version & 0xff);
	if (!(h.xloadflags & XLF_KERNEL_64))
		return qerr_set(e, ENOEXEC, "kernel has no 64-bit entry point (not x86-64?)");
	if (!(h.loadflags & LOADED_HIGH))
		return qerr_set(e, ENOEXEC, "kernel is not a bzImage (zImage is unsupported)");
	setup_sects = h.setup_sects ? h.setup_sects : 4;
	info->setup_size = (setup_sects + 1) * 512;
	if (info->setup_size >= len)
		return qerr_set(e, ENOEXEC, "kernel image is truncated (setup code runs past end)");
	if (len - info->setup_size > UINT32_MAX)
		return qerr_set(e, EFBIG, "kernel image is larger than 4 GiB");
	info->kernel_size = len - info->setup_size;
	/* syssize counts 16-byte paragraphs of the protected-mode part. */
	if ((uint64_t)h.syssize * 16 > info->kernel_size)
		return qerr_set(e, ENOEXEC,
				"kernel image is truncated (%u bytes, header says %llu)",
				info->kernel_size, (unsigned long long)h.syssize * 16);
	info->version = h.version;
	info->init_size = h.init_size;
	info->initrd_addr_max = h.initrd_addr_max ? h.initrd_addr_max : 0x37ffffff;
	if (h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G)
		info->initrd_addr_max = 0xffffffffu;
	info->cmdline_size = h.cmdline_size ? h.cmdline_size : 255;
	info->pref_address = h.pref_address;
	info->kernel_alignment = h.kernel_alignment;
	info->xloadflags = h.xloadflags;
	if (info->init_size < info->kernel_size)
		return qerr_set(e, ENOEXEC, "kernel header is corrupt (init_size below image size)");
	return 0;
}

static void e820_add(struct boot_params *bp, uint64_t addr, uint64_t size, uint32_t type)
{
	if (bp->e820_entries >= ARRAY_SIZE(bp->e820_table) || !size)
		return;
	bp->e820_table[bp->e820_entries].addr = addr;
	bp->e820_table[bp->e820_entries].size = size;
	bp->e820_table[bp->e820_entries].type = type;
	bp->e820_entries++;
}

int e820_build(struct boot_params *bp, uint64_t ram_size)
{
	uint64_t low_end = MIN(ram_size, MEM_32BIT_GAP_START);

	if (ram_size < BOOT_ACPI_END + 4 * KiB)
		return -EINVAL;
	bp->e820_entries = 0;
	e820_add(bp, 0, BOOT_EBDA_START, E820_TYPE_RAM);
	e820_add(bp, BOOT_EBDA_START, 0xa0000 - BOOT_EBDA_START, E820_TYPE_RESERVED);
	e820_add(bp, BOOT_ACPI_START, BOOT_ACPI_END - BOOT_ACPI_START, E820_TYPE_RESERVED);
	e820_add(bp, BOOT_ACPI_END, low_end - BOOT_ACPI_END, E820_TYPE_RAM);
	if (ram_size > low_end)
		e820_add(bp, MEM_4G, ram_size - low_end, E820_TYPE_RAM);
	return 0;
}

int initrd_place(uint64_t ram_size, uint64_t initrd_size, uint64_t addr_max, uint64_t min_addr,
		 uint64_t *gpa)
{
	uint64_t top = MIN(ram_size, MEM_32BIT_GAP_START);
	uint64_t addr;

	if (addr_max < UINT64_MAX)
		top = MIN(top, addr_max + 1);
	if (initrd_size > top)
		return -ENOSPC;
	addr = ALIGN_DOWN(top - initrd_size, 4 * KiB);
	if (addr < min_addr)
		return -ENOSPC;
	*gpa = addr;
	return 0;
}

/* Identity-map the low 4 GiB with 2 MiB pages; Linux builds its own soon. */
static int boot_setup_page_tables(struct vm *vm)
{
	uint64_t *pml4 = mem_gpa_to_hva(&vm->mem, BOOT_PML4_ADDR, 4096);
	uint64_t *pdpt = mem_gpa_to_hva(&vm->mem, BOOT_PDPT_ADDR, 4096);
	uint64_t *pd = mem_gpa_to_hva(&vm->mem, BOOT_PD_ADDR, 4 * 4096);
	unsigned int i;

	if (!pml4 || !pdpt || !pd)
		return -EFAULT;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = BOOT_PDPT_ADDR | 0x3; /* present, writable */
	for (i = 0; i < 4; i++)
		pdpt[i] = (BOOT_PD_ADDR + i * 4096ULL) | 0x3;
	for (i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | 0x83; /* present, writable, 2 MiB */
	return 0;
}

/* The boot protocol wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18. */
static const uint64_t boot_gdt[] = {
	0,
	0,
	0x00af9b000000ffffULL, /* 0x10: 64-bit code */
	0x00cf93000000ffffULL, /* 0x18: data */
	0x00008b0000000067ULL, /* 0x20: 64-bit TSS (busy), low half */
	0,		       /* TSS high half */
};

static struct kvm_segment boot_segment(uint16_t sel, uint8_t type, bool code)
{
	return (struct kvm_segment){
		.base = 0,
		.limit = 0xffffffff,
		.selector = sel,
		.type = type,
		.present = 1,
		.dpl = 0,
		.db = code ? 0 : 1,
		.s = 1,
		.l = code ? 1 : 0,
		.g = 1,
	};
}

int boot_setup_gdt_pagetables(struct vm *vm)
{
	if (mem_write(&vm->mem, BOOT_GDT_ADDR, boot_gdt, sizeof(boot_gdt)))
		return -EFAULT;
	return boot_setup_page_tables(vm);
}

int boot_setup_vcpu_long_mode(struct vcpu *v, uint64_t entry, uint64_t rsi, uint64_t rdi,
			      uint64_t rsp)
{
	struct kvm_sregs s;
	struct kvm_regs r;

	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	s.gdt.base = BOOT_GDT_ADDR;
	s.gdt.limit = sizeof(boot_gdt) - 1;
	s.idt.base = 0;
	s.idt.limit = 0;
	s.cs = boot_segment(0x10, 0xb, true);
	s.ds = s.es = s.fs = s.gs = s.ss = boot_segment(0x18, 0x3, false);
	s.tr = (struct kvm_segment){ .base = 0, .limit = 0x67, .selector = 0x20, .type = 0xb,
				     .present = 1 };
	s.ldt = (struct kvm_segment){ .type = 0x2, .unusable = 1 };
	s.cr3 = BOOT_PML4_ADDR;
	s.cr4 = 0x20; /* PAE */
	s.cr0 = 0x80000031; /* PG | NE | ET | PE */
	s.efer = 0x500; /* LMA | LME */
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return -errno;

	memset(&r, 0, sizeof(r));
	r.rflags = 0x2;
	r.rip = entry;
	r.rsi = rsi;
	r.rdi = rdi;
	r.rsp = r.rbp = rsp;
	if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
		return -errno;
	return 0;
}

static void human_size(uint64_t n, char *buf, size_t len)
{
	if (n >= GiB && n % GiB == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(n / GiB));
	else if (n >= MiB)
		snprintf(buf, len, "%lluM", (unsigned long long)((n + MiB - 1) / MiB));
	else
		snprintf(buf, len, "%lluK", (unsigned long long)((n + KiB - 1) / KiB));
}

/*
 * The kernel is copied to 1 MiB; its 64-bit entry then moves itself to an
 * aligned address (at least pref_address) and decompresses in place, using
 * init_size bytes from there. The initrd must stay clear of that buffer.
 */
static uint64_t kernel_footprint_end(const struct bzimage_info *bi)
{
	uint64_t align = bi->kernel_alignment ? bi->kernel_alignment : 2 * MiB;
	uint64_t run = MAX(ALIGN_UP((uint64_t)BOOT_KERNEL_ADDR, align), bi->pref_address);

	return MAX(run + bi->init_size, (uint64_t)BOOT_KERNEL_ADDR + bi->kernel_size);
}

int linux_boot_setup(struct vm *vm, struct qerr *e)
{
	const struct vm_config *cfg = &vm->cfg;
	uint8_t *kimg = NULL, *initrd = NULL;
	size_t klen = 0, ilen = 0, cmdlen;
	struct bzimage_info bi;
	struct qerr perr = { 0 };
	struct boot_params *bp;
	struct acpi_config acfg = { .ncpus = vm->ncpus };
	uint64_t kend, initrd_gpa = 0;
	const char *cmdline = cfg->cmdline ? cfg->cmdline : "";
	char need[32], have[32];
	uint8_t *dst;
	int ret, n;

	ret = file_read_all(cfg->kernel, KERNEL_MAX_SIZE, &kimg, &klen, e);
	if (ret)
		goto out;
	ret = bzimage_parse(kimg, klen, &bi, &perr);
	if (ret) {
		ret = qerr_set(e, perr.errnum, "%s: %.300s", cfg->kernel, perr.msg);
		goto out;
	}
	kend = kernel_footprint_end(&bi);
	if (kend + 4 * KiB > MIN(vm->mem.ram_size, MEM_32BIT_GAP_START)) {
		human_size(kend + 4 * KiB, need, sizeof(need));
		human_size(vm->mem.ram_size, have, sizeof(have));
		ret = qerr_set(e, ENOSPC,
			       "--mem %s is too small for this kernel: it needs at least %s to "
			       "decompress and start",
			       have, need);
		goto out;
	}
	cmdlen = strlen(cmdline);
	if (cmdlen + 1 > bi.cmdline_size || cmdlen + 1 > BOOT_CMDLINE_MAX) {
		ret = qerr_set(e, E2BIG, "--cmdline is %zu bytes; this kernel accepts at most %u",
			       cmdlen, bi.cmdline_size - 1);
		goto out;
	}

	if (cfg->initrd) {
		ret = file_read_all(cfg->initrd, INITRD_MAX_SIZE, &initrd, &ilen, e);
		if (ret)
			goto out;
		ret = initrd_place(vm->mem.ram_size, ilen, bi.initrd_addr_max,
				   ALIGN_UP(kend, 4 * KiB), &initrd_gpa);
		if (ret) {
			human_size(ALIGN_UP(kend, 4 * KiB) + ilen, need, sizeof(need));
			human_size(vm->mem.ram_size, have, sizeof(have));
			ret = qerr_set(e, ENOSPC,
				       "initrd %s (%zu bytes) does not fit in --mem %s next to the "
				       "kernel; it needs at least %s",
				       cfg->initrd, ilen, have, need);
			goto out;
		}
		dst = mem_gpa_to_hva(&vm->mem, initrd_gpa, ilen);
		memcpy(dst, initrd, ilen);
	}

	dst = mem_gpa_to_hva(&vm->mem, BOOT_KERNEL_ADDR, bi.kernel_size);
	memcpy(dst, kimg + bi.setup_size, bi.kernel_size);

	bp = mem_gpa_to_hva(&vm->mem, BOOT_PARAMS_ADDR, sizeof(*bp));
	memset(bp, 0, sizeof(*bp));
	/* The header runs from 0x1f1 to 0x202 + the byte at 0x201. */
	n = 0x202 + kimg[0x201] - SETUP_HDR_OFFSET;
	memcpy(&bp->hdr, kimg + SETUP_HDR_OFFSET, MIN((size_t)n, sizeof(bp->hdr)));
	bp->hdr.type_of_loader = 0xff; /* undefined boot loader */
	bp->hdr.vid_mode = 0xffff; /* "normal" */
	bp->hdr.cmd_line_ptr = BOOT_CMDLINE_ADDR;
	bp->hdr.ramdisk_image = (uint32_t)initrd_gpa;
	bp->hdr.ramdisk_size = (uint32_t)ilen;
	bp->ext_ramdisk_image = (uint32_t)(initrd_gpa >> 32);
	bp->ext_ramdisk_size = (uint32_t)((uint64_t)ilen >> 32);
	bp->acpi_rsdp_addr = BOOT_ACPI_START;
	memcpy(mem_gpa_to_hva(&vm->mem, BOOT_CMDLINE_ADDR, cmdlen + 1), cmdline, cmdlen + 1);
	e820_build(bp, vm->mem.ram_size);

	ret = acpi_build(mem_gpa_to_hva(&vm->mem, BOOT_ACPI_START, BOOT_ACPI_END - BOOT_ACPI_START),
			 BOOT_ACPI_END - BOOT_ACPI_START, BOOT_ACPI_START, &acfg);
	if (ret < 0) {
		ret = qerr_set(e, -ret, "cannot build ACPI tables: %s", strerror(-ret));
		goto out;
	}
	ret = boot_setup_gdt_pagetables(vm);
	if (!ret)
		ret = boot_setup_vcpu_long_mode(vm->vcpus[0], BOOT_KERNEL_ADDR + 0x200,
						BOOT_PARAMS_ADDR, 0, BOOT_STACK_TOP);
	if (ret)
		ret = qerr_set(e, -ret, "cannot set up the boot CPU: %s", strerror(-ret));
out:
	free(kimg);
	free(initrd);
	return ret;
}
