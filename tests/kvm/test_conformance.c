// SPDX-License-Identifier: MIT
/*
 * Device-state conformance, over every device of a VM that has one of each
 * kind: each class declares its state or says it is stateless; save, mutate,
 * load, save again gives the same bytes; loading garbage (truncations at
 * every length, wrong version/names/sizes, random bytes, values the device
 * must reject) fails with a message and leaves the device as it was.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/virtio.h"

static int failures;

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

static void conform(struct device *d)
{
	const struct state_desc *sd = d->cls->state;
	size_t len, i;
	uint8_t *ref, *bad;
	struct qerr e = { 0 };

	CHECK(device_class_check(d->cls) == 0);
	if (!sd) {
		uint8_t junk = 1;

		printf("  %-16s stateless\n", d->cls->name);
		CHECK(device_state_load(d, NULL, 0, &e) == 0);
		CHECK(device_state_load(d, &junk, 1, &e) < 0);
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
	memcpy(bad, ref, len);
	bad[10] ^= 0x20; /* first field's name */
	expect_reject(d, bad, len, ref, len, "a renamed field");
	memcpy(bad, ref, len);
	bad[10 + strlen(sd->fields[0].name)]++; /* first field's size */
	expect_reject(d, bad, len, ref, len, "a field of the wrong size");
	srand(42);
	for (i = 0; i < 200; i++) {
		size_t n = (size_t)rand() % (len + 8), k;

		for (k = 0; k < n; k++)
			bad[k] = (uint8_t)rand();
		if (n >= 8)
			memcpy(bad, ref, 8); /* past the header, into the fields */
		expect_reject(d, bad, n, ref, len, "random bytes");
	}
	/* Values the device itself must refuse (post_load). */
	if (!strcmp(d->cls->name, "virtio-pci")) {
		long at = field_at(ref, len, "st");

		memcpy(bad, ref, len);
		memset(bad + at, 0xff, 8); /* driver_features: bits never offered */
		expect_reject(d, bad, len, ref, len, "features the device does not offer");
		at = field_at(ref, len, "pci.cfg");
		memcpy(bad, ref, len);
		bad[at + 0] ^= 1; /* vendor ID is read-only */
		expect_reject(d, bad, len, ref, len, "a foreign config space");
	} else if (!strcmp(d->cls->name, "serial16550")) {
		long at = field_at(ref, len, "rx_count");

		memcpy(bad, ref, len);
		memset(bad + at, 0xff, 2);
		expect_reject(d, bad, len, ref, len, "an impossible receive count");
	} else if (!strcmp(d->cls->name, "acpi-pm")) {
		long at = field_at(ref, len, "sci_level");

		memcpy(bad, ref, len);
		bad[at] = 7;
		expect_reject(d, bad, len, ref, len, "an impossible SCI level");
	}
	free(bad);
	free(ref);
}

int main(void)
{
	char disk[] = "/tmp/qlite-conform-XXXXXX";
	struct disk_config dc = { 0 };
	struct net_config nc = { .tap = "qlconf0", .fd = -1 };
	struct ktest t;
	struct device *d;
	unsigned int n = 0;
	int fd, ret;

	ret = ktest_create(&t, 2, 64 * MiB);
	if (ret)
		return ret == KTEST_SKIP ? KTEST_SKIP : 1;
	fd = mkstemp(disk);
	CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	close(fd);
	dc.path = disk;
	t.devices.rng = true;
	t.devices.balloon = true;
	t.devices.console_virtio = true;
	t.devices.disks = &dc;
	t.devices.ndisks = 1;
	/* A tap NIC in a network namespace of our own, never the host's. */
	if (unshare(CLONE_NEWNET) == 0) {
		t.devices.nets = &nc;
		t.devices.nnets = 1;
	} else {
		printf("  (no network namespace: virtio-net left out)\n");
	}
	CHECK(ktest_start(&t, GT_COUNT_FOREVER) == 0);
	if (t.vm) {
		for (d = t.vm->devices; d; d = d->next, n++)
			conform(d);
	}
	/* serial, i8042, acpi-pm, pci-host, rng, balloon, console, disk (+ net) */
	CHECK(n >= 8);
	ktest_destroy(&t);
	unlink(disk);
	printf("%s: %u devices, %s\n", __FILE__, n, failures ? "FAIL" : "ok");
	return failures ? 1 : 0;
}
