// SPDX-License-Identifier: MIT
/*
 * Device-state conformance, over every device of a VM that has one of each
 * kind: each class declares its state or says it is stateless; save, mutate,
 * load, save again gives the same bytes; loading garbage (truncations at
 * every length, wrong version/names/sizes, random bytes, values the device
 * must reject) fails with a message and leaves the device as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/loop.h"
#include "qlite/virtio.h"

static int failures;

#include "vdrv.h" /* after failures: its CHECKs count there */

static uint8_t *save(struct device *d, size_t *len)
{
	size_t need = 0;
	uint8_t *buf;

	device_state_save(d, NULL, 0, &need);
	buf = malloc(need ? need : 1);
	CHECK(device_state_save(d, buf, need, len) == 0);
	return buf;
}

static bool same_as(struct device *d, const uint8_t *ref, size_t ref_len)
{
	size_t len;
	uint8_t *now = save(d, &len);
	bool same = len == ref_len && !memcmp(now, ref, len);

	free(now);
	return same;
}

/* Loading @buf must fail, name something, and change nothing. */
static void expect_reject(struct device *d, const uint8_t *buf, size_t len, const uint8_t *ref,
			  size_t ref_len, const char *what)
{
	struct qerr e = { 0 };

	if (device_state_load(d, buf, len, &e) == 0) {
		fprintf(stderr, "FAIL %s: %s was accepted\n", d->cls->name, what);
		failures++;
		return;
	}
	if (!e.msg[0] || !strstr(e.msg, d->cls->name)) {
		fprintf(stderr, "FAIL %s: %s: message '%s' does not name the device\n",
			d->cls->name, what, e.msg);
		failures++;
	}
	if (!same_as(d, ref, ref_len)) {
		fprintf(stderr, "FAIL %s: %s changed the device\n", d->cls->name, what);
		failures++;
	}
}

/* Offset of field @name's bytes in a saved buffer, or -1. */
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

/* Loading @ref with @n bytes at @off of field @field replaced must fail. */
static void reject_patch(struct device *d, const uint8_t *ref, size_t len, const char *field,
			 size_t off, const void *val, size_t n, const char *what)
{
	long at = field_at(ref, len, field);
	uint8_t *bad;

	if (at < 0) {
		fprintf(stderr, "FAIL %s: no field %s in the saved state\n", d->cls->name, field);
		failures++;
		return;
	}
	bad = malloc(len);
	memcpy(bad, ref, len);
	memcpy(bad + at + off, val, n);
	expect_reject(d, bad, len, ref, len, what);
	free(bad);
}

#define REJECT(field, off, type, v, what)                                     \
	do {                                                                  \
		type v_ = (v);                                                \
		reject_patch(d, ref, len, field, off, &v_, sizeof(v_), what); \
	} while (0)

#define VST(member) offsetof(struct virtio_state, member)

/*
 * A device that went to NEEDS_RESET may have dropped the request that broke
 * it: that state loads, as a broken device with its queues stopped.
 */
static void accept_broken(struct virtio_dev *vd, struct device *d, const uint8_t *ref,
			  size_t len)
{
	long at = field_at(ref, len, "st");
	uint8_t *buf = malloc(len);
	struct virtio_state st;
	struct qerr e = { 0 };

	memcpy(buf, ref, len);
	memcpy(&st, buf + at, sizeof(st));
	st.status |= VIRTIO_STATUS_NEEDS_RESET;
	st.q[0].last_avail_idx++;
	memcpy(buf + at, &st, sizeof(st));
	CHECK(device_state_load(d, buf, len, &e) == 0);
	CHECK(vd->broken && !vd->vq[0].desc);
	CHECK(device_state_load(d, ref, len, &e) == 0);
	CHECK(!vd->broken && vd->vq[0].desc);
	if (e.msg[0])
		fprintf(stderr, "FAIL %s: %s\n", d->cls->name, e.msg);
	free(buf);
}

