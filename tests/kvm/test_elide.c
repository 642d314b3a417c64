// SPDX-License-Identifier: MIT
/*
 * I/O-aware checkpoint elision, end to end on a real virtio-blk device
 * driven from the host side (as test_virtio_blk.c does): three 4 KiB reads
 * fill three guest pages from blocks 0, 1 and 2 of the image, then
 *
 * - page 0 is left alone: a disk reference;
 * - page 1 is changed in guest memory: data;
 * - block 2 is changed on the image behind the VM's back: data (the read
 *   recorded no hash; the checkpoint compares the page with the image);
 * - --no-elide: no references at all;
 * - the image shrunk under the VM (the read fails): data, and the
 *   checkpoint still succeeds.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/checkpoint.h"
#include "qlite/loop.h"
#include "qlite/virtio.h"

static int failures;

#include "vdrv.h" /* after failures: its CHECKs count there */

#define C_GFSELECT 0x08
#define C_GF 0x0c
#define C_STATUS 0x14
#define C_Q_SELECT 0x16
#define C_Q_SIZE 0x18
#define C_Q_ENABLE 0x1c
#define C_Q_DESC 0x20
#define C_Q_AVAIL 0x28
#define C_Q_USED 0x30
#define NOTIFY_OFF 0x3000

#define QSIZE 16
#define RING 0x2000000ULL
#define R_AVAIL 0x200
#define R_USED 0x400
#define R_HDR 0x800
#define R_STATUS 0xa00
#define R_DATA 0x1000 /* 4 KiB per request, page-aligned */
#define NREQ 3

/* Block @b of the image: every byte nonzero, and different per block. */
static void block_fill(uint8_t *buf, unsigned int b)
{
	for (unsigned int i = 0; i < 4096; i++)
		buf[i] = (uint8_t)(1 + (i * 7 + b * 31) % 251);
}

/* VERSION_1 driver, then one 4 KiB read of block i into R_DATA + 4096 i. */
static void read_blocks(struct virtio_dev *d)
{
	struct vm *vm = d->vm;
	struct vring_desc *desc = gpa(vm, RING, 16 * QSIZE);
	uint16_t *avail = gpa(vm, RING + R_AVAIL, 6 + 2 * QSIZE);
	uint16_t *used = gpa(vm, RING + R_USED, 6 + 8 * QSIZE);
	uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
	unsigned int i;

	memset(gpa(vm, RING, R_DATA), 0, R_DATA);
	bar_w(d, C_STATUS, 0, 1);
	LOOP_UNTIL(vm, bar_r(d, C_STATUS, 1) == 0);
	bar_w(d, C_STATUS, st, 1);
	bar_w(d, C_GFSELECT, 1, 4);
	bar_w(d, C_GF, 1, 4);
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
	for (i = 0; i < NREQ; i++) {
		uint32_t *hdr = gpa(vm, RING + R_HDR + 16 * i, 16);
		unsigned int h = 3 * i;

		hdr[0] = 0; /* VIRTIO_BLK_T_IN */
		hdr[1] = 0;
		hdr[2] = 8 * i;
		hdr[3] = 0;
		*(uint8_t *)gpa(vm, RING + R_STATUS + i, 1) = 0xff;
		desc[h] = (struct vring_desc){ RING + R_HDR + 16 * i, 16, VRING_DESC_F_NEXT,
					       (uint16_t)(h + 1) };
		desc[h + 1] = (struct vring_desc){ RING + R_DATA + 4096 * i, 4096,
						   VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
						   (uint16_t)(h + 2) };
		desc[h + 2] = (struct vring_desc){ RING + R_STATUS + i, 1, VRING_DESC_F_WRITE, 0 };
		avail[2 + i] = (uint16_t)h;
	}
	__atomic_store_n(&avail[1], NREQ, __ATOMIC_RELEASE);
	bar_w(d, NOTIFY_OFF, 0, 2);
	LOOP_UNTIL(vm, __atomic_load_n(&used[1], __ATOMIC_ACQUIRE) == NREQ);
	for (i = 0; i < NREQ; i++)
		CHECK(*(uint8_t *)gpa(vm, RING + R_STATUS + i, 1) == 0);
}

