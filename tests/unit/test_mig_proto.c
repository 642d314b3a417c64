// SPDX-License-Identifier: MIT
/*
 * The migration protocol against hostile peers: URIs, header limits, HELLO
 * and version negotiation, error text, the destination's state machine
 * (every message out of order, page ranges that overflow, counts that lie,
 * configuration and state streams that are wrong in meaning), framing over
 * a real socket (lengths believed only as far as bytes arrive, truncation,
 * timeouts) and the worker/main hand-off. Messages are built by hand where
 * the layout itself is under test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/migration/mig_internal.h"
#include "qlite/sbuf.h"
#include "qlite/stream.h"

#define NPAGES 4096 /* the 16 MiB VM the test configuration describes */

/* ---- building messages ---- */

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static size_t hello(uint8_t *buf, uint32_t vmin, uint32_t vmax, uint32_t channel, uint32_t psize,
		    uint64_t pages)
{
	struct mig_hello h = {.vmin = vmin,
			      .vmax = vmax,
			      .channel = channel,
			      .page_size = psize,
			      .ram_pages = pages};
	struct sbuf b;
	size_t n;

	sbuf_init(&b);
	mig_hello_encode(&h, &b);
	n = b.len;
	memcpy(buf, b.data, n);
	sbuf_free(&b);
	return n;
}

/* A state stream of @n sections into @buf (a memfd round trip). */
struct sect {
	uint32_t kind;
	const char *id;
	uint32_t version;
	const char *data;
	size_t len;
};

static size_t stream(uint8_t *buf, size_t cap, const struct sect *s, unsigned int n)
{
	int fd = memfd_create("t", MFD_CLOEXEC);
	struct stream_writer w;
	struct qerr e = {0};
	ssize_t len;

	stream_writer_init(&w, fd);
	assert_int_equal(stream_begin(&w, &e), 0);
	for (unsigned int i = 0; i < n; i++)
		assert_int_equal(stream_put(&w, s[i].kind, s[i].id, 0, s[i].version, s[i].data,
					    s[i].len, &e),
				 0);
	assert_int_equal(stream_finish(&w, &e), 0);
	len = pread(fd, buf, cap, 0);
	assert_true(len > 0 && (size_t)len < cap);
	close(fd);
	return (size_t)len;
}

static const char cfg_json[] = "{\"mem-size\": 16777216, \"cpus\": 1, \"mem-backend\": \"anon\"}";
static const char cfg_json2[] = "{\"mem-size\": 16777216, \"cpus\": 2, \"mem-backend\": \"anon\"}";

static size_t config(uint8_t *buf, size_t cap)
{
	struct sect s = {STREAM_VM, "vm", CKPT_VM_VERSION, cfg_json, sizeof(cfg_json) - 1};

	return stream(buf, cap, &s, 1);
}

static size_t state_stream(uint8_t *buf, size_t cap, const char *json)
{
	struct sect s[] = {
		{STREAM_VM, "vm", CKPT_VM_VERSION, json, strlen(json)},
		{STREAM_KVM, "kvm", 1, "kvm-blob", 8},
		{STREAM_CPU, "cpu", 1, "cpu-blob", 8},
	};

	return stream(buf, cap, s, 3);
}

/* ---- the state machine's hooks: a fake VM ---- */

struct fake {
	uint8_t *ram; /* NPAGES pages */
	unsigned int configs, page_calls;
	uint64_t zero_pages, data_pages, discarded;
	int config_ret;
};

static int fake_config(void *opaque, const struct vm_config *cfg, struct qerr *e)
{
	struct fake *f = opaque;

	f->configs++;
	assert_int_equal(cfg->mem_size, NPAGES * 4096ULL);
	if (f->config_ret)
		return qerr_set(e, -f->config_ret, "cannot build that VM");
	return 0;
}

static int fake_pages(void *opaque, uint64_t first, uint64_t n, const uint8_t *data, struct qerr *e)
{
	struct fake *f = opaque;

	/* Never out of range: the state machine checked before calling. */
	assert_true(n >= 1 && first < NPAGES && n <= NPAGES - first);
	f->page_calls++;
	if (data) {
		memcpy(f->ram + first * 4096, data, n * 4096);
		f->data_pages += n;
	} else {
		memset(f->ram + first * 4096, 0, n * 4096);
		f->zero_pages += n;
	}
	return 0;
}

static int fake_discard(void *opaque, uint64_t first, uint64_t n, struct qerr *e)
{
	struct fake *f = opaque;

	(void)e;
	assert_true(n >= 1 && first < NPAGES && n <= NPAGES - first);
	memset(f->ram + first * 4096, 0xdd, n * 4096); /* "gone": not zero, not data */
	f->discarded += n;
	return 0;
}

static const struct mig_rx_ops fake_ops = {fake_config, fake_pages, fake_discard};

struct fx {
	struct fake f;
	struct mig_rx rx;
	uint8_t buf[2 * MIG_RUN_MAX * 4096];
	struct qerr e;
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));

	if (!x)
		return -1;
	x->f.ram = calloc(NPAGES, 4096);
	mig_rx_init(&x->rx, &fake_ops, &x->f);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	mig_rx_free(&x->rx);
	free(x->f.ram);
	free(x);
	return 0;
}

static int msg(struct fx *x, uint32_t type, const uint8_t *p, size_t len)
{
	memset(&x->e, 0, sizeof(x->e));
	return mig_rx_msg(&x->rx, type, p, len, &x->e);
}

/* HELLO and CONFIG accepted: ready for pages. */
static void prologue(struct fx *x)
{
	size_t n = hello(x->buf, 1, 1, MIG_CH_MAIN, 4096, NPAGES);
	unsigned int configs = x->f.configs;

	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), 0);
	assert_int_equal(x->rx.phase, MIG_RX_CONFIG);
	n = config(x->buf, sizeof(x->buf));
	assert_int_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	assert_int_equal(x->rx.phase, MIG_RX_RAM);
	assert_int_equal(x->f.configs, configs + 1);
}

static int round_msg(struct fx *x, uint32_t round, uint64_t pages)
{
	uint8_t m[12];

	put32(m, round);
	put64(m + 4, pages);
	return msg(x, MIG_MSG_ROUND, m, sizeof(m));
}

static int pages_msg(struct fx *x, uint64_t first, uint32_t n, size_t len, uint8_t fill)
{
	put64(x->buf, first);
	put32(x->buf + 8, n);
	memset(x->buf + 12, fill, len - 12);
	return msg(x, MIG_MSG_PAGES, x->buf, len);
}

static int zero_msg(struct fx *x, uint64_t first, uint64_t n)
{
	uint8_t m[16];

	put64(m, first);
	put64(m + 8, n);
	return msg(x, MIG_MSG_ZERO, m, sizeof(m));
}

