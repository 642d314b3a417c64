// SPDX-License-Identifier: MIT
/*
 * The migration wire protocol (docs/migration.md): message framing and
 * limits, HELLO negotiation, socket I/O, the destination's state machine
 * and the worker/main-thread hand-off. Everything received is hostile:
 * a header is checked before its payload is read, and every count, index
 * and message order is checked before anything is written.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mig_internal.h"
#include "qlite/sbuf.h"
#include "qlite/stream.h"

#define RECV_STEP (1ULL * MiB) /* a large payload's buffer grows by this much as it arrives */

static const char *const status_names[] = {
	[MIG_STATUS_NONE] = "none",
	[MIG_STATUS_SETUP] = "setup",
	[MIG_STATUS_ACTIVE] = "active",
	[MIG_STATUS_COMPLETED] = "completed",
	[MIG_STATUS_FAILED] = "failed",
	[MIG_STATUS_CANCELLING] = "cancelling",
	[MIG_STATUS_CANCELLED] = "cancelled",
	[MIG_STATUS_POSTCOPY_ACTIVE] = "postcopy-active",
	[MIG_STATUS_POSTCOPY_PAUSED] = "postcopy-paused",
	[MIG_STATUS_POSTCOPY_RECOVER] = "postcopy-recover",
};

const char *mig_status_name(enum mig_status s)
{
	return (unsigned int)s < ARRAY_SIZE(status_names) ? status_names[s] : "none";
}

void mig_params_default(struct mig_params *p)
{
	memset(p, 0, sizeof(*p));
	p->max_bandwidth = MIG_DEFAULT_MAX_BANDWIDTH;
	p->downtime_limit_ms = MIG_DEFAULT_DOWNTIME_MS;
	p->prepage_pivots = MIG_DEFAULT_PREPAGE_PIVOTS;
}

/* ---- URIs ---- */

int mig_uri_parse(const char *s, struct mig_uri *u, struct qerr *e)
{
	memset(u, 0, sizeof(*u));
	u->fd = -1;
	if (!s || !*s)
		return qerr_set(e, EINVAL, "no migration URI given");
	if (!strncmp(s, "unix:", 5)) {
		size_t n = strlen(s + 5);

		if (!n)
			return qerr_set(e, EINVAL, "migration URI %s: no socket path", s);
		if (n >= sizeof(u->path))
			return qerr_set(
				e, ENAMETOOLONG,
				"migration URI %s: the socket path is too long (max %zu bytes)", s,
				sizeof(u->path) - 1);
		u->kind = MIG_URI_UNIX;
		memcpy(u->path, s + 5, n + 1);
		return 0;
	}
	if (!strncmp(s, "fd:", 3)) {
		uint64_t v;

		if (parse_uint(s + 3, 0, INT32_MAX, &v))
			return qerr_set(e, EINVAL,
					"migration URI %s: expected fd:N, a file descriptor number",
					s);
		u->kind = MIG_URI_FD;
		u->fd = (int)v;
		return 0;
	}
	if (!strncmp(s, "tcp:", 4)) {
		const char *h = s + 4, *colon, *hend;
		uint64_t port;

		if (*h == '[') {
			hend = strchr(h, ']');
			if (!hend || hend[1] != ':')
				return qerr_set(e, EINVAL,
						"migration URI %s: expected tcp:[ADDRESS]:PORT", s);
			colon = hend + 1;
			h++;
		} else {
			colon = strrchr(h, ':');
			if (!colon)
				return qerr_set(e, EINVAL,
						"migration URI %s: expected tcp:HOST:PORT", s);
			hend = colon;
			if (memchr(h, ':', (size_t)(hend - h)))
				return qerr_set(e, EINVAL,
						"migration URI %s: put an IPv6 address in "
						"brackets: tcp:[::1]:PORT",
						s);
		}
		if ((size_t)(hend - h) >= sizeof(u->host))
			return qerr_set(e, EINVAL, "migration URI %s: the host name is too long",
					s);
		if (parse_uint(colon + 1, 1, 65535, &port))
			return qerr_set(e, EINVAL, "migration URI %s: the port must be 1..65535",
					s);
		u->kind = MIG_URI_TCP;
		memcpy(u->host, h, (size_t)(hend - h));
		u->host[hend - h] = 0;
		snprintf(u->port, sizeof(u->port), "%u", (unsigned int)port);
		return 0;
	}
	return qerr_set(e, EINVAL,
			"migration URI '%.64s': expected tcp:HOST:PORT, unix:PATH or fd:N", s);
}

/* ---- messages ---- */

static const char *const msg_names[] = {
	[MIG_MSG_HELLO] = "HELLO",
	[MIG_MSG_HELLO_ACK] = "HELLO_ACK",
	[MIG_MSG_CONFIG] = "CONFIG",
	[MIG_MSG_ROUND] = "ROUND",
	[MIG_MSG_PAGES] = "PAGES",
	[MIG_MSG_ZERO] = "ZERO",
	[MIG_MSG_STATE] = "STATE",
	[MIG_MSG_END] = "END",
	[MIG_MSG_READY] = "READY",
	[MIG_MSG_GO] = "GO",
	[MIG_MSG_RUNNING] = "RUNNING",
	[MIG_MSG_ERROR] = "ERROR",
	[MIG_MSG_PAGE_REQUEST] = "PAGE_REQUEST",
	[MIG_MSG_POSTCOPY_RUN] = "POSTCOPY_RUN",
	[MIG_MSG_DISCARD] = "DISCARD",
	[MIG_MSG_MISSING] = "MISSING",
	[MIG_MSG_PC_DONE] = "PC_DONE",
};

