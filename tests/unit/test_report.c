// SPDX-License-Identifier: MIT
/*
 * Profiler data and outputs, without a VM: the QMP form of a profile (round
 * trip and hostile replies), symbolization into folded stacks (KASLR, user
 * address spaces, modules, idle), the folded/SVG/JSON writers, KVM binary
 * stats files and perf ring buffers built by hand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <linux/kvm.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "qlite/kvm_stats.h"
#include "qlite/perf_ring.h"
#include "qlite/report.h"

#define SLIDE 0x1e000000ULL /* the test guest's KASLR offset */

static const char sysmap[] = "ffffffff81000000 T _text\n"
			     "ffffffff81002000 T clear_user_erms\n"
			     "ffffffff81002040 T entry_SYSCALL_64\n"
			     "ffffffff81002100 T do_syscall_64\n"
			     "ffffffff81003000 T _etext\n"
			     "ffffffff82000000 D data\n";

static struct symtab load_map(const char *text)
{
	struct symtab s;
	struct qerr e = { 0 };

	if (symtab_parse_map(text, strlen(text), "test", &s, &e))
		fail_msg("%s", e.msg);
	return s;
}

/* One vCPU: 100 idle, 75 kernel (one in a module), 25 user in two address spaces. */
static void make_data(struct profile_data *d)
{
	static const struct prof_sample samples[] = {
		{ 0xffffffff81002010ULL + SLIDE, 0, 0, 60 },
		{ 0xffffffff81002020ULL + SLIDE, 0, 0, 10 },
		{ 0xffffffffc0a00010ULL, 0, 0, 5 },
		{ 0x401000, 0x1234000, 3, 20 },
		{ 0x401000, 0x5678000, 3, 5 },
	};
	struct prof_vcpu_data *v;

	memset(d, 0, sizeof(*d));
	snprintf(d->method, sizeof(d->method), "timer");
	snprintf(d->stop_reason, sizeof(d->stop_reason), "stopped");
	d->freq = 999;
	d->elapsed_ns = 200000000;
	d->nvcpus = 1;
	d->vcpus = calloc(1, sizeof(*d->vcpus));
	d->samples = malloc(sizeof(samples));
	assert_non_null(d->vcpus);
	assert_non_null(d->samples);
	memcpy(d->samples, samples, sizeof(samples));
	d->nsamples = ARRAY_SIZE(samples);
	v = &d->vcpus[0];
	v->samples = 200;
	v->idle = 100;
	v->kernel = 75;
	v->user = 25;
	v->sample_ns = 1200000;
	v->lstar = 0xffffffff81002040ULL + SLIDE;
	v->exits[KVM_EXIT_IO] = (struct prof_count){ 42, 420000 };
	v->exits[KVM_EXIT_INTR] = (struct prof_count){ 200, 50000 };
	v->exits[40] = (struct prof_count){ 1, 7 }; /* unnamed reason */
	v->ndevices = 2;
	snprintf(v->devices[0].name, sizeof(v->devices[0].name), "serial");
	snprintf(v->devices[0].bus, sizeof(v->devices[0].bus), "pio");
	v->devices[0].c = (struct prof_count){ 40, 400000 };
	snprintf(v->devices[1].name, sizeof(v->devices[1].name), "unclaimed");
	snprintf(v->devices[1].bus, sizeof(v->devices[1].bus), "pio");
	v->devices[1].c = (struct prof_count){ 2, 20000 };
	v->nstats = 2;
	v->stats = calloc(2, sizeof(*v->stats));
	assert_non_null(v->stats);
	snprintf(v->stats[0].name, sizeof(v->stats[0].name), "exits");
	v->stats[0].value = 1234;
	snprintf(v->stats[1].name, sizeof(v->stats[1].name), "halt_exits");
	v->stats[1].value = 99;
}