/* Values each class's post_load must refuse though the framing is right. */
static void reject_values(struct vm *vm, struct device *d, const uint8_t *ref, size_t len)
{
	const char *name = d->cls->name;

	if (!strcmp(name, "virtio-pci")) {
		struct virtio_dev *vd = d->opaque;
		const struct virtio_state *st = &vd->st;
		unsigned int nq = vd->ops->nqueues, nvec = vd->msix.nvec;
		size_t q0 = VST(q[0]), qn = VST(q[nq]);

		CHECK(st->status & VIRTIO_STATUS_DRIVER_OK); /* the driver set it up */
		REJECT("st", VST(driver_features), uint64_t, ~0ULL,
		       "acked features the device does not offer");
		REJECT("st", VST(driver_features), uint64_t,
		       st->driver_features & ~(1ULL << VIRTIO_F_VERSION_1),
		       "acked features without VERSION_1");
		REJECT("st", VST(status), uint8_t,
		       VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK,
		       "DRIVER_OK without FEATURES_OK");
		REJECT("st", VST(isr), uint8_t, 4, "an ISR bit that does not exist");
		REJECT("st", VST(pad), uint8_t, 1, "a non-zero pad byte");
		REJECT("st", VST(msix_config), uint16_t, nvec, "a config vector beyond the table");
		REJECT("st", q0 + offsetof(struct virtq_state, size), uint16_t, 6,
		       "a queue size that is not a power of two");
		REJECT("st", q0 + offsetof(struct virtq_state, size), uint16_t,
		       2 * vd->ops->queue_size, "a queue size above the maximum");
		REJECT("st", q0 + offsetof(struct virtq_state, size), uint16_t, 0,
		       "a queue of size 0");
		REJECT("st", q0 + offsetof(struct virtq_state, enabled), uint16_t, 2,
		       "queue enabled = 2");
		REJECT("st", q0 + offsetof(struct virtq_state, msix_vector), uint16_t, nvec,
		       "a queue vector beyond the table");
		REJECT("st", q0 + offsetof(struct virtq_state, last_avail_idx), uint16_t,
		       st->q[0].last_avail_idx + 1, "a request left in flight");
		REJECT("st", q0 + offsetof(struct virtq_state, used_idx), uint16_t,
		       st->q[0].used_idx + 100, "used index ahead of the available one");
		REJECT("st", q0 + offsetof(struct virtq_state, desc_gpa), uint64_t,
		       vd->vm->mem.ram_size - 64, "a descriptor table running out of RAM");
		REJECT("st", q0 + offsetof(struct virtq_state, avail_gpa), uint64_t,
		       st->q[0].avail_gpa + 1, "a misaligned available ring");
		REJECT("st", q0 + offsetof(struct virtq_state, pad), uint16_t, 1,
		       "a non-zero queue pad");
		if (nq < VIRTIO_MAX_QUEUES) {
			REJECT("st", qn + offsetof(struct virtq_state, size), uint16_t, 8,
			       "a queue the device does not have");
			REJECT("st", qn + offsetof(struct virtq_state, used_gpa), uint64_t, 4096,
			       "ring addresses on a queue the device does not have");
		}
		accept_broken(vd, d, ref, len);
		REJECT("pci.cfg", 0, uint8_t, ref[field_at(ref, len, "pci.cfg")] ^ 1,
		       "a foreign config space (vendor ID)");
		REJECT("msix.entry", 12, uint32_t, 3, "MSI-X control bits that do not exist");
		REJECT("msix.entry", 16 * nvec, uint32_t, 0xfee00000,
		       "an MSI-X entry beyond the table");
		REJECT("msix.pba", 0, uint64_t, 1ULL << nvec, "a pending bit beyond the table");
	} else if (!strcmp(name, "virtio-balloon")) {
		uint32_t pages = (uint32_t)(vm->mem.ram_size >> 12);

		REJECT("cfg", 4, uint32_t, pages + 1, "actual beyond guest RAM");
		REJECT("cfg", 0, uint32_t, pages + 1, "a target beyond guest RAM");
		REJECT("cfg", 12, uint32_t, 0xaa, "a poison value (not offered)");
		REJECT("cfg", 8, uint32_t, 1, "a free page hint command (not offered)");
	} else if (!strcmp(name, "virtio-console")) {
		REJECT("npending", 0, size_t, 4097, "more pending input than the buffer holds");
	} else if (!strcmp(name, "virtio-blk")) {
		uint64_t cap;

		memcpy(&cap, ref + field_at(ref, len, "cfg"), 8);
		REJECT("cfg", 0, uint64_t, cap + 1, "a disk of another size");
		REJECT("cfg", 20, uint32_t, 4096, "another block size");
		REJECT("readonly", 0, uint8_t, ref[field_at(ref, len, "readonly")] ^ 1,
		       "a read-only disk that is writable here");
	} else if (!strcmp(name, "virtio-net")) {
		REJECT("cfg", 0, uint8_t, ref[field_at(ref, len, "cfg")] | 1, "a multicast MAC");
		REJECT("cfg", 0, uint64_t, 0, "an all-zero MAC");
		REJECT("cfg", 6, uint16_t, 3, "a link status bit not offered");
		REJECT("cfg", 8, uint16_t, 2, "two queue pairs");
	} else if (!strcmp(name, "serial16550")) {
		REJECT("rx_count", 0, uint16_t, 0xffff, "an impossible receive count");
	} else if (!strcmp(name, "acpi-pm")) {
		REJECT("sci_level", 0, uint8_t, 7, "an impossible SCI level");
	}
}