const char *mig_msg_name(uint32_t type)
{
	return type && type < MIG_MSG_MAX ? msg_names[type] : NULL;
}

struct msg_limit {
	bool from_source, from_dest;
	uint64_t min, max;
};

static const struct msg_limit limits[MIG_MSG_MAX] = {
	[MIG_MSG_HELLO] = {true, false, MIG_HELLO_LEN, MIG_MAX_SMALL},
	[MIG_MSG_HELLO_ACK] = {false, true, MIG_ACK_LEN, MIG_MAX_SMALL},
	[MIG_MSG_CONFIG] = {true, false, 1, MIG_MAX_CONFIG},
	[MIG_MSG_ROUND] = {true, false, 12, 12},
	[MIG_MSG_PAGES] = {true, false, MIG_PAGES_HDR + MIG_PAGE,
			   MIG_PAGES_HDR + (uint64_t)MIG_RUN_MAX *MIG_PAGE},
	[MIG_MSG_ZERO] = {true, false, 16, 16},
	[MIG_MSG_STATE] = {true, false, 1, MIG_MAX_STATE},
	[MIG_MSG_END] = {true, false, 4, 4},
	[MIG_MSG_READY] = {false, true, 0, 0},
	[MIG_MSG_GO] = {true, false, 0, 0},
	[MIG_MSG_RUNNING] = {false, true, 0, 0},
	[MIG_MSG_ERROR] = {true, true, 4, 4 + MIG_MAX_ERROR},
	[MIG_MSG_PAGE_REQUEST] = {false, true, MIG_PAGE_REQ_LEN, MIG_PAGE_REQ_LEN},
	/* Longer: a later version's fields, ignored. */
	[MIG_MSG_POSTCOPY_RUN] = {true, false, MIG_PCRUN_LEN, MIG_MAX_SMALL},
	[MIG_MSG_DISCARD] = {true, false, 16, 16},
	[MIG_MSG_MISSING] = {false, true, 8, MIG_MAX_MISSING},
	[MIG_MSG_PC_DONE] = {false, true, 0, 0},
};

int mig_check_hdr(uint32_t type, uint32_t len, bool from_source, struct qerr *e)
{
	const struct msg_limit *l;

	if (!mig_msg_name(type))
		return qerr_set(e, EBADMSG, "unknown message type 0x%x", type);
	l = &limits[type];
	if (from_source ? !l->from_source : !l->from_dest)
		return qerr_set(e, EBADMSG, "message %s cannot come from the %s",
				mig_msg_name(type), from_source ? "source" : "destination");
	if (len < l->min || len > l->max)
		return qerr_set(e, EBADMSG, "message %s of %u bytes: must be %llu..%llu",
				mig_msg_name(type), len, (unsigned long long)l->min,
				(unsigned long long)l->max);
	return 0;
}

void mig_hello_encode(const struct mig_hello *h, struct sbuf *b)
{
	sbuf_put(b, MIG_MAGIC, MIG_MAGIC_LEN);
	sbuf_put_u32(b, h->vmin);
	sbuf_put_u32(b, h->vmax);
	sbuf_put_u64(b, h->features);
	sbuf_put(b, h->session, MIG_SESSION_LEN);
	sbuf_put_u32(b, h->channel);
	sbuf_put_u32(b, h->page_size);
	sbuf_put_u64(b, h->ram_pages);
}

int mig_hello_decode(const uint8_t *p, size_t len, struct mig_hello *h, struct qerr *e)
{
	struct scur c;

	if (len < MIG_MAGIC_LEN || memcmp(p, MIG_MAGIC, MIG_MAGIC_LEN))
		return qerr_set(e, EBADMSG, "not a qlite migration stream (bad magic)");
	scur_init(&c, p + MIG_MAGIC_LEN, len - MIG_MAGIC_LEN);
	h->vmin = scur_u32(&c);
	h->vmax = scur_u32(&c);
	h->features = scur_u64(&c);
	scur_get(&c, h->session, MIG_SESSION_LEN);
	h->channel = scur_u32(&c);
	h->page_size = scur_u32(&c);
	h->ram_pages = scur_u64(&c);
	/* Bytes after these are a later version's fields: ignored. */
	if (!scur_ok(&c))
		return qerr_set(e, EBADMSG, "HELLO is truncated");
	if (!h->vmin || h->vmin > h->vmax)
		return qerr_set(e, EBADMSG, "HELLO offers protocol versions %u..%u", h->vmin,
				h->vmax);
	return 0;
}