static void test_json_round_trip(void **state)
{
	struct profile_data d, r;
	struct json_object *o, *p;
	struct qerr e = { 0 };
	const char *text;

	make_data(&d);
	o = profile_data_to_json(&d);
	/* Through text, as over the socket. */
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	p = json_tokener_parse(text);
	assert_non_null(p);
	assert_int_equal(profile_data_from_json(p, &r, &e), 0);
	assert_string_equal(r.method, "timer");
	assert_string_equal(r.stop_reason, "stopped");
	assert_int_equal(r.freq, 999);
	assert_true(r.elapsed_ns == d.elapsed_ns);
	assert_int_equal(r.nvcpus, 1);
	assert_int_equal(r.nsamples, d.nsamples);
	assert_memory_equal(r.samples, d.samples, d.nsamples * sizeof(*d.samples));
	/* Kernel addresses are above INT64_MAX: they must survive as unsigned. */
	assert_true(r.samples[0].rip == 0xffffffff81002010ULL + SLIDE);
	assert_true(r.vcpus[0].lstar == d.vcpus[0].lstar);
	assert_true(r.vcpus[0].idle == 100 && r.vcpus[0].samples == 200);
	assert_true(r.vcpus[0].exits[KVM_EXIT_IO].count == 42);
	assert_true(r.vcpus[0].exits[KVM_EXIT_IO].ns == 420000);
	assert_true(r.vcpus[0].exits[40].count == 1);
	assert_int_equal(r.vcpus[0].ndevices, 2);
	assert_string_equal(r.vcpus[0].devices[0].name, "serial");
	assert_string_equal(r.vcpus[0].devices[0].bus, "pio");
	assert_true(r.vcpus[0].devices[0].c.ns == 400000);
	assert_int_equal(r.vcpus[0].nstats, 2);
	assert_true(profile_data_lstar(&r) == d.vcpus[0].lstar);
	profile_data_free(&r);
	json_object_put(p);
	json_object_put(o);
	profile_data_free(&d);
}

static void expect_bad_json(const char *text, const char *needle)
{
	struct json_object *o = json_tokener_parse(text);
	struct profile_data d;
	struct qerr e = { 0 };

	assert_int_not_equal(profile_data_from_json(o, &d, &e), 0);
	if (!strstr(e.msg, needle))
		fail_msg("\"%s\" lacks \"%s\"", e.msg, needle);
	assert_null(d.vcpus);
	assert_null(d.samples);
	json_object_put(o);
}

static void test_json_hostile(void **state)
{
	static const char good_vcpu[] =
		"{\"cpu-index\":0,\"samples\":1,\"idle\":0,\"steal\":0,\"kernel\":1,\"user\":0,"
		"\"dropped\":0,"
		"\"sample-ns\":5,\"lstar\":0,\"exits\":[],\"devices\":[]}";
	char buf[1024];

	expect_bad_json("[1,2,3]", "not a JSON object");
	expect_bad_json("{}", "frequency");
	expect_bad_json("{\"frequency\":1,\"elapsed-ns\":1}", "vcpus");
	expect_bad_json("{\"frequency\":1,\"elapsed-ns\":1,\"vcpus\":[1]}", "not an object");
	expect_bad_json("{\"frequency\":1,\"elapsed-ns\":1,\"vcpus\":[{\"cpu-index\":\"x\"}]}",
			"cpu-index");
	snprintf(buf, sizeof(buf), "{\"frequency\":1,\"elapsed-ns\":1,\"vcpus\":[%s]}", good_vcpu);
	expect_bad_json(buf, "samples");
	snprintf(buf, sizeof(buf),
		 "{\"frequency\":1,\"elapsed-ns\":1,\"vcpus\":[%s],\"samples\":[[1,2,3]]}",
		 good_vcpu);
	expect_bad_json(buf, "sample 0");
	snprintf(buf, sizeof(buf),
		 "{\"frequency\":1,\"elapsed-ns\":1,\"vcpus\":[%s],\"samples\":[[1,\"x\",0,1]]}",
		 good_vcpu);
	expect_bad_json(buf, "non-integer");
	expect_bad_json("{\"frequency\":1,\"elapsed-ns\":1,\"vcpus\":[{\"cpu-index\":0,"
			"\"samples\":1,\"idle\":0,\"steal\":0,\"kernel\":1,\"user\":0,\"dropped\":0,"
			"\"sample-ns\":5,\"lstar\":0,\"exits\":[{\"reason\":1}],\"devices\":[]}]}",
			"bad exit");
	{
		/* Thousands of vCPUs: refused before allocating for them. */
		struct json_object *o = json_object_new_object(), *a = json_object_new_array();
		struct profile_data d;
		struct qerr e = { 0 };
		int i;

		for (i = 0; i < 5000; i++)
			json_object_array_add(a, json_object_new_object());
		json_object_object_add(o, "frequency", json_object_new_int(1));
		json_object_object_add(o, "elapsed-ns", json_object_new_int(1));
		json_object_object_add(o, "vcpus", a);
		assert_int_not_equal(profile_data_from_json(o, &d, &e), 0);
		assert_non_null(strstr(e.msg, "implausible"));
		json_object_put(o);
	}
}