static void conform(struct vm *vm, struct device *d)
{
	const struct state_desc *sd = d->cls->state;
	size_t len, i, off;
	uint8_t *ref, *bad;
	struct qerr e = { 0 };

	CHECK(device_class_check(d->cls) == 0);
	if (!sd) {
		uint8_t junk = 1;

		printf("  %-16s stateless\n", d->cls->name);
		CHECK(device_state_load(d, NULL, 0, &e) == 0);
		CHECK(device_state_load(d, &junk, 1, &e) < 0);
		CHECK(strstr(e.msg, d->cls->name) != NULL);
		return;
	}
	ref = save(d, &len);
	printf("  %-16s %zu bytes, %u fields, version %u\n", d->cls->name, len, sd->nr_fields,
	       sd->version);

	/* Mutate every declared field; the load must bring all of it back. */
	for (i = 0; i < sd->nr_fields; i++)
		memset((uint8_t *)d->opaque + sd->fields[i].offset, 0x5a, sd->fields[i].size);
	CHECK(device_state_load(d, ref, len, &e) == 0);
	if (e.msg[0])
		fprintf(stderr, "load: %s\n", e.msg);
	CHECK(same_as(d, ref, len));

	bad = malloc(len + 16);
	for (i = 0; i < len; i++)
		expect_reject(d, ref, i, ref, len, "a truncated state");
	memcpy(bad, ref, len);
	bad[len] = 0;
	expect_reject(d, bad, len + 1, ref, len, "trailing bytes");
	memcpy(bad, ref, len);
	bad[0] ^= 0xff;
	expect_reject(d, bad, len, ref, len, "another version");
	memcpy(bad, ref, len);
	bad[4]++;
	expect_reject(d, bad, len, ref, len, "a different field count");
	/* Every field renamed, and every field with another size. */
	for (i = 0, off = 8; i < sd->nr_fields; i++) {
		size_t nlen = strlen(sd->fields[i].name);

		memcpy(bad, ref, len);
		bad[off + 2] ^= 0x20;
		expect_reject(d, bad, len, ref, len, "a renamed field");
		memcpy(bad, ref, len);
		bad[off + 2 + nlen]++;
		expect_reject(d, bad, len, ref, len, "a field of the wrong size");
		off += 2 + nlen + 4 + sd->fields[i].size;
	}
	srand(42);
	for (i = 0; i < 200; i++) {
		size_t n = (size_t)rand() % (len + 8), k;

		for (k = 0; k < n; k++)
			bad[k] = (uint8_t)rand();
		if (n >= 8)
			memcpy(bad, ref, 8); /* past the header, into the fields */
		expect_reject(d, bad, n, ref, len, "random bytes");
	}
	reject_values(vm, d, ref, len);
	free(bad);
	free(ref);
}

/* ---- a driver, enough to bring each virtio device up ------------------- */