int mig_version_pick(uint32_t vmin, uint32_t vmax, uint32_t *out, struct qerr *e)
{
	if (vmax < MIG_VERSION_MIN || vmin > MIG_VERSION_MAX)
		return qerr_set(e, EPROTONOSUPPORT,
				"migration protocol version mismatch: the peer speaks %u..%u, this "
				"qlite %u..%u",
				vmin, vmax, MIG_VERSION_MIN, MIG_VERSION_MAX);
	*out = MIN(vmax, (uint32_t)MIG_VERSION_MAX);
	return 0;
}

void mig_ack_encode(uint32_t version, uint64_t features, struct sbuf *b)
{
	sbuf_put_u32(b, version);
	sbuf_put_u64(b, features);
}

int mig_ack_decode(const uint8_t *p, size_t len, uint32_t *version, uint64_t *features,
		   struct qerr *e)
{
	struct scur c;

	scur_init(&c, p, len);
	*version = scur_u32(&c);
	*features = scur_u64(&c);
	return scur_ok(&c) ? 0 : qerr_set(e, EBADMSG, "HELLO_ACK is truncated");
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void mig_page_req_encode(uint64_t first, uint32_t n, uint8_t out[MIG_PAGE_REQ_LEN])
{
	put_le(out, first, 8);
	put_le(out + 8, n, 4);
}

int mig_page_req_decode(const uint8_t *p, size_t len, uint64_t npages, uint64_t *first, uint32_t *n,
			struct qerr *e)
{
	struct scur c;

	if (len != MIG_PAGE_REQ_LEN)
		return qerr_set(e, EBADMSG, "PAGE_REQUEST of %zu bytes: must be %u", len,
				MIG_PAGE_REQ_LEN);
	scur_init(&c, p, len);
	*first = scur_u64(&c);
	*n = scur_u32(&c);
	if (!*n || *n > MIG_RUN_MAX)
		return qerr_set(e, EBADMSG, "PAGE_REQUEST for %u pages: must be 1..%u", *n,
				MIG_RUN_MAX);
	if (*first >= npages || *n > npages - *first)
		return qerr_set(e, ERANGE,
				"PAGE_REQUEST for pages %llu..+%u: the VM has %llu pages",
				(unsigned long long)*first, *n, (unsigned long long)npages);
	return 0;
}

void mig_pcrun_encode(uint32_t flags, uint64_t missing, uint8_t out[MIG_PCRUN_LEN])
{
	put_le(out, flags, 4);
	put_le(out + 4, missing, 8);
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

void mig_missing_encode(uint64_t npages, const unsigned long *bits, struct sbuf *b)
{
	sbuf_put_u64(b, npages);
	for (uint64_t w = 0; w < (npages + 63) / 64; w++) {
		uint64_t v = 0;

		for (uint64_t i = w * 64; i < npages && i < w * 64 + 64; i++)
			if (mig_bit_test(bits, i))
				v |= 1ULL << (i % 64);
		sbuf_put_u64(b, v);
	}
}

int mig_missing_decode(const uint8_t *p, size_t len, uint64_t npages, unsigned long *bits,
		       struct qerr *e)
{
	uint64_t n, words;

	if (len < 8)
		return qerr_set(e, EBADMSG, "MISSING of %zu bytes: too short", len);
	n = le64(p);
	if (n != npages)
		return qerr_set(e, EPROTO, "MISSING covers %llu pages; the VM has %llu",
				(unsigned long long)n, (unsigned long long)npages);
	words = (npages + 63) / 64;
	if ((len - 8) / 8 != words || (len - 8) % 8)
		return qerr_set(e, EBADMSG, "MISSING of %zu bytes: %llu pages need %llu", len,
				(unsigned long long)npages, (unsigned long long)(8 + 8 * words));
	memset(bits, 0, mig_bitmap_words(npages) * sizeof(*bits));
	for (uint64_t w = 0; w < words; w++) {
		uint64_t v = le64(p + 8 + 8 * w);

		for (uint64_t i = 0; i < 64 && v; i++, v >>= 1) {
			if (!(v & 1))
				continue;
			if (w * 64 + i >= npages)
				return qerr_set(e, ERANGE, "MISSING names page %llu; the VM has %llu",
						(unsigned long long)(w * 64 + i),
						(unsigned long long)npages);
			mig_bit_set(bits, w * 64 + i);
		}
	}
	return 0;
}

int mig_error_decode(const uint8_t *p, size_t len, char *text, size_t tlen)
{
	uint32_t err = 0;
	size_t i, n;

	if (len >= 4)
		err = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		      (uint32_t)p[3] << 24;
	n = len > 4 ? MIN(len - 4, tlen - 1) : 0;
	for (i = 0; i < n; i++)
		text[i] = p[4 + i] >= 0x20 && p[4 + i] < 0x7f ? (char)p[4 + i] : '?';
	text[n] = 0;
	return err > 0 && err < 4096 ? (int)err : EPROTO;
}

/* ---- connection I/O ---- */

void mig_conn_init(struct mig_conn *c, int fd, bool from_source)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->from_source = from_source;
}

void mig_conn_free(struct mig_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
	c->cap = 0;
}

int mig_send(struct mig_conn *c, uint32_t type, const void *a, size_t alen, const void *b,
	     size_t blen, struct qerr *e)
{
	uint8_t hdr[MIG_HDR_LEN];
	struct iovec iov[3] = {
		{hdr, sizeof(hdr)},
		{(void *)a, alen},
		{(void *)b, blen},
	};
	struct iovec *v = iov;
	int cnt = 3;
	size_t len = alen + blen;

	if (len > UINT32_MAX)
		return qerr_set(e, EMSGSIZE, "message %s too large", mig_msg_name(type));
	for (int i = 0; i < 4; i++) {
		hdr[i] = (uint8_t)(type >> (8 * i));
		hdr[4 + i] = (uint8_t)(len >> (8 * i));
	}
	while (cnt) {
		struct msghdr msg = {.msg_iov = v, .msg_iovlen = (size_t)cnt};
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			return qerr_set(e, err, "cannot send %s: %s", mig_msg_name(type),
					strerror(err));
		}
		c->tx_bytes += (uint64_t)n;
		while (cnt && (size_t)n >= v->iov_len) {
			n -= (ssize_t)v->iov_len;
			v++;
			cnt--;
		}
		if (cnt) {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= (size_t)n;
		}
	}
	return 0;
}