static void test_report_kaslr_auto(void **state)
{
	struct symtab s = load_map(sysmap);
	struct report_options ro = { .kernel = &s };
	struct profile_data d;
	struct report r;
	struct qerr e = { 0 };

	make_data(&d);
	assert_int_equal(report_build(&d, &ro, &r, &e), 0);
	assert_true(r.kaslr_known);
	assert_true(r.kaslr_offset == (int64_t)SLIDE);
	assert_non_null(strstr(r.kaslr_how, "MSR_LSTAR"));
	assert_true(r.total == 200 && r.idle == 100 && r.kernel == 75 && r.user == 25);
	assert_true(r.unresolved == 5);
	assert_int_equal(r.address_spaces, 2);
	/* Two addresses in one function fold into one stack. */
	assert_int_equal(r.n, 4);
	assert_string_equal(r.e[0].stack, "[kernel];clear_user_erms");
	assert_true(r.e[0].count == 70);
	assert_string_equal(r.e[0].symbol, "clear_user_erms");
	assert_string_equal(r.e[1].stack, "[user cr3=0x1234000];0x401000");
	assert_true(r.e[1].user);
	assert_string_equal(r.e[2].stack, "[kernel];0xffffffffc0a00010");
	assert_string_equal(r.e[3].stack, "[user cr3=0x5678000];0x401000");
	/* Shares are of non-idle samples. */
	assert_true(report_share(&r, "clear_user_erms") > 69.99 &&
		    report_share(&r, "clear_user_erms") < 70.01);
	assert_true(report_share(&r, "nothing") == 0.0);
	report_free(&r);
	profile_data_free(&d);
	symtab_free(&s);
}

static void test_report_kaslr_given_and_user_symbols(void **state)
{
	struct symtab s = load_map(sysmap);
	struct symtab u = load_map("0000000000400000 T _start\n0000000000401000 T main\n"
				   "0000000000402000 D user_data\n");
	struct report_options ro = { .kernel = &s, .user = &u, .kaslr_given = true };
	struct profile_data d;
	struct report r;
	struct qerr e = { 0 };
	size_t i;

	make_data(&d);
	/* A wrong offset (0 given for a slid kernel): kernel samples stay addresses. */
	assert_int_equal(report_build(&d, &ro, &r, &e), 0);
	assert_string_equal(r.kaslr_how, "given");
	assert_true(r.unresolved == 75);
	for (i = 0; i < r.n; i++)
		assert_null(strstr(r.e[i].stack, "clear_user_erms"));
	/* User symbols apply in every address space. */
	assert_string_equal(r.e[1].stack, "[user cr3=0x1234000];main");
	report_free(&r);
	/* No symbols at all. */
	ro = (struct report_options){ 0 };
	assert_int_equal(report_build(&d, &ro, &r, &e), 0);
	assert_false(r.kaslr_known);
	assert_string_equal(r.e[0].stack, "[kernel];0xffffffff9f002010");
	report_free(&r);
	profile_data_free(&d);
	symtab_free(&s);
	symtab_free(&u);
}

/* Run a writer into memory. */
/* noinline: GCC 12 mistakes the memstream buffer for a dangling local. */
static __attribute__((noinline)) char *capture(int (*fn)(const struct report *, FILE *),
					       const struct report *r)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(fn(r, f), 0);
	fclose(f);
	return buf;
}