/* ---- tests ---- */

static void test_uri(void **state)
{
	struct mig_uri u;
	struct qerr e = {0};

	assert_int_equal(mig_uri_parse("tcp:10.0.0.2:4444", &u, &e), 0);
	assert_int_equal(u.kind, MIG_URI_TCP);
	assert_string_equal(u.host, "10.0.0.2");
	assert_string_equal(u.port, "4444");
	assert_int_equal(mig_uri_parse("tcp:[::1]:7", &u, &e), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(mig_uri_parse("tcp::4444", &u, &e), 0);
	assert_string_equal(u.host, "");
	assert_int_equal(mig_uri_parse("unix:/run/m.sock", &u, &e), 0);
	assert_int_equal(u.kind, MIG_URI_UNIX);
	assert_string_equal(u.path, "/run/m.sock");
	assert_int_equal(mig_uri_parse("fd:17", &u, &e), 0);
	assert_int_equal(u.kind, MIG_URI_FD);
	assert_int_equal(u.fd, 17);

	static const struct {
		const char *uri, *needle;
	} bad[] = {
		{"", "no migration URI"},
		{"tcp:host", "tcp:HOST:PORT"},
		{"tcp:host:0", "1..65535"},
		{"tcp:host:65536", "1..65535"},
		{"tcp:host:80x", "1..65535"},
		{"tcp:::1:80", "brackets"},
		{"tcp:[::1]80", "tcp:[ADDRESS]:PORT"},
		{"unix:", "no socket path"},
		{"fd:", "fd:N"},
		{"fd:-1", "fd:N"},
		{"fd:99999999999", "fd:N"},
		{"exec:cat", "expected tcp:HOST:PORT, unix:PATH or fd:N"},
		{"rdma:host:1", "expected"},
	};
	for (unsigned int i = 0; i < ARRAY_SIZE(bad); i++) {
		memset(&e, 0, sizeof(e));
		assert_int_not_equal(mig_uri_parse(bad[i].uri, &u, &e), 0);
		if (!strstr(e.msg, bad[i].needle))
			fail_msg("%s: '%s' lacks '%s'", bad[i].uri, e.msg, bad[i].needle);
	}
	{
		char longp[300] = "unix:";

		memset(longp + 5, 'a', 200);
		memset(&e, 0, sizeof(e));
		assert_int_equal(mig_uri_parse(longp, &u, &e), -ENAMETOOLONG);
	}
}

static void test_header_limits(void **state)
{
	struct qerr e = {0};

	/* Direction: each side only sends its own messages. */
	assert_int_equal(mig_check_hdr(MIG_MSG_PAGES, 12 + 4096, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_PAGES, 12 + 4096, false, &e), 0);
	assert_int_equal(mig_check_hdr(MIG_MSG_READY, 0, false, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_READY, 0, true, &e), 0);
	assert_int_equal(mig_check_hdr(MIG_MSG_ERROR, 10, true, &e), 0);
	assert_int_equal(mig_check_hdr(MIG_MSG_ERROR, 10, false, &e), 0);
	/* Lengths: fixed ones exact, variable ones bounded. */
	assert_int_not_equal(mig_check_hdr(MIG_MSG_PAGES, 12 + 4095, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_PAGES, 12 + 257 * 4096, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_ZERO, 17, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_GO, 1, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_HELLO, MIG_HELLO_LEN - 1, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_STATE, MIG_MAX_STATE + 1, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_CONFIG, UINT32_MAX, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_ERROR, 4 + MIG_MAX_ERROR + 1, true, &e), 0);
	memset(&e, 0, sizeof(e));
	assert_int_equal(mig_check_hdr(MIG_MSG_ZERO, 15, true, &e), -EBADMSG);
	assert_non_null(strstr(e.msg, "ZERO of 15 bytes"));
	/* Unknown types. */
	assert_int_not_equal(mig_check_hdr(0, 0, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_MAX, 0, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(0xffffffff, 0, false, &e), 0);
	assert_null(mig_msg_name(0));
	assert_null(mig_msg_name(MIG_MSG_MAX));
	assert_string_equal(mig_msg_name(MIG_MSG_PAGE_REQUEST), "PAGE_REQUEST");
}

static void test_hello(void **state)
{
	uint8_t buf[MIG_MAX_SMALL] = {0};
	struct mig_hello h;
	struct qerr e = {0};
	uint32_t v;
	size_t n = hello(buf, 1, 3, MIG_CH_URGENT, 4096, 77);

	assert_int_equal(n, MIG_HELLO_LEN);
	assert_memory_equal(buf, MIG_MAGIC, MIG_MAGIC_LEN);
	assert_int_equal(mig_hello_decode(buf, n, &h, &e), 0);
	assert_int_equal(h.vmin, 1);
	assert_int_equal(h.vmax, 3);
	assert_int_equal(h.channel, MIG_CH_URGENT);
	assert_int_equal(h.ram_pages, 77);
	/* A later version's HELLO carries more: the known part still reads. */
	assert_int_equal(mig_hello_decode(buf, 200, &h, &e), 0);
	/* Truncated, foreign, nonsense versions. */
	assert_int_not_equal(mig_hello_decode(buf, n - 1, &h, &e), 0);
	assert_int_not_equal(mig_hello_decode(buf, 4, &h, &e), 0);
	buf[0] = 'X';
	memset(&e, 0, sizeof(e));
	assert_int_equal(mig_hello_decode(buf, n, &h, &e), -EBADMSG);
	assert_non_null(strstr(e.msg, "not a qlite migration stream"));
	n = hello(buf, 3, 2, 0, 4096, 1);
	assert_int_not_equal(mig_hello_decode(buf, n, &h, &e), 0);
	n = hello(buf, 0, 0, 0, 4096, 1);
	assert_int_not_equal(mig_hello_decode(buf, n, &h, &e), 0);
	/* Negotiation: the highest common version. */
	assert_int_equal(mig_version_pick(1, 9, &v, &e), 0);
	assert_int_equal(v, MIG_VERSION_MAX);
	memset(&e, 0, sizeof(e));
	assert_int_equal(mig_version_pick(MIG_VERSION_MAX + 1, 9, &v, &e), -EPROTONOSUPPORT);
	assert_non_null(strstr(e.msg, "version mismatch"));
	/* The answer. */
	{
		struct sbuf b;
		uint64_t f;

		sbuf_init(&b);
		mig_ack_encode(1, 5, &b);
		assert_int_equal(b.len, MIG_ACK_LEN);
		assert_int_equal(mig_ack_decode(b.data, b.len, &v, &f, &e), 0);
		assert_int_equal(v, 1);
		assert_int_equal(f, 5);
		assert_int_not_equal(mig_ack_decode(b.data, b.len - 1, &v, &f, &e), 0);
		sbuf_free(&b);
	}
}

static void test_error_text(void **state)
{
	uint8_t m[4 + 8] = {0};
	char text[6];

	put32(m, ENOSPC);
	memcpy(m + 4, "no\x1b[2Jsp", 8);
	/* Control bytes never reach a terminal; the text is cut to the buffer. */
	assert_int_equal(mig_error_decode(m, sizeof(m), text, sizeof(text)), ENOSPC);
	assert_string_equal(text, "no?[2");
	put32(m, 0);
	assert_int_equal(mig_error_decode(m, 4, text, sizeof(text)), EPROTO);
	assert_string_equal(text, "");
	put32(m, 0x7fffffff);
	assert_int_equal(mig_error_decode(m, sizeof(m), text, sizeof(text)), EPROTO);
}

static void test_rx_good(void **state)
{
	struct fx *x = *state;
	size_t n;

	prologue(x);
	assert_int_equal(round_msg(x, 0, 10), 0);
	assert_int_equal(pages_msg(x, 5, 2, 12 + 2 * 4096, 0xab), 0);
	assert_int_equal(pages_msg(x, NPAGES - 256, 256, 12 + 256 * 4096, 0xcd), 0);
	assert_int_equal(round_msg(x, 1, 1), 0);
	assert_int_equal(zero_msg(x, 6, 1), 0);
	assert_int_equal(x->f.ram[5 * 4096], 0xab);
	assert_int_equal(x->f.ram[6 * 4096], 0);
	assert_int_equal(x->f.ram[(NPAGES - 1) * 4096 + 4095], 0xcd);
	n = state_stream(x->buf, sizeof(x->buf), cfg_json);
	assert_int_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	assert_int_equal(x->rx.phase, MIG_RX_END);
	assert_true(x->rx.have_state && x->rx.state.kvm && x->rx.state.cpu[0]);
	put32(x->buf, MIG_END_RUN);
	assert_int_equal(msg(x, MIG_MSG_END, x->buf, 4), 0);
	assert_true(x->rx.run);
	assert_int_equal(x->rx.phase, MIG_RX_GO);
	assert_int_equal(msg(x, MIG_MSG_GO, NULL, 0), 0);
	assert_int_equal(x->rx.phase, MIG_RX_DONE);
	assert_int_equal(x->rx.pages_data, 258);
	assert_int_equal(x->rx.pages_zero, 1);
	assert_int_equal(x->rx.rounds, 2);
	/* Nothing after GO. */
	assert_int_not_equal(msg(x, MIG_MSG_GO, NULL, 0), 0);
}

/* Each message where it does not belong, in each phase. */
static void test_rx_order(void **state)
{
	struct fx *x = *state;
	uint8_t zero16[16] = {0};
	size_t n;

	/* Before HELLO: anything else is not a migration stream. */
	assert_int_equal(msg(x, MIG_MSG_GO, NULL, 0), -EBADMSG);
	assert_non_null(strstr(x->e.msg, "not a qlite migration stream"));
	assert_int_not_equal(msg(x, MIG_MSG_ZERO, zero16, 16), 0);
	n = hello(x->buf, 1, 1, 0, 4096, NPAGES);
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), 0);
	/* A second HELLO, pages before CONFIG, END before STATE. */
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), -EPROTO);
	assert_non_null(strstr(x->e.msg, "HELLO out of order"));
	assert_int_not_equal(zero_msg(x, 0, 1), 0);
	assert_int_equal(x->f.page_calls, 0);
	n = config(x->buf, sizeof(x->buf));
	assert_int_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	put32(x->buf, 0);
	assert_int_not_equal(msg(x, MIG_MSG_END, x->buf, 4), 0);
	assert_int_not_equal(msg(x, MIG_MSG_GO, NULL, 0), 0);
	/* Messages only the destination sends are not accepted from the source. */
	assert_int_not_equal(msg(x, MIG_MSG_READY, NULL, 0), 0);
	assert_int_not_equal(msg(x, MIG_MSG_HELLO_ACK, x->buf, 12), 0);
	/* Post-copy was not negotiated. */
	memset(x->buf, 0, MIG_PCRUN_LEN);
	assert_int_equal(msg(x, MIG_MSG_POSTCOPY_RUN, x->buf, MIG_PCRUN_LEN), -EPROTO);
	assert_non_null(strstr(x->e.msg, "post-copy"));
	assert_int_equal(msg(x, MIG_MSG_DISCARD, x->buf, 16), -EPROTO);
	assert_non_null(strstr(x->e.msg, "post-copy was not negotiated"));
	/* After STATE: no more pages, no second STATE, no GO before END. */
	n = state_stream(x->buf, sizeof(x->buf), cfg_json);
	assert_int_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	assert_int_not_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	assert_int_not_equal(zero_msg(x, 0, 1), 0);
	assert_int_not_equal(round_msg(x, 0, 0), 0);
	assert_int_not_equal(msg(x, MIG_MSG_GO, NULL, 0), 0);
	assert_int_equal(x->f.page_calls, 0);
}

