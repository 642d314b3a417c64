// SPDX-License-Identifier: MIT
/* ACPI tables for a PC-like guest with fixed-feature hardware (see README). */
#include <errno.h>
#include <string.h>

#include "qlite/boot.h"
#include "qlite/devices.h"
#include "qlite/pci.h"

struct __attribute__((packed)) acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
};

struct __attribute__((packed)) acpi_rsdp {
	char signature[8];
	uint8_t checksum;
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum;
	uint8_t reserved[3];
};

struct __attribute__((packed)) acpi_gas {
	uint8_t space_id; /* 1: system I/O */
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size; /* 1 byte, 2 word, 3 dword */
	uint64_t address;
};

/* FADT, ACPI 6.0 layout (revision 6, 276 bytes). */
struct __attribute__((packed)) acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk;
	uint32_t pm2_cnt_blk, pm_tmr_blk, gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
	uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
	struct acpi_gas sleep_control, sleep_status;
	uint64_t hypervisor_vendor;
};

_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT layout");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP layout");

#define FADT_F_WBINVD (1u << 0)
#define FADT_F_PROC_C1 (1u << 2)
#define FADT_F_SLP_BUTTON (1u << 5) /* set: no fixed-feature sleep button */
#define FADT_F_RESET_REG_SUP (1u << 10)
#define FADT_BOOT_NO_VGA (1u << 2)
#define FADT_BOOT_NO_CMOS_RTC (1u << 5)

#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_ISO 2
#define MADT_LAPIC_NMI 4
#define IOAPIC_ADDR 0xfec00000u
#define LAPIC_ADDR 0xfee00000u

uint8_t acpi_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return (uint8_t)-sum;
}

static void acpi_header_init(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, "QLITE ", 6);
	memcpy(h->oem_table_id, "QLITEVM ", 8);
	h->oem_revision = 1;
	memcpy(h->creator_id, "QLTE", 4);
	h->creator_revision = 1;
	h->checksum = 0;
	h->checksum = acpi_checksum(h, len);
}

static struct acpi_gas gas_io(uint16_t port, uint8_t bits)
{
	return (struct acpi_gas){ .space_id = 1,
				  .bit_width = bits,
				  .access_size = bits <= 8 ? 1 : bits <= 16 ? 2 : 3,
				  .address = port };
}

/* AML: Name (_S5, Package () { 5, 5, 0, 0 }) -- SLP_TYP for S5 is 5. */
static const uint8_t aml_s5[] = {
	0x08, '_', 'S', '5', '_', /* NameOp "_S5_" */
	0x12, 0x08, 0x04, /* PackageOp, PkgLength 8, 4 elements */
	0x0a, ACPI_S5_TYP, 0x0a, ACPI_S5_TYP, /* BytePrefix 5, BytePrefix 5 */
	0x00, 0x00, /* Zero, Zero */
};

/*
 * A tiny AML writer: enough for the PCI root bridge. Objects are built
 * inner-first into a buffer and wrapped with their opcode and PkgLength.
 */
struct aml {
	uint8_t b[2048];
	size_t len;
	bool overflow;
};