static int svg_default_title(const struct report *r, FILE *f)
{
	return report_write_svg(r, "t<&>", f);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0, off = 0, len = strlen(needle);
	const char *p;

	while ((p = strstr(hay + off, needle)) != NULL) {
		n++;
		off = (size_t)(p - hay) + len;
	}
	return n;
}

static void test_writers(void **state)
{
	struct symtab s = load_map(sysmap);
	struct symtab u = load_map("0000000000401000 T a<b>&\"c'\n");
	struct report_options ro = { .kernel = &s, .user = &u };
	struct profile_data d;
	struct report r;
	struct qerr e = { 0 };
	char *out;

	make_data(&d);
	assert_int_equal(report_build(&d, &ro, &r, &e), 0);
	out = capture(report_write_folded, &r);
	assert_string_equal(out, "[kernel];clear_user_erms 70\n"
				 "[user cr3=0x1234000];a<b>&\"c' 20\n"
				 "[kernel];0xffffffffc0a00010 5\n"
				 "[user cr3=0x5678000];a<b>&\"c' 5\n");
	free(out);

	out = capture(svg_default_title, &r);
	assert_true(!strncmp(out, "<?xml", 5));
	assert_non_null(strstr(out, "<svg "));
	assert_true(strlen(out) > 7 && !strcmp(out + strlen(out) - 7, "</svg>\n"));
	/* all, [kernel], 2 kernel leaves, 2 address spaces, 2 user leaves. */
	assert_int_equal(count(out, "<g>"), 8);
	assert_int_equal(count(out, "</g>"), 8);
	assert_int_equal(count(out, "<rect"), 9); /* + the background */
	assert_int_equal(count(out, "<title>"), count(out, "</title>"));
	assert_int_equal(count(out, "<text"), count(out, "</text>"));
	/* Markup in names is escaped, never emitted raw. */
	assert_non_null(strstr(out, "a&lt;b&gt;&amp;&quot;c&apos;"));
	assert_null(strstr(out, "a<b>"));
	assert_non_null(strstr(out, "t&lt;&amp;&gt;"));
	assert_non_null(strstr(out, "clear_user_erms (70 samples, 70.00%)"));
	assert_non_null(strstr(out, "idle 100 of 200"));
	free(out);
	report_free(&r);
	profile_data_free(&d);
	symtab_free(&s);
	symtab_free(&u);
}

static void test_summary_and_tables(void **state)
{
	struct symtab s = load_map(sysmap);
	struct report_options ro = { .kernel = &s };
	struct json_object *o, *v, *x, *y;
	struct profile_data d;
	struct report r;
	struct qerr e = { 0 };
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	make_data(&d);
	assert_int_equal(report_build(&d, &ro, &r, &e), 0);
	f = open_memstream(&buf, &len);
	assert_int_equal(report_write_summary(&r, &d, "System.map", f), 0);
	fclose(f);
	o = json_tokener_parse(buf);
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "samples", &v) && json_object_get_int(v) == 200);
	assert_true(json_object_object_get_ex(o, "idle_samples", &v) &&
		    json_object_get_int(v) == 100);
	assert_true(json_object_object_get_ex(o, "kaslr_offset", &v));
	assert_string_equal(json_object_get_string(v), "0x1e000000");
	assert_true(json_object_object_get_ex(o, "top", &v));
	x = json_object_array_get_idx(v, 0);
	assert_true(json_object_object_get_ex(x, "function", &y));
	assert_string_equal(json_object_get_string(y), "clear_user_erms");
	assert_true(json_object_object_get_ex(o, "per_vcpu", &v));
	x = json_object_array_get_idx(v, 0);
	assert_true(json_object_object_get_ex(x, "exits", &y));
	assert_true(json_object_object_get_ex(y, "IO", &y));
	assert_true(json_object_object_get_ex(y, "count", &y) && json_object_get_int(y) == 42);
	assert_true(json_object_object_get_ex(x, "devices", &y));
	y = json_object_array_get_idx(y, 0);
	assert_true(json_object_object_get_ex(y, "device", &v));
	assert_string_equal(json_object_get_string(v), "serial");
	assert_true(json_object_object_get_ex(y, "vmm_ns", &v) && json_object_get_int(v) == 400000);
	assert_true(json_object_object_get_ex(x, "kvm_stats", &y));
	assert_true(json_object_object_get_ex(y, "halt_exits", &v) && json_object_get_int(v) == 99);
	json_object_put(o);
	free(buf);

	buf = NULL;
	f = open_memstream(&buf, &len);
	assert_int_equal(report_print_top(&r, 2, f), 4);
	report_print_exits(&d, f);
	fclose(f);
	assert_non_null(strstr(buf, "idle 50.0%"));
	assert_non_null(strstr(buf, "70.00"));
	assert_non_null(strstr(buf, "[kernel] clear_user_erms"));
	assert_null(strstr(buf, "0xffffffffc0a00010")); /* only the top 2 */
	assert_non_null(strstr(buf, "IO 42"));
	assert_non_null(strstr(buf, "EXIT_40 1"));
	assert_non_null(strstr(buf, "device serial"));
	free(buf);
	report_free(&r);
	profile_data_free(&d);
	symtab_free(&s);
}

