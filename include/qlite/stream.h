/* SPDX-License-Identifier: MIT */
/*
 * The state stream: one binary format for checkpoint files (state.qst) and
 * live migration over sockets. A header (magic, format version), then
 * sections (kind, id, instance, version, length, payload, CRC32), then an
 * end marker. The reader treats every byte as hostile. Layout and rules:
 * docs/state-stream.md.
 */
#ifndef QLITE_STREAM_H
#define QLITE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qerr;
struct sbuf;

#define STREAM_MAGIC "QLITE-ST" /* 8 bytes, no NUL */
#define STREAM_MAGIC_LEN 8
#define STREAM_VERSION 1
#define STREAM_ID_MAX 63 /* section id string length limit */
/* Longest "kind/id/instance" name stream_section_name() produces, with NUL. */
#define STREAM_NAME_MAX (16 + STREAM_ID_MAX + 12)

enum stream_kind {
	STREAM_END = 0, /* end marker */
	STREAM_VM = 1,	/* VM configuration (JSON text) */
	STREAM_CPU = 2, /* one vCPU's KVM state; instance = vCPU index */
	STREAM_KVM = 3, /* VM-wide KVM state: irqchip, PIT, clock */
	STREAM_DEVICE =
		4,	 /* device state; id = device class name, instance = ordinal within class */
	STREAM_RAM = 5,	 /* guest memory page map */
	STREAM_DISK = 6, /* a disk image the checkpoint refers to */
	STREAM_MAX_KIND,
};

/* "end", "vm", "cpu", ... or NULL if unknown. */
const char *stream_kind_name(uint32_t kind);

struct stream_section {
	uint32_t kind;
	char id[STREAM_ID_MAX + 1];
	uint32_t instance;
	uint32_t version;
	uint64_t len;
	/*
	 * Owned by the reader; valid until the next stream_next() or
	 * stream_reader_close(). Never NULL, and data[len] is 0 so text
	 * payloads (the VM section's JSON) can be parsed as strings.
	 */
	uint8_t *data;
};

/*
 * "cpu/0", "device/serial/1": the kind name (or "kind-N"), the id if any,
 * the instance. Used in every reader error; callers use it in theirs.
 */
void stream_section_name(char *buf, size_t len, uint32_t kind, const char *id, uint32_t instance);

/*
 * Writer: to a blocking fd (file, pipe or socket; handles short writes and
 * EINTR, and never raises SIGPIPE on sockets), counting bytes written. The
 * first failure sticks: later calls return it without writing.
 */
struct stream_writer {
	int fd;
	uint64_t bytes;
	uint32_t sections; /* sections put so far (the end marker records it) */
	bool sock;	   /* fd is a socket: send(MSG_NOSIGNAL) */
	bool begun, finished;
	int err; /* sticky -errno */
};

void stream_writer_init(struct stream_writer *w, int fd);
int stream_begin(struct stream_writer *w, struct qerr *e); /* header */
/* @id may be NULL (empty); it must be printable ASCII without spaces, <= STREAM_ID_MAX. */
int stream_put(struct stream_writer *w, uint32_t kind, const char *id, uint32_t instance,
	       uint32_t version, const void *data, size_t len, struct qerr *e);
/* stream_put() of @b's contents; -ENOMEM (naming the section) if @b ran out of memory. */
int stream_put_sbuf(struct stream_writer *w, uint32_t kind, const char *id, uint32_t instance,
		    uint32_t version, const struct sbuf *b, struct qerr *e);
int stream_finish(struct stream_writer *w, struct qerr *e); /* end marker */

/*
 * Reader: from a blocking fd, or from a memory buffer (unit tests, fuzzing).
 * @max_section bounds the payload length it will accept (e.g. 256 MiB); a
 * longer declared length is refused before allocating. The first failure
 * sticks.
 */
struct stream_reader {
	int fd; /* -1 for a memory reader */
	const uint8_t *mem;
	size_t mem_len;
	uint64_t off; /* bytes consumed, for messages */
	uint64_t max_section;
	uint32_t sections; /* sections returned so far */
	bool opened, ended;
	int err;      /* sticky -errno */
	uint8_t *buf; /* the current section's payload (+1 NUL) */
};

void stream_reader_init_fd(struct stream_reader *r, int fd, uint64_t max_section);
void stream_reader_init_mem(struct stream_reader *r, const void *buf, size_t len,
			    uint64_t max_section);
int stream_open(struct stream_reader *r, struct qerr *e); /* reads and checks the header */
/*
 * 1: a section was read into *s (CRC checked, kind known, id valid);
 * 0: the end marker (and nothing may follow it in a mem reader); later calls
 * return 0 again; -errno with @e set.
 */
int stream_next(struct stream_reader *r, struct stream_section *s, struct qerr *e);
void stream_reader_close(
	struct stream_reader *r); /* frees the data buffer, does not close the fd */

#endif
