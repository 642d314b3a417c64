// SPDX-License-Identifier: MIT
/*
 * virtio-blk completion coalescing, driven from the host side as a driver
 * would (MSI-X left off, so ISR shows every interrupt), on two disks:
 * disk 0 with coalescing (the default), disk 1 with coalesce=off.
 *
 * - A reset while a window holds an interrupt cancels it cleanly.
 * - A completion opens a window: the request is in the used ring but the
 *   interrupt is held; a request queued then, without a kick, is started
 *   by the window's tick, and one interrupt signals both once a tick finds
 *   nothing new; kicks are wanted again after.
 * - A window that finds nothing (a driver running one request at a time)
 *   makes the next completions signal at once.
 * - coalesce=off signals every completion at once.
 *
 * Nothing here depends on timing: an interrupt is held from the callback
 * that completes a request until a later turn of the loop, and every wait
 * is a loop turn that ends when the condition holds.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
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
#define ISR_OFF 0x1000
#define NOTIFY_OFF 0x3000

#define QSIZE 16
#define R_AVAIL 0x200
#define R_USED 0x400
#define R_HDR 0x800 /* 16 bytes per request */
#define R_STATUS 0xa00 /* one byte per request */
#define R_DATA 0x1000 /* 4 KiB per request */
#define NREQ 8

struct drv {
	struct virtio_dev *d;
	uint64_t ring; /* guest-physical base of this disk's rings and buffers */
	struct vring_desc *desc;
	uint16_t *avail, *used;
	uint16_t next; /* requests queued so far */
};

static uint8_t isr_peek(struct virtio_dev *d)
{
	uint8_t v;

	pthread_mutex_lock(&d->lock);
	v = d->st.isr;
	pthread_mutex_unlock(&d->lock);
	return v;
}

static uint16_t used_idx(const struct drv *v)
{
	return __atomic_load_n(&v->used[1], __ATOMIC_ACQUIRE);
}

/* Driver init: VERSION_1 only (no EVENT_IDX: used.flags carries "no kicks"). */
static void drv_init(struct drv *v)
{
	struct virtio_dev *d = v->d;
	uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	v->desc = gpa(d->vm, v->ring, 16 * QSIZE);
	v->avail = gpa(d->vm, v->ring + R_AVAIL, 6 + 2 * QSIZE);
	v->used = gpa(d->vm, v->ring + R_USED, 6 + 8 * QSIZE);
	v->next = 0;
	memset(gpa(d->vm, v->ring, R_DATA), 0, R_DATA);
	bar_w(d, C_STATUS, 0, 1);
	LOOP_UNTIL(d->vm, bar_r(d, C_STATUS, 1) == 0); /* the reset ends on the main loop */
	bar_w(d, C_STATUS, st, 1);
	bar_w(d, C_GFSELECT, 1, 4);
	bar_w(d, C_GF, 1, 4);
	st |= VIRTIO_STATUS_FEATURES_OK;
	bar_w(d, C_STATUS, st, 1);
	bar_w(d, C_Q_SELECT, 0, 2);
	bar_w(d, C_Q_SIZE, QSIZE, 2);
	bar_w(d, C_Q_DESC, v->ring, 4);
	bar_w(d, C_Q_AVAIL, v->ring + R_AVAIL, 4);
	bar_w(d, C_Q_USED, v->ring + R_USED, 4);
	bar_w(d, C_Q_ENABLE, 1, 2);
	st |= VIRTIO_STATUS_DRIVER_OK;
	bar_w(d, C_STATUS, st, 1);
	CHECK(bar_r(d, C_STATUS, 1) == st);
	for (int n = 0; n < 5; n++)
		loop_run_once(d->vm->loop, 1);
	bar_r(d, ISR_OFF, 1);
}

/* Queue a 4 KiB read of sector 8 * i; kick if @kick. */
static void drv_read(struct drv *v, bool kick)
{
	unsigned int i = v->next % NREQ, h = 3 * i;
	uint32_t *hdr = gpa(v->d->vm, v->ring + R_HDR + 16 * i, 16);
	uint8_t *status = gpa(v->d->vm, v->ring + R_STATUS + i, 1);

	hdr[0] = 0; /* VIRTIO_BLK_T_IN */
	hdr[1] = 0;
	hdr[2] = 8 * i;
	hdr[3] = 0;
	*status = 0xff;
	v->desc[h] = (struct vring_desc){ v->ring + R_HDR + 16 * i, 16, VRING_DESC_F_NEXT,
					  (uint16_t)(h + 1) };
	v->desc[h + 1] = (struct vring_desc){ v->ring + R_DATA + 4096 * i, 4096,
					      VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
					      (uint16_t)(h + 2) };
	v->desc[h + 2] = (struct vring_desc){ v->ring + R_STATUS + i, 1, VRING_DESC_F_WRITE, 0 };
	v->avail[2 + v->next % QSIZE] = (uint16_t)h;
	v->next++;
	__atomic_store_n(&v->avail[1], v->next, __ATOMIC_RELEASE);
	if (kick)
		bar_w(v->d, NOTIFY_OFF, 0, 2);
}

