// SPDX-License-Identifier: MIT
/*
 * virtio-pci's two config-space paths, on a VM with virtio-rng and a disk:
 *
 * - VIRTIO_PCI_CAP_PCI_CFG: the window reaches the BAR's handlers (common
 *   config both ways, device config, ISR read-to-clear, a 2-byte notify
 *   write kicks the queue), and hostile cap.bar/offset/length (other BARs,
 *   bad lengths, misaligned, past the BAR, wrapping) read 0 and write
 *   nothing.
 * - INTx with MSI-X off: pin A, Interrupt Line writable, the IOAPIC pin
 *   (KVM_GET_IRQCHIP's irr) follows ISR, Status.Interrupt Status and
 *   Command.Interrupt Disable work, a line shared with another slot stays up
 *   while either asserts, MSI-X on means no INTx, reset drops the line, a
 *   saved asserted state restores asserted, and a config space saved before
 *   INTx/PCI_CFG existed (no pin, no capability) still loads, without them.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/loop.h"
#include "qlite/virtio.h"

static int failures;

#include "vdrv.h" /* after failures: its CHECKs count there */

#define C_DF 0x04
#define C_GFSELECT 0x08
#define C_GF 0x0c
#define C_NUMQ 0x12
#define C_STATUS 0x14
#define C_Q_SELECT 0x16
#define C_Q_SIZE 0x18
#define C_Q_ENABLE 0x1c
#define C_Q_DESC 0x20
#define C_Q_AVAIL 0x28
#define C_Q_USED 0x30
#define ISR_OFF 0x1000
#define DEVCFG_OFF 0x2000
#define NOTIFY_OFF 0x3000
#define MSIX_TABLE_OFF 0x4000
#define BAR_SIZE 0x8000

#define QSIZE 8
#define RING 0x2000000ULL
#define R_AVAIL 0x200
#define R_USED 0x400
#define R_BUF 0x800

/* ---- access paths ---- */

static uint32_t cfg_r(struct virtio_dev *d, unsigned int off, unsigned int len)
{
	return pci_config_read(d->vm->pci, d->pci.slot, off, len);
}

static void cfg_w(struct virtio_dev *d, unsigned int off, unsigned int len, uint32_t v)
{
	pci_config_write(d->vm->pci, d->pci.slot, off, len, v);
}

/* Through the ports, as a guest does (mechanism #1). */
static uint32_t port_r(struct virtio_dev *d, unsigned int off, unsigned int len)
{
	uint32_t a = 0x80000000u | d->pci.slot << 11 | (off & 0xfc), v = 0;

	CHECK(bus_write(&d->vm->pio, 0xcf8, (uint8_t *)&a, 4) == 0);
	CHECK(bus_read(&d->vm->pio, 0xcfc + (off & 3), (uint8_t *)&v, len) == 0);
	return v;
}

static void port_w(struct virtio_dev *d, unsigned int off, unsigned int len, uint32_t v)
{
	uint32_t a = 0x80000000u | d->pci.slot << 11 | (off & 0xfc);

	CHECK(bus_write(&d->vm->pio, 0xcf8, (uint8_t *)&a, 4) == 0);
	CHECK(bus_write(&d->vm->pio, 0xcfc + (off & 3), (uint8_t *)&v, len) == 0);
}

/* Offset of the vendor capability of @type (0: none), walking the list as a driver. */
static unsigned int find_vcap(struct virtio_dev *d, uint8_t type)
{
	unsigned int c = cfg_r(d, PCI_CAPABILITY_LIST, 1), n;

	for (n = 0; c && n < 48; n++, c = cfg_r(d, c + 1, 1))
		if (cfg_r(d, c, 1) == 0x09 && cfg_r(d, c + 3, 1) == type)
			return c;
	return 0;
}

static unsigned int pcap; /* the PCI_CFG capability of the device under test */

static void win_set(struct virtio_dev *d, uint8_t bar, uint32_t off, uint32_t len)
{
	cfg_w(d, pcap + 4, 1, bar);
	cfg_w(d, pcap + 8, 4, off);
	cfg_w(d, pcap + 12, 4, len);
}