static void test_rx_pages_hostile(void **state)
{
	struct fx *x = *state;

	prologue(x);
	/* Rounds in sequence, announcing no more pages than the VM has. */
	assert_int_equal(round_msg(x, 1, 0), -EPROTO);
	assert_int_equal(round_msg(x, 0, NPAGES + 1), -ERANGE);
	assert_int_equal(round_msg(x, 0, NPAGES), 0);
	assert_int_equal(round_msg(x, 0, 0), -EPROTO);
	/* Ranges: past the end, overflowing, empty. */
	assert_int_equal(pages_msg(x, NPAGES, 1, 12 + 4096, 1), -ERANGE);
	assert_non_null(strstr(x->e.msg, "the VM has 4096 pages"));
	assert_int_equal(pages_msg(x, NPAGES - 1, 2, 12 + 2 * 4096, 1), -ERANGE);
	assert_int_equal(pages_msg(x, UINT64_MAX, 1, 12 + 4096, 1), -ERANGE);
	assert_int_equal(zero_msg(x, UINT64_MAX - 1, 3), -ERANGE);
	assert_int_equal(zero_msg(x, 1, UINT64_MAX), -ERANGE);
	assert_int_equal(zero_msg(x, 0, 0), -ERANGE);
	assert_int_equal(zero_msg(x, 0, NPAGES + 1), -ERANGE);
	/* Counts that disagree with the length. */
	assert_int_equal(pages_msg(x, 0, 2, 12 + 4096, 1), -EBADMSG);
	assert_int_equal(pages_msg(x, 0, 0, 12 + 4096, 1), -EBADMSG);
	assert_int_equal(pages_msg(x, 0, 300, 12 + 4096, 1), -EBADMSG);
	assert_int_equal(pages_msg(x, 0, 1, 12 + 4096 + 1, 1), -EBADMSG);
	assert_int_equal(x->f.page_calls, 0);
	/* Whole memory as zero in one message is fine. */
	assert_int_equal(zero_msg(x, 0, NPAGES), 0);
	assert_int_equal(x->f.zero_pages, NPAGES);
}

