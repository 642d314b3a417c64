// SPDX-License-Identifier: MIT
/*
 * The state stream (see stream.h and docs/state-stream.md). The reader is
 * the trust boundary for checkpoint files and migration sockets: every
 * length is bounded before it is used, every section is CRC-checked, and
 * every error names the section and the byte offset it started at.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "qlite/sbuf.h"
#include "qlite/stream.h"
#include "qlite/util.h"

#define HEADER_LEN (STREAM_MAGIC_LEN + 4 + 4) /* magic, version, flags */
#define SECT_FIXED_LEN (4 + 4 + 4 + 2)	      /* kind, instance, version, id_len */
#define SECT_LEN_LEN 8
#define SECT_CRC_LEN 4
/* Largest single write, and the step a payload read grows its buffer by. */
#define WRITE_CHUNK (1UL << 30)
#define READ_CHUNK (1UL << 20)

static const char *const kind_names[STREAM_MAX_KIND] = {
	[STREAM_END] = "end",	[STREAM_VM] = "vm",	    [STREAM_CPU] = "cpu",
	[STREAM_KVM] = "kvm",	[STREAM_DEVICE] = "device", [STREAM_RAM] = "ram",
	[STREAM_DISK] = "disk",
};

const char *stream_kind_name(uint32_t kind)
{
	return kind < STREAM_MAX_KIND ? kind_names[kind] : NULL;
}

void stream_section_name(char *buf, size_t len, uint32_t kind, const char *id, uint32_t instance)
{
	const char *k = stream_kind_name(kind);
	char kbuf[16];

	if (!k) {
		snprintf(kbuf, sizeof(kbuf), "kind-%u", kind);
		k = kbuf;
	}
	/* "cpu/0", not "cpu/cpu/0", when the id just repeats the kind. */
	if (id && id[0] && strcmp(id, k))
		snprintf(buf, len, "%s/%s/%u", k, id, instance);
	else
		snprintf(buf, len, "%s/%u", k, instance);
}

/* Printable ASCII without space: ids appear unquoted in names and messages. */
static bool id_char_ok(uint8_t c)
{
	return c > 0x20 && c < 0x7f;
}

static uint32_t crc_update(uint32_t crc, const void *p, uint64_t n)
{
	const uint8_t *b = p;

	/* zlib's crc32() takes a uInt length. */
	while (n) {
		uInt step = n > (1U << 30) ? (1U << 30) : (uInt)n;

		crc = (uint32_t)crc32(crc, b, step);
		b += step;
		n -= step;
	}
	return crc;
}

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint16_t get_le16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return le16toh(v);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* ---- writer ---- */

