// SPDX-License-Identifier: MIT
/*
 * io_uring block backend against real files: images in a temp directory
 * (ext4 or whatever $TMPDIR is), a memfd image (tmpfs: no ZERO_RANGE, so
 * the written-zeros fallback runs) and guest RAM from mem_init().
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qlite/blk.h"
#include "qlite/loop.h"
#include "qlite/mem.h"

#define RAM_SIZE (64 * MiB)
#define IMG_SIZE (4 * MiB)

struct fx {
	struct guest_mem m;
	char dir[256];
	char path[300];
	struct blk_ring *r;
	struct blk_backend *b;
	struct blk_queue *q;
};

struct done {
	int calls;
	int res;
};

static void on_done(void *opaque, int result)
{
	struct done *d = opaque;

	d->calls++;
	d->res = result;
}

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 7 + (off >> 12) * 13 + 1);
}

/* An image of @size bytes at @path whose byte at offset o is pattern(o). */
static void make_image(const char *path, uint64_t size)
{
	uint8_t buf[4096];
	uint64_t off, i;
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);

	assert_true(fd >= 0);
	for (off = 0; off < size; off += sizeof(buf)) {
		for (i = 0; i < sizeof(buf); i++)
			buf[i] = pattern(off + i);
		assert_int_equal(pwrite(fd, buf, MIN(sizeof(buf), size - off), off),
				 (ssize_t)MIN(sizeof(buf), size - off));
	}
	close(fd);
}

static void *gpa(struct fx *f, uint64_t a, uint64_t len)
{
	void *p = mem_gpa_to_hva(&f->m, a, len);

	assert_non_null(p);
	return p;
}

static int open_fx(struct fx *f, const struct blk_opts *o, unsigned int entries)
{
	struct qerr e = { 0 };

	if (blk_ring_create(&f->r, entries, &e) ||
	    blk_backend_open(&f->b, o, &f->m, &e) || blk_queue_create(&f->q, f->b, f->r)) {
		print_error("set-up: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static int setup_dir(struct fx *f)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(f->dir, sizeof(f->dir), "%s/qlite-blk-XXXXXX", tmp ? tmp : "/var/tmp");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/disk.raw", f->dir);
	return mem_init(&f->m, RAM_SIZE, MEM_BACKEND_MEMFD, NULL);
}

static int setup(void **state)
{
	struct fx *f = test_calloc(1, sizeof(*f));
	struct blk_opts o = { 0 };

	if (!f || setup_dir(f))
		return -1;
	make_image(f->path, IMG_SIZE);
	o.path = f->path;
	*state = f;
	return open_fx(f, &o, 64);
}

/* Just the directory and guest RAM: the test opens what it needs. */
static int setup_bare(void **state)
{
	struct fx *f = test_calloc(1, sizeof(*f));

	if (!f || setup_dir(f))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[300];

	blk_queue_destroy(f->q);
	blk_backend_close(f->b);
	blk_ring_destroy(f->r);
	mem_destroy(&f->m);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	test_free(f);
	return 0;
}

static void drain(struct fx *f)
{
	assert_int_equal(blk_ring_drain(f->r), 0);
	assert_int_equal(blk_ring_inflight(f->r), 0);
}

static void check_pattern(const uint8_t *p, uint64_t off, uint64_t len)
{
	uint64_t i;

	for (i = 0; i < len; i++)
		if (p[i] != pattern(off + i))
			fail_msg("byte %llu: %#x, expected %#x", (unsigned long long)(off + i),
				 p[i], pattern(off + i));
}

static void check_zero(const uint8_t *p, uint64_t len)
{
	uint64_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			fail_msg("byte %llu: %#x, expected 0", (unsigned long long)i, p[i]);
}

static void test_read(void **state)
{
	struct fx *f = *state;
	struct iovec iov[3] = {
		{ gpa(f, 0x10000, 4096), 4096 },
		{ gpa(f, 0x30000, 8192), 8192 },
		{ gpa(f, 0x50000, 512), 512 },
	};
	struct blk_req req;
	struct done d = { 0 };

	assert_int_equal(blk_read(f->q, &req, 1 * MiB, iov, 3, on_done, &d), 0);
	assert_int_equal(d.calls, 0); /* batched until submitted */
	assert_int_equal(blk_queue_inflight(f->q), 1);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, 0);
	check_pattern(iov[0].iov_base, 1 * MiB, 4096);
	check_pattern(iov[1].iov_base, 1 * MiB + 4096, 8192);
	check_pattern(iov[2].iov_base, 1 * MiB + 12288, 512);
	assert_int_equal(blk_queue_inflight(f->q), 0);
}