static void test_rx_hello_hostile(void **state)
{
	struct fx *x = *state;
	size_t n;

	n = hello(x->buf, 5, 9, 0, 4096, NPAGES);
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), -EPROTONOSUPPORT);
	n = hello(x->buf, 1, 1, 0, 8192, NPAGES);
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), -EINVAL);
	assert_non_null(strstr(x->e.msg, "page size"));
	n = hello(x->buf, 1, 1, MIG_CH_URGENT, 4096, NPAGES);
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), -EPROTO);
	n = hello(x->buf, 1, 1, 0, 4096, NPAGES);
	x->buf[3] ^= 1;
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), -EBADMSG);
	assert_int_equal(x->rx.phase, MIG_RX_HELLO);
	/* The source's ERROR: its errno and its words. */
	put32(x->buf, ECANCELED);
	memcpy(x->buf + 4, "cancelled", 9);
	assert_int_equal(msg(x, MIG_MSG_ERROR, x->buf, 13), -ECANCELED);
	assert_non_null(strstr(x->e.msg, "the source gave up: cancelled"));
	/* Offered post-copy is not accepted by a destination that does not support it. */
	{
		struct mig_hello h = {.vmin = 1,
				      .vmax = 1,
				      .features = MIG_F_POSTCOPY | (1ULL << 40),
				      .page_size = 4096,
				      .ram_pages = NPAGES};
		struct sbuf b;

		sbuf_init(&b);
		mig_hello_encode(&h, &b);
		assert_int_equal(msg(x, MIG_MSG_HELLO, b.data, b.len), 0);
		assert_int_equal(x->rx.features, 0);
		sbuf_free(&b);
	}
}

static void test_rx_config_hostile(void **state)
{
	struct fx *x = *state;
	size_t n = hello(x->buf, 1, 1, 0, 4096, NPAGES);
	struct sect two[] = {
		{STREAM_VM, "vm", CKPT_VM_VERSION, cfg_json, sizeof(cfg_json) - 1},
		{STREAM_KVM, "kvm", 1, "x", 1},
	};
	struct sect notvm = {STREAM_KVM, "kvm", 1, "x", 1};
	struct sect oldvm = {STREAM_VM, "vm", 99, cfg_json, sizeof(cfg_json) - 1};
	struct sect badjson = {STREAM_VM, "vm", CKPT_VM_VERSION, "{\"mem-size\": 1", 14};
	struct sect nocpus = {STREAM_VM, "vm", CKPT_VM_VERSION, "{\"mem-size\": 16777216}", 22};

	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), 0);
	n = stream(x->buf, sizeof(x->buf), two, 2);
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	assert_non_null(strstr(x->e.msg, "more than the vm section"));
	mig_rx_free(&x->rx);
	x->rx.phase = MIG_RX_CONFIG;
	n = stream(x->buf, sizeof(x->buf), &notvm, 1);
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	assert_non_null(strstr(x->e.msg, "where the vm section"));
	n = stream(x->buf, sizeof(x->buf), &oldvm, 1);
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	mig_rx_free(&x->rx);
	x->rx.phase = MIG_RX_CONFIG;
	n = stream(x->buf, sizeof(x->buf), &badjson, 1);
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	mig_rx_free(&x->rx);
	x->rx.phase = MIG_RX_CONFIG;
	n = stream(x->buf, sizeof(x->buf), &nocpus, 1);
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	mig_rx_free(&x->rx);
	x->rx.phase = MIG_RX_CONFIG;
	/* A damaged stream: its CRC. */
	n = config(x->buf, sizeof(x->buf));
	x->buf[n / 2] ^= 0x10;
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
	assert_non_null(strstr(x->e.msg, "CONFIG"));
	/* Garbage, and a stream with trailing bytes. */
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, (const uint8_t *)"garbage!", 8), 0);
	n = config(x->buf, sizeof(x->buf));
	assert_int_not_equal(msg(x, MIG_MSG_CONFIG, x->buf, n + 1), 0);
	assert_int_equal(x->f.configs, 0);
	/* The VM cannot be built here: that error, as is. */
	x->f.config_ret = -ENOMEM;
	assert_int_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), -ENOMEM);
	assert_non_null(strstr(x->e.msg, "cannot build"));
	assert_int_equal(x->rx.phase, MIG_RX_CONFIG);
}

static void test_rx_config_pages_mismatch(void **state)
{
	struct fx *x = *state;
	size_t n = hello(x->buf, 1, 1, 0, 4096, NPAGES * 2);

	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), 0);
	n = config(x->buf, sizeof(x->buf));
	assert_int_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), -EINVAL);
	assert_non_null(strstr(x->e.msg, "HELLO announced 8192"));
	assert_int_equal(x->f.configs, 0);
}

static void test_rx_state_hostile(void **state)
{
	struct fx *x = *state;
	struct sect withram[] = {
		{STREAM_VM, "vm", CKPT_VM_VERSION, cfg_json, sizeof(cfg_json) - 1},
		{STREAM_KVM, "kvm", 1, "x", 1},
		{STREAM_RAM, "ram", CKPT_RAM_VERSION, "x", 1},
	};
	struct sect nokvm = {STREAM_VM, "vm", CKPT_VM_VERSION, cfg_json, sizeof(cfg_json) - 1};
	size_t n;

	prologue(x);
	/* Another VM's state than the configuration announced. */
	n = state_stream(x->buf, sizeof(x->buf), cfg_json2);
	assert_int_equal(msg(x, MIG_MSG_STATE, x->buf, n), -EINVAL);
	assert_non_null(strstr(x->e.msg, "differs from the configuration"));
	mig_rx_free(&x->rx);
	n = stream(x->buf, sizeof(x->buf), withram, 3);
	assert_int_not_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	mig_rx_free(&x->rx);
	/* CONFIG's copy is gone with rx_free: start over for the last cases. */
	mig_rx_init(&x->rx, &fake_ops, &x->f);
	prologue(x);
	n = stream(x->buf, sizeof(x->buf), &nokvm, 1);
	assert_int_not_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	assert_non_null(strstr(x->e.msg, "no kvm section"));
	ckpt_state_free(&x->rx.state);
	n = state_stream(x->buf, sizeof(x->buf), cfg_json);
	assert_int_not_equal(msg(x, MIG_MSG_STATE, x->buf, n - 1), 0); /* truncated */
	ckpt_state_free(&x->rx.state);
	assert_int_equal(x->rx.phase, MIG_RX_RAM);
	assert_int_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	/* END: unknown flags are a newer source's; refused. */
	put32(x->buf, 2);
	assert_int_equal(msg(x, MIG_MSG_END, x->buf, 4), -EPROTO);
	put32(x->buf, 0);
	assert_int_equal(msg(x, MIG_MSG_END, x->buf, 4), 0);
	assert_false(x->rx.run);
}