/* ---- KVM binary stats ---------------------------------------------------- */

#define NAME_SIZE 48

struct fake_desc {
	struct kvm_stats_desc d;
	char name[NAME_SIZE];
};

static int fake_stats_fd(uint32_t ndesc, uint32_t name_size, uint64_t exits, uint64_t blocking)
{
	struct kvm_stats_header h = {
		.name_size = name_size,
		.num_desc = ndesc,
		.id_offset = sizeof(h),
		.desc_offset = sizeof(h) + 64,
	};
	struct fake_desc d[3];
	uint64_t data[34] = { exits, blocking };
	int fd = memfd_create("stats", 0);

	assert_true(fd >= 0);
	memset(d, 0, sizeof(d));
	d[0].d.flags = KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_NONE;
	d[0].d.size = 1;
	d[0].d.offset = 0;
	strcpy(d[0].name, "exits");
	d[1].d.flags = KVM_STATS_TYPE_INSTANT | KVM_STATS_UNIT_BOOLEAN;
	d[1].d.size = 1;
	d[1].d.offset = 8;
	strcpy(d[1].name, "blocking");
	d[2].d.flags = KVM_STATS_TYPE_LOG_HIST | KVM_STATS_UNIT_SECONDS;
	d[2].d.size = 32;
	d[2].d.offset = 16;
	strcpy(d[2].name, "halt_wait_hist");
	h.data_offset = h.desc_offset + sizeof(d);
	assert_int_equal(pwrite(fd, &h, sizeof(h), 0), sizeof(h));
	assert_int_equal(pwrite(fd, "qlite-test", 10, h.id_offset), 10);
	assert_int_equal(pwrite(fd, d, sizeof(d), h.desc_offset), sizeof(d));
	assert_int_equal(pwrite(fd, data, sizeof(data), h.data_offset), sizeof(data));
	return fd;
}

static void test_kvm_stats(void **state)
{
	struct kvm_stats *s;
	struct prof_stat *v;
	unsigned int n;
	uint64_t more = 1500;
	int fd = fake_stats_fd(3, NAME_SIZE, 1000, 1);
	off_t data_off = sizeof(struct kvm_stats_header) + 64 + 3 * sizeof(struct fake_desc);
	int dup_fd = dup(fd);

	assert_int_equal(kvm_stats_open_fd(fd, &s), 0);
	assert_int_equal(kvm_stats_read(s, &v, &n), 0);
	/* Histograms skipped; cumulative counters start at 0. */
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "exits");
	assert_true(v[0].value == 0);
	assert_string_equal(v[1].name, "blocking");
	assert_true(v[1].value == 1);
	free(v);
	assert_int_equal(pwrite(dup_fd, &more, sizeof(more), data_off), sizeof(more));
	assert_int_equal(kvm_stats_read(s, &v, &n), 0);
	assert_true(v[0].value == 500);
	free(v);
	kvm_stats_close(s);
	close(dup_fd);

	/* Hostile headers: refused, fd closed, nothing leaked. */
	assert_int_equal(kvm_stats_open_fd(fake_stats_fd(0, NAME_SIZE, 0, 0), &s), -EINVAL);
	assert_int_equal(kvm_stats_open_fd(fake_stats_fd(3, 100000, 0, 0), &s), -EINVAL);
	assert_int_equal(kvm_stats_open_fd(fake_stats_fd(1000000, NAME_SIZE, 0, 0), &s), -EINVAL);
	assert_int_equal(kvm_stats_open_fd(memfd_create("empty", 0), &s), -EINVAL);
	/* A NULL reader (no stats on this KVM) reads as empty. */
	assert_int_equal(kvm_stats_read(NULL, &v, &n), 0);
	assert_int_equal(n, 0);
}