int mig_send_error(struct mig_conn *c, int errnum, const char *text)
{
	uint8_t msg[MIG_HDR_LEN + 4 + MIG_MAX_ERROR];
	size_t n = MIN(strlen(text), (size_t)MIG_MAX_ERROR);
	ssize_t r;

	for (int i = 0; i < 4; i++) {
		msg[i] = (uint8_t)(MIG_MSG_ERROR >> (8 * i));
		msg[4 + i] = (uint8_t)((4 + n) >> (8 * i));
		msg[8 + i] = (uint8_t)((uint32_t)errnum >> (8 * i));
	}
	memcpy(msg + 12, text, n);
	/* Best effort, never blocking: a peer that stopped reading must not hang us. */
	do
		r = send(c->fd, msg, 12 + n, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r > 0)
		c->tx_bytes += (uint64_t)r;
	return r == (ssize_t)(12 + n) ? 0 : -EAGAIN;
}

void mig_sock_tcp_options(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int one = 1, idle = 10, intvl = 2, cnt = 5;
	unsigned int user_timeout = 30000;

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return;
	/* READY, GO and RUNNING are tiny and time the downtime: no Nagle delay. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A peer host that vanished is noticed within a minute, not hours. */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

/* Wait until @fd is readable: 0, -ETIMEDOUT, or -errno. */
static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r;

	if (timeout_ms < 0)
		return 0;
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r ? 0 : -ETIMEDOUT;
}

/* Exactly @n bytes: 0; fewer at EOF: the count read (>= 0 and < n) via *@got; -errno. */
static int read_full(struct mig_conn *c, void *buf, size_t n, size_t *got, int timeout_ms)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r;
		int ret = wait_readable(c->fd, timeout_ms);

		if (ret) {
			*got = done;
			return ret;
		}
		r = recv(c->fd, (uint8_t *)buf + done, n - done, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			*got = done;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
		c->rx_bytes += (uint64_t)r;
	}
	*got = done;
	return 0;
}

static int ensure_cap(struct mig_conn *c, size_t need)
{
	uint8_t *p;

	if (need <= c->cap)
		return 0;
	p = realloc(c->buf, need);
	if (!p)
		return -ENOMEM;
	c->buf = p;
	c->cap = need;
	return 0;
}

int mig_recv(struct mig_conn *c, uint32_t *type, uint32_t *len, int timeout_ms, struct qerr *e)
{
	uint8_t hdr[MIG_HDR_LEN];
	const char *name;
	size_t got, done = 0;
	uint32_t t = 0, l = 0;
	int ret;

	ret = read_full(c, hdr, sizeof(hdr), &got, timeout_ms);
	if (ret == -ETIMEDOUT && !got)
		return qerr_set(e, ETIMEDOUT, "no message from the %s for %d s",
				c->from_source ? "source" : "destination", timeout_ms / 1000);
	if (ret)
		return qerr_set(e, -ret, "cannot read from the %s: %s",
				c->from_source ? "source" : "destination", strerror(-ret));
	if (got == 0)
		return qerr_set(e, ECONNRESET, "the %s closed the connection",
				c->from_source ? "source" : "destination");
	if (got < sizeof(hdr))
		return qerr_set(e, EPIPE,
				"the stream ends inside a message header (%zu of %d bytes)", got,
				MIG_HDR_LEN);
	for (int i = 0; i < 4; i++) {
		t |= (uint32_t)hdr[i] << (8 * i);
		l |= (uint32_t)hdr[4 + i] << (8 * i);
	}
	ret = mig_check_hdr(t, l, c->from_source, e);
	if (ret)
		return ret;
	name = mig_msg_name(t);
	/* Grow only as bytes arrive: a lying length costs what was actually sent. */
	while (done < l) {
		size_t step = (size_t)MIN((uint64_t)(l - done), RECV_STEP);

		if (ensure_cap(c, done + step + 1))
			return qerr_set(e, ENOMEM, "out of memory for message %s (%u bytes)", name,
					l);
		ret = read_full(c, c->buf + done, step, &got, timeout_ms);
		done += got;
		if (ret)
			return qerr_set(e, -ret, "cannot read message %s: %s", name,
					strerror(-ret));
		if (got < step)
			return qerr_set(e, EPIPE,
					"the stream ends inside message %s (%zu of %u bytes)", name,
					done, l);
	}
	if (ensure_cap(c, (size_t)l + 1))
		return qerr_set(e, ENOMEM, "out of memory");
	c->buf[l] = 0;
	*type = t;
	*len = l;
	return 0;
}