/* Random messages in random order: never a crash, never a write out of range. */
static void test_rx_random(void **state)
{
	struct fx *x = *state;
	unsigned int seed = 12345;

	for (int iter = 0; iter < 20000; iter++) {
		uint32_t type = (uint32_t)(rand_r(&seed) % (MIG_MSG_MAX + 2));
		size_t len = (size_t)(rand_r(&seed) % 64);
		uint64_t first = (uint64_t)rand_r(&seed) % (NPAGES + 8);

		if (iter % 1000 == 0) {
			mig_rx_free(&x->rx);
			mig_rx_init(&x->rx, &fake_ops, &x->f);
			prologue(x);
		}
		for (size_t i = 0; i < len; i++)
			x->buf[i] = (uint8_t)rand_r(&seed);
		if (type == MIG_MSG_PAGES && len >= 12) {
			put64(x->buf, first);
			put32(x->buf + 8, (uint32_t)(rand_r(&seed) % 4));
			len = 12 + 4096 * (rand_r(&seed) % 4);
		} else if (type == MIG_MSG_ZERO) {
			put64(x->buf, first);
			put64(x->buf + 8, (uint64_t)rand_r(&seed) % 16);
			len = 16;
		}
		memset(&x->e, 0, sizeof(x->e));
		mig_rx_msg(&x->rx, type, x->buf, len, &x->e);
	}
}

/* ---- framing over a socket ---- */

static void test_recv_framing(void **state)
{
	int sp[2];
	struct mig_conn a, b;
	struct qerr e = {0};
	uint32_t type, len;
	uint8_t hdr[8], page[4096];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	mig_conn_init(&a, sp[0], false); /* the source's end */
	mig_conn_init(&b, sp[1], true);	 /* the destination's */
	/* A message in three parts arrives as one. */
	memset(page, 0x5a, sizeof(page));
	{
		uint8_t ph[12];

		put64(ph, 7);
		put32(ph + 8, 1);
		assert_int_equal(mig_send(&a, MIG_MSG_PAGES, ph, 12, page, sizeof(page), &e), 0);
	}
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), 0);
	assert_int_equal(type, MIG_MSG_PAGES);
	assert_int_equal(len, 12 + 4096);
	assert_int_equal(b.buf[12], 0x5a);
	assert_int_equal(b.rx_bytes, 8 + 12 + 4096);
	assert_int_equal(a.tx_bytes, b.rx_bytes);
	/* Nothing comes: a timeout, and the connection stays usable. */
	memset(&e, 0, sizeof(e));
	assert_int_equal(mig_recv(&b, &type, &len, 50, &e), -ETIMEDOUT);
	/* A header announcing more than its type allows: refused before reading on. */
	put32(hdr, MIG_MSG_STATE);
	put32(hdr + 4, MIG_MAX_STATE + 1);
	assert_int_equal(write(sp[0], hdr, 8), 8);
	memset(&e, 0, sizeof(e));
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), -EBADMSG);
	assert_non_null(strstr(e.msg, "STATE"));
	/* A message of the destination's kind from the source: refused. */
	put32(hdr, MIG_MSG_READY);
	put32(hdr + 4, 0);
	assert_int_equal(write(sp[0], hdr, 8), 8);
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), -EBADMSG);
	/* A big length with few bytes behind it: truncated, memory not taken on trust. */
	put32(hdr, MIG_MSG_STATE);
	put32(hdr + 4, 200 << 20);
	assert_int_equal(write(sp[0], hdr, 8), 8);
	assert_int_equal(write(sp[0], page, 100), 100);
	shutdown(sp[0], SHUT_WR);
	memset(&e, 0, sizeof(e));
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), -EPIPE);
	assert_non_null(strstr(e.msg, "ends inside message STATE (100 of"));
	assert_true(b.cap <= 2 * MiB);
	/* And then the end of the stream, at a message boundary. */
	memset(&e, 0, sizeof(e));
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), -ECONNRESET);
	assert_non_null(strstr(e.msg, "source closed the connection"));
	mig_conn_free(&a);
	mig_conn_free(&b);
}

static void test_recv_short_header(void **state)
{
	int sp[2];
	struct mig_conn b;
	struct qerr e = {0};
	uint32_t type, len;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	mig_conn_init(&b, sp[1], true);
	assert_int_equal(write(sp[0], "\x01\x00\x00", 3), 3);
	close(sp[0]);
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), -EPIPE);
	assert_non_null(strstr(e.msg, "inside a message header (3 of 8"));
	mig_conn_free(&b);
}

static void test_send_error(void **state)
{
	int sp[2];
	struct mig_conn a, b;
	struct qerr e = {0};
	uint32_t type, len;
	char text[64], long_text[3000];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	mig_conn_init(&a, sp[0], true); /* the destination's end */
	mig_conn_init(&b, sp[1], false);
	assert_int_equal(mig_send_error(&a, ENOSPC, "disk full"), 0);
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), 0);
	assert_int_equal(type, MIG_MSG_ERROR);
	assert_int_equal(mig_error_decode(b.buf, len, text, sizeof(text)), ENOSPC);
	assert_string_equal(text, "disk full");
	/* Long texts are cut to the limit the receiver accepts. */
	memset(long_text, 'x', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = 0;
	assert_int_equal(mig_send_error(&a, EIO, long_text), 0);
	assert_int_equal(mig_recv(&b, &type, &len, 1000, &e), 0);
	assert_int_equal(len, 4 + MIG_MAX_ERROR);
	mig_conn_free(&a);
	mig_conn_free(&b);
}

/* ---- the worker <-> main hand-off ---- */

struct caller {
	struct mig_sync *s;
	int ret;
	struct qerr e;
};

static void *call_build(void *arg)
{
	struct caller *c = arg;
	struct mig_event ev = {.kind = MIG_EV_STATUS, .status = MIG_STATUS_ACTIVE};

	mig_sync_post(c->s, &ev);
	c->ret = mig_sync_call(c->s, MIG_EV_BUILD, &c->e);
	mig_sync_end(c->s);
	return NULL;
}

static void next_blocking(struct mig_sync *s, struct mig_event *ev)
{
	for (int i = 0; i < 5000; i++) {
		mig_sync_next(s, ev);
		if (ev->kind != MIG_EV_NONE)
			return;
		usleep(1000);
	}
}

