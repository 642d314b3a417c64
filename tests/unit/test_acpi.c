// SPDX-License-Identifier: MIT
/*
 * acpi_build: walk the tables the way a guest does (RSDP -> XSDT/RSDT ->
 * FADT -> DSDT, MADT), checking signatures, checksums and every pointer
 * against the buffer, never trusting a length before checking it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/boot.h"
#include "qlite/devices.h"
#include "qlite/pci.h"

#define TBL_GPA BOOT_ACPI_START
#define TBL_LEN (128 * KiB)
#define HDR_LEN 36
#define GUARD 64
#define GUARD_BYTE 0xa5

struct tables {
	const uint8_t *buf;
	size_t used;
	const uint8_t *fadt, *dsdt, *madt;
};

static uint16_t rd16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint8_t sum8(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	while (len--)
		s += *p++;
	return s;
}

/*
 * Resolve a table pointer: inside the used part, signature (any if @sig is
 * NULL), length, checksum.
 */
static const uint8_t *table_at(const struct tables *t, uint64_t addr, const char *sig)
{
	const uint8_t *p;
	uint32_t len;

	if (addr < TBL_GPA || addr - TBL_GPA > t->used - HDR_LEN)
		fail_msg("%s at 0x%llx is outside the %zu bytes built", sig ? sig : "table",
			 (unsigned long long)addr, t->used);
	p = t->buf + (addr - TBL_GPA);
	len = rd32(p + 4);
	if (sig && memcmp(p, sig, 4))
		fail_msg("expected %s at 0x%llx, found %.4s", sig, (unsigned long long)addr, p);
	if (len < HDR_LEN || len > t->used - (addr - TBL_GPA))
		fail_msg("%.4s length %u runs past the built area", p, len);
	if (sum8(p, len) != 0)
		fail_msg("%.4s checksum does not sum to 0", p);
	return p;
}

/* Follow RSDP -> XSDT and RSDT; both must list the same FADT and MADT. */
static void walk_roots(struct tables *t)
{
	const uint8_t *rsdp = t->buf, *xsdt, *rsdt;
	uint32_t xlen, rlen;
	unsigned int i, n;

	assert_memory_equal(rsdp, "RSD PTR ", 8);
	assert_int_equal(sum8(rsdp, 20), 0);
	assert_int_equal(rsdp[15], 2); /* revision: ACPI 2.0+ with XSDT */
	assert_int_equal(rd32(rsdp + 20), 36);
	assert_int_equal(sum8(rsdp, 36), 0);

	xsdt = table_at(t, rd64(rsdp + 24), "XSDT");
	rsdt = table_at(t, rd32(rsdp + 16), "RSDT");
	xlen = rd32(xsdt + 4);
	rlen = rd32(rsdt + 4);
	assert_int_equal((xlen - HDR_LEN) % 8, 0);
	assert_int_equal((rlen - HDR_LEN) % 4, 0);
	n = (xlen - HDR_LEN) / 8;
	assert_int_equal(n, (rlen - HDR_LEN) / 4);

	for (i = 0; i < n; i++) {
		uint64_t x = rd64(xsdt + HDR_LEN + i * 8);
		uint32_t r = rd32(rsdt + HDR_LEN + i * 4);
		const uint8_t *tb;

		assert_true(x == r);
		tb = table_at(t, x, NULL);
		if (!memcmp(tb, "FACP", 4)) {
			assert_null(t->fadt);
			t->fadt = tb;
		} else if (!memcmp(tb, "APIC", 4)) {
			assert_null(t->madt);
			t->madt = tb;
		}
	}
	assert_non_null(t->fadt);
	assert_non_null(t->madt);
}

/*
 * _PRT: one GSI-form entry per device slot, Package (4) { 0xSSSSFFFF, INTA,
 * Zero, GSI }, with the GSI the PCI bus asserts (pci_intx_gsi).
 */
static void check_prt(const uint8_t *aml, uint32_t len)
{
	const uint8_t *p = NULL;
	unsigned int n, slot;
	uint32_t i;

	for (i = 0; i + 4 <= len; i++)
		if (!memcmp(aml + i, "_PRT", 4)) {
			assert_null(p); /* exactly one */
			p = aml + i + 4;
		}
	assert_non_null(p);
	assert_true(p + 4 < aml + len);
	assert_int_equal(p[0], 0x12);	     /* PackageOp */
	assert_int_equal(p[1] & 0xc0, 0x40); /* 2-byte PkgLength */
	assert_true(p + ((p[1] & 0xf) | p[2] << 4) + 1 <= aml + len);
	n = p[3];
	assert_int_equal(n, PCI_SLOTS - 1);
	p += 4;
	for (slot = 1; slot <= n; slot++, p += 12) {
		assert_true(p + 12 <= aml + len);
		assert_int_equal(p[0], 0x12); /* PackageOp */
		assert_int_equal(p[1], 11);   /* PkgLength */
		assert_int_equal(p[2], 4);    /* NumElements */
		assert_int_equal(p[3], 0x0c); /* DWordPrefix */
		assert_int_equal(rd32(p + 4), slot << 16 | 0xffff);
		assert_int_equal(p[8], 0x00); /* INTA */
		assert_int_equal(p[9], 0x00); /* GSI form */
		assert_int_equal(p[10], 0x0a);
		assert_int_equal(p[11], 16 + slot % 8);
		assert_int_equal(p[11], pci_intx_gsi(slot, PCI_INTERRUPT_PIN_A));
	}
}

