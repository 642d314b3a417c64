// SPDX-License-Identifier: MIT
/* Checkpoint payload codecs: the RAM page map, disk records, the VM configuration. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/migration/ckpt_internal.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"
#include "qlite/vpmu.h"

static void sample_map(struct ram_map *m, bool parent)
{
	uint64_t p;

	assert_int_equal(ram_map_alloc(m, 1000), 0);
	memset(m->id, 0x11, CKPT_ID_LEN);
	for (p = 0; p < m->npages; p++) {
		m->kind[p] = (uint8_t)((p / 7) % (parent ? 4 : 3));
		if (m->kind[p] == CKPT_PAGE_DISK) {
			m->ref[p].key = ((uint64_t)(p % 3 + 1) << 48) | (p * 5);
			m->ref[p].hash = p * 0x9e3779b97f4a7c15ULL;
		}
	}
	if (parent) {
		m->has_parent = true;
		memset(m->parent_id, 0x22, CKPT_ID_LEN);
		strcpy(m->parent_dir, "/var/lib/qlite/ckpt-1");
	}
}

static void test_ram_map_round_trip(void **state)
{
	struct ram_map m, d;
	struct sbuf b;
	struct qerr e = { 0 };
	int parent;

	(void)state;
	for (parent = 0; parent < 2; parent++) {
		sample_map(&m, parent);
		sbuf_init(&b);
		ram_map_encode(&m, &b);
		assert_int_equal(sbuf_status(&b), 0);
		assert_int_equal(ram_map_decode(&d, b.data, b.len, &e), 0);
		assert_true(d.npages == m.npages && d.has_parent == m.has_parent);
		assert_memory_equal(d.kind, m.kind, m.npages);
		assert_memory_equal(d.ref, m.ref, m.npages * sizeof(*m.ref));
		assert_memory_equal(d.id, m.id, CKPT_ID_LEN);
		if (parent)
			assert_string_equal(d.parent_dir, m.parent_dir);
		ram_map_free(&d);
		ram_map_free(&m);
		sbuf_free(&b);
	}
}

/* Every truncation, and garbage, must fail with a message and leak nothing. */
static void test_ram_map_hostile(void **state)
{
	struct ram_map m, d;
	struct sbuf b;
	size_t cut;
	uint8_t *copy;
	unsigned int i;

	(void)state;
	sample_map(&m, true);
	sbuf_init(&b);
	ram_map_encode(&m, &b);
	for (cut = 0; cut < b.len; cut++) {
		struct qerr e = { 0 };

		assert_int_not_equal(ram_map_decode(&d, b.data, cut, &e), 0);
		assert_true(strstr(e.msg, "ram") != NULL);
	}
	/* Trailing bytes. */
	copy = malloc(b.len + 1);
	memcpy(copy, b.data, b.len);
	copy[b.len] = 0;
	{
		struct qerr e = { 0 };

		assert_int_not_equal(ram_map_decode(&d, copy, b.len + 1, &e), 0);
	}
	/* Random bytes after a valid header never crash. */
	srand(7);
	for (i = 0; i < 2000; i++) {
		struct qerr e = { 0 };
		size_t k;

		memcpy(copy, b.data, b.len);
		for (k = 0; k < 4; k++)
			copy[12 + rand() % (b.len - 12)] = (uint8_t)rand();
		if (ram_map_decode(&d, copy, b.len, &e) == 0)
			ram_map_free(&d);
	}
	/* A parent run without a parent, a bad kind, a run past the end, huge maps. */
	{
		struct ram_map z;
		struct sbuf t;
		struct qerr e = { 0 };

		assert_int_equal(ram_map_alloc(&z, 4), 0);
		memset(z.kind, CKPT_PAGE_PARENT, 4);
		sbuf_init(&t);
		ram_map_encode(&z, &t);
		assert_int_not_equal(ram_map_decode(&d, t.data, t.len, &e), 0);
		assert_non_null(strstr(e.msg, "parent"));
		sbuf_reset(&t);
		z.kind[0] = 9;
		memset(z.kind, 9, 4);
		ram_map_encode(&z, &t);
		memset(&e, 0, sizeof(e));
		assert_int_not_equal(ram_map_decode(&d, t.data, t.len, &e), 0);
		sbuf_reset(&t);
		sbuf_put_u32(&t, 4096);
		sbuf_put_u64(&t, 1ULL << 40); /* 4 PiB of RAM */
		memset(&e, 0, sizeof(e));
		assert_int_not_equal(ram_map_decode(&d, t.data, t.len, &e), 0);
		sbuf_reset(&t);
		sbuf_put_u32(&t, 8192);
		sbuf_put_u64(&t, 4);
		memset(&e, 0, sizeof(e));
		assert_int_not_equal(ram_map_decode(&d, t.data, t.len, &e), 0);
		assert_non_null(strstr(e.msg, "page size"));
		ram_map_free(&z);
		sbuf_free(&t);
	}
	free(copy);
	ram_map_free(&m);
	sbuf_free(&b);
}