static void test_sync(void **state)
{
	struct mig_sync s;
	struct caller c = {.s = &s};
	struct mig_event ev;
	pthread_t th;
	struct qerr e = {0};

	assert_int_equal(mig_sync_init(&s, &e), 0);
	pthread_create(&th, NULL, call_build, &c);
	next_blocking(&s, &ev);
	assert_int_equal(ev.kind, MIG_EV_STATUS); /* announcements first, in order */
	assert_int_equal(ev.status, MIG_STATUS_ACTIVE);
	next_blocking(&s, &ev);
	assert_int_equal(ev.kind, MIG_EV_BUILD);
	mig_sync_next(&s, &ev);
	assert_int_equal(ev.kind, MIG_EV_NONE); /* a request is handed out once */
	mig_sync_answer(&s, -ENOSPC, "no room for that VM");
	next_blocking(&s, &ev);
	assert_int_equal(ev.kind, MIG_EV_ENDED);
	pthread_join(th, NULL);
	assert_int_equal(c.ret, -ENOSPC);
	assert_string_equal(c.e.msg, "no room for that VM");
	mig_sync_next(&s, &ev);
	assert_int_equal(ev.kind, MIG_EV_NONE);
	mig_sync_destroy(&s);

	/* Cancel wakes a waiting worker, and later calls fail at once. */
	memset(&c, 0, sizeof(c));
	c.s = &s;
	assert_int_equal(mig_sync_init(&s, &e), 0);
	pthread_create(&th, NULL, call_build, &c);
	next_blocking(&s, &ev);
	next_blocking(&s, &ev);
	assert_int_equal(ev.kind, MIG_EV_BUILD);
	mig_sync_cancel(&s);
	pthread_join(th, NULL);
	assert_int_equal(c.ret, -ECANCELED);
	assert_int_equal(mig_sync_call(&s, MIG_EV_APPLY, &e), -ECANCELED);
	mig_sync_destroy(&s);
}

static void test_sync_overflow(void **state)
{
	struct mig_sync s;
	struct mig_event ev = {.kind = MIG_EV_PASS}, out;
	struct qerr e = {0};
	unsigned int i, passes = 0, statuses = 0;

	assert_int_equal(mig_sync_init(&s, &e), 0);
	for (i = 0; i < 3 * MIG_SYNC_QUEUE; i++) {
		ev.pass = i;
		mig_sync_post(&s, &ev);
	}
	/* A full queue still takes a status change: it matters more than a pass. */
	ev.kind = MIG_EV_STATUS;
	ev.status = MIG_STATUS_COMPLETED;
	mig_sync_post(&s, &ev);
	for (mig_sync_next(&s, &out); out.kind != MIG_EV_NONE; mig_sync_next(&s, &out)) {
		passes += out.kind == MIG_EV_PASS;
		statuses += out.kind == MIG_EV_STATUS;
	}
	assert_int_equal(statuses, 1);
	assert_int_equal(passes, MIG_SYNC_QUEUE - 1);
	mig_sync_destroy(&s);
}

/* ---- post-copy ---- */

static size_t pc_hello(uint8_t *buf, uint32_t channel, uint64_t features, uint8_t sess)
{
	struct mig_hello h = {.vmin = 1,
			      .vmax = 1,
			      .features = features,
			      .channel = channel,
			      .page_size = 4096,
			      .ram_pages = NPAGES};
	struct sbuf b;
	size_t n;

	memset(h.session, sess, sizeof(h.session));
	sbuf_init(&b);
	mig_hello_encode(&h, &b);
	n = b.len;
	memcpy(buf, b.data, n);
	sbuf_free(&b);
	return n;
}

/* HELLO offering post-copy to a destination that does it, CONFIG, STATE. */
static void pc_prologue(struct fx *x)
{
	size_t n;

	x->rx.supported = MIG_F_POSTCOPY;
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY, 7);
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), 0);
	assert_int_equal(x->rx.features, MIG_F_POSTCOPY);
	n = config(x->buf, sizeof(x->buf));
	assert_int_equal(msg(x, MIG_MSG_CONFIG, x->buf, n), 0);
}

static int discard_msg(struct fx *x, uint64_t first, uint64_t n)
{
	uint8_t m[16];

	put64(m, first);
	put64(m + 8, n);
	return msg(x, MIG_MSG_DISCARD, m, sizeof(m));
}

static int pcrun_msg(struct fx *x, uint32_t flags, uint64_t missing)
{
	uint8_t m[MIG_PCRUN_LEN];

	mig_pcrun_encode(flags, missing, m);
	return msg(x, MIG_MSG_POSTCOPY_RUN, m, sizeof(m));
}

static int urgent(struct fx *x, uint32_t type, const uint8_t *p, size_t len)
{
	memset(&x->e, 0, sizeof(x->e));
	return mig_rx_urgent_msg(&x->rx, type, p, len, &x->e);
}

static void test_page_request_codec(void **state)
{
	uint8_t m[MIG_PAGE_REQ_LEN + 1];
	struct qerr e = {0};
	uint64_t first;
	uint32_t n;

	(void)state;
	mig_page_req_encode(NPAGES - 256, 256, m);
	assert_int_equal(mig_page_req_decode(m, MIG_PAGE_REQ_LEN, NPAGES, &first, &n, &e), 0);
	assert_int_equal(first, NPAGES - 256);
	assert_int_equal(n, 256);
	/* Truncated or longer: refused before the fields mean anything. */
	assert_int_equal(mig_page_req_decode(m, MIG_PAGE_REQ_LEN - 1, NPAGES, &first, &n, &e),
			 -EBADMSG);
	assert_int_equal(mig_page_req_decode(m, MIG_PAGE_REQ_LEN + 1, NPAGES, &first, &n, &e),
			 -EBADMSG);
	/* Counts: none, too many; ranges: past the end, overflowing. */
	static const struct {
		uint64_t first;
		uint32_t n;
		int ret;
	} bad[] = {
		{0, 0, -EBADMSG},
		{0, MIG_RUN_MAX + 1, -EBADMSG},
		{0, UINT32_MAX, -EBADMSG},
		{NPAGES, 1, -ERANGE},
		{NPAGES - 255, 256, -ERANGE},
		{UINT64_MAX, 1, -ERANGE},
		{UINT64_MAX - 1, 3, -ERANGE},
	};
	for (unsigned int i = 0; i < ARRAY_SIZE(bad); i++) {
		mig_page_req_encode(bad[i].first, bad[i].n, m);
		memset(&e, 0, sizeof(e));
		assert_int_equal(mig_page_req_decode(m, MIG_PAGE_REQ_LEN, NPAGES, &first, &n, &e),
				 bad[i].ret);
		assert_non_null(strstr(e.msg, "PAGE_REQUEST"));
	}
	/* Only the destination sends it, 12 bytes exactly. */
	assert_int_equal(mig_check_hdr(MIG_MSG_PAGE_REQUEST, 12, false, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_PAGE_REQUEST, 12, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_PAGE_REQUEST, 13, false, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_POSTCOPY_RUN, 11, true, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_POSTCOPY_RUN, 12, false, &e), 0);
	assert_int_not_equal(mig_check_hdr(MIG_MSG_DISCARD, 15, true, &e), 0);
	assert_string_equal(mig_msg_name(MIG_MSG_DISCARD), "DISCARD");
}