static void check_fadt_dsdt(struct tables *t)
{
	const uint8_t *f = t->fadt, *d, *aml;
	uint32_t dlen, i;
	bool s5 = false;

	assert_int_equal(f[8], 6); /* revision */
	assert_int_equal(rd32(f + 4), 276);
	/* DSDT (32-bit, offset 40) and X_DSDT (64-bit, offset 140) agree. */
	assert_true(rd32(f + 40) == rd64(f + 140));
	t->dsdt = d = table_at(t, rd64(f + 140), "DSDT");

	/* The fixed hardware the acpi_pm device implements. */
	assert_int_equal(rd16(f + 46), ACPI_SCI_IRQ);
	assert_int_equal(rd32(f + 56), ACPI_PM1_EVT);
	assert_int_equal(rd32(f + 64), ACPI_PM1_CNT);
	assert_int_equal(f[88], 4);		  /* PM1_EVT_LEN */
	assert_int_equal(f[89], 2);		  /* PM1_CNT_LEN */
	assert_true(rd32(f + 112) & (1u << 10));  /* RESET_REG_SUP */
	assert_false(rd32(f + 112) & (1u << 20)); /* not HW_REDUCED */
	assert_int_equal(f[116], 1);		  /* reset register in system I/O */
	assert_true(rd64(f + 120) == ACPI_RESET_PORT);
	assert_int_equal(f[128], ACPI_RESET_VALUE);
	assert_true(rd64(f + 176) == ACPI_PM1_CNT); /* X_PM1a_CNT_BLK address */

	/* _S5_ package: SLP_TYPa must match what acpi_pm treats as S5. */
	dlen = rd32(d + 4);
	aml = d + HDR_LEN;
	for (i = 0; i + 4 <= dlen - HDR_LEN; i++) {
		if (memcmp(aml + i, "_S5_", 4))
			continue;
		s5 = true;
		assert_true(i + 9 < dlen - HDR_LEN);
		assert_int_equal(aml[i + 4], 0x12); /* PackageOp */
		assert_int_equal(aml[i + 7], 0x0a); /* BytePrefix */
		assert_int_equal(aml[i + 8], ACPI_S5_TYP);
	}
	assert_true(s5);
	check_prt(aml, dlen - HDR_LEN);
}

static void check_madt(const struct tables *t, unsigned int ncpus)
{
	const uint8_t *m = t->madt, *p, *end;
	uint8_t seen_id[256] = { 0 }, seen_uid[256] = { 0 };
	unsigned int lapics = 0, ioapics = 0;
	bool iso0 = false, iso9 = false;

	assert_true(rd32(m + 4) >= HDR_LEN + 8);
	assert_int_equal(rd32(m + HDR_LEN), 0xfee00000);
	end = m + rd32(m + 4);
	for (p = m + HDR_LEN + 8; p < end; p += p[1]) {
		/* Every entry has a sane length and ends inside the table. */
		assert_true(end - p >= 2);
		assert_true(p[1] >= 2);
		assert_true(p[1] <= end - p);
		switch (p[0]) {
		case 0: /* processor local APIC */
			assert_int_equal(p[1], 8);
			assert_true(rd32(p + 4) & 1); /* enabled */
			assert_true(p[3] < ncpus);
			assert_int_equal(seen_id[p[3]]++, 0);
			assert_int_equal(seen_uid[p[2]]++, 0);
			lapics++;
			break;
		case 1: /* I/O APIC */
			assert_int_equal(p[1], 12);
			assert_int_equal(rd32(p + 4), 0xfec00000);
			assert_int_equal(rd32(p + 8), 0); /* GSI base */
			ioapics++;
			break;
		case 2: /* interrupt source override */
			assert_int_equal(p[1], 10);
			assert_int_equal(p[2], 0); /* ISA */
			if (p[3] == 0) {
				assert_int_equal(rd32(p + 4), 2);
				iso0 = true;
			} else if (p[3] == ACPI_SCI_IRQ) {
				assert_int_equal(rd32(p + 4), ACPI_SCI_IRQ);
				/* SCI: active high (01), level (11 << 2). */
				assert_int_equal(rd16(p + 8), 0x000d);
				iso9 = true;
			}
			break;
		default:
			break;
		}
	}
	assert_ptr_equal(p, end); /* entries tile the table exactly */
	assert_int_equal(lapics, ncpus);
	assert_int_equal(ioapics, 1);
	assert_true(iso0);
	assert_true(iso9);
}

