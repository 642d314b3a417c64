/* SPDX-License-Identifier: MIT */
/*
 * Live migration internals: the wire protocol (docs/migration.md has the
 * byte layout), the destination's message state machine, connection I/O
 * and the hand-off between a migration's worker and the main thread.
 */
#ifndef QLITE_MIG_INTERNAL_H
#define QLITE_MIG_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ckpt_internal.h"
#include "qlite/migrate.h"

#define MIG_MAGIC "QLITE-MG"
#define MIG_MAGIC_LEN 8
#define MIG_VERSION_MIN 1
#define MIG_VERSION_MAX 1
#define MIG_HDR_LEN 8 /* u32 type, u32 payload length */
#define MIG_PAGE 4096u
#define MIG_RUN_MAX 256u /* pages per PAGES message: 1 MiB */
#define MIG_SESSION_LEN 16
#define MIG_HELLO_LEN 56 /* version 1's fields; a longer HELLO has a later version's too */
#define MIG_ACK_LEN 12
#define MIG_MAX_SMALL 4096 /* HELLO, HELLO_ACK, ERROR */
#define MIG_MAX_CONFIG (1ULL * MiB)
#define MIG_MAX_STATE CKPT_MAX_SECTION
#define MIG_MAX_ERROR 1000  /* bytes of error text */
#define MIG_PAGES_HDR 12    /* u64 first, u32 count */
#define MIG_PAGE_REQ_LEN 12 /* u64 first, u32 count */
#define MIG_PCRUN_LEN 12    /* u32 flags, u64 pages still to come */
#define MIG_MAX_MISSING (8 + 64ULL * MiB) /* MISSING: a bitmap for up to 2 TiB of RAM */

enum mig_msg {
	MIG_MSG_HELLO = 1,     /* src: magic, versions, features, session, channel, sizes */
	MIG_MSG_HELLO_ACK = 2, /* dst: the version and features chosen */
	MIG_MSG_CONFIG = 3,    /* src: a state stream holding the VM section only */
	MIG_MSG_ROUND = 4,     /* src: u32 round, u64 pages in it */
	MIG_MSG_PAGES = 5,     /* src: u64 first page, u32 count (1..256), count x 4 KiB */
	MIG_MSG_ZERO = 6,      /* src: u64 first page, u64 count: these read as zero */
	MIG_MSG_STATE = 7,     /* src: a state stream: vm, kvm, cpu, device, disk sections */
	MIG_MSG_END = 8,       /* src: u32 flags (MIG_END_RUN): everything is sent */
	MIG_MSG_READY = 9,     /* dst: everything is loaded; the VM can start here */
	MIG_MSG_GO = 10,       /* src: start it; the source will not resume */
	MIG_MSG_RUNNING = 11,  /* dst: it started */
	MIG_MSG_ERROR = 12,    /* both: u32 errno, text; the sender gives up */
	/* Post-copy: refused unless negotiated (MIG_F_POSTCOPY). */
	MIG_MSG_PAGE_REQUEST = 13, /* dst: u64 first page, u32 count: needed now */
	MIG_MSG_POSTCOPY_RUN = 14, /* src: u32 flags (MIG_END_RUN), u64 pages still to come */
	MIG_MSG_DISCARD = 15,	   /* src: u64 first, u64 count: changed since sent, drop them */
	/* Post-copy recovery (MIG_F_RESUME): after HELLO_ACK on the new main channel. */
	MIG_MSG_MISSING = 16, /* dst: u64 pages, a bitmap (u64 words) of the pages it lacks */
	/* Post-copy: every page is placed (a bare close could be a broken link). */
	MIG_MSG_PC_DONE = 17, /* dst, after END: then it closes both channels */
	MIG_MSG_MAX,
};

#define MIG_END_RUN 1u /* the VM was running on the source */

enum mig_feature {
	MIG_F_POSTCOPY = 1ULL << 0, /* the source may switch to post-copy */
	MIG_F_RESUME = 1ULL << 1,   /* main channel: resume this session's broken post-copy */
};

enum mig_channel {
	MIG_CH_MAIN = 0,
	MIG_CH_URGENT = 1, /* post-copy: page requests and their answers, same session */
};

const char *mig_msg_name(uint32_t type);
/*
 * Before a payload is read: @type is one the peer may send (@from_source:
 * we are the destination) and @len is within that type's bounds.
 */
int mig_check_hdr(uint32_t type, uint32_t len, bool from_source, struct qerr *e);

struct mig_hello {
	uint32_t vmin, vmax;
	uint64_t features;
	uint8_t session[MIG_SESSION_LEN];
	uint32_t channel;
	uint32_t page_size;
	uint64_t ram_pages;
};