void stream_writer_init(struct stream_writer *w, int fd)
{
	struct stat st;

	memset(w, 0, sizeof(*w));
	w->fd = fd;
	w->sock = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Write all of @iov (consumed in place), in pieces of at most WRITE_CHUNK. */
static int write_iov(struct stream_writer *w, struct iovec *iov, int cnt)
{
	for (;;) {
		struct iovec v[8];
		size_t total = 0;
		ssize_t ret;
		int n = 0;

		while (cnt && !iov->iov_len) {
			iov++;
			cnt--;
		}
		if (!cnt)
			return 0;
		for (int i = 0; i < cnt && n < (int)ARRAY_SIZE(v) && total < WRITE_CHUNK; i++) {
			v[n] = iov[i];
			if (v[n].iov_len > WRITE_CHUNK - total)
				v[n].iov_len = WRITE_CHUNK - total;
			total += v[n].iov_len;
			n++;
		}
		if (w->sock) {
			struct msghdr msg = {.msg_iov = v, .msg_iovlen = n};

			ret = sendmsg(w->fd, &msg, MSG_NOSIGNAL);
		} else {
			ret = writev(w->fd, v, n);
		}
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (ret == 0)
			return -EIO;
		w->bytes += ret;
		while (ret > 0) {
			if ((size_t)ret >= iov->iov_len) {
				ret -= iov->iov_len;
				iov++;
				cnt--;
			} else {
				iov->iov_base = (uint8_t *)iov->iov_base + ret;
				iov->iov_len -= ret;
				ret = 0;
			}
		}
	}
}

int stream_begin(struct stream_writer *w, struct qerr *e)
{
	uint8_t hdr[HEADER_LEN];
	struct iovec iov = {hdr, sizeof(hdr)};
	int ret;

	if (w->err)
		return qerr_set(e, -w->err, "state stream: an earlier write failed");
	if (w->begun)
		return qerr_set(e, EINVAL, "state stream: header already written");
	memcpy(hdr, STREAM_MAGIC, STREAM_MAGIC_LEN);
	put_le32(hdr + STREAM_MAGIC_LEN, STREAM_VERSION);
	put_le32(hdr + STREAM_MAGIC_LEN + 4, 0); /* flags */
	ret = write_iov(w, &iov, 1);
	if (ret < 0) {
		w->err = ret;
		return qerr_set(e, -ret, "cannot write the state stream header: %s",
				strerror(-ret));
	}
	w->begun = true;
	return 0;
}

/* Any kind including STREAM_END; callers have validated the arguments. */
static int put_section(struct stream_writer *w, uint32_t kind, const char *id, uint32_t instance,
		       uint32_t version, const void *data, size_t len, struct qerr *e)
{
	uint8_t fixed[SECT_FIXED_LEN], lenf[SECT_LEN_LEN], crcf[SECT_CRC_LEN];
	size_t id_len = strlen(id);
	struct iovec iov[5] = {
		{fixed, sizeof(fixed)}, {(void *)id, id_len}, {lenf, sizeof(lenf)},
		{(void *)data, len},	{crcf, sizeof(crcf)},
	};
	char name[STREAM_NAME_MAX];
	uint32_t crc;
	int ret;

	put_le32(fixed, kind);
	put_le32(fixed + 4, instance);
	put_le32(fixed + 8, version);
	put_le16(fixed + 12, (uint16_t)id_len);
	put_le64(lenf, len);
	crc = crc_update(0, fixed, sizeof(fixed));
	crc = crc_update(crc, id, id_len);
	crc = crc_update(crc, lenf, sizeof(lenf));
	crc = crc_update(crc, data, len);
	put_le32(crcf, crc);
	ret = write_iov(w, iov, ARRAY_SIZE(iov));
	if (ret < 0) {
		w->err = ret;
		stream_section_name(name, sizeof(name), kind, id, instance);
		return qerr_set(e, -ret, "cannot write section %s of the state stream: %s", name,
				strerror(-ret));
	}
	return 0;
}

static int check_writable(struct stream_writer *w, struct qerr *e)
{
	if (w->err)
		return qerr_set(e, -w->err, "state stream: an earlier write failed");
	if (!w->begun || w->finished)
		return qerr_set(e, EINVAL, "state stream: section outside stream_begin/finish");
	return 0;
}

int stream_put(struct stream_writer *w, uint32_t kind, const char *id, uint32_t instance,
	       uint32_t version, const void *data, size_t len, struct qerr *e)
{
	char name[STREAM_NAME_MAX];
	size_t id_len;
	int ret;

	ret = check_writable(w, e);
	if (ret)
		return ret;
	if (!id)
		id = "";
	id_len = strnlen(id, STREAM_ID_MAX + 1);
	if (kind == STREAM_END || !stream_kind_name(kind))
		return qerr_set(e, EINVAL, "state stream: cannot write a section of kind %u", kind);
	if (id_len > STREAM_ID_MAX)
		return qerr_set(e, EINVAL, "state stream: %s section id is longer than %d bytes",
				stream_kind_name(kind), STREAM_ID_MAX);
	for (size_t i = 0; i < id_len; i++)
		if (!id_char_ok((uint8_t)id[i]))
			return qerr_set(e, EINVAL,
					"state stream: %s section id has byte 0x%02x (ids are "
					"printable ASCII without spaces)",
					stream_kind_name(kind), (uint8_t)id[i]);
	if (!data && len) {
		stream_section_name(name, sizeof(name), kind, id, instance);
		return qerr_set(e, EINVAL, "state stream: section %s has no data", name);
	}
	ret = put_section(w, kind, id, instance, version, data, len, e);
	if (ret)
		return ret;
	w->sections++;
	return 0;
}

int stream_put_sbuf(struct stream_writer *w, uint32_t kind, const char *id, uint32_t instance,
		    uint32_t version, const struct sbuf *b, struct qerr *e)
{
	char name[STREAM_NAME_MAX];

	if (sbuf_status(b)) {
		stream_section_name(name, sizeof(name), kind, id, instance);
		return qerr_set(e, ENOMEM, "out of memory encoding section %s", name);
	}
	return stream_put(w, kind, id, instance, version, b->data, b->len, e);
}

int stream_finish(struct stream_writer *w, struct qerr *e)
{
	int ret = check_writable(w, e);

	if (ret)
		return ret;
	/* The end marker's instance counts the sections: a dropped one shows. */
	ret = put_section(w, STREAM_END, "", w->sections, 0, NULL, 0, e);
	if (ret)
		return ret;
	w->finished = true;
	return 0;
}

/* ---- reader ---- */

static void reader_init(struct stream_reader *r, int fd, const void *buf, size_t len,
			uint64_t max_section)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->mem = buf;
	r->mem_len = len;
	r->max_section = max_section;
}