/* ---- the destination's state machine ---- */

static const char *const phase_names[] = {
	[MIG_RX_HELLO] = "start",  [MIG_RX_CONFIG] = "configuration",
	[MIG_RX_RAM] = "pre-copy", [MIG_RX_END] = "device state",
	[MIG_RX_GO] = "hand-over", [MIG_RX_POSTCOPY] = "post-copy",
	[MIG_RX_DONE] = "done",
};

const char *mig_rx_phase_name(enum mig_rx_phase ph)
{
	return ph <= MIG_RX_DONE ? phase_names[ph] : "?";
}

void mig_rx_init(struct mig_rx *rx, const struct mig_rx_ops *ops, void *opaque)
{
	memset(rx, 0, sizeof(*rx));
	rx->ops = ops;
	rx->opaque = opaque;
}

void mig_rx_free(struct mig_rx *rx)
{
	ckpt_config_free(rx->cfg_store);
	rx->cfg_store = NULL;
	free(rx->cfg_json);
	rx->cfg_json = NULL;
	ckpt_state_free(&rx->state);
	rx->have_state = false;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int rx_hello(struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e)
{
	int ret = mig_hello_decode(p, len, &rx->hello, e);

	if (ret)
		return ret;
	ret = mig_version_pick(rx->hello.vmin, rx->hello.vmax, &rx->version, e);
	if (ret)
		return ret;
	if (rx->hello.page_size != MIG_PAGE)
		return qerr_set(e, EINVAL, "the source's page size is %u; this qlite uses %u",
				rx->hello.page_size, MIG_PAGE);
	if (rx->hello.features & MIG_F_RESUME)
		return qerr_set(e, EPROTO,
				"the source resumes a post-copy migration this destination does "
				"not have");
	if (rx->hello.channel != MIG_CH_MAIN)
		return qerr_set(e, EPROTO,
				"a connection for channel %u came first: the main channel must "
				"(post-copy was not negotiated)",
				rx->hello.channel);
	/* Only what this destination can do (a post-copy destination sets it). */
	rx->features = rx->hello.features & rx->supported & MIG_F_POSTCOPY;
	rx->phase = MIG_RX_CONFIG;
	return 0;
}

static int rx_config(struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e)
{
	struct stream_reader r;
	struct stream_section s;
	struct qerr se = {0};
	int ret;

	/* Whatever an earlier, refused CONFIG left. */
	ckpt_config_free(rx->cfg_store);
	rx->cfg_store = NULL;
	free(rx->cfg_json);
	rx->cfg_json = NULL;
	stream_reader_init_mem(&r, p, len, MIG_MAX_CONFIG);
	ret = stream_open(&r, &se);
	if (!ret)
		ret = stream_next(&r, &s, &se);
	if (ret == 0)
		ret = qerr_set(&se, EINVAL, "no vm section");
	if (ret == 1 && (s.kind != STREAM_VM || s.version != CKPT_VM_VERSION)) {
		char name[STREAM_NAME_MAX];

		stream_section_name(name, sizeof(name), s.kind, s.id, s.instance);
		ret = qerr_set(&se, EINVAL,
			       "section %s (version %u) where the vm section (version %u) belongs",
			       name, s.version, CKPT_VM_VERSION);
	}
	if (ret == 1) {
		rx->cfg_json = malloc(s.len + 1);
		if (!rx->cfg_json) {
			ret = qerr_set(&se, ENOMEM, "out of memory");
		} else {
			memcpy(rx->cfg_json, s.data, s.len + 1);
			rx->cfg_len = s.len;
			ret = stream_next(&r, &s, &se);
			if (ret == 1)
				ret = qerr_set(&se, EINVAL, "more than the vm section");
		}
	}
	stream_reader_close(&r);
	if (ret < 0)
		return qerr_set(e, -ret, "CONFIG: %s", se.msg);
	ret = ckpt_config_from_json(rx->cfg_json, rx->cfg_len, &rx->cfg, &rx->cfg_store, e);
	if (ret)
		return ret;
	rx->npages = rx->cfg.mem_size / MIG_PAGE;
	if (rx->npages != rx->hello.ram_pages)
		return qerr_set(e, EINVAL, "CONFIG has %llu pages of RAM; HELLO announced %llu",
				(unsigned long long)rx->npages,
				(unsigned long long)rx->hello.ram_pages);
	ret = rx->ops->config(rx->opaque, &rx->cfg, e);
	if (ret)
		return ret;
	rx->phase = MIG_RX_RAM;
	return 0;
}

static int rx_range(struct mig_rx *rx, const char *what, uint64_t first, uint64_t n, struct qerr *e)
{
	if (!n || first >= rx->npages || n > rx->npages - first)
		return qerr_set(e, ERANGE, "%s for pages %llu..+%llu: the VM has %llu pages", what,
				(unsigned long long)first, (unsigned long long)n,
				(unsigned long long)rx->npages);
	return 0;
}

static int rx_state(struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e)
{
	struct stream_reader r;
	struct qerr se = {0};
	int ret;

	ckpt_state_free(&rx->state); /* an earlier, refused STATE's */
	stream_reader_init_mem(&r, p, len, MIG_MAX_STATE);
	ret = stream_open(&r, &se);
	if (!ret)
		ret = ckpt_state_read(&r, &rx->state, false, &se);
	stream_reader_close(&r);
	rx->have_state = true; /* whatever was read is freed with rx */
	if (ret < 0)
		return qerr_set(e, -ret, "STATE: %s", se.msg);
	if (rx->state.has_ram)
		return qerr_set(e, EINVAL, "STATE: a ram section has no place in a migration");
	if (rx->state.vm_len != rx->cfg_len || memcmp(rx->state.vm_json, rx->cfg_json, rx->cfg_len))
		return qerr_set(e, EINVAL,
				"STATE: the vm section differs from the configuration the "
				"migration began with");
	rx->phase = MIG_RX_END;
	return 0;
}

/* PAGES: [first, first + count) with count x 4 KiB after the header. */
static int rx_pages(struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e)
{
	uint64_t first = get_u64(p), n = get_u32(p + 8);
	int ret;

	if (n > MIG_RUN_MAX || len != MIG_PAGES_HDR + n * MIG_PAGE)
		return qerr_set(e, EBADMSG, "PAGES says %llu pages in %zu bytes",
				(unsigned long long)n, len);
	ret = rx_range(rx, "PAGES", first, n, e);
	if (!ret)
		ret = rx->ops->pages(rx->opaque, first, n, p + MIG_PAGES_HDR, e);
	if (!ret)
		rx->pages_data += n;
	return ret;
}

static int rx_zero(struct mig_rx *rx, const uint8_t *p, struct qerr *e)
{
	uint64_t first = get_u64(p), n = get_u64(p + 8);
	int ret = rx_range(rx, "ZERO", first, n, e);

	if (!ret)
		ret = rx->ops->pages(rx->opaque, first, n, NULL, e);
	if (!ret)
		rx->pages_zero += n;
	return ret;
}

static int rx_pcrun(struct mig_rx *rx, const uint8_t *p, struct qerr *e)
{
	uint32_t flags = get_u32(p);
	uint64_t missing = get_u64(p + 4);

	if (flags & ~MIG_END_RUN)
		return qerr_set(e, EPROTO, "POSTCOPY_RUN has unknown flags 0x%x", flags);
	if (missing > rx->npages)
		return qerr_set(e, ERANGE,
				"POSTCOPY_RUN announces %llu missing pages; the VM has %llu",
				(unsigned long long)missing, (unsigned long long)rx->npages);
	rx->run = flags & MIG_END_RUN;
	rx->postcopy = true;
	rx->missing = missing;
	/* Loading the state may fault on missing pages already: answers count from now. */
	rx->urgent_open = true;
	rx->phase = MIG_RX_GO;
	return 0;
}

int mig_rx_msg(struct mig_rx *rx, uint32_t type, const uint8_t *p, size_t len, struct qerr *e)
{
	static const uint8_t want_phase[MIG_MSG_MAX] = {
		[MIG_MSG_HELLO] = MIG_RX_HELLO, [MIG_MSG_CONFIG] = MIG_RX_CONFIG,
		[MIG_MSG_ROUND] = MIG_RX_RAM,	[MIG_MSG_PAGES] = MIG_RX_RAM,
		[MIG_MSG_ZERO] = MIG_RX_RAM,	[MIG_MSG_STATE] = MIG_RX_RAM,
		[MIG_MSG_END] = MIG_RX_END,	[MIG_MSG_GO] = MIG_RX_GO,
		[MIG_MSG_DISCARD] = MIG_RX_RAM, [MIG_MSG_POSTCOPY_RUN] = MIG_RX_END,
	};
	bool pc_push;
	uint64_t first, n;
	int ret;

	ret = mig_check_hdr(type, (uint32_t)MIN(len, (size_t)UINT32_MAX), true, e);
	if (ret)
		return ret;
	if (type == MIG_MSG_ERROR) {
		char text[MIG_MAX_ERROR + 1];
		int err = mig_error_decode(p, len, text, sizeof(text));

		return qerr_set(e, err, "the source gave up: %s", text);
	}
	if ((type == MIG_MSG_POSTCOPY_RUN || type == MIG_MSG_DISCARD) &&
	    !(rx->features & MIG_F_POSTCOPY))
		return qerr_set(e, EPROTO, "message %s, but post-copy was not negotiated",
				mig_msg_name(type));
	if (rx->phase == MIG_RX_HELLO && type != MIG_MSG_HELLO)
		return qerr_set(e, EBADMSG, "not a qlite migration stream (it starts with %s)",
				mig_msg_name(type));
	/* Post-copy's background push: pages, zero runs, then END. */
	pc_push = rx->phase == MIG_RX_POSTCOPY &&
		  (type == MIG_MSG_PAGES || type == MIG_MSG_ZERO || type == MIG_MSG_END);
	if (want_phase[type] != rx->phase && !pc_push)
		return qerr_set(e, EPROTO, "message %s out of order (during %s)",
				mig_msg_name(type), mig_rx_phase_name(rx->phase));
	switch (type) {
	case MIG_MSG_HELLO:
		return rx_hello(rx, p, len, e);
	case MIG_MSG_CONFIG:
		return rx_config(rx, p, len, e);
	case MIG_MSG_ROUND:
		if (get_u32(p) != rx->next_round)
			return qerr_set(e, EPROTO, "ROUND %u where round %u was due", get_u32(p),
					rx->next_round);
		if (get_u64(p + 4) > rx->npages)
			return qerr_set(e, ERANGE, "ROUND %u announces %llu pages; the VM has %llu",
					get_u32(p), (unsigned long long)get_u64(p + 4),
					(unsigned long long)rx->npages);
		rx->next_round++;
		rx->rounds++;
		return 0;
	case MIG_MSG_PAGES:
		return rx_pages(rx, p, len, e);
	case MIG_MSG_ZERO:
		return rx_zero(rx, p, e);
	case MIG_MSG_DISCARD:
		first = get_u64(p);
		n = get_u64(p + 8);
		ret = rx_range(rx, "DISCARD", first, n, e);
		if (!ret)
			ret = rx->ops->discard
				      ? rx->ops->discard(rx->opaque, first, n, e)
				      : qerr_set(e, ENOTSUP, "DISCARD: not supported here");
		if (!ret)
			rx->pages_discarded += n;
		return ret;
	case MIG_MSG_STATE:
		return rx_state(rx, p, len, e);
	case MIG_MSG_END:
		if (rx->phase == MIG_RX_POSTCOPY) {
			/* Everything pushed: nothing may be left to come. */
			if (get_u32(p))
				return qerr_set(e, EPROTO, "END after post-copy has flags 0x%x",
						get_u32(p));
			rx->phase = MIG_RX_DONE;
			return 0;
		}
		if (get_u32(p) & ~MIG_END_RUN)
			return qerr_set(e, EPROTO, "END has unknown flags 0x%x", get_u32(p));
		rx->run = get_u32(p) & MIG_END_RUN;
		rx->phase = MIG_RX_GO;
		return 0;
	case MIG_MSG_POSTCOPY_RUN:
		return rx_pcrun(rx, p, e);
	case MIG_MSG_GO:
		if (rx->postcopy) {
			rx->phase = MIG_RX_POSTCOPY;
		} else {
			rx->phase = MIG_RX_DONE;
		}
		return 0;
	}
	return qerr_set(e, EPROTO, "unexpected message %s", mig_msg_name(type));
}

int mig_rx_urgent_hello(const struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e)
{
	struct mig_hello h;
	int ret = mig_hello_decode(p, len, &h, e);

	if (ret)
		return ret;
	if (h.channel != MIG_CH_URGENT)
		return qerr_set(e, EPROTO,
				"a second connection for channel %u: only the urgent "
				"channel (%u) may join a migration",
				h.channel, MIG_CH_URGENT);
	if (!(rx->features & MIG_F_POSTCOPY))
		return qerr_set(e, EPROTO, "an urgent channel, but post-copy was not negotiated");
	if (memcmp(h.session, rx->hello.session, MIG_SESSION_LEN))
		return qerr_set(e, EPROTO,
				"an urgent channel for another migration (session "
				"differs)");
	if (h.vmin > rx->version || h.vmax < rx->version || h.page_size != MIG_PAGE ||
	    h.ram_pages != rx->hello.ram_pages || h.features != rx->hello.features)
		return qerr_set(e, EPROTO,
				"the urgent channel's HELLO disagrees with the main "
				"channel's (versions, page size, RAM or features)");
	return 0;
}

int mig_rx_resume_hello(const struct mig_rx *rx, const uint8_t *p, size_t len, struct qerr *e)
{
	struct mig_hello h;
	int ret = mig_hello_decode(p, len, &h, e);

	if (ret)
		return ret;
	if (!(h.features & MIG_F_RESUME))
		return qerr_set(e, EBUSY,
				"a new migration arrived while post-copy waits to be resumed "
				"(migrate with resume: true)");
	if (h.channel != MIG_CH_MAIN)
		return qerr_set(e, EPROTO,
				"a resumed post-copy starts with its main channel, not channel %u",
				h.channel);
	if (rx->phase != MIG_RX_POSTCOPY)
		return qerr_set(e, EPROTO, "nothing to resume: this migration is %s",
				mig_rx_phase_name(rx->phase));
	if (memcmp(h.session, rx->hello.session, MIG_SESSION_LEN))
		return qerr_set(e, EPROTO, "resuming another migration (session differs)");
	if (h.vmin > rx->version || h.vmax < rx->version || h.page_size != MIG_PAGE ||
	    h.ram_pages != rx->hello.ram_pages || h.features != (rx->hello.features | MIG_F_RESUME))
		return qerr_set(e, EPROTO,
				"the resumed HELLO disagrees with the first (versions, page size, "
				"RAM or features)");
	return 0;
}

int mig_rx_urgent_msg(struct mig_rx *rx, uint32_t type, const uint8_t *p, size_t len,
		      struct qerr *e)
{
	int ret = mig_check_hdr(type, (uint32_t)MIN(len, (size_t)UINT32_MAX), true, e);

	if (ret)
		return ret;
	if (type == MIG_MSG_ERROR) {
		char text[MIG_MAX_ERROR + 1];
		int err = mig_error_decode(p, len, text, sizeof(text));

		return qerr_set(e, err, "the source gave up: %s", text);
	}
	if (type != MIG_MSG_PAGES)
		return qerr_set(e, EPROTO, "message %s on the urgent channel: only PAGES may come",
				mig_msg_name(type));
	if (!rx->urgent_open)
		return qerr_set(e, EPROTO, "PAGES on the urgent channel before post-copy");
	return rx_pages(rx, p, len, e);
}

/* ---- worker <-> main thread ---- */

int mig_sync_init(struct mig_sync *s, struct qerr *e)
{
	memset(s, 0, sizeof(*s));
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0)
		return qerr_set(e, errno, "eventfd: %s", strerror(errno));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	return 0;
}