void mig_hello_encode(const struct mig_hello *h, struct sbuf *b);
/* Magic and sizes checked; versions and features are the caller's to judge. */
int mig_hello_decode(const uint8_t *p, size_t len, struct mig_hello *h, struct qerr *e);
/* The highest version both [vmin, vmax] and ours contain, or -EPROTONOSUPPORT. */
int mig_version_pick(uint32_t vmin, uint32_t vmax, uint32_t *out, struct qerr *e);
void mig_ack_encode(uint32_t version, uint64_t features, struct sbuf *b);
int mig_ack_decode(const uint8_t *p, size_t len, uint32_t *version, uint64_t *features,
		   struct qerr *e);
/* PAGE_REQUEST: [first, first + n), 1 <= n <= MIG_RUN_MAX. */
void mig_page_req_encode(uint64_t first, uint32_t n, uint8_t out[MIG_PAGE_REQ_LEN]);
/* The source's check of a request: length, count and range within @npages. */
int mig_page_req_decode(const uint8_t *p, size_t len, uint64_t npages, uint64_t *first, uint32_t *n,
			struct qerr *e);
void mig_pcrun_encode(uint32_t flags, uint64_t missing, uint8_t out[MIG_PCRUN_LEN]);
/* MISSING: @npages, then @bits (mig_bitmap_words(npages) words) little-endian. */
void mig_missing_encode(uint64_t npages, const unsigned long *bits, struct sbuf *b);
/* Length, page count (must be @npages) and no bit past the end; fills @bits. */
int mig_missing_decode(const uint8_t *p, size_t len, uint64_t npages, unsigned long *bits,
		       struct qerr *e);
/* The peer's error: its errno (or EPROTO) and its text made printable. */
int mig_error_decode(const uint8_t *p, size_t len, char *text, size_t tlen);

/* ---- a connection ---- */

struct mig_conn {
	int fd;
	bool from_source; /* we receive the source's messages */
	uint8_t *buf;	  /* the last payload received, NUL after it */
	size_t cap;
	_Atomic uint64_t rx_bytes, tx_bytes;
};

/* TCP (else nothing): no Nagle, keepalive and a user timeout for a vanished peer. */
void mig_sock_tcp_options(int fd);
void mig_conn_init(struct mig_conn *c, int fd, bool from_source);
void mig_conn_free(struct mig_conn *c); /* closes the fd */
/* One message: header, then @a and @b (either may be empty). */
int mig_send(struct mig_conn *c, uint32_t type, const void *a, size_t alen, const void *b,
	     size_t blen, struct qerr *e);
int mig_send_error(struct mig_conn *c, int errnum, const char *text);
/*
 * The next message into c->buf. The header is checked (mig_check_hdr)
 * before any payload is read, and a large one's buffer grows only as its
 * bytes arrive. @timeout_ms bounds the wait for its first byte (-1: none):
 * -ETIMEDOUT. The peer gone: -ECONNRESET at a message boundary, -EPIPE
 * inside a message; a header refused: -EBADMSG. A peer's ERROR message is
 * returned as such (type ERROR).
 */
int mig_recv(struct mig_conn *c, uint32_t *type, uint32_t *len, int timeout_ms, struct qerr *e);

/* ---- the destination's state machine (pure: unit tests and fuzzing drive it) ---- */

enum mig_rx_phase {
	MIG_RX_HELLO,	 /* nothing received yet */
	MIG_RX_CONFIG,	 /* HELLO accepted */
	MIG_RX_RAM,	 /* rounds of pages, until STATE */
	MIG_RX_END,	 /* STATE received */
	MIG_RX_GO,	 /* END (or POSTCOPY_RUN) received: load, say READY, wait for GO */
	MIG_RX_POSTCOPY, /* GO after POSTCOPY_RUN: the VM runs, pages still arrive, until END */
	MIG_RX_DONE,	 /* GO received (pre-copy), END (post-copy) */
};

struct mig_rx_ops {
	/* The VM to receive into, from the stream's configuration. */
	int (*config)(void *opaque, const struct vm_config *cfg, struct qerr *e);
	/* [first, first + n) in range: its bytes, or zero (@data NULL). */
	int (*pages)(void *opaque, uint64_t first, uint64_t n, const uint8_t *data, struct qerr *e);
	/*
	 * Post-copy (required if rx->supported has MIG_F_POSTCOPY): the pages
	 * [first, first + n) changed on the source after they were sent here;
	 * drop them so they fault and come again. With post-copy, pages() is
	 * also called from the urgent channel's thread (mig_rx_urgent_msg()),
	 * possibly for a page the main channel delivers too: it must be
	 * thread-safe and place each page once.
	 */
	int (*discard)(void *opaque, uint64_t first, uint64_t n, struct qerr *e);
};

