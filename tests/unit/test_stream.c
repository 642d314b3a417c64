// SPDX-License-Identifier: MIT
/*
 * The state stream: round trips through memory, a memfd, a pipe and a
 * socket, and the reader against every corruption a test can enumerate
 * (each bit flipped, each truncation point) plus hand-built sections with
 * valid CRCs that are wrong in meaning. Hand-built sections use their own
 * encoder, so the documented layout is tested too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "qlite/sbuf.h"
#include "qlite/stream.h"
#include "qlite/util.h"

#define MAX_SECT (16 * MiB)

static const uint8_t cpu0[] = {0x00, 0xff, 0x01, 0x80, 0x7f, 0x00, 0x00, 0xaa};
static const uint8_t cpu1[] = {0xde, 0xad, 0xbe, 0xef};
static const char vm_json[] = "{\"mem\":\"64M\",\"cpus\":2}";

/* Read back everything written to @fd (a memfd) into a malloc()ed buffer. */
static uint8_t *slurp(int fd, size_t *len)
{
	off_t end = lseek(fd, 0, SEEK_END);
	uint8_t *buf;

	assert_true(end >= 0);
	buf = malloc(end ? end : 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, end, 0), end);
	*len = end;
	return buf;
}

/* The small sample stream: vm, cpu/0, cpu/1, device/serial/0 (empty), end. */
static void write_sample(int fd, uint64_t *bytes)
{
	struct stream_writer w;
	struct qerr e = { 0 };

	stream_writer_init(&w, fd);
	assert_int_equal(stream_begin(&w, &e), 0);
	assert_int_equal(stream_put(&w, STREAM_VM, NULL, 0, 1, vm_json, strlen(vm_json), &e), 0);
	assert_int_equal(stream_put(&w, STREAM_CPU, "", 0, 3, cpu0, sizeof(cpu0), &e), 0);
	assert_int_equal(stream_put(&w, STREAM_CPU, NULL, 1, 3, cpu1, sizeof(cpu1), &e), 0);
	assert_int_equal(stream_put(&w, STREAM_DEVICE, "serial", 0, 2, NULL, 0, &e), 0);
	assert_int_equal(stream_finish(&w, &e), 0);
	assert_int_equal(e.errnum, 0);
	if (bytes)
		*bytes = w.bytes;
}

static uint8_t *sample(size_t *len)
{
	int fd = memfd_create("stream-test", MFD_CLOEXEC);
	uint64_t bytes;
	uint8_t *buf;

	assert_true(fd >= 0);
	write_sample(fd, &bytes);
	buf = slurp(fd, len);
	assert_int_equal(bytes, *len);
	close(fd);
	return buf;
}

static void expect_section(struct stream_reader *r, uint32_t kind, const char *id,
			   uint32_t instance, uint32_t version, const void *data, size_t len)
{
	struct stream_section s;
	struct qerr e = { 0 };
	int ret = stream_next(r, &s, &e);

	if (ret != 1)
		fail_msg("stream_next = %d (%s), want a %s section", ret, e.msg,
			 stream_kind_name(kind));
	assert_int_equal(s.kind, kind);
	assert_string_equal(s.id, id);
	assert_int_equal(s.instance, instance);
	assert_int_equal(s.version, version);
	assert_int_equal(s.len, len);
	assert_non_null(s.data);
	if (len)
		assert_memory_equal(s.data, data, len);
	assert_int_equal(s.data[len], 0); /* text payloads are strings */
}

static void expect_sample(struct stream_reader *r)
{
	struct stream_section s;
	struct qerr e = { 0 };

	assert_int_equal(stream_open(r, &e), 0);
	expect_section(r, STREAM_VM, "", 0, 1, vm_json, strlen(vm_json));
	assert_string_equal((const char *)r->buf, vm_json);
	expect_section(r, STREAM_CPU, "", 0, 3, cpu0, sizeof(cpu0));
	expect_section(r, STREAM_CPU, "", 1, 3, cpu1, sizeof(cpu1));
	expect_section(r, STREAM_DEVICE, "serial", 0, 2, NULL, 0);
	assert_int_equal(stream_next(r, &s, &e), 0);
	assert_int_equal(stream_next(r, &s, &e), 0); /* stays at the end */
	assert_int_equal(e.errnum, 0);
}