static void test_write_flush(void **state)
{
	struct fx *f = *state;
	uint8_t *a = gpa(f, 0x100000, 4096), *b = gpa(f, 0x200000, 4096);
	struct iovec wr[2] = { { a, 1024 }, { b, 3072 } };
	struct iovec rd = { gpa(f, 0x300000, 4096), 4096 };
	struct blk_req r1, r2, r3;
	struct done d1 = { 0 }, d2 = { 0 }, d3 = { 0 };
	uint8_t file[4096];
	int fd, i;

	for (i = 0; i < 1024; i++)
		a[i] = 0xa0 ^ i;
	for (i = 0; i < 3072; i++)
		b[i] = 0x5b ^ (i * 3);
	assert_int_equal(blk_write(f->q, &r1, 8192, wr, 2, on_done, &d1), 0);
	drain(f);
	assert_int_equal(d1.res, 0);
	assert_int_equal(blk_flush(f->q, &r2, on_done, &d2), 0);
	drain(f);
	assert_int_equal(d2.calls, 1);
	assert_int_equal(d2.res, 0);

	/* Through the file, and back through the backend. */
	fd = open(f->path, O_RDONLY);
	assert_int_equal(pread(fd, file, sizeof(file), 8192), (ssize_t)sizeof(file));
	close(fd);
	assert_memory_equal(file, a, 1024);
	assert_memory_equal(file + 1024, b, 3072);
	assert_int_equal(blk_read(f->q, &r3, 8192, &rd, 1, on_done, &d3), 0);
	drain(f);
	assert_int_equal(d3.res, 0);
	assert_memory_equal(rd.iov_base, file, sizeof(file));
	/* Neighbours untouched. */
	fd = open(f->path, O_RDONLY);
	assert_int_equal(pread(fd, file, 512, 8192 - 512), 512);
	check_pattern(file, 8192 - 512, 512);
	assert_int_equal(pread(fd, file, 512, 8192 + 4096), 512);
	check_pattern(file, 8192 + 4096, 512);
	close(fd);
}