void stream_reader_init_fd(struct stream_reader *r, int fd, uint64_t max_section)
{
	reader_init(r, fd, NULL, 0, max_section);
}

void stream_reader_init_mem(struct stream_reader *r, const void *buf, size_t len,
			    uint64_t max_section)
{
	reader_init(r, -1, buf, len, max_section);
}

void stream_reader_close(struct stream_reader *r)
{
	free(r->buf);
	r->buf = NULL;
}

/* Bytes a memory reader has left (fd readers: unknown, UINT64_MAX). */
static uint64_t reader_left(const struct stream_reader *r)
{
	return r->fd < 0 ? r->mem_len - r->off : UINT64_MAX;
}

/*
 * Read up to @n bytes; fewer only at end of input (*@got says how many).
 * Returns 0 or -errno for an I/O error (e set).
 */
static int rd(struct stream_reader *r, void *out, size_t n, size_t *got, struct qerr *e)
{
	size_t done = 0;

	if (r->fd < 0) {
		done = MIN(n, (size_t)reader_left(r));
		if (done)
			memcpy(out, r->mem + r->off, done);
	} else {
		while (done < n) {
			ssize_t ret =
				read(r->fd, (uint8_t *)out + done, MIN(n - done, WRITE_CHUNK));

			if (ret < 0 && errno == EINTR)
				continue;
			if (ret < 0) {
				int err = errno;

				r->off += done;
				*got = done;
				return qerr_set(e, err,
						"cannot read the state stream at byte %llu: %s",
						(unsigned long long)r->off, strerror(err));
			}
			if (ret == 0)
				break;
			done += ret;
		}
	}
	r->off += done;
	*got = done;
	return 0;
}

static int fail(struct stream_reader *r, int ret)
{
	r->err = ret;
	return ret;
}