#define C_DFSELECT 0x00
#define C_DF 0x04
#define C_GFSELECT 0x08
#define C_GF 0x0c
#define C_MSIX 0x10
#define C_NUMQ 0x12
#define C_STATUS 0x14
#define C_Q_SELECT 0x16
#define C_Q_SIZE 0x18
#define C_Q_MSIX 0x1a
#define C_Q_ENABLE 0x1c
#define C_Q_DESC 0x20
#define C_Q_AVAIL 0x28
#define C_Q_USED 0x30
#define NOTIFY_OFF 0x3000
#define MSIX_TABLE_OFF 0x4000

#define QSIZE 8
#define RINGS 0x2000000ULL /* guest RAM for the test's rings: 64 KiB per device */
/* Each queue's page: descriptors, available ring, used ring, buffers. */
#define Q_BASE(dev, q) (RINGS + (dev) * 0x10000ULL + (q) * 0x1000ULL)
#define Q_AVAIL 0x200
#define Q_USED 0x400
#define Q_BUF 0x800

/* What a driver does at probe: accept every feature offered, small queues, DRIVER_OK. */
static void driver_init(struct virtio_dev *d, unsigned int idx)
{
	unsigned int q, nq, v;
	uint64_t feat;
	uint8_t status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	bar_w(d, C_STATUS, status, 1);
	bar_w(d, C_DFSELECT, 0, 4);
	feat = bar_r(d, C_DF, 4);
	bar_w(d, C_DFSELECT, 1, 4);
	feat |= (uint64_t)bar_r(d, C_DF, 4) << 32;
	bar_w(d, C_GFSELECT, 0, 4);
	bar_w(d, C_GF, (uint32_t)feat, 4);
	bar_w(d, C_GFSELECT, 1, 4);
	bar_w(d, C_GF, feat >> 32, 4);
	status |= VIRTIO_STATUS_FEATURES_OK;
	bar_w(d, C_STATUS, status, 1);
	CHECK(bar_r(d, C_STATUS, 1) & VIRTIO_STATUS_FEATURES_OK);
	nq = bar_r(d, C_NUMQ, 2);
	bar_w(d, C_MSIX, 0, 2);
	for (v = 0; v <= nq; v++) { /* messages programmed, vectors left masked */
		bar_w(d, MSIX_TABLE_OFF + 16 * v, 0xfee00000, 4);
		bar_w(d, MSIX_TABLE_OFF + 16 * v + 8, 0x40 + v, 4);
	}
	for (q = 0; q < nq; q++) {
		uint64_t base = Q_BASE(idx, q);

		memset(gpa(d->vm, base, 0x1000), 0, 0x1000);
		bar_w(d, C_Q_SELECT, q, 2);
		bar_w(d, C_Q_SIZE, QSIZE, 2);
		bar_w(d, C_Q_MSIX, q + 1, 2);
		bar_w(d, C_Q_DESC, (uint32_t)base, 4);
		bar_w(d, C_Q_DESC + 4, base >> 32, 4);
		bar_w(d, C_Q_AVAIL, (uint32_t)(base + Q_AVAIL), 4);
		bar_w(d, C_Q_USED, (uint32_t)(base + Q_USED), 4);
		bar_w(d, C_Q_ENABLE, 1, 2);
		CHECK(d->st.q[q].enabled == 1);
	}
	status |= VIRTIO_STATUS_DRIVER_OK;
	bar_w(d, C_STATUS, status, 1);
	CHECK(bar_r(d, C_STATUS, 1) == status);
}

/* Descriptor @i of queue @q: @len bytes at the queue's buffer area + @off. */
static void desc_set(struct virtio_dev *d, unsigned int idx, unsigned int q, unsigned int i,
		     unsigned int off, uint32_t len, uint16_t flags, uint16_t next)
{
	struct vring_desc *t = gpa(d->vm, Q_BASE(idx, q), 16 * QSIZE);

	t[i] = (struct vring_desc){ Q_BASE(idx, q) + Q_BUF + off, len, flags, next };
}