static void check_ncpus(unsigned int ncpus)
{
	struct acpi_config cfg = { .ncpus = ncpus };
	uint8_t *buf = test_malloc(TBL_LEN + GUARD);
	struct tables t = { .buf = buf };
	unsigned int i;
	int ret;

	/* Garbage first: the builder must not rely on a zeroed buffer. */
	memset(buf, GUARD_BYTE, TBL_LEN + GUARD);
	ret = acpi_build(buf, TBL_LEN, TBL_GPA, &cfg);
	assert_true(ret > HDR_LEN && ret <= (int)TBL_LEN);
	t.used = ret;
	walk_roots(&t);
	check_fadt_dsdt(&t);
	check_madt(&t, ncpus);
	for (i = TBL_LEN; i < TBL_LEN + GUARD; i++)
		assert_int_equal(buf[i], GUARD_BYTE);
	test_free(buf);
}

static void test_ncpus_1(void **state)
{
	check_ncpus(1);
}

static void test_ncpus_2(void **state)
{
	check_ncpus(2);
}

static void test_ncpus_64(void **state)
{
	check_ncpus(64);
}

static void test_ncpus_255(void **state)
{
	check_ncpus(255);
}

static void test_invalid_config(void **state)
{
	uint8_t *buf = test_calloc(1, TBL_LEN);
	struct acpi_config cfg = { .ncpus = 0 };

	assert_int_equal(acpi_build(buf, TBL_LEN, TBL_GPA, &cfg), -EINVAL);
	cfg.ncpus = 256;
	assert_int_equal(acpi_build(buf, TBL_LEN, TBL_GPA, &cfg), -EINVAL);
	cfg.ncpus = UINT32_MAX;
	assert_int_equal(acpi_build(buf, TBL_LEN, TBL_GPA, &cfg), -EINVAL);
	assert_int_equal(acpi_build(buf, TBL_LEN, TBL_GPA, NULL), -EINVAL);
	/* RSDT entries are 32-bit: tables above 4 GiB cannot be described. */
	cfg.ncpus = 1;
	assert_int_equal(acpi_build(buf, TBL_LEN, 0xfffff000, &cfg), -EINVAL);
	assert_int_equal(acpi_build(buf, TBL_LEN, 5 * GiB, &cfg), -EINVAL);
	test_free(buf);
}

/*
 * gpa near 2^64: gpa + len wraps to a small value, which a naive
 * "gpa + len > 4G" check accepts, producing tables with truncated pointers.
 */
static void test_gpa_wraps(void **state)
{
	static uint8_t buf[TBL_LEN];
	struct acpi_config cfg = { .ncpus = 1 };

	assert_int_equal(acpi_build(buf, TBL_LEN, UINT64_MAX - 0xfff, &cfg), -EINVAL);
	assert_int_equal(acpi_build(buf, TBL_LEN, (uint64_t)-TBL_LEN, &cfg), -EINVAL);
}

/* Every size short of what is needed fails cleanly and writes nothing past len. */
static void check_too_small(unsigned int ncpus)
{
	struct acpi_config cfg = { .ncpus = ncpus };
	uint8_t *big = test_calloc(1, TBL_LEN);
	int need, ret;
	size_t len, i;

	need = acpi_build(big, TBL_LEN, TBL_GPA, &cfg);
	assert_true(need > 0);
	test_free(big);

	for (len = 0; len <= (size_t)need; len++) {
		/* Exact allocation plus a guard: ASan and the guard both watch. */
		uint8_t *buf = test_malloc(len + GUARD);

		memset(buf, GUARD_BYTE, len + GUARD);
		ret = acpi_build(buf, len, TBL_GPA, &cfg);
		if (len < (size_t)need) {
			if (ret != -ENOSPC)
				fail_msg("ncpus %u, len %zu (need %d): got %d, want -ENOSPC", ncpus,
					 len, need, ret);
		} else {
			assert_int_equal(ret, need);
		}
		for (i = len; i < len + GUARD; i++)
			if (buf[i] != GUARD_BYTE)
				fail_msg("ncpus %u, len %zu: byte %zu past the buffer written",
					 ncpus, len, i - len);
		test_free(buf);
	}
}

static void test_too_small(void **state)
{
	check_too_small(1);
	check_too_small(64);
	check_too_small(255);
}

static void test_checksum_helper(void **state)
{
	uint8_t b[5] = { 1, 2, 3, 4, 0 };

	b[4] = acpi_checksum(b, 4);
	assert_int_equal(sum8(b, 5), 0);
	assert_int_equal(acpi_checksum(b, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ncpus_1),
		cmocka_unit_test(test_ncpus_2),
		cmocka_unit_test(test_ncpus_64),
		cmocka_unit_test(test_ncpus_255),
		cmocka_unit_test(test_invalid_config),
		cmocka_unit_test(test_gpa_wraps),
		cmocka_unit_test(test_too_small),
		cmocka_unit_test(test_checksum_helper),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