static void aml_put(struct aml *a, const void *src, size_t n)
{
	if (a->len + n > sizeof(a->b)) {
		a->overflow = true;
		return;
	}
	memcpy(a->b + a->len, src, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t v)
{
	aml_put(a, &v, 1);
}

/* PkgLength counts itself: 1 byte below 64, 2 bytes below 4096. */
static void aml_wrap(struct aml *a, const uint8_t *op, size_t oplen, const struct aml *inner)
{
	size_t total = inner->len + 1;

	aml_put(a, op, oplen);
	if (total < 64) {
		aml_byte(a, (uint8_t)total);
	} else {
		total = inner->len + 2;
		aml_byte(a, 0x40 | (total & 0xf));
		aml_byte(a, (uint8_t)(total >> 4));
	}
	aml_put(a, inner->b, inner->len);
	a->overflow |= inner->overflow || total >= 4096;
}

static void aml_le(uint8_t *p, uint64_t v, unsigned int n)
{
	while (n--) {
		*p++ = v & 0xff;
		v >>= 8;
	}
}

/* Word address space descriptor (bus number or I/O range), producer, fixed. */
static void res_word(struct aml *a, uint8_t type, uint8_t tflags, uint16_t min, uint16_t max)
{
	uint8_t d[16] = { 0x88, 13, 0, type, 0x0c, tflags };

	aml_le(d + 8, min, 2);
	aml_le(d + 10, max, 2);
	aml_le(d + 14, (uint32_t)max - min + 1, 2);
	aml_put(a, d, sizeof(d));
}

/* DWord memory range, producer, fixed, read/write, non-cacheable. */
static void res_dword_mem(struct aml *a, uint32_t min, uint32_t max)
{
	uint8_t d[26] = { 0x87, 23, 0, 0, 0x0c, 0x01 };

	aml_le(d + 10, min, 4);
	aml_le(d + 14, max, 4);
	aml_le(d + 22, (uint64_t)max - min + 1, 4);
	aml_put(a, d, sizeof(d));
}

/*
 * Name (_PRT, Package () { Package () { 0xSSSSFFFF, 0, Zero, GSI }, ... }):
 * INTA of each device slot (every function here has pin A) in the GSI form,
 * which means level-triggered, active-low: as pci_intx_gsi() wires it.
 */
static void aml_prt(struct aml *out)
{
	static const uint8_t name_prt[] = { 0x08, '_', 'P', 'R', 'T' };
	static const uint8_t package_op[] = { 0x12 };
	struct aml pkg = { 0 };
	unsigned int slot;

	aml_byte(&pkg, PCI_SLOTS - 1); /* NumElements: slot 0 is the host bridge */
	for (slot = 1; slot < PCI_SLOTS; slot++) {
		struct aml ent = { 0 };
		uint8_t addr[5] = { 0x0c }; /* DWordPrefix */

		aml_le(addr + 1, (uint32_t)slot << 16 | 0xffff, 4); /* any function */
		aml_byte(&ent, 4);
		aml_put(&ent, addr, sizeof(addr));
		aml_byte(&ent, 0x00); /* pin: Zero is INTA */
		aml_byte(&ent, 0x00); /* source: Zero, the GSI form */
		aml_byte(&ent, 0x0a); /* BytePrefix */
		aml_byte(&ent, pci_intx_gsi(slot, PCI_INTERRUPT_PIN_A));
		aml_wrap(&pkg, package_op, sizeof(package_op), &ent);
	}
	aml_put(out, name_prt, sizeof(name_prt));
	aml_wrap(out, package_op, sizeof(package_op), &pkg);
}

/*
 * Scope (\_SB) { Device (PCI0) { _HID PNP0A03, _UID 0, _CRS, _PRT } }: Linux
 * with ACPI finds PCI root bridges only this way. _CRS: bus 0, the config
 * ports, the rest of I/O space, and the 32-bit MMIO window BARs are
 * assigned from. _PRT: where each slot's INTx goes.
 */
static void aml_pci_root(struct aml *out)
{
	static const uint8_t hid[] = { 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03 };
	static const uint8_t uid[] = { 0x08, '_', 'U', 'I', 'D', 0x00 };
	static const uint8_t cfg_io[] = { 0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08 };
	static const uint8_t end_tag[] = { 0x79, 0x00 };
	static const uint8_t name_crs[] = { 0x08, '_', 'C', 'R', 'S' };
	static const uint8_t buffer_op[] = { 0x11 };
	static const uint8_t device_op[] = { 0x5b, 0x82 };
	static const uint8_t scope_op[] = { 0x10 };
	struct aml res = { 0 }, buf = { 0 }, dev = { 0 }, scope = { 0 };

	res_word(&res, 2, 0, 0, 0); /* bus 0 */
	aml_put(&res, cfg_io, sizeof(cfg_io));
	res_word(&res, 1, 3, 0x0000, 0x0cf7);
	res_word(&res, 1, 3, 0x0d00, 0xffff);
	res_dword_mem(&res, PCI_MMIO_WINDOW_START, PCI_MMIO_WINDOW_END - 1);
	aml_put(&res, end_tag, sizeof(end_tag));

	/* Buffer (size) { descriptors } */
	aml_byte(&buf, 0x0b); /* WordPrefix */
	aml_byte(&buf, res.len & 0xff);
	aml_byte(&buf, res.len >> 8);
	aml_put(&buf, res.b, res.len);

	aml_put(&dev, "PCI0", 4);
	aml_put(&dev, hid, sizeof(hid));
	aml_put(&dev, uid, sizeof(uid));
	aml_put(&dev, name_crs, sizeof(name_crs));
	aml_wrap(&dev, buffer_op, sizeof(buffer_op), &buf);
	aml_prt(&dev);

	aml_put(&scope, "\\_SB_", 5);
	aml_wrap(&scope, device_op, sizeof(device_op), &dev);
	aml_wrap(out, scope_op, sizeof(scope_op), &scope);
}

struct acpi_builder {
	uint8_t *buf;
	size_t len, used;
	uint64_t gpa;
};

/* Reserve @size bytes (16-aligned) and return the offset, or -ENOSPC. */
static long acpi_alloc(struct acpi_builder *b, size_t size)
{
	size_t off = ALIGN_UP(b->used, 16);

	if (off > b->len || size > b->len - off)
		return -ENOSPC;
	b->used = off + size;
	memset(b->buf + off, 0, size);
	return (long)off;
}

static long acpi_build_dsdt(struct acpi_builder *b)
{
	struct aml body = { 0 };
	size_t len;
	long off;

	aml_put(&body, aml_s5, sizeof(aml_s5));
	aml_pci_root(&body);
	if (body.overflow)
		return -ENOSPC;
	len = sizeof(struct acpi_header) + body.len;
	off = acpi_alloc(b, len);
	if (off < 0)
		return off;
	memcpy(b->buf + off + sizeof(struct acpi_header), body.b, body.len);
	acpi_header_init((struct acpi_header *)(b->buf + off), "DSDT", len, 2);
	return off;
}

static long acpi_build_fadt(struct acpi_builder *b, uint64_t dsdt_gpa)
{
	long off = acpi_alloc(b, sizeof(struct acpi_fadt));
	struct acpi_fadt *f;

	if (off < 0)
		return off;
	f = (struct acpi_fadt *)(b->buf + off);
	f->dsdt = (uint32_t)dsdt_gpa;
	f->x_dsdt = dsdt_gpa;
	f->sci_int = ACPI_SCI_IRQ;
	f->smi_cmd = 0; /* no SMM: always in ACPI mode */
	f->pm1a_evt_blk = ACPI_PM1_EVT;
	f->pm1a_cnt_blk = ACPI_PM1_CNT;
	f->pm1_evt_len = 4;
	f->pm1_cnt_len = 2;
	f->x_pm1a_evt_blk = gas_io(ACPI_PM1_EVT, 32);
	f->x_pm1a_cnt_blk = gas_io(ACPI_PM1_CNT, 16);
	f->p_lvl2_lat = 101; /* > 100: C2 not supported */
	f->p_lvl3_lat = 1001; /* > 1000: C3 not supported */
	f->iapc_boot_arch = FADT_BOOT_NO_VGA | FADT_BOOT_NO_CMOS_RTC;
	f->flags = FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON | FADT_F_RESET_REG_SUP;
	f->reset_reg = gas_io(ACPI_RESET_PORT, 8);
	f->reset_value = ACPI_RESET_VALUE;
	memcpy(&f->hypervisor_vendor, "QLITEVMM", 8);
	acpi_header_init(&f->h, "FACP", sizeof(*f), 6);
	return off;
}

static long acpi_build_madt(struct acpi_builder *b, unsigned int ncpus)
{
	/* Two ISA overrides: PIT on pin 2, SCI level/active-high. */
	size_t len = sizeof(struct acpi_header) + 8 + ncpus * 8 + 12 + 2 * 10 + 6;
	long off = acpi_alloc(b, len);
	uint8_t *p;
	uint32_t v32;
	uint16_t v16;
	unsigned int i;

	if (off < 0)
		return off;
	p = b->buf + off + sizeof(struct acpi_header);
	v32 = LAPIC_ADDR;
	memcpy(p, &v32, 4);
	v32 = 1; /* PCAT_COMPAT: dual 8259s present */
	memcpy(p + 4, &v32, 4);
	p += 8;
	for (i = 0; i < ncpus; i++, p += 8) {
		p[0] = MADT_LAPIC;
		p[1] = 8;
		p[2] = (uint8_t)i; /* processor uid */
		p[3] = (uint8_t)i; /* APIC id */
		v32 = 1; /* enabled */
		memcpy(p + 4, &v32, 4);
	}
	p[0] = MADT_IOAPIC;
	p[1] = 12;
	p[2] = 0; /* IOAPIC id, as KVM's in-kernel IOAPIC reports */
	v32 = IOAPIC_ADDR;
	memcpy(p + 4, &v32, 4);
	v32 = 0; /* GSI base */
	memcpy(p + 8, &v32, 4);
	p += 12;
	/* ISA IRQ 0 -> GSI 2, conforming polarity/trigger (edge, high). */
	p[0] = MADT_ISO;
	p[1] = 10;
	p[2] = 0;
	p[3] = 0;
	v32 = 2;
	memcpy(p + 4, &v32, 4);
	v16 = 0;
	memcpy(p + 8, &v16, 2);
	p += 10;
	/* SCI: level-triggered, active high. */
	p[0] = MADT_ISO;
	p[1] = 10;
	p[2] = 0;
	p[3] = ACPI_SCI_IRQ;
	v32 = ACPI_SCI_IRQ;
	memcpy(p + 4, &v32, 4);
	v16 = 0x000d;
	memcpy(p + 8, &v16, 2);
	p += 10;
	/* NMI on LINT1 of every CPU. */
	p[0] = MADT_LAPIC_NMI;
	p[1] = 6;
	p[2] = 0xff;
	v16 = 0;
	memcpy(p + 3, &v16, 2);
	p[5] = 1;
	acpi_header_init((struct acpi_header *)(b->buf + off), "APIC", len, 4);
	return off;
}

int acpi_build(uint8_t *buf, size_t len, uint64_t gpa, const struct acpi_config *cfg)
{
	struct acpi_builder b = { .buf = buf, .len = len, .gpa = gpa };
	long rsdp, dsdt, fadt, madt, rsdt, xsdt;
	struct acpi_rsdp *r;
	uint32_t r32[2];
	uint64_t x64[2];

	if (!cfg || cfg->ncpus == 0 || cfg->ncpus > 255 || gpa > 0xffffffffull ||
	    len > 0x100000000ull - gpa)
		return -EINVAL;
	rsdp = acpi_alloc(&b, sizeof(struct acpi_rsdp));
	if (rsdp < 0)
		return (int)rsdp;
	dsdt = acpi_build_dsdt(&b);
	if (dsdt < 0)
		return (int)dsdt;
	fadt = acpi_build_fadt(&b, gpa + dsdt);
	if (fadt < 0)
		return (int)fadt;
	madt = acpi_build_madt(&b, cfg->ncpus);
	if (madt < 0)
		return (int)madt;

	r32[0] = (uint32_t)(gpa + fadt);
	r32[1] = (uint32_t)(gpa + madt);
	rsdt = acpi_alloc(&b, sizeof(struct acpi_header) + sizeof(r32));
	if (rsdt < 0)
		return (int)rsdt;
	memcpy(b.buf + rsdt + sizeof(struct acpi_header), r32, sizeof(r32));
	acpi_header_init((struct acpi_header *)(b.buf + rsdt), "RSDT",
			 sizeof(struct acpi_header) + sizeof(r32), 1);

	x64[0] = gpa + fadt;
	x64[1] = gpa + madt;
	xsdt = acpi_alloc(&b, sizeof(struct acpi_header) + sizeof(x64));
	if (xsdt < 0)
		return (int)xsdt;
	memcpy(b.buf + xsdt + sizeof(struct acpi_header), x64, sizeof(x64));
	acpi_header_init((struct acpi_header *)(b.buf + xsdt), "XSDT",
			 sizeof(struct acpi_header) + sizeof(x64), 1);

	r = (struct acpi_rsdp *)(b.buf + rsdp);
	memcpy(r->signature, "RSD PTR ", 8);
	memcpy(r->oem_id, "QLITE ", 6);
	r->revision = 2;
	r->rsdt_address = (uint32_t)(gpa + rsdt);
	r->length = sizeof(*r);
	r->xsdt_address = gpa + xsdt;
	r->checksum = acpi_checksum(r, 20); /* ACPI 1.0 part */
	r->extended_checksum = acpi_checksum(r, sizeof(*r));
	return (int)b.used;
}