/* Make chain @head available and, if @kick, notify the device. */
static void avail_add(struct virtio_dev *d, unsigned int idx, unsigned int q, uint16_t head,
		      bool kick)
{
	uint16_t *avail = gpa(d->vm, Q_BASE(idx, q) + Q_AVAIL, 4 + 2 * QSIZE);

	avail[2 + avail[1] % QSIZE] = head;
	__atomic_store_n(&avail[1], (uint16_t)(avail[1] + 1), __ATOMIC_RELEASE);
	if (kick)
		bar_w(d, NOTIFY_OFF + 4 * q, q, 2);
}

static uint16_t used_idx(struct virtio_dev *d, unsigned int idx, unsigned int q)
{
	uint16_t *used = gpa(d->vm, Q_BASE(idx, q) + Q_USED, 4);

	return __atomic_load_n(&used[1], __ATOMIC_ACQUIRE);
}

static uint16_t avail_event(struct virtio_dev *d, unsigned int idx, unsigned int q)
{
	uint16_t *used = gpa(d->vm, Q_BASE(idx, q) + Q_USED, 6 + 8 * QSIZE);

	return used[2 + 4 * QSIZE];
}

struct vdev {
	struct virtio_dev *d;
	struct device *model;
	unsigned int idx;
};

static struct vdev *find_model(struct vdev *v, unsigned int n, const char *cls)
{
	for (unsigned int i = 0; i < n; i++)
		if (!strcmp(v[i].model->cls->name, cls))
			return &v[i];
	fprintf(stderr, "FAIL no %s in the VM\n", cls);
	failures++;
	return NULL;
}

static const char sector0[] = "qlite conformance: sector 0";

/*
 * Requests the devices hold when the VM pauses: quiesce must complete them
 * (blk) or give them back to the ring (balloon stats), and input arriving
 * while paused must wait (console). Saved state then holds none.
 */
static void inflight_before_pause(struct vm *vm, struct vdev *v, unsigned int n)
{
	struct vdev *blk = find_model(v, n, "virtio-blk");
	struct vdev *bal = find_model(v, n, "virtio-balloon");
	struct vdev *con = find_model(v, n, "virtio-console");

	if (bal) { /* the stats buffer the driver hands over and we keep */
		uint8_t stats[20] = { 0 };
		uint64_t memfree = 0x1111000, memtot = 0x2222000;

		stats[0] = BALLOON_STAT_MEMFREE;
		memcpy(stats + 2, &memfree, 8);
		stats[10] = BALLOON_STAT_MEMTOT;
		memcpy(stats + 12, &memtot, 8);
		memcpy(gpa(vm, Q_BASE(bal->idx, 2) + Q_BUF, sizeof(stats)), stats, sizeof(stats));
		desc_set(bal->d, bal->idx, 2, 0, 0, sizeof(stats), 0, 0);
		avail_add(bal->d, bal->idx, 2, 0, true);
		LOOP_UNTIL(vm, bal->d->st.q[2].last_avail_idx == 1);
		CHECK(used_idx(bal->d, bal->idx, 2) == 0); /* held, not returned */
	}
	if (con) { /* one receive buffer, no input yet */
		desc_set(con->d, con->idx, 0, 0, 0, 64, VRING_DESC_F_WRITE, 0);
		avail_add(con->d, con->idx, 0, 0, false);
	}

	if (blk) { /* a read of sector 0: header, 512 bytes, status */
		struct {
			uint32_t type, reserved;
			uint64_t sector;
		} hdr = { 0, 0, 0 };

		memcpy(gpa(vm, Q_BASE(blk->idx, 0) + Q_BUF, 16), &hdr, 16);
		*(uint8_t *)gpa(vm, Q_BASE(blk->idx, 0) + Q_BUF + 0x400, 1) = 0xff;
		desc_set(blk->d, blk->idx, 0, 0, 0, 16, VRING_DESC_F_NEXT, 1);
		desc_set(blk->d, blk->idx, 0, 1, 0x200, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
			 2);
		desc_set(blk->d, blk->idx, 0, 2, 0x400, 1, VRING_DESC_F_WRITE, 0);
		avail_add(blk->d, blk->idx, 0, 0, true);
		LOOP_UNTIL(vm, blk->d->st.q[0].last_avail_idx == 1);
		/* Last: no loop round reaps its completion before the pause. */
		CHECK(used_idx(blk->d, blk->idx, 0) == 0);
		CHECK(blk->d->vq[0].kicks_off);
	}
	CHECK(vm_pause(vm) == 0);

	if (blk) {
		char data[sizeof(sector0)];

		CHECK(used_idx(blk->d, blk->idx, 0) == 1);
		CHECK(blk->d->st.q[0].used_idx == 1);
		CHECK(*(uint8_t *)gpa(vm, Q_BASE(blk->idx, 0) + Q_BUF + 0x400, 1) == 0);
		memcpy(data, gpa(vm, Q_BASE(blk->idx, 0) + Q_BUF + 0x200, sizeof(data)),
		       sizeof(data));
		CHECK(!memcmp(data, sector0, sizeof(data)));
		/* Kicks back on in the saved rings: EVENT_IDX at our index. */
		CHECK(avail_event(blk->d, blk->idx, 0) == blk->d->st.q[0].last_avail_idx);
	}
	if (bal) {
		CHECK(bal->d->st.q[2].last_avail_idx == 0); /* given back, un-popped */
		CHECK(used_idx(bal->d, bal->idx, 2) == 0); /* and the driver saw nothing */
	}
	if (con) {
		CHECK(vm_console_push(vm, (const uint8_t *)"hi", 2) == 2);
		loop_run_once(vm->loop, 10);
		CHECK(used_idx(con->d, con->idx, 0) == 0); /* waits for resume */
	}
}