/*
 * Read @len bytes of @buf as a stream to its end; the result of the first
 * failing call (0 if it all succeeded), its message in @e.
 */
static int read_all(const void *buf, size_t len, uint64_t max, struct qerr *e)
{
	struct stream_reader r;
	struct stream_section s;
	int ret;

	memset(e, 0, sizeof(*e));
	stream_reader_init_mem(&r, buf, len, max);
	ret = stream_open(&r, e);
	if (ret == 0) {
		while ((ret = stream_next(&r, &s, e)) == 1)
			assert_true(s.len <= max);
	}
	if (ret < 0) {
		/* A failure sticks. */
		struct qerr e2 = { 0 };

		assert_int_equal(stream_next(&r, &s, &e2), ret);
		assert_true(e2.msg[0]);
	}
	stream_reader_close(&r);
	return ret;
}

static void expect_fail(const void *buf, size_t len, uint64_t max, int err, const char *needle)
{
	struct qerr e;
	int ret = read_all(buf, len, max, &e);

	if (ret != -err)
		fail_msg("read = %d (%s), want %d", ret, e.msg, -err);
	assert_int_equal(e.errnum, err);
	if (needle && !strstr(e.msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle);
}

/* ---- hand-built streams (independent encoder of the documented layout) ---- */

static void raw_header(struct sbuf *b, const char *magic, uint32_t version, uint32_t flags)
{
	sbuf_put(b, magic, 8);
	sbuf_put_u32(b, version);
	sbuf_put_u32(b, flags);
}

static void raw_section(struct sbuf *b, uint32_t kind, const char *id, size_t id_len,
			uint32_t instance, uint32_t version, uint64_t len, const void *data,
			size_t data_len)
{
	size_t start = b->len;

	sbuf_put_u32(b, kind);
	sbuf_put_u32(b, instance);
	sbuf_put_u32(b, version);
	sbuf_put_u16(b, (uint16_t)id_len);
	sbuf_put(b, id, id_len);
	sbuf_put_u64(b, len);
	sbuf_put(b, data, data_len);
	sbuf_put_u32(b, (uint32_t)crc32(0, b->data + start, b->len - start));
}

static void raw_end(struct sbuf *b, uint32_t sections)
{
	raw_section(b, STREAM_END, "", 0, sections, 0, 0, NULL, 0);
}

/* ---- tests ---- */

static void test_kind_names(void **state)
{
	char name[STREAM_NAME_MAX];

	assert_string_equal(stream_kind_name(STREAM_END), "end");
	assert_string_equal(stream_kind_name(STREAM_VM), "vm");
	assert_string_equal(stream_kind_name(STREAM_CPU), "cpu");
	assert_string_equal(stream_kind_name(STREAM_KVM), "kvm");
	assert_string_equal(stream_kind_name(STREAM_DEVICE), "device");
	assert_string_equal(stream_kind_name(STREAM_RAM), "ram");
	assert_string_equal(stream_kind_name(STREAM_DISK), "disk");
	assert_null(stream_kind_name(STREAM_MAX_KIND));
	assert_null(stream_kind_name(UINT32_MAX));
	stream_section_name(name, sizeof(name), STREAM_CPU, NULL, 3);
	assert_string_equal(name, "cpu/3");
	stream_section_name(name, sizeof(name), STREAM_DEVICE, "virtio-blk", 1);
	assert_string_equal(name, "device/virtio-blk/1");
	stream_section_name(name, sizeof(name), UINT32_MAX,
			    "0123456789012345678901234567890123456789012345678901234567890ab",
			    UINT32_MAX);
	assert_string_equal(
		name,
		"kind-4294967295/0123456789012345678901234567890123456789012345678901234567890ab/"
		"4294967295");
}

static void test_round_trip_mem(void **state)
{
	size_t len;
	uint8_t *buf = sample(&len);
	struct stream_reader r;

	/* header 16 + vm 14+8+22+4 + cpu 14+8+8+4 + cpu 14+8+4+4 + dev 14+6+8+0+4 + end 26 */
	assert_int_equal(len, 16 + 48 + 34 + 30 + 32 + 26);
	stream_reader_init_mem(&r, buf, len, MAX_SECT);
	expect_sample(&r);
	stream_reader_close(&r);
	free(buf);
}

static void test_round_trip_memfd(void **state)
{
	int fd = memfd_create("stream-test", MFD_CLOEXEC);
	struct stream_reader r;

	assert_true(fd >= 0);
	write_sample(fd, NULL);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	stream_reader_init_fd(&r, fd, MAX_SECT);
	expect_sample(&r);
	stream_reader_close(&r);
	close(fd);
}

/* Big enough to need several pipe writes/reads and buffer growth steps. */
#define BIG_LEN (3 * MiB + 123)

struct pipe_writer {
	int fd;
	const uint8_t *big;
	int ret;
	uint64_t bytes;
};

static void *pipe_write(void *arg)
{
	struct pipe_writer *pw = arg;
	struct stream_writer w;
	struct qerr e = { 0 };

	stream_writer_init(&w, pw->fd);
	pw->ret = stream_begin(&w, &e);
	if (!pw->ret)
		pw->ret = stream_put(&w, STREAM_RAM, NULL, 0, 1, pw->big, BIG_LEN, &e);
	if (!pw->ret)
		pw->ret = stream_put(&w, STREAM_DISK, "disk0", 7, 1, "x", 1, &e);
	if (!pw->ret)
		pw->ret = stream_finish(&w, &e);
	pw->bytes = w.bytes;
	close(pw->fd);
	return NULL;
}

static void round_trip_fds(int rfd, int wfd)
{
	struct pipe_writer pw = {.fd = wfd};
	uint8_t *big = malloc(BIG_LEN);
	struct stream_section s;
	struct stream_reader r;
	struct qerr e = { 0 };
	pthread_t t;

	assert_non_null(big);
	for (size_t i = 0; i < BIG_LEN; i++)
		big[i] = (uint8_t)(i * 7 + (i >> 12));
	pw.big = big;
	assert_int_equal(pthread_create(&t, NULL, pipe_write, &pw), 0);
	stream_reader_init_fd(&r, rfd, MAX_SECT);
	assert_int_equal(stream_open(&r, &e), 0);
	expect_section(&r, STREAM_RAM, "", 0, 1, big, BIG_LEN);
	expect_section(&r, STREAM_DISK, "disk0", 7, 1, "x", 1);
	assert_int_equal(stream_next(&r, &s, &e), 0);
	pthread_join(t, NULL);
	assert_int_equal(pw.ret, 0);
	assert_int_equal(pw.bytes, r.off);
	stream_reader_close(&r);
	close(rfd);
	free(big);
}

static void test_round_trip_pipe(void **state)
{
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	round_trip_fds(p[0], p[1]);
}

static void test_round_trip_socket(void **state)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	round_trip_fds(sv[0], sv[1]);
}