/* The whole post-copy flow on the main channel, with answers on the urgent one. */
static void test_rx_postcopy_good(void **state)
{
	struct fx *x = *state;
	size_t n;

	pc_prologue(x);
	assert_int_equal(round_msg(x, 0, 3), 0);
	assert_int_equal(pages_msg(x, 10, 3, 12 + 3 * 4096, 0xab), 0);
	/* Page 11 changed after it was sent. */
	assert_int_equal(discard_msg(x, 11, 1), 0);
	assert_int_equal(x->f.ram[11 * 4096], 0xdd);
	assert_int_equal(x->rx.pages_discarded, 1);
	n = state_stream(x->buf, sizeof(x->buf), cfg_json);
	assert_int_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	/* No answers before post-copy begins. */
	put64(x->buf, 11);
	put32(x->buf + 8, 1);
	assert_int_equal(urgent(x, MIG_MSG_PAGES, x->buf, 12 + 4096), -EPROTO);
	assert_int_equal(pcrun_msg(x, MIG_END_RUN, NPAGES - 2), 0);
	assert_true(x->rx.postcopy && x->rx.run);
	assert_int_equal(x->rx.missing, NPAGES - 2);
	assert_int_equal(x->rx.phase, MIG_RX_GO);
	assert_int_equal(msg(x, MIG_MSG_GO, NULL, 0), 0);
	assert_int_equal(x->rx.phase, MIG_RX_POSTCOPY);
	/* An answer on the urgent channel, a push on the main one, both placed. */
	put64(x->buf, 11);
	put32(x->buf + 8, 1);
	memset(x->buf + 12, 0x11, 4096);
	assert_int_equal(urgent(x, MIG_MSG_PAGES, x->buf, 12 + 4096), 0);
	assert_int_equal(x->f.ram[11 * 4096], 0x11);
	assert_int_equal(pages_msg(x, 100, 2, 12 + 2 * 4096, 0x22), 0);
	assert_int_equal(zero_msg(x, 200, NPAGES - 200), 0);
	/* Nothing else belongs in the push. */
	assert_int_equal(round_msg(x, 1, 0), -EPROTO);
	assert_int_equal(discard_msg(x, 5, 1), -EPROTO);
	assert_int_equal(msg(x, MIG_MSG_GO, NULL, 0), -EPROTO);
	n = state_stream(x->buf, sizeof(x->buf), cfg_json);
	assert_int_equal(msg(x, MIG_MSG_STATE, x->buf, n), -EPROTO);
	/* END closes it (no flags: the VM already runs); answers to late requests still count. */
	put32(x->buf, MIG_END_RUN);
	assert_int_equal(msg(x, MIG_MSG_END, x->buf, 4), -EPROTO);
	put32(x->buf, 0);
	assert_int_equal(msg(x, MIG_MSG_END, x->buf, 4), 0);
	assert_int_equal(x->rx.phase, MIG_RX_DONE);
	put64(x->buf, 11);
	put32(x->buf + 8, 1);
	assert_int_equal(urgent(x, MIG_MSG_PAGES, x->buf, 12 + 4096), 0);
	assert_int_not_equal(pages_msg(x, 100, 1, 12 + 4096, 1), 0);
}

static void test_rx_postcopy_hostile(void **state)
{
	struct fx *x = *state;
	uint8_t m[MIG_PCRUN_LEN];
	size_t n;

	/* A destination that cannot do it does not accept it, so refuses its messages. */
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY, 7);
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), 0);
	assert_int_equal(x->rx.features, 0);
	n = pc_hello(x->buf, MIG_CH_URGENT, MIG_F_POSTCOPY, 7);
	memset(&x->e, 0, sizeof(x->e));
	assert_int_equal(mig_rx_urgent_hello(&x->rx, x->buf, n, &x->e), -EPROTO);
	assert_non_null(strstr(x->e.msg, "not negotiated"));
	mig_rx_free(&x->rx);
	mig_rx_init(&x->rx, &fake_ops, &x->f);

	pc_prologue(x);
	/* DISCARD ranges like ZERO's. */
	assert_int_equal(discard_msg(x, NPAGES, 1), -ERANGE);
	assert_int_equal(discard_msg(x, 1, UINT64_MAX), -ERANGE);
	assert_int_equal(discard_msg(x, 0, 0), -ERANGE);
	assert_int_equal(x->f.discarded, 0);
	/* POSTCOPY_RUN only after STATE, with known flags and a plausible count. */
	assert_int_equal(pcrun_msg(x, 0, 0), -EPROTO);
	n = state_stream(x->buf, sizeof(x->buf), cfg_json);
	assert_int_equal(msg(x, MIG_MSG_STATE, x->buf, n), 0);
	assert_int_equal(pcrun_msg(x, 2, 0), -EPROTO);
	assert_non_null(strstr(x->e.msg, "unknown flags"));
	assert_int_equal(pcrun_msg(x, 0, NPAGES + 1), -ERANGE);
	mig_pcrun_encode(0, 1, m);
	assert_int_equal(msg(x, MIG_MSG_POSTCOPY_RUN, m, MIG_PCRUN_LEN - 1), -EBADMSG);
	assert_int_equal(x->rx.phase, MIG_RX_END);
	/* The urgent channel's HELLO: channel, session, and agreement with the main one. */
	n = pc_hello(x->buf, MIG_CH_URGENT, MIG_F_POSTCOPY, 7);
	assert_int_equal(mig_rx_urgent_hello(&x->rx, x->buf, n, &x->e), 0);
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY, 7);
	assert_int_equal(mig_rx_urgent_hello(&x->rx, x->buf, n, &x->e), -EPROTO);
	n = pc_hello(x->buf, 2, MIG_F_POSTCOPY, 7);
	assert_int_equal(mig_rx_urgent_hello(&x->rx, x->buf, n, &x->e), -EPROTO);
	n = pc_hello(x->buf, MIG_CH_URGENT, MIG_F_POSTCOPY, 8);
	memset(&x->e, 0, sizeof(x->e));
	assert_int_equal(mig_rx_urgent_hello(&x->rx, x->buf, n, &x->e), -EPROTO);
	assert_non_null(strstr(x->e.msg, "session"));
	n = pc_hello(x->buf, MIG_CH_URGENT, 0, 7);
	assert_int_equal(mig_rx_urgent_hello(&x->rx, x->buf, n, &x->e), -EPROTO);
	n = pc_hello(x->buf, MIG_CH_URGENT, MIG_F_POSTCOPY, 7);
	x->buf[0] ^= 1;
	assert_int_equal(mig_rx_urgent_hello(&x->rx, x->buf, n, &x->e), -EBADMSG);
	assert_int_not_equal(mig_rx_urgent_hello(&x->rx, x->buf, 20, &x->e), 0);
	/* Running. The urgent channel carries answers only, each checked like a push. */
	assert_int_equal(pcrun_msg(x, 0, 5), 0);
	assert_int_equal(msg(x, MIG_MSG_GO, NULL, 0), 0);
	put64(x->buf, NPAGES);
	put32(x->buf + 8, 1);
	assert_int_equal(urgent(x, MIG_MSG_PAGES, x->buf, 12 + 4096), -ERANGE);
	put64(x->buf, 0);
	put32(x->buf + 8, 2);
	assert_int_equal(urgent(x, MIG_MSG_PAGES, x->buf, 12 + 4096), -EBADMSG);
	assert_int_equal(urgent(x, MIG_MSG_PAGES, x->buf, 11), -EBADMSG);
	put64(x->buf, 0);
	put64(x->buf + 8, 1);
	assert_int_equal(urgent(x, MIG_MSG_ZERO, x->buf, 16), -EPROTO);
	assert_int_equal(urgent(x, MIG_MSG_GO, NULL, 0), -EPROTO);
	assert_int_equal(urgent(x, MIG_MSG_PAGE_REQUEST, x->buf, 12), -EBADMSG);
	assert_int_equal(urgent(x, 0x7fff, NULL, 0), -EBADMSG);
	put32(x->buf, EIO);
	memcpy(x->buf + 4, "disk", 4);
	assert_int_equal(urgent(x, MIG_MSG_ERROR, x->buf, 8), -EIO);
	assert_non_null(strstr(x->e.msg, "the source gave up: disk"));
	assert_int_equal(x->f.page_calls, 0);
}