static uint32_t win_r(struct virtio_dev *d, uint8_t bar, uint32_t off, uint32_t len)
{
	win_set(d, bar, off, len);
	return cfg_r(d, pcap + 16, len == 1 || len == 2 ? len : 4);
}

static void win_w(struct virtio_dev *d, uint8_t bar, uint32_t off, uint32_t len, uint32_t v)
{
	win_set(d, bar, off, len);
	cfg_w(d, pcap + 16, len == 1 || len == 2 ? len : 4, v);
}

/* The IOAPIC's view of GSI @gsi: is the line up? */
static bool line_up(struct vm *vm, unsigned int gsi)
{
	struct kvm_irqchip chip = { .chip_id = KVM_IRQCHIP_IOAPIC };

	if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0) {
		fprintf(stderr, "FAIL KVM_GET_IRQCHIP: %s\n", strerror(errno));
		failures++;
		return false;
	}
	return chip.chip.ioapic.irr & (1u << gsi);
}

static bool status_int(struct virtio_dev *d)
{
	return cfg_r(d, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT;
}

static void config_interrupt(struct virtio_dev *d)
{
	pthread_mutex_lock(&d->lock);
	virtio_config_changed(d);
	pthread_mutex_unlock(&d->lock);
}

/* ---- PCI_CFG ---- */

static void test_pci_cfg(struct virtio_dev *rng, struct virtio_dev *blk)
{
	static const struct {
		uint8_t bar;
		uint32_t off, len;
	} bad[] = {
		{ 1, C_NUMQ, 2 },	  /* other BARs */
		{ 5, C_NUMQ, 2 },
		{ 0xff, C_NUMQ, 2 },
		{ 0, C_NUMQ, 0 },	  /* lengths */
		{ 0, C_NUMQ, 3 },
		{ 0, C_DF, 8 },
		{ 0, C_NUMQ, 0xffffffff },
		{ 0, C_NUMQ + 1, 2 },	  /* misaligned */
		{ 0, C_DF + 2, 4 },
		{ 0, BAR_SIZE - 2, 4 },
		{ 0, BAR_SIZE, 1 },	  /* past the BAR, wrapping */
		{ 0, BAR_SIZE, 4 },
		{ 0, 0xfffffffc, 4 },
		{ 0, 0xffffffff, 1 },
		{ 0, 0x80000000u, 4 },
	};
	struct virtio_dev *d = rng;
	uint32_t cap_before[5];
	unsigned int i;
	uint64_t cap_bytes;

	pcap = find_vcap(d, 5);
	CHECK(pcap != 0);
	if (!pcap)
		return;
	CHECK(cfg_r(d, pcap + 2, 1) == 20); /* cap_len: virtio_pci_cfg_cap */
	CHECK(find_vcap(blk, 5) != 0);

	/* Reads: common config at each width, device config, the MSI-X table. */
	CHECK(win_r(d, 0, C_NUMQ, 2) == d->ops->nqueues);
	CHECK(win_r(d, 0, C_DF, 4) == bar_r(d, C_DF, 4));
	CHECK(win_r(d, 0, C_STATUS, 1) == 0);
	bar_w(d, MSIX_TABLE_OFF + 8, 0x1234, 4);
	CHECK(win_r(d, 0, MSIX_TABLE_OFF + 8, 4) == 0x1234);
	pcap = find_vcap(blk, 5);
	CHECK(win_r(blk, 0, DEVCFG_OFF, 4) == bar_r(blk, DEVCFG_OFF, 4)); /* capacity */
	CHECK(win_r(blk, 0, DEVCFG_OFF, 4) != 0);
	CHECK(win_r(blk, 0, DEVCFG_OFF + 0x100, 4) == 0); /* past the device config */
	pcap = find_vcap(d, 5);
	/* The window through the ports: byte lanes of a dword access. */
	win_set(d, 0, C_NUMQ, 2);
	CHECK(port_r(d, pcap + 16, 2) == d->ops->nqueues);
	CHECK((port_r(d, pcap + 16, 4) & 0xffff) == d->ops->nqueues);

	/* Writes reach the same registers. */
	win_w(d, 0, C_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	CHECK(bar_r(d, C_STATUS, 1) == VIRTIO_STATUS_ACKNOWLEDGE);
	win_w(d, 0, C_GFSELECT, 4, 1);
	CHECK(bar_r(d, C_GFSELECT, 4) == 1);
	win_w(d, 0, C_GFSELECT, 4, 0);
	port_w(d, pcap + 4, 1, 0);
	port_w(d, pcap + 8, 4, C_STATUS);
	port_w(d, pcap + 12, 4, 1);
	port_w(d, pcap + 16, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	CHECK(bar_r(d, C_STATUS, 1) == (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER));

	/* Hostile fields: reads give 0, writes change nothing, nothing breaks. */
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		uint32_t w = bad[i].len == 1 || bad[i].len == 2 ? bad[i].len : 4;

		win_set(d, bad[i].bar, bad[i].off, bad[i].len);
		CHECK(cfg_r(d, pcap + 16, w) == 0);
		CHECK(cfg_r(d, pcap + 16, 4) == 0);
		cfg_w(d, pcap + 16, w, 0);
		CHECK(bar_r(d, C_STATUS, 1) == (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER));
		CHECK(bar_r(d, C_NUMQ, 2) == d->ops->nqueues);
	}
	/* A write spanning the capability header and the window: the header stays. */
	for (i = 0; i < 4; i++)
		cap_before[i] = cfg_r(d, pcap + 4 * i, 4);
	cfg_w(d, pcap, 4, 0xffffffff);
	cfg_w(d, pcap + 2, 2, 0);
	CHECK(cfg_r(d, pcap, 1) == 0x09 && cfg_r(d, pcap + 2, 1) == 20 &&
	      cfg_r(d, pcap + 3, 1) == 5 && cfg_r(d, pcap + 1, 1) == (cap_before[0] >> 8 & 0xff));
	cap_bytes = cfg_r(d, pcap + 4, 4);
	CHECK((cap_bytes & 0xffffff00) == 0); /* id, padding: read-only zero */
	/* Partial and unaligned window accesses stay in config space. */
	win_set(d, 0, C_NUMQ, 2);
	CHECK(cfg_r(d, pcap + 17, 1) == 0);
	CHECK(cfg_r(d, pcap + 16, 1) == d->ops->nqueues);
	CHECK(cfg_r(d, 252, 4) == 0);
	CHECK(cfg_r(d, 255, 1) == 0);
	CHECK(cfg_r(d, 256, 4) == 0xffffffff);
	cfg_w(d, 254, 4, 0xffffffff);
	win_w(d, 0, C_STATUS, 1, 0); /* reset, finished by the main loop */
	LOOP_UNTIL(d->vm, bar_r(d, C_STATUS, 1) == 0);
}

/* Bring the rng up with MSI-X off; a request; its kick through PCI_CFG. */
static void test_pci_cfg_kick(struct virtio_dev *d)
{
	struct vring_desc *desc = gpa(d->vm, RING, 16 * QSIZE);
	uint16_t *avail = gpa(d->vm, RING + R_AVAIL, 6 + 2 * QSIZE);
	uint16_t *used = gpa(d->vm, RING + R_USED, 4 + 8 * QSIZE);
	unsigned int gsi = pci_intx_gsi(d->pci.slot, PCI_INTERRUPT_PIN_A);
	uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	pcap = find_vcap(d, 5);
	memset(gpa(d->vm, RING, 0x1000), 0, 0x1000);
	bar_w(d, C_STATUS, st, 1);
	bar_w(d, C_GFSELECT, 1, 4);
	bar_w(d, C_GF, 1, 4); /* VERSION_1 only */
	st |= VIRTIO_STATUS_FEATURES_OK;
	bar_w(d, C_STATUS, st, 1);
	bar_w(d, C_Q_SELECT, 0, 2);
	bar_w(d, C_Q_SIZE, QSIZE, 2);
	bar_w(d, C_Q_DESC, RING, 4);
	bar_w(d, C_Q_AVAIL, RING + R_AVAIL, 4);
	bar_w(d, C_Q_USED, RING + R_USED, 4);
	bar_w(d, C_Q_ENABLE, 1, 2);
	st |= VIRTIO_STATUS_DRIVER_OK;
	bar_w(d, C_STATUS, st, 1);
	CHECK(bar_r(d, C_STATUS, 1) == st);
	for (int n = 0; n < 5; n++) /* DRIVER_OK's own look at the ring */
		loop_run_once(d->vm->loop, 10);
	bar_r(d, ISR_OFF, 1); /* virtio-rng interrupts after every look, even an empty one */

	desc[0] = (struct vring_desc){ RING + R_BUF, 64, VRING_DESC_F_WRITE, 0 };
	avail[2] = 0;
	__atomic_store_n(&avail[1], 1, __ATOMIC_RELEASE);
	for (int n = 0; n < 20; n++)
		loop_run_once(d->vm->loop, 10);
	CHECK(__atomic_load_n(&used[1], __ATOMIC_ACQUIRE) == 0); /* not kicked yet */
	CHECK(!line_up(d->vm, gsi));
	win_w(d, 0, NOTIFY_OFF, 2, 0); /* queue 0's notify address */
	LOOP_UNTIL(d->vm, __atomic_load_n(&used[1], __ATOMIC_ACQUIRE) == 1);
	CHECK(used[4] == 64); /* used element 0's length: the random bytes */

	/* MSI-X is off: ISR says "queue", the INTx line is up, Status says so. */
	CHECK(line_up(d->vm, gsi));
	CHECK(status_int(d));
	CHECK(win_r(d, 0, ISR_OFF, 1) == 1); /* read through PCI_CFG: acknowledges */
	CHECK(d->st.isr == 0);
	CHECK(!line_up(d->vm, gsi));
	CHECK(!status_int(d));
	CHECK(bar_r(d, ISR_OFF, 1) == 0);
}

/* ---- INTx ---- */

static void test_intx(struct virtio_dev *d, struct virtio_dev *other)
{
	unsigned int gsi = pci_intx_gsi(d->pci.slot, PCI_INTERRUPT_PIN_A);
	unsigned int ogsi = pci_intx_gsi(other->pci.slot, PCI_INTERRUPT_PIN_A);
	struct pci_dev fake[PCI_SLOTS];
	unsigned int nfake = 0, i;
	struct pci_dev *share = NULL;
	uint16_t cmd;

	CHECK(gsi == 16u + d->pci.slot % 8u);
	CHECK(gsi != ogsi);
	CHECK(cfg_r(d, PCI_INTERRUPT_PIN, 1) == PCI_INTERRUPT_PIN_A);
	CHECK(pci_config_read(d->vm->pci, 0, PCI_INTERRUPT_PIN, 1) == 0); /* host bridge */
	cfg_w(d, PCI_INTERRUPT_LINE, 1, 11);
	CHECK(cfg_r(d, PCI_INTERRUPT_LINE, 1) == 11);
	cfg_w(d, PCI_INTERRUPT_PIN, 1, 3);
	CHECK(cfg_r(d, PCI_INTERRUPT_PIN, 1) == PCI_INTERRUPT_PIN_A); /* read-only */

	/* A config interrupt with MSI-X off: line up until ISR is read. */
	CHECK(!line_up(d->vm, gsi) && !status_int(d));
	config_interrupt(d);
	CHECK(line_up(d->vm, gsi) && status_int(d));
	CHECK(!line_up(d->vm, ogsi));
	CHECK(bar_r(d, ISR_OFF, 1) == 2);
	CHECK(!line_up(d->vm, gsi) && !status_int(d));

	/* Interrupt Disable: Status still says pending, the line stays down. */
	cmd = cfg_r(d, PCI_COMMAND, 2);
	cfg_w(d, PCI_COMMAND, 2, cmd | PCI_COMMAND_INTX_DISABLE);
	config_interrupt(d);
	CHECK(status_int(d) && !line_up(d->vm, gsi));
	cfg_w(d, PCI_COMMAND, 2, cmd);
	CHECK(line_up(d->vm, gsi));
	port_w(d, PCI_COMMAND + 1, 1, (cmd | PCI_COMMAND_INTX_DISABLE) >> 8);
	CHECK(!line_up(d->vm, gsi));
	port_w(d, PCI_COMMAND, 2, cmd);
	CHECK(line_up(d->vm, gsi));
	CHECK((port_r(d, PCI_COMMAND, 4) >> 16) & PCI_STATUS_INTERRUPT); /* status via ports */

	/* A function in slot + 8 shares the line: it stays up while either asserts. */
	for (i = d->pci.slot + 1; i < PCI_SLOTS && nfake < ARRAY_SIZE(fake); i++) {
		struct pci_dev *f = &fake[nfake];

		if (d->vm->pci->devs[i])
			continue;
		pci_dev_init(f, "fake", 0x1b36, 0x00ff, 0xff0000, 0);
		f->cfg[PCI_INTERRUPT_PIN] = PCI_INTERRUPT_PIN_A;
		CHECK(pci_dev_register(d->vm->pci, f) == 0);
		nfake++;
		if (f->slot == d->pci.slot + 8) {
			share = f;
			break;
		}
	}
	CHECK(share != NULL);
	if (share) {
		CHECK(pci_intx_gsi(share->slot, PCI_INTERRUPT_PIN_A) == gsi);
		pci_set_intx(share, true);
		CHECK(bar_r(d, ISR_OFF, 1) == 2); /* d drops out */
		CHECK(line_up(d->vm, gsi));
		CHECK(pci_config_read(d->vm->pci, share->slot, PCI_STATUS, 2) &
		      PCI_STATUS_INTERRUPT);
		config_interrupt(d);
		pci_set_intx(share, false);
		CHECK(line_up(d->vm, gsi));
		CHECK(bar_r(d, ISR_OFF, 1) == 2);
		CHECK(!line_up(d->vm, gsi));
		pci_set_intx(share, true);
		pci_set_intx(share, true);
		CHECK(line_up(d->vm, gsi));
	}
	while (nfake)
		pci_dev_unregister(&fake[--nfake]); /* drops share's assertion */
	CHECK(!line_up(d->vm, gsi));

	/* MSI-X on: no INTx at all; the config bit still lands in ISR. */
	cfg_w(d, d->msix.cap + 2, 2, 0x8000);
	CHECK(msix_enabled(&d->msix));
	config_interrupt(d);
	CHECK(!line_up(d->vm, gsi) && !status_int(d));
	CHECK(d->st.isr == 2);
	/* Off again with ISR set: INTx is ISR's OR (virtio 1.x 4.1.4.5.1). */
	cfg_w(d, d->msix.cap + 2, 2, 0);
	CHECK(line_up(d->vm, gsi) && status_int(d));

	/* A device reset drops the line. */
	bar_w(d, C_STATUS, 0, 1);
	LOOP_UNTIL(d->vm, bar_r(d, C_STATUS, 1) == 0);
	CHECK(!line_up(d->vm, gsi) && !status_int(d) && d->st.isr == 0);
}

/* ---- state ---- */

static uint8_t *save(struct device *dev, size_t *len)
{
	size_t need = 0;
	uint8_t *buf;

	device_state_save(dev, NULL, 0, &need);
	buf = malloc(need ? need : 1);
	CHECK(device_state_save(dev, buf, need, len) == 0);
	return buf;
}

/* Offset of field @name's bytes in a saved buffer, or -1 (as test_conformance). */
static long field_at(const uint8_t *buf, size_t len, const char *name)
{
	size_t off = 8;

	while (off + 2 <= len) {
		uint16_t nlen;
		uint32_t size;

		memcpy(&nlen, buf + off, 2);
		memcpy(&size, buf + off + 2 + nlen, 4);
		if (nlen == strlen(name) && !memcmp(buf + off + 2, name, nlen))
			return (long)(off + 2 + nlen + 4);
		off += 2 + nlen + 4 + size;
	}
	return -1;
}

static void test_state(struct device *dev)
{
	struct virtio_dev *d = dev->opaque;
	unsigned int gsi = pci_intx_gsi(d->pci.slot, PCI_INTERRUPT_PIN_A);
	unsigned int c = find_vcap(d, 5);
	struct qerr e = { 0 };
	uint8_t *ref, *old;
	size_t len;
	long cfg;

	config_interrupt(d);
	CHECK(line_up(d->vm, gsi));
	ref = save(dev, &len);
	/* Reset drops it; loading the asserted state brings it back. */
	bar_w(d, C_STATUS, 0, 1);
	LOOP_UNTIL(d->vm, bar_r(d, C_STATUS, 1) == 0);
	CHECK(!line_up(d->vm, gsi));
	CHECK(device_state_load(dev, ref, len, &e) == 0);
	CHECK(line_up(d->vm, gsi) && status_int(d) && d->st.isr == 2);
	/* Interrupt Disable in the saved config: pending, line down. */
	cfg = field_at(ref, len, "pci.cfg");
	CHECK(cfg > 0 && c);
	if (cfg <= 0 || !c) {
		free(ref);
		return;
	}
	old = malloc(len);
	memcpy(old, ref, len);
	old[cfg + PCI_COMMAND + 1] |= PCI_COMMAND_INTX_DISABLE >> 8;
	CHECK(device_state_load(dev, old, len, &e) == 0);
	CHECK(!line_up(d->vm, gsi) && status_int(d));

	/* The layout before INTx and PCI_CFG: no pin, no capability on the list. */
	memcpy(old, ref, len);
	old[cfg + PCI_INTERRUPT_PIN] = 0;
	old[cfg + PCI_CAPABILITY_LIST] = old[cfg + c + 1];
	memset(old + cfg + c, 0, 20);
	CHECK(device_state_load(dev, old, len, &e) == 0);
	if (e.msg[0])
		fprintf(stderr, "FAIL old layout: %s\n", e.msg);
	CHECK(cfg_r(d, PCI_INTERRUPT_PIN, 1) == 0);
	CHECK(find_vcap(d, 5) == 0);
	CHECK(!line_up(d->vm, gsi)); /* ISR is 2, but there is no pin */
	config_interrupt(d);
	CHECK(!line_up(d->vm, gsi));
	/* Its window bytes are not a capability: nothing reaches the BAR. */
	cfg_w(d, c + 8, 4, C_NUMQ);
	cfg_w(d, c + 12, 4, 2);
	CHECK(cfg_r(d, c + 16, 2) == 0);
	/* Half old, half new: refused. */
	memcpy(old, ref, len);
	old[cfg + PCI_INTERRUPT_PIN] = 0;
	e.msg[0] = 0;
	CHECK(device_state_load(dev, old, len, &e) != 0);
	CHECK(strstr(e.msg, "virtio-pci") != NULL);
	memcpy(old, ref, len);
	old[cfg + PCI_CAPABILITY_LIST] = old[cfg + c + 1];
	CHECK(device_state_load(dev, old, len, &e) != 0);

	CHECK(device_state_load(dev, ref, len, &e) == 0);
	CHECK(find_vcap(d, 5) == c && line_up(d->vm, gsi));
	CHECK(bar_r(d, ISR_OFF, 1) == 2);
	CHECK(!line_up(d->vm, gsi));
	free(old);
	free(ref);
}

int main(void)
{
	char disk[] = "/tmp/qlite-vpci-XXXXXX";
	struct disk_config dc = { 0 };
	struct virtio_dev *rng = NULL, *blk = NULL;
	struct device *rng_dev = NULL;
	struct ktest t;
	struct device *dev;
	int fd, ret;

	ret = ktest_create(&t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	fd = mkstemp(disk);
	CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	close(fd);
	dc.path = disk;
	t.devices.rng = true;
	t.devices.disks = &dc;
	t.devices.ndisks = 1;
	CHECK(ktest_start(&t, GT_COUNT_FOREVER) == 0);
	if (!t.vm) {
		ktest_destroy(&t);
		unlink(disk);
		return 1;
	}
	for (dev = t.vm->devices; dev; dev = dev->next) {
		if (strcmp(dev->cls->name, "virtio-pci") || !dev->next)
			continue;
		if (!strcmp(dev->next->cls->name, "virtio-rng")) {
			rng = dev->opaque;
			rng_dev = dev;
		} else if (!strcmp(dev->next->cls->name, "virtio-blk")) {
			blk = dev->opaque;
		}
	}
	CHECK(rng && blk);
	if (rng && blk) {
		test_pci_cfg(rng, blk);
		test_pci_cfg_kick(rng);
		test_intx(rng, blk);
		test_state(rng_dev);
	}
	ktest_destroy(&t);
	unlink(disk);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
