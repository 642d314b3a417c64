// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the state stream reader. The first byte is a mode, the
 * rest the stream. Mode bit 0 rewrites every section's CRC before reading
 * (walking the layout the way the reader does), so mutations get past the
 * CRC check to the kind, id, length and end-marker rules. Each input is
 * read from memory and from a memfd: both readers must agree (except that
 * only the memory reader refuses trailing data), and a stream that reads
 * back cleanly must re-encode to exactly the same bytes.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "qlite/stream.h"
#include "qlite/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SECTION (64 * KiB)

static void fix_crcs(uint8_t *p, size_t n)
{
	size_t off = 16;

	while (off + 14 <= n) {
		size_t start = off, id_len = p[off + 12] | (p[off + 13] << 8);
		uint64_t len;
		uint32_t crc;

		if (id_len > n - off - 14 || n - off - 14 - id_len < 8)
			return;
		off += 14 + id_len;
		memcpy(&len, p + off, 8);
		len = le64toh(len);
		off += 8;
		if (len > n - off || n - off - len < 4)
			return;
		off += len;
		crc = htole32((uint32_t)crc32(0, p + start, off - start));
		memcpy(p + off, &crc, 4);
		off += 4;
	}
}

/* One memfd for all inputs (this is test code), rewound and truncated each time. */
static int scratch_fd(int *fd)
{
	if (*fd < 0) {
		*fd = memfd_create("fuzz-stream", MFD_CLOEXEC);
		if (*fd < 0)
			abort();
	}
	if (ftruncate(*fd, 0) || lseek(*fd, 0, SEEK_SET))
		abort();
	return *fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int in_fd = -1, out_fd = -1;
	struct stream_reader rm, rf;
	struct stream_writer w;
	struct qerr em = { 0 }, ef = { 0 }, ew = { 0 };
	struct stream_section sm, sf;
	uint8_t *buf, *back;
	int retm, retf;
	size_t len;

	if (!size)
		return 0;
	len = size - 1;
	buf = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
	if (!buf)
		abort();
	memcpy(buf, data + 1, len);
	if (data[0] & 1)
		fix_crcs(buf, len);

	stream_reader_init_mem(&rm, buf, len, MAX_SECTION);
	if (pwrite(scratch_fd(&in_fd), buf, len, 0) != (ssize_t)len)
		abort();
	stream_reader_init_fd(&rf, in_fd, MAX_SECTION);
	stream_writer_init(&w, scratch_fd(&out_fd));

	retm = stream_open(&rm, &em);
	retf = stream_open(&rf, &ef);
	if (!retm)
		stream_begin(&w, &ew);
	while (retm == 0 && retf == 0) {
		retm = stream_next(&rm, &sm, &em);
		retf = stream_next(&rf, &sf, &ef);
		if (retm != 1)
			break;
		if (retf != 1 || sm.kind != sf.kind || sm.instance != sf.instance ||
		    sm.version != sf.version || sm.len != sf.len || strcmp(sm.id, sf.id) ||
		    memcmp(sm.data, sf.data, sm.len) || sm.data[sm.len] || sm.len > MAX_SECTION ||
		    !stream_kind_name(sm.kind) || strlen(sm.id) > STREAM_ID_MAX)
			abort();
		stream_put(&w, sm.kind, sm.id, sm.instance, sm.version, sm.data, sm.len, &ew);
		retm = retf = 0;
	}
	if (retm < 0 && !em.msg[0])
		abort(); /* every failure explains itself */
	if (retm == -EBADMSG && strstr(em.msg, "trailing data after the end marker")) {
		if (retf != 0)
			abort();
	} else if (retm != retf || strcmp(em.msg, ef.msg)) {
		fprintf(stderr, "mem: %d %s\nfd: %d %s\n", retm, em.msg, retf, ef.msg);
		abort();
	}
	if (retm == 0) {
		/* Accepted streams are canonical: re-encoding gives the same bytes. */
		if (stream_finish(&w, &ew) || w.bytes != len)
			abort();
		back = malloc(len);
		if (!back || pread(out_fd, back, len, 0) != (ssize_t)len || memcmp(back, buf, len))
			abort();
		free(back);
	}
	stream_reader_close(&rm);
	stream_reader_close(&rf);
	free(buf);
	return 0;
}