static void rm_ckpt(const char *dir)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", dir, CKPT_STATE_FILE);
	unlink(p);
	snprintf(p, sizeof(p), "%s/%s", dir, CKPT_MEMORY_FILE);
	unlink(p);
	rmdir(dir);
}

/* A --stop checkpoint into a fresh directory; its stats, or all ~0 on failure. */
static struct ckpt_stats save(struct vm *vm, bool no_elide)
{
	char dir[] = "/tmp/qlite-elide-ckpt-XXXXXX";
	struct ckpt_params p = { .dir = dir, .stop = true, .no_elide = no_elide };
	struct ckpt_stats st;
	struct ckpt_job *j = NULL;
	struct qerr e = { 0 };

	memset(&st, 0xff, sizeof(st));
	if (!mkdtemp(dir)) {
		CHECK(!"mkdtemp");
		return st;
	}
	if (ckpt_save_start(vm, &p, false, &j, &e) || ckpt_job_finish(j, &st, &e)) {
		fprintf(stderr, "checkpoint: %s\n", e.msg);
		CHECK(!"checkpoint failed");
		memset(&st, 0xff, sizeof(st));
	}
	ckpt_job_free(j);
	vm_resume(vm);
	rm_ckpt(dir);
	return st;
}

int main(void)
{
	char path[] = "/tmp/qlite-elide-XXXXXX";
	struct disk_config dc = { 0 };
	struct virtio_dev *vd = NULL;
	uint8_t buf[4096], *page;
	struct ckpt_stats st;
	struct ktest t;
	struct device *dev;
	int fd, ret;

	ret = ktest_create(&t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	fd = mkstemp(path);
	CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	for (unsigned int b = 0; b < NREQ; b++) {
		block_fill(buf, b);
		CHECK(pwrite(fd, buf, 4096, (off_t)b * 4096) == 4096);
	}
	dc.path = path;
	t.devices.disks = &dc;
	t.devices.ndisks = 1;
	CHECK(ktest_start(&t, GT_COUNT_FOREVER) == 0);
	for (dev = t.vm ? t.vm->devices : NULL; dev; dev = dev->next)
		if (!strcmp(dev->cls->name, "virtio-pci") && dev->next &&
		    !strcmp(dev->next->cls->name, "virtio-blk"))
			vd = dev->opaque;
	CHECK(vd != NULL);
	if (vd) {
		read_blocks(vd);
		page = gpa(t.vm, RING + R_DATA, 3 * 4096);
		block_fill(buf, 0);
		CHECK(!memcmp(page, buf, 4096)); /* the reads did land */

		st = save(t.vm, false);
		CHECK(st.pages_disk == 3);

		page[4096 + 100] ^= 0xff; /* the guest changes page 1 */
		block_fill(buf, 2);
		buf[4000] ^= 0xff; /* and someone changes block 2 on the image */
		CHECK(pwrite(fd, buf, 4096, 2 * 4096) == 4096);
		st = save(t.vm, false);
		printf("after changes: %llu disk, %llu data pages\n",
		       (unsigned long long)st.pages_disk, (unsigned long long)st.pages_data);
		CHECK(st.pages_disk == 1);

		st = save(t.vm, true);
		CHECK(st.pages_disk == 0);

		/* Block 0 can no longer be read: data, and the checkpoint succeeds. */
		CHECK(ftruncate(fd, 0) == 0);
		st = save(t.vm, false);
		CHECK(st.pages_disk == 0);
		CHECK(st.pages_data != ~0ULL);
	}
	ktest_destroy(&t);
	close(fd);
	unlink(path);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