/* MISSING: the destination's bitmap of the pages it lacks, checked like any input. */
static void test_missing_codec(void **state)
{
	unsigned long in[mig_bitmap_words(130)], out[mig_bitmap_words(130)];
	struct qerr e = {0};
	struct sbuf b;

	(void)state;
	memset(in, 0, sizeof(in));
	mig_bit_set(in, 0);
	mig_bit_set(in, 64);
	mig_bit_set(in, 129);
	sbuf_init(&b);
	mig_missing_encode(130, in, &b);
	assert_int_equal(b.len, 8 + 3 * 8);
	memset(out, 0xff, sizeof(out));
	assert_int_equal(mig_missing_decode(b.data, b.len, 130, out, &e), 0);
	for (uint64_t p = 0; p < 130; p++)
		assert_int_equal(mig_bit_test(out, p), mig_bit_test(in, p));
	/* Another VM size, a wrong length, a bit past the last page. */
	e = (struct qerr){0};
	assert_int_equal(mig_missing_decode(b.data, b.len, 131, out, &e), -EPROTO);
	assert_non_null(strstr(e.msg, "130 pages"));
	assert_int_equal(mig_missing_decode(b.data, b.len - 8, 130, out, &e), -EBADMSG);
	assert_int_equal(mig_missing_decode(b.data, b.len - 1, 130, out, &e), -EBADMSG);
	assert_int_equal(mig_missing_decode(b.data, 4, 130, out, &e), -EBADMSG);
	b.data[8 + 2 * 8] |= 1 << 2; /* page 130 */
	e = (struct qerr){0};
	assert_int_equal(mig_missing_decode(b.data, b.len, 130, out, &e), -ERANGE);
	assert_non_null(strstr(e.msg, "page 130"));
	sbuf_free(&b);
	/* Only the destination sends it. */
	assert_int_equal(mig_check_hdr(MIG_MSG_MISSING, 16, true, &e), -EBADMSG);
	assert_int_equal(mig_check_hdr(MIG_MSG_MISSING, 16, false, &e), 0);
	assert_int_equal(mig_check_hdr(MIG_MSG_PC_DONE, 0, false, &e), 0);
	assert_int_equal(mig_check_hdr(MIG_MSG_PC_DONE, 1, false, &e), -EBADMSG);
}

/* A resumed main channel: this session, RESUME, in post-copy only. */
static void test_rx_resume_hello(void **state)
{
	struct fx *x = *state;
	struct qerr e = {0};
	size_t n;

	/* A fresh destination has nothing to resume. */
	x->rx.supported = MIG_F_POSTCOPY;
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY | MIG_F_RESUME, 7);
	assert_int_equal(msg(x, MIG_MSG_HELLO, x->buf, n), -EPROTO);
	mig_rx_free(&x->rx);
	mig_rx_init(&x->rx, &fake_ops, &x->f);
	pc_prologue(x);
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY | MIG_F_RESUME, 7);
	/* Not in post-copy yet. */
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, n, &e), -EPROTO);
	x->rx.phase = MIG_RX_POSTCOPY;
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, n, &e), 0);
	/* Another session, the urgent channel, no RESUME (a new migration), other features. */
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY | MIG_F_RESUME, 8);
	e = (struct qerr){0};
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, n, &e), -EPROTO);
	assert_non_null(strstr(e.msg, "session"));
	n = pc_hello(x->buf, MIG_CH_URGENT, MIG_F_POSTCOPY | MIG_F_RESUME, 7);
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, n, &e), -EPROTO);
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY, 7);
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, n, &e), -EBUSY);
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_RESUME, 7);
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, n, &e), -EPROTO);
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, 10, &e), -EBADMSG);
	x->rx.phase = MIG_RX_DONE;
	n = pc_hello(x->buf, MIG_CH_MAIN, MIG_F_POSTCOPY | MIG_F_RESUME, 7);
	assert_int_equal(mig_rx_resume_hello(&x->rx, x->buf, n, &e), -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_request_codec),
		cmocka_unit_test(test_missing_codec),
		cmocka_unit_test_setup_teardown(test_rx_resume_hello, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_postcopy_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_postcopy_hostile, setup, teardown),
		cmocka_unit_test(test_uri),
		cmocka_unit_test(test_header_limits),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_error_text),
		cmocka_unit_test_setup_teardown(test_rx_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_pages_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_hello_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_config_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_config_pages_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_state_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_random, setup, teardown),
		cmocka_unit_test(test_recv_framing),
		cmocka_unit_test(test_recv_short_header),
		cmocka_unit_test(test_send_error),
		cmocka_unit_test(test_sync),
		cmocka_unit_test(test_sync_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