int stream_open(struct stream_reader *r, struct qerr *e)
{
	uint8_t hdr[HEADER_LEN];
	uint32_t version, flags;
	size_t got;
	int ret;

	if (r->err)
		return qerr_set(e, -r->err, "state stream: an earlier read failed");
	if (r->opened)
		return qerr_set(e, EINVAL, "state stream: header already read");
	ret = rd(r, hdr, sizeof(hdr), &got, e);
	if (ret)
		return fail(r, ret);
	/* Check the magic on what arrived, so a short foreign file says foreign. */
	if (memcmp(hdr, STREAM_MAGIC, MIN(got, (size_t)STREAM_MAGIC_LEN)) != 0 || got == 0)
		return fail(r, qerr_set(e, EBADMSG, "not a qlite state stream"));
	if (got < sizeof(hdr))
		return fail(r, qerr_set(e, EBADMSG,
					"truncated in the state stream header (expected %zu bytes, "
					"got %zu)",
					sizeof(hdr), got));
	version = get_le32(hdr + STREAM_MAGIC_LEN);
	flags = get_le32(hdr + STREAM_MAGIC_LEN + 4);
	if (version != STREAM_VERSION)
		return fail(r, qerr_set(e, ENOTSUP,
					"checkpoint format version %u, this qlite reads version %u",
					version, STREAM_VERSION));
	if (flags)
		return fail(r, qerr_set(e, ENOTSUP,
					"state stream header has unknown flags 0x%x (written by a "
					"newer qlite?)",
					flags));
	r->opened = true;
	return 0;
}

/* Payload of @len bytes into r->buf (NUL-terminated); @name for messages. */
static int read_payload(struct stream_reader *r, uint64_t len, const char *name, struct qerr *e)
{
	size_t cap, have = 0, got;
	uint8_t *p;
	int ret;

	if (len > reader_left(r))
		return qerr_set(e, EBADMSG,
				"truncated in section %s (expected %llu bytes, got %llu)", name,
				(unsigned long long)len, (unsigned long long)reader_left(r));
	/*
	 * An fd cannot say how much is coming: grow with what arrives, so a
	 * lying length costs memory only in proportion to the data sent.
	 */
	cap = r->fd < 0 ? len : MIN(len, READ_CHUNK);
	p = malloc(cap + 1);
	if (!p)
		return qerr_set(e, ENOMEM, "out of memory for section %s (%llu bytes)", name,
				(unsigned long long)len);
	r->buf = p;
	while (have < len) {
		if (have == cap) {
			cap = cap > len / 2 ? len : cap * 2;
			p = realloc(r->buf, cap + 1);
			if (!p)
				return qerr_set(e, ENOMEM,
						"out of memory for section %s (%llu bytes)", name,
						(unsigned long long)len);
			r->buf = p;
		}
		ret = rd(r, r->buf + have, cap - have, &got, e);
		if (ret)
			return ret;
		have += got;
		if (have < cap)
			return qerr_set(e, EBADMSG,
					"truncated in section %s (expected %llu bytes, got %zu)",
					name, (unsigned long long)len, have);
	}
	r->buf[len] = 0;
	return 0;
}