void mig_sync_destroy(struct mig_sync *s)
{
	if (s->efd < 0)
		return;
	close(s->efd);
	s->efd = -1;
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
}

static void kick(struct mig_sync *s)
{
	uint64_t one = 1;

	if (write(s->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_msg("migration: cannot wake the main thread: %s", strerror(errno));
}

void mig_sync_post(struct mig_sync *s, const struct mig_event *ev)
{
	pthread_mutex_lock(&s->lock);
	if (s->qlen < MIG_SYNC_QUEUE) {
		s->queue[(s->qhead + s->qlen) % MIG_SYNC_QUEUE] = *ev;
		s->qlen++;
	} else if (ev->kind == MIG_EV_STATUS) {
		/* Status changes matter more than passes: replace the newest pass. */
		for (unsigned int i = s->qlen; i-- > 0;) {
			struct mig_event *q = &s->queue[(s->qhead + i) % MIG_SYNC_QUEUE];

			if (q->kind == MIG_EV_PASS) {
				*q = *ev;
				break;
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	kick(s);
}

int mig_sync_call(struct mig_sync *s, enum mig_event_kind req, struct qerr *e)
{
	int ret;

	pthread_mutex_lock(&s->lock);
	if (s->cancel) {
		pthread_mutex_unlock(&s->lock);
		return qerr_set(e, ECANCELED, "cancelled");
	}
	s->req = req;
	s->req_taken = s->req_answered = false;
	s->req_err = 0;
	s->req_msg[0] = 0;
	pthread_mutex_unlock(&s->lock);
	kick(s);
	pthread_mutex_lock(&s->lock);
	while (!s->req_answered && !s->cancel)
		pthread_cond_wait(&s->cond, &s->lock);
	if (s->req_answered) {
		ret = s->req_err ? qerr_set(e, s->req_err, "%s", s->req_msg) : 0;
	} else {
		ret = qerr_set(e, ECANCELED, "cancelled");
	}
	s->req = MIG_EV_NONE;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void mig_sync_end(struct mig_sync *s)
{
	pthread_mutex_lock(&s->lock);
	s->ended = true;
	pthread_mutex_unlock(&s->lock);
	kick(s);
}

void mig_sync_next(struct mig_sync *s, struct mig_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	pthread_mutex_lock(&s->lock);
	if (s->qlen) {
		*ev = s->queue[s->qhead];
		s->qhead = (s->qhead + 1) % MIG_SYNC_QUEUE;
		s->qlen--;
	} else if (s->req != MIG_EV_NONE && !s->req_taken && !s->cancel) {
		ev->kind = s->req;
		s->req_taken = true;
	} else if (s->ended && !s->ended_taken) {
		ev->kind = MIG_EV_ENDED;
		s->ended_taken = true;
	}
	pthread_mutex_unlock(&s->lock);
}

void mig_sync_answer(struct mig_sync *s, int err, const char *msg)
{
	pthread_mutex_lock(&s->lock);
	s->req_err = err < 0 ? -err : err;
	snprintf(s->req_msg, sizeof(s->req_msg), "%s", msg ? msg : "");
	s->req_answered = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void mig_sync_cancel(struct mig_sync *s)
{
	pthread_mutex_lock(&s->lock);
	s->cancel = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

bool mig_sync_cancelled(struct mig_sync *s)
{
	bool c;

	pthread_mutex_lock(&s->lock);
	c = s->cancel;
	pthread_mutex_unlock(&s->lock);
	return c;
}