static void test_disk_record(void **state)
{
	struct ckpt_disk a = { .size = 1 << 30, .dev = 2049, .ino = 1234, .mtime_sec = 1700000000,
			       .mtime_nsec = 123456789 },
			 b;
	struct sbuf s;
	struct qerr e = { 0 };
	size_t cut;

	(void)state;
	strcpy(a.path, "/srv/images/data.img");
	sbuf_init(&s);
	ckpt_disk_encode(&a, &s);
	assert_int_equal(ckpt_disk_decode(&b, s.data, s.len, &e), 0);
	assert_string_equal(a.path, b.path);
	assert_true(a.size == b.size && a.dev == b.dev && a.ino == b.ino &&
		    a.mtime_sec == b.mtime_sec && a.mtime_nsec == b.mtime_nsec);
	for (cut = 0; cut < s.len; cut++)
		assert_int_not_equal(ckpt_disk_decode(&b, s.data, cut, &e), 0);
	sbuf_free(&s);
}

static void test_config_round_trip(void **state)
{
	struct disk_config disks[2] = { { .path = "/a.img", .readonly = true, .serial = "S1" },
					{ .path = "/b.img", .direct = true } };
	struct net_config nets[1] = { { .tap = "tap7", .has_mac = true,
					.mac = { 0x52, 0x54, 0, 1, 2, 3 } } };
	struct vpmu_config pmu = { 0 };
	struct vm_config c = { .mem_size = 512ULL << 20, .mem_backend = MEM_BACKEND_MEMFD,
			       .ncpus = 3, .kernel = "/boot/vmlinuz", .cmdline = "console=ttyS0",
			       .rng = true, .balloon = true, .disks = disks, .ndisks = 2,
			       .nets = nets, .nnets = 1, .pmu = &pmu },
			 d;
	struct json_object *store = NULL;
	struct qerr e = { 0 };
	char *json = ckpt_config_to_json(&c);

	(void)state;
	assert_non_null(json);
	assert_int_equal(ckpt_config_from_json(json, strlen(json), &d, &store, &e), 0);
	assert_true(d.mem_size == c.mem_size && d.ncpus == 3 && d.mem_backend == MEM_BACKEND_MEMFD);
	assert_string_equal(d.kernel, "/boot/vmlinuz");
	assert_null(d.initrd);
	assert_true(d.rng && d.balloon && !d.balloon_no_reporting);
	assert_int_equal(d.ndisks, 2);
	assert_string_equal(d.disks[0].path, "/a.img");
	assert_true(d.disks[0].readonly && d.disks[1].direct);
	assert_string_equal(d.disks[0].serial, "S1");
	assert_int_equal(d.nnets, 1);
	assert_string_equal(d.nets[0].tap, "tap7");
	assert_memory_equal(d.nets[0].mac, nets[0].mac, 6);
	ckpt_config_free(store);
	free(json);

	/* Bad documents: one message each, nothing kept. */
	{
		static const char *const bad[] = {
			"", "[]", "{", "{\"cpus\": 1}", "{\"mem-size\": 1, \"cpus\": 1}",
			"{\"mem-size\": 268435456, \"cpus\": 0, \"mem-backend\": \"anon\"}",
			"{\"mem-size\": 268435456, \"cpus\": 1, \"mem-backend\": \"swap\"}",
			"{\"mem-size\": 268435456, \"cpus\": 1, \"mem-backend\": \"anon\", \"disks\": [{}]}",
			"{\"mem-size\": 268435456, \"cpus\": 1, \"mem-backend\": \"anon\"} trailing",
		};
		unsigned int i;

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			memset(&e, 0, sizeof(e));
			store = NULL;
			assert_int_not_equal(ckpt_config_from_json(bad[i], strlen(bad[i]), &d, &store, &e), 0);
			assert_true(e.msg[0] != 0);
			assert_null(store);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ram_map_round_trip),
		cmocka_unit_test(test_ram_map_hostile),
		cmocka_unit_test(test_disk_record),
		cmocka_unit_test(test_config_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