int stream_next(struct stream_reader *r, struct stream_section *s, struct qerr *e)
{
	uint8_t fixed[SECT_FIXED_LEN], lenf[SECT_LEN_LEN], crcf[SECT_CRC_LEN];
	char id[STREAM_ID_MAX + 1], shown[STREAM_ID_MAX + 1], name[STREAM_NAME_MAX];
	uint32_t kind, instance, version, crc, stored;
	uint64_t start = r->off, len;
	uint16_t id_len;
	size_t got;
	int ret;

	if (r->err)
		return qerr_set(e, -r->err, "state stream: an earlier read failed");
	if (!r->opened)
		return qerr_set(e, EINVAL, "state stream: header not read yet");
	if (r->ended)
		return 0;
	free(r->buf);
	r->buf = NULL;

	ret = rd(r, fixed, sizeof(fixed), &got, e);
	if (ret)
		return fail(r, ret);
	if (got == 0)
		return fail(
			r,
			qerr_set(e, EBADMSG,
				 "truncated before the end marker (after %u sections, %llu bytes)",
				 r->sections, (unsigned long long)start));
	if (got < sizeof(fixed))
		return fail(r, qerr_set(e, EBADMSG,
					"truncated in the section header at byte %llu (expected "
					"%zu bytes, got %zu)",
					(unsigned long long)start, sizeof(fixed), got));
	kind = get_le32(fixed);
	instance = get_le32(fixed + 4);
	version = get_le32(fixed + 8);
	id_len = get_le16(fixed + 12);
	if (id_len > STREAM_ID_MAX) {
		stream_section_name(name, sizeof(name), kind, NULL, instance);
		return fail(
			r, qerr_set(e, EBADMSG,
				    "section %s at byte %llu: id length %u exceeds %d (corrupted?)",
				    name, (unsigned long long)start, id_len, STREAM_ID_MAX));
	}
	ret = rd(r, id, id_len, &got, e);
	if (ret)
		return fail(r, ret);
	/* Until the id is validated, show it with odd bytes masked. */
	for (size_t i = 0; i < got; i++)
		shown[i] = id_char_ok((uint8_t)id[i]) ? id[i] : '?';
	shown[got] = 0;
	id[got] = 0;
	stream_section_name(name, sizeof(name), kind, shown, instance);
	if (got < id_len)
		return fail(r, qerr_set(e, EBADMSG,
					"truncated in section %s (expected %u id bytes, got %zu)",
					name, id_len, got));
	ret = rd(r, lenf, sizeof(lenf), &got, e);
	if (ret)
		return fail(r, ret);
	if (got < sizeof(lenf))
		return fail(r,
			    qerr_set(e, EBADMSG,
				     "truncated in section %s (expected %zu length bytes, got %zu)",
				     name, sizeof(lenf), got));
	len = get_le64(lenf);
	if (len > r->max_section || len >= SIZE_MAX)
		return fail(r, qerr_set(e, EFBIG,
					"section %s at byte %llu: length %llu exceeds the limit of "
					"%llu bytes",
					name, (unsigned long long)start, (unsigned long long)len,
					(unsigned long long)r->max_section));
	ret = read_payload(r, len, name, e);
	if (ret)
		return fail(r, ret);
	ret = rd(r, crcf, sizeof(crcf), &got, e);
	if (ret)
		return fail(r, ret);
	if (got < sizeof(crcf))
		return fail(r, qerr_set(e, EBADMSG,
					"truncated in section %s (expected %zu CRC bytes, got %zu)",
					name, sizeof(crcf), got));
	/* CRC before meaning: a flipped bit is reported as corruption. */
	crc = crc_update(0, fixed, sizeof(fixed));
	crc = crc_update(crc, id, id_len);
	crc = crc_update(crc, lenf, sizeof(lenf));
	crc = crc_update(crc, r->buf, len);
	stored = get_le32(crcf);
	if (crc != stored)
		return fail(r, qerr_set(e, EBADMSG,
					"section %s at byte %llu is corrupted (CRC 0x%08x, "
					"expected 0x%08x)",
					name, (unsigned long long)start, crc, stored));
	if (!stream_kind_name(kind))
		return fail(r, qerr_set(e, ENOTSUP,
					"section %s at byte %llu: unknown section kind %u (written "
					"by a newer qlite?)",
					name, (unsigned long long)start, kind));
	for (size_t i = 0; i < id_len; i++)
		if (!id_char_ok((uint8_t)id[i]))
			return fail(r, qerr_set(e, EBADMSG,
						"section %s at byte %llu: id has byte 0x%02x (ids "
						"are printable ASCII without spaces)",
						name, (unsigned long long)start, (uint8_t)id[i]));
	if (kind == STREAM_END) {
		if (id_len || version || len)
			return fail(
				r, qerr_set(e, EBADMSG,
					    "end marker at byte %llu has an id, version or payload",
					    (unsigned long long)start));
		if (instance != r->sections)
			return fail(r, qerr_set(e, EBADMSG,
						"end marker counts %u sections, the stream had %u",
						instance, r->sections));
		if (r->fd < 0 && reader_left(r))
			return fail(r, qerr_set(e, EBADMSG,
						"%llu bytes of trailing data after the end marker",
						(unsigned long long)reader_left(r)));
		r->ended = true;
		return 0;
	}
	s->kind = kind;
	memcpy(s->id, id, id_len + 1);
	s->instance = instance;
	s->version = version;
	s->len = len;
	s->data = r->buf;
	r->sections++;
	return 1;
}