/* A peer that went away is an error, not a SIGPIPE that kills qlite. */
static void test_socket_peer_gone(void **state)
{
	struct stream_writer w;
	struct qerr e = { 0 };
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	stream_writer_init(&w, sv[0]);
	assert_int_equal(stream_begin(&w, &e), -EPIPE);
	assert_non_null(strstr(e.msg, "header"));
	/* Sticky: nothing more is attempted. */
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put(&w, STREAM_VM, NULL, 0, 1, "{}", 2, &e), -EPIPE);
	assert_int_equal(w.bytes, 0);
	close(sv[0]);
}

static void test_read_error(void **state)
{
	int fd = memfd_create("stream-test", MFD_CLOEXEC);
	char path[64];
	int wfd;
	struct stream_reader r;
	struct qerr e = { 0 };

	assert_true(fd >= 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	wfd = open(path, O_WRONLY | O_CLOEXEC);
	assert_true(wfd >= 0);
	stream_reader_init_fd(&r, wfd, MAX_SECT);
	assert_int_equal(stream_open(&r, &e), -EBADF);
	assert_non_null(strstr(e.msg, "cannot read the state stream"));
	close(wfd);
	close(fd);
}

/*
 * Every single-bit flip, and every byte inverted, must be an error: the
 * header bytes are checked one by one, the rest is under a section CRC
 * (CRC32 detects all bursts up to 32 bits). Flips in id_len/len shift the
 * framing and are caught by a limit, a truncation or a CRC mismatch; none
 * goes undetected here.
 */
static void test_every_flip(void **state)
{
	size_t len;
	uint8_t *buf = sample(&len);
	uint8_t *copy = malloc(len);
	struct qerr e;

	assert_non_null(copy);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit <= 8; bit++) {
			uint8_t mask = bit < 8 ? (uint8_t)(1u << bit) : 0xff;
			int ret;

			memcpy(copy, buf, len);
			copy[i] ^= mask;
			ret = read_all(copy, len, MAX_SECT, &e);
			if (ret >= 0 || !e.msg[0])
				fail_msg("flip 0x%02x at byte %zu not detected (%d)", mask, i, ret);
		}
	}
	free(copy);
	free(buf);
}