static uint8_t req_status(const struct drv *v, unsigned int n)
{
	return *(uint8_t *)gpa(v->d->vm, v->ring + R_STATUS + n % NREQ, 1);
}

static struct blk_disk_stats disk_stats(struct vm *vm, unsigned int index)
{
	struct blk_disk_info info = { 0 };
	struct vblk *b = NULL;

	while ((b = virtio_blk_next(vm, b, &info)))
		if (info.index == index)
			return info.stats;
	CHECK(!"disk not found");
	return info.stats;
}

static void test_reset_in_window(struct drv *v)
{
	drv_init(v);
	drv_read(v, true);
	LOOP_UNTIL(v->d->vm, used_idx(v) == 1);
	CHECK(isr_peek(v->d) == 0); /* held */
	bar_w(v->d, C_STATUS, 0, 1); /* reset with the window open */
	LOOP_UNTIL(v->d->vm, bar_r(v->d, C_STATUS, 1) == 0);
	for (int n = 0; n < 20; n++)
		loop_run_once(v->d->vm->loop, 1); /* the cancelled timer, had it fired */
	CHECK(isr_peek(v->d) == 0);
}

static void test_window(struct drv *v)
{
	struct blk_disk_stats before = disk_stats(v->d->vm, 0), after;

	drv_init(v);
	drv_read(v, true);
	LOOP_UNTIL(v->d->vm, used_idx(v) == 1);
	CHECK(req_status(v, 0) == 0);
	/* Completed, not yet signalled. */
	CHECK(isr_peek(v->d) == 0);
	drv_read(v, false); /* the guest keeps queueing: a tick finds it without a kick */
	LOOP_UNTIL(v->d->vm, used_idx(v) == 2);
	CHECK(req_status(v, 1) == 0);
	LOOP_UNTIL(v->d->vm, isr_peek(v->d) & 1);
	CHECK(bar_r(v->d, ISR_OFF, 1) == 1);
	/* Window closed, queue idle: kicks are wanted again. */
	CHECK(!(__atomic_load_n(&v->used[0], __ATOMIC_ACQUIRE) & 1));
	after = disk_stats(v->d->vm, 0);
	CHECK(after.coalesce);
	CHECK(after.coalesce_windows == before.coalesce_windows + 1);
	CHECK(after.coalesced_reqs >= before.coalesced_reqs + 1);
	CHECK(after.rd_ops == before.rd_ops + 2);

	/* A window that finds nothing: depth 1 from now on, signalled at once. */
	drv_read(v, true);
	LOOP_UNTIL(v->d->vm, used_idx(v) == 3);
	CHECK(isr_peek(v->d) == 0);
	LOOP_UNTIL(v->d->vm, isr_peek(v->d) & 1);
	CHECK(bar_r(v->d, ISR_OFF, 1) == 1);
	drv_read(v, true);
	LOOP_UNTIL(v->d->vm, used_idx(v) == 4);
	CHECK(isr_peek(v->d) & 1);
	CHECK(bar_r(v->d, ISR_OFF, 1) == 1);
	CHECK(req_status(v, 3) == 0);
}

static void test_off(struct drv *v)
{
	struct blk_disk_stats st;

	drv_init(v);
	for (unsigned int n = 1; n <= 3; n++) {
		drv_read(v, true);
		LOOP_UNTIL(v->d->vm, used_idx(v) == n);
		CHECK(isr_peek(v->d) & 1); /* signalled with the completion */
		CHECK(bar_r(v->d, ISR_OFF, 1) == 1);
	}
	st = disk_stats(v->d->vm, 1);
	CHECK(!st.coalesce);
	CHECK(st.coalesce_windows == 0);
}

int main(void)
{
	char path[2][32] = { "/tmp/qlite-vblk0-XXXXXX", "/tmp/qlite-vblk1-XXXXXX" };
	struct disk_config dc[2] = { 0 };
	struct drv drv[2] = { 0 };
	struct ktest t;
	struct device *dev;
	int fd, ret, i;

	ret = ktest_create(&t, 1, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	for (i = 0; i < 2; i++) {
		fd = mkstemp(path[i]);
		CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
		close(fd);
		dc[i].path = path[i];
	}
	dc[1].no_coalesce = true;
	t.devices.disks = dc;
	t.devices.ndisks = 2;
	CHECK(ktest_start(&t, GT_COUNT_FOREVER) == 0);
	for (dev = t.vm ? t.vm->devices : NULL; dev; dev = dev->next) {
		struct virtio_dev *d = dev->opaque;

		if (strcmp(dev->cls->name, "virtio-pci") || !dev->next ||
		    strcmp(dev->next->cls->name, "virtio-blk"))
			continue;
		i = !strcmp(d->ops->name, "virtio-disk1");
		drv[i].d = d;
		drv[i].ring = 0x2000000ULL + 0x100000ULL * (uint64_t)i;
	}
	CHECK(drv[0].d && drv[1].d);
	if (drv[0].d && drv[1].d) {
		test_reset_in_window(&drv[0]);
		test_window(&drv[0]);
		test_off(&drv[1]);
	}
	ktest_destroy(&t);
	unlink(path[0]);
	unlink(path[1]);
	printf("%s: %s\n", __FILE__, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