/* ---- perf ring --------------------------------------------------------- */

struct ring_seen {
	struct perf_ring_sample s[8];
	int n;
};

static void ring_cb(void *opaque, const struct perf_ring_sample *s)
{
	struct ring_seen *r = opaque;

	if (r->n < 8)
		r->s[r->n++] = *s;
}

/* Put @len bytes at ring position @pos (wrapping). */
static void ring_put(uint8_t *ring, uint64_t size, uint64_t pos, const void *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		ring[(pos + i) & (size - 1)] = ((const uint8_t *)p)[i];
}

static uint64_t put_sample(uint8_t *ring, uint64_t size, uint64_t pos, uint16_t misc,
			   uint64_t ip, uint32_t tid)
{
	struct {
		struct perf_event_header h;
		uint64_t ip;
		uint32_t pid, tid;
	} rec = { { PERF_RECORD_SAMPLE, misc, sizeof(rec) }, ip, 100, tid };

	ring_put(ring, size, pos, &rec, sizeof(rec));
	return pos + sizeof(rec);
}

static void test_perf_ring(void **state)
{
	uint8_t ring[256];
	struct ring_seen seen = { 0 };
	struct perf_event_header other = { PERF_RECORD_MMAP, 0, 16 };
	uint64_t tail = 200, pos = tail;

	memset(ring, 0, sizeof(ring));
	pos = put_sample(ring, sizeof(ring), pos, PERF_RECORD_MISC_GUEST_KERNEL,
			 0xffffffff81000000ULL, 7);
	ring_put(ring, sizeof(ring), pos, &other, sizeof(other));
	pos += 16;
	/* This one wraps around the end of the ring. */
	pos = put_sample(ring, sizeof(ring), pos, PERF_RECORD_MISC_GUEST_USER, 0x401000, 8);
	assert_int_equal(perf_ring_parse(ring, sizeof(ring), tail, pos, ring_cb, &seen), 2);
	assert_int_equal(seen.n, 2);
	assert_true(seen.s[0].ip == 0xffffffff81000000ULL);
	assert_int_equal(seen.s[0].misc & PERF_RECORD_MISC_CPUMODE_MASK,
			 PERF_RECORD_MISC_GUEST_KERNEL);
	assert_int_equal(seen.s[0].tid, 7);
	assert_true(seen.s[1].ip == 0x401000);
	assert_int_equal(seen.s[1].tid, 8);
	/* Empty, corrupt, and impossible rings. */
	assert_int_equal(perf_ring_parse(ring, sizeof(ring), pos, pos, ring_cb, &seen), 0);
	assert_int_equal(perf_ring_parse(ring, 100, tail, pos, ring_cb, &seen), -EINVAL);
	assert_int_equal(perf_ring_parse(ring, sizeof(ring), 0, 1000, ring_cb, &seen), -EINVAL);
	assert_int_equal(perf_ring_parse(ring, sizeof(ring), tail, tail + 4, ring_cb, &seen),
			 -EINVAL);
	memset(ring, 0, sizeof(ring)); /* a zero-size header must not loop forever */
	assert_int_equal(perf_ring_parse(ring, sizeof(ring), 0, 64, ring_cb, &seen), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_json_hostile),
		cmocka_unit_test(test_report_kaslr_auto),
		cmocka_unit_test(test_report_kaslr_given_and_user_symbols),
		cmocka_unit_test(test_writers),
		cmocka_unit_test(test_summary_and_tables),
		cmocka_unit_test(test_kvm_stats),
		cmocka_unit_test(test_perf_ring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