/* Every truncation point fails with a message, through memory and an fd. */
static void test_every_truncation(void **state)
{
	size_t len;
	uint8_t *buf = sample(&len);
	struct qerr e;

	for (size_t cut = 0; cut < len; cut++) {
		struct stream_reader r;
		struct stream_section s;
		int fd, ret;

		/* Exact-size copy: ASan catches a read past the cut. */
		uint8_t *copy = malloc(cut ? cut : 1);

		assert_non_null(copy);
		memcpy(copy, buf, cut);
		ret = read_all(copy, cut, MAX_SECT, &e);
		if (ret >= 0 || !e.msg[0])
			fail_msg("truncation at %zu of %zu not detected (%d)", cut, len, ret);
		free(copy);

		fd = memfd_create("stream-trunc", MFD_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, buf, cut), (ssize_t)cut);
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		memset(&e, 0, sizeof(e));
		stream_reader_init_fd(&r, fd, MAX_SECT);
		ret = stream_open(&r, &e);
		if (ret == 0)
			while ((ret = stream_next(&r, &s, &e)) == 1)
				;
		if (ret >= 0 || !e.msg[0])
			fail_msg("fd truncation at %zu of %zu not detected (%d)", cut, len, ret);
		stream_reader_close(&r);
		close(fd);
	}
	/* Some of the messages, exactly. */
	expect_fail(buf, 0, MAX_SECT, EBADMSG, "not a qlite state stream");
	expect_fail(buf, 10, MAX_SECT, EBADMSG,
		    "truncated in the state stream header (expected 16 bytes, got 10)");
	expect_fail(buf, 16, MAX_SECT, EBADMSG,
		    "truncated before the end marker (after 0 sections, 16 bytes)");
	/* cpu/0 starts at 64; its payload at 64 + 22; cut 3 bytes into it. */
	expect_fail(buf, 64 + 22 + 3, MAX_SECT, EBADMSG,
		    "truncated in section cpu/0 (expected 8 bytes, got 3)");
	expect_fail(buf, 64 + 34 + 30 + 20, MAX_SECT, EBADMSG,
		    "truncated in section device/serial/0 (expected 8 length bytes, got 0)");
	expect_fail(buf, len - 26, MAX_SECT, EBADMSG,
		    "truncated before the end marker (after 4 sections");
	expect_fail(buf, len - 1, MAX_SECT, EBADMSG,
		    "truncated in section end/4 (expected 4 CRC bytes, got 3)");
	free(buf);
}

static void test_corruption_message(void **state)
{
	size_t len;
	uint8_t *buf = sample(&len);

	buf[64 + 22 + 1] ^= 0x10; /* a payload byte of cpu/0 */
	expect_fail(buf, len, MAX_SECT, EBADMSG, "section cpu/0 at byte 64 is corrupted (CRC");
	free(buf);
}

static void test_header(void **state)
{
	struct sbuf b;

	sbuf_init(&b);
	raw_header(&b, STREAM_MAGIC, 7, 0);
	raw_end(&b, 0);
	expect_fail(b.data, b.len, MAX_SECT, ENOTSUP,
		    "checkpoint format version 7, this qlite reads version 1");

	sbuf_reset(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 2);
	raw_end(&b, 0);
	expect_fail(b.data, b.len, MAX_SECT, ENOTSUP, "unknown flags 0x2");

	sbuf_reset(&b);
	raw_header(&b, "\177ELF\2\1\1\0", STREAM_VERSION, 0);
	raw_end(&b, 0);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG, "not a qlite state stream");
	expect_fail("QLITE", 5, MAX_SECT, EBADMSG, "truncated in the state stream header");
	expect_fail("{\"a\"", 4, MAX_SECT, EBADMSG, "not a qlite state stream");

	/* The minimal valid stream: header and end marker. */
	sbuf_reset(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_end(&b, 0);
	expect_fail(b.data, b.len, MAX_SECT, 0, NULL);
	sbuf_free(&b);
}