struct mig_rx {
	enum mig_rx_phase phase;
	const struct mig_rx_ops *ops;
	void *opaque;
	struct mig_hello hello;
	uint32_t version;
	uint64_t supported;	  /* features this destination can do (set before HELLO) */
	uint64_t features;	  /* accepted */
	bool postcopy;		  /* POSTCOPY_RUN came: the VM starts before all pages */
	uint64_t missing;	  /* POSTCOPY_RUN: pages the source still has to send */
	_Atomic bool urgent_open; /* from POSTCOPY_RUN: answers count (also after END: the last
				     requests') */
	uint64_t npages;
	uint32_t next_round;
	bool run; /* END: the VM was running on the source */
	struct vm_config cfg;
	struct json_object *cfg_store; /* owns cfg's strings */
	char *cfg_json;		       /* the VM section, compared with STATE's */
	size_t cfg_len;
	struct ckpt_state state; /* from STATE */
	bool have_state;
	_Atomic uint64_t pages_data, pages_zero, rounds, pages_discarded;
};

void mig_rx_init(struct mig_rx *rx, const struct mig_rx_ops *ops, void *opaque);
void mig_rx_free(struct mig_rx *rx);
/* One message from the source; any violation is -errno with @e saying what. */
int mig_rx_msg(struct mig_rx *rx, uint32_t type, const uint8_t *p, size_t len, struct qerr *e);
const char *mig_rx_phase_name(enum mig_rx_phase ph);
/*
 * Post-copy's second connection: its HELLO must name channel 1 and the
 * main connection's session and versions, after post-copy was negotiated.
 */
int mig_rx_urgent_hello(const struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e);
/*
 * Post-copy recovery: a new main connection's HELLO must name channel 0,
 * this session, MIG_F_RESUME on top of the first HELLO's features, and
 * agree with it otherwise; only while the VM runs here in post-copy.
 */
int mig_rx_resume_hello(const struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e);
/*
 * One message on the urgent channel (another thread than mig_rx_msg()'s):
 * only PAGES (answers to PAGE_REQUEST) from POSTCOPY_RUN on, or ERROR.
 */
int mig_rx_urgent_msg(struct mig_rx *rx, uint32_t type, const uint8_t *p, size_t len,
		      struct qerr *e);

/* ---- worker <-> main thread ---- */

#define MIG_SYNC_QUEUE 32

struct mig_sync {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int efd;				/* readable: the main thread has something to do */
	struct mig_event queue[MIG_SYNC_QUEUE]; /* announcements, in order */
	unsigned int qhead, qlen;
	enum mig_event_kind req; /* the worker waits for its answer */
	bool req_taken, req_answered;
	int req_err;
	char req_msg[512];
	bool ended, ended_taken;
	bool cancel;
};

int mig_sync_init(struct mig_sync *s, struct qerr *e);
void mig_sync_destroy(struct mig_sync *s);
/* Worker: queue an announcement (MIG_EV_STATUS, MIG_EV_PASS). */
void mig_sync_post(struct mig_sync *s, const struct mig_event *ev);
/* Worker: ask the main thread for @req and wait; its answer, or -ECANCELED. */
int mig_sync_call(struct mig_sync *s, enum mig_event_kind req, struct qerr *e);
/* Worker: done (the last thing it does). */
void mig_sync_end(struct mig_sync *s);
/* Main: the next announcement or request. */
void mig_sync_next(struct mig_sync *s, struct mig_event *ev);
void mig_sync_answer(struct mig_sync *s, int err, const char *msg);
/* Main: make a waiting (and any later) mig_sync_call() fail. */
void mig_sync_cancel(struct mig_sync *s);
bool mig_sync_cancelled(struct mig_sync *s);

/* ---- bitmaps (one bit per page of the guest mapping) ---- */

#define MIG_BITS (8 * sizeof(unsigned long))

static inline bool mig_bit_test(const unsigned long *b, uint64_t i)
{
	return b[i / MIG_BITS] & (1UL << (i % MIG_BITS));
}

static inline void mig_bit_set(unsigned long *b, uint64_t i)
{
	b[i / MIG_BITS] |= 1UL << (i % MIG_BITS);
}

static inline size_t mig_bitmap_words(uint64_t n)
{
	return n / MIG_BITS + 1;
}

#endif