static void read_back(struct fx *f, uint64_t off, uint64_t len, uint64_t at)
{
	struct iovec iov = { gpa(f, at, len), len };
	struct blk_req req;
	struct done d = { 0 };

	memset(iov.iov_base, 0xee, len);
	assert_int_equal(blk_read(f->q, &req, off, &iov, 1, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, 0);
}

static void test_discard(void **state)
{
	struct fx *f = *state;
	struct blk_req req;
	struct done d = { 0 };
	struct stat st0, st1;

	assert_int_equal(stat(f->path, &st0), 0);
	assert_int_equal(blk_discard(f->q, &req, 64 * KiB, 256 * KiB, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, 0);
	assert_int_equal(stat(f->path, &st1), 0);
	assert_true(st1.st_size == st0.st_size); /* KEEP_SIZE */
	assert_true(st1.st_blocks <= st0.st_blocks);
	read_back(f, 64 * KiB, 256 * KiB, 0x400000);
	check_zero(gpa(f, 0x400000, 256 * KiB), 256 * KiB);
	read_back(f, 32 * KiB, 32 * KiB, 0x400000);
	check_pattern(gpa(f, 0x400000, 32 * KiB), 32 * KiB, 32 * KiB);
	read_back(f, 320 * KiB, 4 * KiB, 0x400000);
	check_pattern(gpa(f, 0x400000, 4 * KiB), 320 * KiB, 4 * KiB);
}

static void write_zeroes_check(struct fx *f, uint64_t off, uint64_t len, bool unmap)
{
	struct blk_req req;
	struct done d = { 0 };

	assert_int_equal(blk_write_zeroes(f->q, &req, off, len, unmap, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, 0);
	read_back(f, off, len, 0x800000);
	check_zero(gpa(f, 0x800000, len), len);
	read_back(f, off - 512, 512, 0x800000);
	check_pattern(gpa(f, 0x800000, 512), off - 512, 512);
	if (off + len < IMG_SIZE) {
		read_back(f, off + len, 512, 0x800000);
		check_pattern(gpa(f, 0x800000, 512), off + len, 512);
	}
}

static void test_write_zeroes(void **state)
{
	struct fx *f = *state;

	write_zeroes_check(f, 4096, 8192, false);
	write_zeroes_check(f, 1 * MiB, 512 * KiB, true);
	/* Not block aligned in the filesystem's sense: sectors only. */
	write_zeroes_check(f, 2 * MiB + 512, 1536, false);
}

/*
 * A memfd image (tmpfs) has hole punching but no FALLOC_FL_ZERO_RANGE, so
 * write-zeroes without unmap falls back to writing zeros, in 1 MiB pieces.
 */
static void test_write_zeroes_fallback(void **state)
{
	struct fx *f = *state;
	struct blk_opts o = { 0 };
	uint8_t buf[4096];
	uint64_t off, i;
	int mfd = memfd_create("qlite-test-img", MFD_CLOEXEC);

	assert_true(mfd >= 0);
	for (off = 0; off < IMG_SIZE; off += sizeof(buf)) {
		for (i = 0; i < sizeof(buf); i++)
			buf[i] = pattern(off + i);
		assert_int_equal(pwrite(mfd, buf, sizeof(buf), off), (ssize_t)sizeof(buf));
	}
	if (!fallocate(mfd, FALLOC_FL_ZERO_RANGE, 0, 4096))
		print_message("note: tmpfs has ZERO_RANGE here; the fallback is not exercised\n");
	snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", mfd);
	o.path = f->path;
	assert_int_equal(open_fx(f, &o, 16), 0);
	close(mfd);

	write_zeroes_check(f, 512, 3 * MiB + 1024, false); /* 4 written pieces */
	write_zeroes_check(f, 3 * MiB + 64 * KiB, 64 * KiB, true); /* punched */
	write_zeroes_check(f, 3 * MiB + 256 * KiB, 4096, false); /* fallback remembered */
}

static void test_readonly(void **state)
{
	struct fx *f = *state;
	struct blk_opts o = { .path = f->path, .readonly = true };
	struct iovec iov = { gpa(f, 0x10000, 4096), 4096 };
	struct blk_req req;
	struct done d = { 0 };

	make_image(f->path, IMG_SIZE);
	assert_int_equal(open_fx(f, &o, 16), 0);
	assert_true(blk_backend_readonly(f->b));
	assert_int_equal(blk_write(f->q, &req, 0, &iov, 1, on_done, &d), -EROFS);
	assert_int_equal(blk_discard(f->q, &req, 0, 4096, on_done, &d), -EROFS);
	assert_int_equal(blk_write_zeroes(f->q, &req, 0, 4096, false, on_done, &d), -EROFS);
	assert_int_equal(blk_write_zeroes(f->q, &req, 0, 4096, true, on_done, &d), -EROFS);
	assert_int_equal(blk_ring_inflight(f->r), 0);
	assert_int_equal(d.calls, 0);
	assert_int_equal(blk_read(f->q, &req, 4096, &iov, 1, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.res, 0);
	check_pattern(iov.iov_base, 4096, 4096);
	assert_int_equal(blk_flush(f->q, &req, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.calls, 2);
	assert_int_equal(d.res, 0);
}

static void expect_open_error(const struct blk_opts *o, int err, const char *needle)
{
	struct blk_backend *b = (void *)1;
	struct qerr e = { 0 };

	assert_int_equal(blk_backend_open(&b, o, NULL, &e), -err);
	assert_null(b);
	if (!strstr(e.msg, needle))
		fail_msg("message '%s' lacks '%s'", e.msg, needle);
	if (!strstr(e.msg, o->path ? o->path : ""))
		fail_msg("message '%s' does not name %s", e.msg, o->path);
}

static void test_open_errors(void **state)
{
	struct fx *f = *state;
	struct blk_backend *b1, *b2;
	struct blk_opts o = { 0 };
	struct qerr e = { 0 };
	char p[400];

	snprintf(p, sizeof(p), "%s/missing.raw", f->dir);
	o.path = p;
	expect_open_error(&o, ENOENT, "No such file");
	o.readonly = true;
	expect_open_error(&o, ENOENT, "No such file");

	o.path = f->dir;
	expect_open_error(&o, EISDIR, "is a directory");
	o.readonly = false;
	expect_open_error(&o, EISDIR, "is a directory");

	snprintf(p, sizeof(p), "%s/fifo", f->dir);
	assert_int_equal(mkfifo(p, 0600), 0);
	o.path = p;
	expect_open_error(&o, EINVAL, "not a regular file or block device");

	snprintf(p, sizeof(p), "%s/empty.raw", f->dir);
	make_image(p, 0);
	expect_open_error(&o, EINVAL, "is empty");

	/* Shorter than declared; longer is fine and shows the declared size. */
	snprintf(p, sizeof(p), "%s/short.raw", f->dir);
	make_image(p, 1 * MiB);
	o.size = 2 * MiB;
	expect_open_error(&o, EINVAL,
			  "is 1048576 bytes, shorter than its declared size of 2097152");
	o.size = 512 * KiB;
	assert_int_equal(blk_backend_open(&b1, &o, NULL, &e), 0);
	assert_true(blk_backend_size(b1) == 512 * KiB);
	assert_int_equal(blk_backend_block_size(b1), 512);
	assert_false(blk_backend_readonly(b1));
	/* One writer at a time, also against other processes' OFD locks. */
	expect_open_error(&o, EBUSY, "in use by another process");
	o.readonly = true;
	expect_open_error(&o, EBUSY, "in use by another process");
	blk_backend_close(b1);
	assert_int_equal(blk_backend_open(&b1, &o, NULL, &e), 0);
	assert_int_equal(blk_backend_open(&b2, &o, NULL, &e), 0); /* readers share */
	o.readonly = false;
	expect_open_error(&o, EBUSY, "in use by another process");
	blk_backend_close(b2);
	blk_backend_close(b1);

	o.path = "";
	expect_open_error(&o, EINVAL, "no image path");
}

/*
 * Live migration's lock hand-over: the destination opens while the source
 * holds the lock, takes it only after the source dropped it, and a source
 * whose migration failed takes it back once the destination let go.
 */
static void test_lock_handover(void **state)
{
	struct fx *f = *state;
	struct blk_opts o = {.path = f->path};
	struct blk_backend *src, *dst;
	struct qerr e = {0};

	make_image(f->path, IMG_SIZE);
	assert_int_equal(blk_backend_open(&src, &o, NULL, &e), 0);
	expect_open_error(&o, EBUSY, "in use by another process");
	o.no_lock = true;
	assert_int_equal(blk_backend_open(&dst, &o, NULL, &e), 0);
	assert_int_equal(blk_backend_lock(dst, true, &e), -EBUSY);
	assert_non_null(strstr(e.msg, "in use by another process"));
	assert_non_null(strstr(e.msg, f->path));
	assert_int_equal(blk_backend_lock(src, false, NULL), 0);
	memset(&e, 0, sizeof(e));
	assert_int_equal(blk_backend_lock(dst, true, &e), 0);
	/* Now the destination's: the source cannot take it back, nor a third opener. */
	assert_int_equal(blk_backend_lock(src, true, &e), -EBUSY);
	o.no_lock = false;
	expect_open_error(&o, EBUSY, "in use by another process");
	assert_int_equal(blk_backend_lock(dst, false, NULL), 0);
	memset(&e, 0, sizeof(e));
	assert_int_equal(blk_backend_lock(src, true, &e), 0);
	blk_backend_close(dst);
	blk_backend_close(src);
}

/* Not readable by the opener: root bypasses modes, so open as nobody. */
static void test_open_unreadable(void **state)
{
	struct fx *f = *state;
	struct blk_opts o = { .path = f->path };
	pid_t pid;
	int st;

	make_image(f->path, IMG_SIZE);
	assert_int_equal(chmod(f->path, 0), 0);
	assert_int_equal(chmod(f->dir, 0755), 0);
	if (geteuid() != 0) {
		expect_open_error(&o, EACCES, "for writing: Permission denied");
		o.readonly = true;
		expect_open_error(&o, EACCES, "Permission denied");
		return;
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct blk_backend *b;
		struct qerr e1 = { 0 }, e2 = { 0 };

		if (setgid(65534) || setuid(65534))
			_exit(2);
		if (blk_backend_open(&b, &o, NULL, &e1) != -EACCES ||
		    !strstr(e1.msg, "for writing: Permission denied"))
			_exit(3);
		o.readonly = true;
		if (blk_backend_open(&b, &o, NULL, &e2) != -EACCES ||
		    !strstr(e2.msg, "cannot open disk image"))
			_exit(4);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/*
 * O_DIRECT on $TMPDIR or /var/tmp. Guest RAM is page aligned; a buffer
 * at an odd address is bounced; offsets must be block aligned.
 */
static void test_direct(void **state)
{
	struct fx *f = *state;
	struct blk_opts o = { .path = f->path, .direct = true };
	struct qerr e = { 0 };
	uint8_t *odd = (uint8_t *)gpa(f, 0x20000, 8192) + 1;
	struct iovec al[2] = { { gpa(f, 0x10000, 4096), 4096 }, { gpa(f, 0x40000, 4096), 4096 } };
	struct iovec mis = { odd, 4096 };
	struct blk_req req;
	struct done d = { 0 };
	uint32_t bs;
	uint8_t file[4096];
	int fd;

	make_image(f->path, IMG_SIZE);
	if (blk_ring_create(&f->r, 16, &e) || blk_backend_open(&f->b, &o, &f->m, &e)) {
		if (e.errnum == EINVAL && strstr(e.msg, "O_DIRECT")) {
			print_message("SKIP O_DIRECT sub-test: %s\n", e.msg);
			skip();
		}
		fail_msg("%s", e.msg);
	}
	assert_int_equal(blk_queue_create(&f->q, f->b, f->r), 0);
	bs = blk_backend_block_size(f->b);
	assert_true(bs >= 512 && bs <= 4096 && !(bs & (bs - 1)));

	assert_int_equal(blk_read(f->q, &req, 64 * KiB, al, 2, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.res, 0);
	check_pattern(al[0].iov_base, 64 * KiB, 4096);
	check_pattern(al[1].iov_base, 64 * KiB + 4096, 4096);

	/* Misaligned guest buffer: bounced both ways. */
	assert_int_equal(blk_read(f->q, &req, 128 * KiB, &mis, 1, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.res, 0);
	check_pattern(odd, 128 * KiB, 4096);
	memset(odd, 0x3c, 4096);
	assert_int_equal(blk_write(f->q, &req, 256 * KiB, &mis, 1, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.res, 0);
	fd = open(f->path, O_RDONLY);
	assert_int_equal(pread(fd, file, sizeof(file), 256 * KiB), (ssize_t)sizeof(file));
	close(fd);
	assert_memory_equal(file, odd, 4096);

	/* Offsets and lengths off the block size: refused, no callback. */
	d.calls = 0;
	if (bs > 512)
		assert_int_equal(blk_read(f->q, &req, 512, al, 1, on_done, &d), -EINVAL);
	mis.iov_len = bs + 1;
	assert_int_equal(blk_read(f->q, &req, 0, &mis, 1, on_done, &d), -EINVAL);
	assert_int_equal(d.calls, 0);
}

/* Reads mark exactly the guest pages they wrote; writes mark none. */
static void test_dirty(void **state)
{
	struct fx *f = *state;
	uint64_t pages = RAM_SIZE / 4096, pg;
	struct iovec iov[2] = {
		{ gpa(f, 0x100000 + 2048, 4096), 4096 }, /* pages 0x100, 0x101 */
		{ gpa(f, 0x180000, 12288), 12288 }, /* pages 0x180..0x182 */
	};
	struct blk_req req;
	struct done d = { 0 };

	for (pg = 0; pg < pages; pg++)
		mem_dirty_test_clear(&f->m, pg);
	assert_int_equal(blk_write(f->q, &req, 0, iov, 2, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.res, 0);
	for (pg = 0; pg < pages; pg++)
		assert_false(mem_dirty_test_clear(&f->m, pg));

	assert_int_equal(blk_read(f->q, &req, 64 * KiB, iov, 2, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.res, 0);
	for (pg = 0; pg < pages; pg++) {
		bool want = pg == 0x100 || pg == 0x101 || (pg >= 0x180 && pg <= 0x182);

		if (mem_dirty_test_clear(&f->m, pg) != want)
			fail_msg("page %#llx dirty bit is %d", (unsigned long long)pg, !want);
	}
}

/* Quiesce: nothing in flight afterwards, new requests refused until resume. */
static void test_quiesce(void **state)
{
	struct fx *f = *state;
	enum { N = 300 };
	struct blk_ring *r2;
	struct blk_queue *q2;
	struct blk_req *reqs = calloc(N, sizeof(*reqs));
	struct iovec *iov = calloc(N, sizeof(*iov));
	struct done d = { 0 };
	struct qerr e = { 0 };
	int i;

	assert_non_null(reqs);
	assert_non_null(iov);
	/* A second queue on its own ring: quiesce drains both. */
	assert_int_equal(blk_ring_create(&r2, 8, &e), 0);
	assert_int_equal(blk_queue_create(&q2, f->b, r2), 0);
	for (i = 0; i < N; i++) {
		iov[i] = (struct iovec){ gpa(f, 0x100000 + i * 4096ULL, 4096), 4096 };
		assert_int_equal(blk_read(i % 2 ? q2 : f->q, &reqs[i], (i * 4096ULL) % IMG_SIZE,
					  &iov[i], 1, on_done, &d),
				 0);
		if (i % 50 == 0) {
			assert_int_equal(blk_ring_submit(f->r), 0);
			assert_int_equal(blk_ring_submit(r2), 0);
		}
	}
	assert_true(blk_ring_inflight(f->r) + blk_ring_inflight(r2) > 0);
	assert_int_equal(blk_backend_quiesce(f->b), 0);
	assert_int_equal(d.calls, N);
	assert_int_equal(d.res, 0);
	assert_int_equal(blk_queue_inflight(f->q), 0);
	assert_int_equal(blk_queue_inflight(q2), 0);
	assert_int_equal(blk_ring_inflight(f->r), 0);
	assert_int_equal(blk_ring_inflight(r2), 0);
	for (i = 0; i < N; i++)
		check_pattern(iov[i].iov_base, (i * 4096ULL) % IMG_SIZE, 4096);

	assert_int_equal(blk_read(f->q, &reqs[0], 0, &iov[0], 1, on_done, &d), -EBUSY);
	assert_int_equal(blk_flush(q2, &reqs[1], on_done, &d), -EBUSY);
	assert_int_equal(d.calls, N);
	blk_backend_resume(f->b);
	assert_int_equal(blk_read(f->q, &reqs[0], 0, &iov[0], 1, on_done, &d), 0);
	assert_int_equal(blk_flush(q2, &reqs[1], on_done, &d), 0);
	assert_int_equal(blk_backend_quiesce(f->b), 0);
	assert_int_equal(d.calls, N + 2);
	blk_backend_resume(f->b);
	blk_queue_destroy(q2);
	blk_ring_destroy(r2);
	free(reqs);
	free(iov);
}

struct counter {
	unsigned int calls, fails;
};

static void on_count(void *opaque, int result)
{
	struct counter *c = opaque;

	c->calls++;
	c->fails += result != 0;
}

/* Far more requests than the ring has slots: the backlog takes them. */
static void test_many(void **state)
{
	struct fx *f = *state;
	enum { N = 100000 };
	struct blk_ring *small;
	struct blk_queue *q;
	struct blk_req *reqs = calloc(N, sizeof(*reqs));
	struct iovec *iov = calloc(N, sizeof(*iov));
	struct counter c = { 0 };
	struct qerr e = { 0 };
	int i;

	assert_non_null(reqs);
	assert_non_null(iov);
	assert_int_equal(blk_ring_create(&small, 4, &e), 0);
	assert_int_equal(blk_queue_create(&q, f->b, small), 0);
	for (i = 0; i < N; i++) {
		uint64_t slot = i % (RAM_SIZE / 4096 - 256);

		iov[i] = (struct iovec){ gpa(f, slot * 4096, 512), 512 };
		assert_int_equal(blk_read(q, &reqs[i], (i * 512ULL) % IMG_SIZE, &iov[i], 1,
					  on_count, &c),
				 0);
	}
	assert_int_equal(blk_ring_inflight(small), N);
	assert_int_equal(blk_ring_drain(small), 0);
	assert_int_equal(c.calls, N);
	assert_int_equal(c.fails, 0);
	assert_int_equal(blk_queue_inflight(q), 0);
	/* The last request to each slot is what is left in it. */
	for (i = N - 1000; i < N; i++)
		check_pattern(iov[i].iov_base, (i * 512ULL) % IMG_SIZE, 512);
	blk_queue_destroy(q);
	blk_ring_destroy(small);
	free(reqs);
	free(iov);
}

/* I/O errors reach the callback as -errno: the image fd swapped for O_PATH. */
static void test_io_error(void **state)
{
	struct fx *f = *state;
	int opath = open(f->dir, O_PATH | O_CLOEXEC);
	struct iovec iov = { gpa(f, 0x10000, 4096), 4096 };
	struct blk_req r1, r2, r3;
	struct done d1 = { 0 }, d2 = { 0 }, d3 = { 0 };

	assert_true(opath >= 0);
	assert_int_equal(dup2(opath, blk_backend_fd(f->b)), blk_backend_fd(f->b));
	close(opath);
	assert_int_equal(blk_read(f->q, &r1, 0, &iov, 1, on_done, &d1), 0);
	assert_int_equal(blk_write(f->q, &r2, 0, &iov, 1, on_done, &d2), 0);
	assert_int_equal(blk_flush(f->q, &r3, on_done, &d3), 0);
	drain(f);
	assert_int_equal(d1.calls, 1);
	assert_int_equal(d1.res, -EBADF);
	assert_int_equal(d2.calls, 1);
	assert_int_equal(d2.res, -EBADF);
	assert_int_equal(d3.calls, 1);
	assert_int_equal(d3.res, -EBADF);
}

/* Refused synchronously, never calling back. */
static void test_bad_requests(void **state)
{
	struct fx *f = *state;
	struct iovec iov = { gpa(f, 0x10000, 4096), 4096 };
	struct iovec *many = calloc(BLK_MAX_IOV + 1, sizeof(*many));
	struct iovec huge[2] = { { iov.iov_base, UINT64_MAX - 100 }, { iov.iov_base, 4096 } };
	struct blk_req req;
	struct done d = { 0 };
	int i;

	assert_non_null(many);
	assert_int_equal(blk_read(f->q, &req, IMG_SIZE, &iov, 1, on_done, &d), -EINVAL);
	assert_int_equal(blk_read(f->q, &req, IMG_SIZE - 512, &iov, 1, on_done, &d), -EINVAL);
	assert_int_equal(blk_write(f->q, &req, UINT64_MAX - 511, &iov, 1, on_done, &d), -EINVAL);
	assert_int_equal(blk_read(f->q, &req, 100, &iov, 1, on_done, &d), -EINVAL);
	iov.iov_len = 1000;
	assert_int_equal(blk_read(f->q, &req, 0, &iov, 1, on_done, &d), -EINVAL);
	assert_int_equal(blk_read(f->q, &req, 0, huge, 2, on_done, &d), -EINVAL);
	assert_int_equal(blk_discard(f->q, &req, 0, IMG_SIZE + 512, on_done, &d), -EINVAL);
	assert_int_equal(blk_write_zeroes(f->q, &req, 512, 100, false, on_done, &d), -EINVAL);
	for (i = 0; i <= BLK_MAX_IOV; i++)
		many[i] = (struct iovec){ iov.iov_base, 512 };
	assert_int_equal(blk_read(f->q, &req, 0, many, BLK_MAX_IOV + 1, on_done, &d), -EINVAL);
	assert_int_equal(d.calls, 0);
	assert_int_equal(blk_ring_inflight(f->r), 0);
	/* Zero bytes: a no-op that still completes. */
	assert_int_equal(blk_read(f->q, &req, IMG_SIZE, NULL, 0, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, 0);
	/* The largest allowed vector works. */
	assert_int_equal(blk_read(f->q, &req, 0, many, BLK_MAX_IOV, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.res, 0);
	check_pattern(iov.iov_base, (BLK_MAX_IOV - 1) * 512, 512);
	free(many);
}

/* The image shrank under us: the part past its end reads as zeros. */
static void test_short_read_eof(void **state)
{
	struct fx *f = *state;
	struct iovec iov[2] = { { gpa(f, 0x10000, 32 * KiB), 32 * KiB },
				{ gpa(f, 0x20000, 32 * KiB), 32 * KiB } };
	struct blk_req req;
	struct done d = { 0 };

	assert_int_equal(truncate(f->path, 512 * KiB - 16 * KiB), 0);
	memset(iov[0].iov_base, 0xaa, 32 * KiB);
	memset(iov[1].iov_base, 0xaa, 32 * KiB);
	/* [448K, 512K): 48K of data, then EOF. */
	assert_int_equal(blk_read(f->q, &req, 448 * KiB, iov, 2, on_done, &d), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.res, 0);
	check_pattern(iov[0].iov_base, 448 * KiB, 32 * KiB);
	check_pattern(iov[1].iov_base, 480 * KiB, 16 * KiB);
	check_zero((uint8_t *)iov[1].iov_base + 16 * KiB, 16 * KiB);
}

/* Two backends on one ring; one backend on two rings. */
static void test_shared_ring(void **state)
{
	struct fx *f = *state;
	char p2[400];
	struct blk_opts o = { .path = p2 };
	struct blk_backend *b2;
	struct blk_ring *r2;
	struct blk_queue *q_b2, *q_r2;
	struct iovec iov[3] = { { gpa(f, 0x10000, 4096), 4096 },
				{ gpa(f, 0x20000, 4096), 4096 },
				{ gpa(f, 0x30000, 4096), 4096 } };
	struct blk_req reqs[3];
	struct counter c = { 0 };
	struct qerr e = { 0 };

	snprintf(p2, sizeof(p2), "%s/second.raw", f->dir);
	make_image(p2, 2 * MiB);
	assert_int_equal(blk_backend_open(&b2, &o, &f->m, &e), 0);
	assert_int_equal(blk_ring_create(&r2, 32, &e), 0);
	assert_int_equal(blk_queue_create(&q_b2, b2, f->r), 0);
	assert_int_equal(blk_queue_create(&q_r2, f->b, r2), 0);
	assert_int_equal(blk_read(f->q, &reqs[0], 4096, &iov[0], 1, on_count, &c), 0);
	assert_int_equal(blk_read(q_b2, &reqs[1], 8192, &iov[1], 1, on_count, &c), 0);
	assert_int_equal(blk_read(q_r2, &reqs[2], 12288, &iov[2], 1, on_count, &c), 0);
	assert_int_equal(blk_ring_inflight(f->r), 2);
	assert_int_equal(blk_ring_inflight(r2), 1);
	/* Quiescing b2 completes its request on the shared ring (and f->b's). */
	assert_int_equal(blk_backend_quiesce(b2), 0);
	assert_int_equal(blk_queue_inflight(q_b2), 0);
	blk_backend_resume(b2);
	assert_int_equal(blk_ring_drain(r2), 0);
	drain(f);
	assert_int_equal(c.calls, 3);
	assert_int_equal(c.fails, 0);
	check_pattern(iov[0].iov_base, 4096, 4096);
	check_pattern(iov[1].iov_base, 8192, 4096);
	check_pattern(iov[2].iov_base, 12288, 4096);
	blk_queue_destroy(q_b2);
	blk_queue_destroy(q_r2);
	blk_backend_close(b2);
	blk_ring_destroy(r2);
}

/* Driven by the main loop: completions arrive through the ring's eventfd. */
struct chain {
	struct blk_queue *q;
	struct blk_req req;
	struct iovec iov;
	unsigned int left;
	int res;
};

static void on_chain(void *opaque, int result)
{
	struct chain *c = opaque;

	c->res |= result;
	/* Issue the next one from the callback, as a device would. */
	if (--c->left)
		assert_int_equal(
			blk_read(c->q, &c->req, c->left * 4096ULL, &c->iov, 1, on_chain, c), 0);
}

static void test_loop(void **state)
{
	struct fx *f = *state;
	struct loop *l;
	struct chain c = { .q = f->q, .left = 200 };
	int spins = 0;

	c.iov = (struct iovec){ gpa(f, 0x10000, 4096), 4096 };
	assert_int_equal(loop_create(&l), 0);
	assert_int_equal(blk_ring_attach(f->r, l), 0);
	assert_int_equal(blk_ring_attach(f->r, l), -EBUSY);
	assert_int_equal(blk_read(f->q, &c.req, c.left * 4096ULL, &c.iov, 1, on_chain, &c), 0);
	assert_int_equal(blk_ring_submit(f->r), 0);
	/* The timeout only guards against a hang; nothing is timed. */
	while (c.left && spins++ < 100000)
		assert_int_equal(loop_run_once(l, 10000), 0);
	assert_int_equal(c.left, 0);
	assert_int_equal(c.res, 0);
	check_pattern(c.iov.iov_base, 4096, 4096);
	blk_queue_destroy(f->q);
	f->q = NULL;
	blk_ring_destroy(f->r); /* detaches from the loop */
	f->r = NULL;
	loop_destroy(l);
}

static void test_ring_errors(void **state)
{
	struct blk_ring *r;
	struct qerr e = { 0 };

	assert_int_equal(blk_ring_create(&r, 0, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "entries"));
	assert_null(r);
	assert_int_equal(blk_ring_create(&r, 1 << 20, NULL), -EINVAL);
	assert_int_equal(blk_ring_create(&r, 1, NULL), 0);
	assert_true(blk_ring_eventfd(r) >= 0);
	assert_int_equal(blk_ring_inflight(r), 0);
	assert_int_equal(blk_ring_drain(r), 0);
	assert_int_equal(blk_ring_complete(r), 0);
	blk_ring_destroy(r);
	blk_ring_destroy(NULL);
	blk_backend_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_zeroes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_zeroes_fallback, setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_readonly, setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_open_unreadable, setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_lock_handover, setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_direct, setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_dirty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quiesce, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_read_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loop, setup, teardown),
		cmocka_unit_test(test_ring_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