/* After resume: what waited is served, the stats buffer is taken again. */
static void inflight_after_resume(struct vm *vm, struct vdev *v, unsigned int n)
{
	struct vdev *bal = find_model(v, n, "virtio-balloon");
	struct vdev *con = find_model(v, n, "virtio-console");

	if (con) {
		LOOP_UNTIL(vm, used_idx(con->d, con->idx, 0) == 1);
		CHECK(!memcmp(gpa(vm, Q_BASE(con->idx, 0) + Q_BUF, 2), "hi", 2));
	}
	if (bal) {
		struct balloon_stats st;
		uint64_t actual;

		LOOP_UNTIL(vm, bal->d->st.q[2].last_avail_idx == 1);
		CHECK(virtio_balloon_query(vm, &actual, &st) == 0);
		CHECK(st.val[BALLOON_STAT_MEMFREE] == 0x1111000);
		CHECK(st.val[BALLOON_STAT_MEMTOT] == 0x2222000);
		CHECK(used_idx(bal->d, bal->idx, 2) == 1); /* the query returned it */
	}
}

/*
 * A restore rebuilds the held stats buffer by walking its descriptor again:
 * one that now points outside RAM breaks the device (NEEDS_RESET), cleanly.
 */
static void restore_rewalks(struct vm *vm, struct vdev *v, unsigned int n, uint8_t **saved,
			    size_t *saved_len)
{
	struct vdev *bal = find_model(v, n, "virtio-balloon");
	struct qerr e = { 0 };
	struct device *d;
	unsigned int i;

	if (!bal)
		return;
	CHECK(vm_pause(vm) == 0);
	desc_set(bal->d, bal->idx, 2, 0, 0, 20, 0, 0);
	((struct vring_desc *)gpa(vm, Q_BASE(bal->idx, 2), 16))->addr = vm->mem.ram_size;
	for (d = vm->devices, i = 0; d; d = d->next, i++) {
		CHECK(device_state_load(d, saved[i], saved_len[i], &e) == 0);
		if (e.msg[0])
			fprintf(stderr, "restore: %s\n", e.msg);
	}
	CHECK(bal->d->st.q[2].last_avail_idx == 0);
	CHECK(vm_resume(vm) == 0);
	LOOP_UNTIL(vm, bal->d->st.status & VIRTIO_STATUS_NEEDS_RESET);
}

static const struct device_class silent_class = { .name = "silent-device" };