static void test_unknown_kind(void **state)
{
	struct sbuf b;

	sbuf_init(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_section(&b, STREAM_CPU, "", 0, 0, 1, 2, "ab", 2);
	raw_section(&b, 9, "x", 1, 3, 1, 2, "ab", 2);
	raw_end(&b, 2);
	expect_fail(b.data, b.len, MAX_SECT, ENOTSUP,
		    "section kind-9/x/3 at byte 44: unknown section kind 9");
	sbuf_free(&b);
}

static void test_ids(void **state)
{
	static const char id63[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
	static const char id64[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
	int fd = memfd_create("stream-test", MFD_CLOEXEC);
	struct stream_writer w;
	struct qerr e = { 0 };
	struct sbuf b;

	assert_true(fd >= 0);
	stream_writer_init(&w, fd);
	assert_int_equal(stream_begin(&w, &e), 0);
	assert_int_equal(stream_put(&w, STREAM_DEVICE, id63, 0, 1, "", 0, &e), 0);
	assert_int_equal(stream_put(&w, STREAM_DEVICE, id64, 0, 1, "", 0, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "longer than 63"));
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put(&w, STREAM_DEVICE, "a b", 0, 1, "", 0, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "0x20"));
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put(&w, STREAM_DEVICE, "caf\xc3\xa9", 0, 1, "", 0, &e), -EINVAL);
	/* Refusals write nothing and do not break the stream. */
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_finish(&w, &e), 0);
	assert_int_equal(w.sections, 1);
	close(fd);

	sbuf_init(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_section(&b, STREAM_DEVICE, id64, 64, 0, 1, 0, NULL, 0);
	raw_end(&b, 1);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG,
		    "section device/0 at byte 16: id length 64 exceeds 63");

	sbuf_reset(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_section(&b, STREAM_DEVICE, "se\nial", 6, 2, 1, 0, NULL, 0);
	raw_end(&b, 1);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG,
		    "section device/se?ial/2 at byte 16: id has "
		    "byte 0x0a");

	sbuf_reset(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_section(&b, STREAM_DEVICE, id63, 63, 0, 1, 0, NULL, 0);
	raw_end(&b, 1);
	expect_fail(b.data, b.len, MAX_SECT, 0, NULL);
	sbuf_free(&b);
}

static void test_max_section(void **state)
{
	static uint8_t payload[1000];
	int fd = memfd_create("stream-test", MFD_CLOEXEC);
	struct stream_reader r;
	struct stream_section s;
	struct qerr e = { 0 };
	struct sbuf b;

	sbuf_init(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_section(&b, STREAM_RAM, "", 0, 0, 1, sizeof(payload), payload, sizeof(payload));
	raw_end(&b, 1);
	expect_fail(b.data, b.len, 1000, 0, NULL);
	expect_fail(b.data, b.len, 999, EFBIG,
		    "section ram/0 at byte 16: length 1000 exceeds the limit of 999 bytes");
	expect_fail(b.data, b.len, 0, EFBIG, "ram/0");

	/*
	 * A huge declared length with few bytes behind it: refused before
	 * allocating from memory; from an fd, the buffer grows only with what
	 * arrives (ASan aborts on an allocation of this size).
	 */
	sbuf_reset(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_section(&b, STREAM_CPU, "", 0, 5, 1, 1ULL << 62, payload, 100);
	expect_fail(b.data, b.len, UINT64_MAX, EBADMSG,
		    "truncated in section cpu/5 (expected 4611686018427387904 bytes, got 104)");
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	stream_reader_init_fd(&r, fd, UINT64_MAX);
	assert_int_equal(stream_open(&r, &e), 0);
	assert_int_equal(stream_next(&r, &s, &e), -EBADMSG);
	assert_string_equal(
		e.msg, "truncated in section cpu/5 (expected 4611686018427387904 bytes, got 104)");
	stream_reader_close(&r);
	close(fd);
	sbuf_free(&b);
}

static void test_end_marker(void **state)
{
	struct sbuf b;
	size_t good;

	sbuf_init(&b);
	raw_header(&b, STREAM_MAGIC, STREAM_VERSION, 0);
	raw_section(&b, STREAM_KVM, "", 0, 0, 1, 1, "k", 1);
	raw_end(&b, 1);
	good = b.len;
	expect_fail(b.data, good, MAX_SECT, 0, NULL);
	sbuf_put_u8(&b, 0);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG,
		    "1 bytes of trailing data after the end marker");

	/* A dropped section shows in the count. */
	b.len = good - 26;
	raw_end(&b, 2);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG,
		    "end marker counts 2 sections, the stream had 1");

	b.len = good - 26;
	raw_section(&b, STREAM_END, "", 0, 1, 0, 1, "z", 1);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG, "has an id, version or payload");
	b.len = good - 26;
	raw_section(&b, STREAM_END, "x", 1, 1, 0, 0, NULL, 0);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG, "has an id, version or payload");
	b.len = good - 26;
	raw_section(&b, STREAM_END, "", 0, 1, 1, 0, NULL, 0);
	expect_fail(b.data, b.len, MAX_SECT, EBADMSG, "has an id, version or payload");
	sbuf_free(&b);
}