/* vm_check_savable passes on this VM, and names a device that declares nothing. */
static void check_savable(struct vm *vm)
{
	struct device silent = { .cls = &silent_class, .opaque = NULL };
	struct qerr e = { 0 };

	CHECK(vm_check_savable(vm, &e) == 0);
	CHECK(vm_add_device(vm, &silent_class, NULL) == -EINVAL);
	silent.next = vm->devices; /* as if it had slipped past vm_add_device */
	vm->devices = &silent;
	CHECK(vm_check_savable(vm, &e) == -EINVAL);
	CHECK(strstr(e.msg, "device silent-device declares no state description; save refused"));
	vm->devices = silent.next;
}

int main(void)
{
	char disk[] = "/tmp/qlite-conform-XXXXXX";
	struct disk_config dc = { 0 };
	struct net_config nc = { .tap = "qlconf0", .fd = -1 };
	static const char *const need[] = { "serial16550", "i8042", "acpi-pm", "pci-host",
					    "virtio-pci", "virtio-rng", "virtio-blk",
					    "virtio-console", "virtio-balloon", "virtio-net" };
	struct vdev v[16];
	unsigned int n = 0, nv = 0, i;
	uint8_t *saved[32];
	size_t saved_len[32];
	struct ktest t;
	struct device *d;
	int fd, ret;
	bool have_net = false;

	ret = ktest_create(&t, 2, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	fd = mkstemp(disk);
	CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	CHECK(pwrite(fd, sector0, sizeof(sector0), 0) == sizeof(sector0));
	close(fd);
	dc.path = disk;
	t.devices.rng = true;
	t.devices.balloon = true;
	t.devices.console_virtio = true;
	t.devices.disks = &dc;
	t.devices.ndisks = 1;
	/* A tap NIC in a network namespace of our own, never the host's. */
	if (access("/dev/net/tun", R_OK | W_OK)) {
		printf("  NOTE: no usable /dev/net/tun (%s): virtio-net NOT covered\n",
		       strerror(errno));
	} else if (unshare(CLONE_NEWNET)) {
		printf("  NOTE: cannot create a network namespace (%s): virtio-net NOT covered\n",
		       strerror(errno));
	} else {
		t.devices.nets = &nc;
		t.devices.nnets = 1;
		have_net = true;
	}
	CHECK(ktest_start(&t, GT_COUNT_FOREVER) == 0);
	if (!t.vm) {
		ktest_destroy(&t);
		unlink(disk);
		return 1;
	}
	/* Each transport is followed by its device model. */
	for (d = t.vm->devices; d; d = d->next) {
		if (strcmp(d->cls->name, "virtio-pci") || nv == ARRAY_SIZE(v))
			continue;
		v[nv] = (struct vdev){ d->opaque, d->next, nv };
		CHECK(d->next && d->next->opaque == v[nv].d->priv);
		driver_init(v[nv].d, nv);
		nv++;
	}
	inflight_before_pause(t.vm, v, nv);

	/* Saved state is taken paused, as a checkpoint does. */
	for (d = t.vm->devices; d; d = d->next, n++) {
		conform(t.vm, d);
		if (n < ARRAY_SIZE(saved))
			saved[n] = save(d, &saved_len[n]);
	}
	for (i = 0; i < ARRAY_SIZE(need); i++) {
		bool found = false;

		for (d = t.vm->devices; d; d = d->next)
			found |= !strcmp(d->cls->name, need[i]);
		if (!found && (have_net || strcmp(need[i], "virtio-net"))) {
			fprintf(stderr, "FAIL no device of class %s was covered\n", need[i]);
			failures++;
		}
	}
	check_savable(t.vm);

	CHECK(vm_resume(t.vm) == 0);
	inflight_after_resume(t.vm, v, nv);
	if (n <= ARRAY_SIZE(saved))
		restore_rewalks(t.vm, v, nv, saved, saved_len);
	for (i = 0; i < n && i < ARRAY_SIZE(saved); i++)
		free(saved[i]);

	/* serial, i8042, acpi-pm, pci-host, 4-5 transports each with its model */
	CHECK(n >= (have_net ? 14u : 12u));
	ktest_destroy(&t);
	unlink(disk);
	printf("%s: %u devices, %s\n", __FILE__, n, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