static void test_writer_misuse(void **state)
{
	int fd = memfd_create("stream-test", MFD_CLOEXEC);
	struct stream_writer w;
	struct qerr e = { 0 };
	struct sbuf b;

	assert_true(fd >= 0);
	stream_writer_init(&w, fd);
	assert_int_equal(stream_put(&w, STREAM_VM, NULL, 0, 1, "{}", 2, &e), -EINVAL);
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_finish(&w, &e), -EINVAL);
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_begin(&w, &e), 0);
	assert_int_equal(stream_begin(&w, &e), -EINVAL);
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put(&w, STREAM_END, NULL, 0, 0, NULL, 0, &e), -EINVAL);
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put(&w, STREAM_MAX_KIND, NULL, 0, 0, NULL, 0, &e), -EINVAL);
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put(&w, STREAM_CPU, NULL, 0, 0, NULL, 5, &e), -EINVAL);

	sbuf_init(&b);
	sbuf_put_u32(&b, 42);
	b.oom = true;
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put_sbuf(&w, STREAM_DEVICE, "pit", 0, 1, &b, &e), -ENOMEM);
	assert_non_null(strstr(e.msg, "device/pit/0"));
	b.oom = false;
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_put_sbuf(&w, STREAM_DEVICE, "pit", 0, 1, &b, &e), 0);
	assert_int_equal(stream_finish(&w, &e), 0);
	assert_int_equal(stream_put(&w, STREAM_VM, NULL, 0, 1, "{}", 2, &e), -EINVAL);
	memset(&e, 0, sizeof(e));
	assert_int_equal(stream_finish(&w, &e), -EINVAL);
	sbuf_free(&b);

	/* What was written is exactly header, device/pit/0, end. */
	{
		size_t len;
		uint8_t *buf = slurp(fd, &len);
		struct stream_reader r;
		struct stream_section s;

		assert_int_equal(len, w.bytes);
		stream_reader_init_mem(&r, buf, len, MAX_SECT);
		memset(&e, 0, sizeof(e));
		assert_int_equal(stream_next(&r, &s, &e), -EINVAL); /* not opened */
		memset(&e, 0, sizeof(e));
		assert_int_equal(stream_open(&r, &e), 0);
		assert_int_equal(stream_next(&r, &s, &e), 1);
		assert_int_equal(s.len, 4);
		assert_int_equal(s.data[0], 42);
		assert_int_equal(stream_next(&r, &s, &e), 0);
		stream_reader_close(&r);
		free(buf);
	}
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kind_names),
		cmocka_unit_test(test_round_trip_mem),
		cmocka_unit_test(test_round_trip_memfd),
		cmocka_unit_test(test_round_trip_pipe),
		cmocka_unit_test(test_round_trip_socket),
		cmocka_unit_test(test_socket_peer_gone),
		cmocka_unit_test(test_read_error),
		cmocka_unit_test(test_every_flip),
		cmocka_unit_test(test_every_truncation),
		cmocka_unit_test(test_corruption_message),
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_unknown_kind),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_max_section),
		cmocka_unit_test(test_end_marker),
		cmocka_unit_test(test_writer_misuse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
