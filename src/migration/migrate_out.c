// SPDX-License-Identifier: MIT
/*
 * The source of a live migration (migrate.h, docs/migration.md). A worker
 * connects, negotiates, sends every populated page once (round 0), then
 * rounds of what was dirtied meanwhile until the rest fits the downtime
 * limit at the measured bandwidth. Then the main thread pauses the VM and
 * captures its device state; the worker sends the last dirty pages, the
 * state and END, and hands over (READY, GO, RUNNING). Until GO is sent the
 * source can always resume; after it, only a confirmed RUNNING means done.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mig_internal.h"
#include "prepage.h"
#include "qlite/mem.h"
#include "qlite/sbuf.h"
#include "qlite/stream.h"
#include "qlite/vm.h"

#define CONNECT_TIMEOUT_MS 10000
#define ACK_TIMEOUT_MS 30000	      /* HELLO_ACK, READY, RUNNING */
#define READY_TIMEOUT_MS 60000	      /* the destination loads the state first */
#define THROTTLE_SLICE_NS 20000000ULL /* sleep at most this long between cancel checks */
#define PUSH_RUN 16u /* pages per post-copy push: small, so a new fault pivot acts soon */
#define PC_DONE_TIMEOUT_MS 60000 /* after END: the destination places the last pages */

struct mig_out {
	struct vm *vm;
	struct mig_uri uri;
	struct mig_sync sync;
	struct mig_conn conn;
	_Atomic int sock; /* for mig_out_cancel(): shutdown() unblocks the worker */
	pthread_t thread;
	bool thread_started;
	uint64_t npages;
	uint8_t session[MIG_SESSION_LEN];
	bool postcopy;
	_Atomic uint64_t max_bw, downtime_ms;
	unsigned long *dirty; /* the round's pages */
	/*
	 * Pages whose current content the destination holds: sent (as data or
	 * as zero), or zero on both sides since round 0; cleared when the dirty
	 * log says a page changed. What post-copy must still send or answer
	 * requests for is exactly the pages without a bit (plus the log's).
	 */
	unsigned long *synced;

	/* Switchover: filled on the main thread. */
	uint8_t *state;
	size_t state_len;
	bool was_running;

	/* Outcome. */
	int result;
	struct qerr err;
	bool handed_over; /* GO may have reached the destination (sync.lock) */

	/* Figures (the main thread reads them any time). */
	_Atomic int status;
	_Atomic uint64_t normal, duplicate, remaining, rounds, dirty_rate, bandwidth,
		expected_downtime_ns;
	_Atomic uint64_t setup_ns, downtime_ns, end_ns;
	uint64_t start_ns, pause_req_ns;
	uint64_t sent_bytes, sent_ns; /* pre-copy, for the bandwidth estimate */

	/* Bandwidth limit. */
	uint64_t win_start_ns, win_bytes;

	/* Post-copy. */
	bool pc_negotiated;	 /* the destination accepted MIG_F_POSTCOPY */
	_Atomic bool pc_request; /* migrate-start-postcopy */
	struct mig_conn uconn;	 /* the urgent channel: requests in, answers out */
	_Atomic int usock;
	pthread_t uthread;
	bool uthread_started;
	pthread_mutex_t pc_lock; /* pp (and the synced bits it holds) */
	struct mig_prepage pp;
	unsigned int pivots; /* x-prepage-pivots (pc_lock) */
	int uresult;
	struct qerr uerr;
	uint64_t pc_tx_start;
	_Atomic uint64_t pc_requests, pc_pushed;

	/* Recovery: a channel broke after RUNNING; migrate {resume} says where to. */
	pthread_cond_t pc_cond; /* with pc_lock */
	bool resume_req;	/* pc_lock */
	struct mig_uri resume_uri;
};

static const uint8_t zero_page[MIG_PAGE];

static void set_status(struct mig_out *j, enum mig_status s)
{
	struct mig_event ev = {.kind = MIG_EV_STATUS, .status = s};

	j->status = s;
	mig_sync_post(&j->sync, &ev);
}

/* ---- connecting ---- */

/* Non-blocking connect, waited for in slices so a cancel is noticed. */
static int connect_one(struct mig_out *j, _Atomic int *sockp, int family, const struct sockaddr *sa,
		       socklen_t len, int *out)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), err = 0;
	socklen_t elen = sizeof(err);
	int waited = 0;

	if (fd < 0)
		return -errno;
	*sockp = fd;
	if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
		err = errno;
		goto fail;
	}
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int r = poll(&p, 1, 100);

		if (mig_sync_cancelled(&j->sync)) {
			err = ECANCELED;
			goto fail;
		}
		if (r > 0)
			break;
		if (r < 0 && errno != EINTR) {
			err = errno;
			goto fail;
		}
		waited += 100;
		if (waited >= CONNECT_TIMEOUT_MS) {
			err = ETIMEDOUT;
			goto fail;
		}
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		err = errno;
	if (err)
		goto fail;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	*out = fd;
	return 0;
fail:
	*sockp = -1;
	close(fd);
	return -err;
}

/* @c on @sockp (the main or the urgent channel's). */
static int out_connect(struct mig_out *j, struct mig_conn *c, _Atomic int *sockp, struct qerr *e)
{
	int fd = -1, ret;

	switch (j->uri.kind) {
	case MIG_URI_FD:
		fd = j->uri.fd;
		j->uri.fd = -1; /* the connection owns it now */
		*sockp = fd;
		mig_sock_tcp_options(fd);
		break;
	case MIG_URI_UNIX: {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};

		memcpy(sa.sun_path, j->uri.path, sizeof(j->uri.path));
		ret = connect_one(j, sockp, AF_UNIX, (struct sockaddr *)&sa, sizeof(sa), &fd);
		if (ret)
			return qerr_set(e, -ret, "cannot connect to %s: %s", j->uri.path,
					strerror(-ret));
		break;
	}
	case MIG_URI_TCP: {
		struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
		struct addrinfo *res, *ai;

		ret = getaddrinfo(j->uri.host, j->uri.port, &hints, &res);
		if (ret)
			return qerr_set(e, EHOSTUNREACH, "cannot resolve %s: %s", j->uri.host,
					gai_strerror(ret));
		ret = -EHOSTUNREACH;
		for (ai = res; ai && ret; ai = ai->ai_next)
			ret = connect_one(j, sockp, ai->ai_family, ai->ai_addr, ai->ai_addrlen,
					  &fd);
		freeaddrinfo(res);
		if (ret)
			return qerr_set(e, -ret, "cannot connect to %s:%s: %s", j->uri.host,
					j->uri.port, strerror(-ret));
		mig_sock_tcp_options(fd);
		break;
	}
	}
	mig_conn_init(c, fd, false);
	if (mig_sync_cancelled(&j->sync))
		return qerr_set(e, ECANCELED, "cancelled");
	return 0;
}

/* ---- sending ---- */

/*
 * A failed send usually means the destination gave up: if it said why
 * (an ERROR message waiting), that is the better message.
 */
static int peer_reason(struct mig_out *j, int ret, struct qerr *e)
{
	struct pollfd p = {.fd = j->conn.fd, .events = POLLIN};
	struct qerr re = {0};
	uint32_t type, len;

	if (mig_sync_cancelled(&j->sync))
		return qerr_set(e, ECANCELED, "cancelled");
	if (poll(&p, 1, 1000) > 0 && !mig_recv(&j->conn, &type, &len, 1000, &re) &&
	    type == MIG_MSG_ERROR) {
		char text[MIG_MAX_ERROR + 1];
		int err = mig_error_decode(j->conn.buf, len, text, sizeof(text));

		return qerr_set(e, err, "the destination failed: %s", text);
	}
	return qerr_set(e, -ret, "the connection to the destination broke: %s", strerror(-ret));
}

static int out_send(struct mig_out *j, uint32_t type, const void *a, size_t alen, const void *b,
		    size_t blen, struct qerr *e)
{
	struct qerr se = {0};
	int ret;

	if (mig_sync_cancelled(&j->sync))
		return qerr_set(e, ECANCELED, "cancelled");
	ret = mig_send(&j->conn, type, a, alen, b, blen, &se);
	return ret ? peer_reason(j, ret, e) : 0;
}

/* Keep pre-copy under max-bandwidth (read each time: it may change meanwhile). */
static void throttle(struct mig_out *j, uint64_t bytes)
{
	uint64_t bw = j->max_bw, now = time_now_ns(), due_ns, elapsed;

	if (!bw)
		return;
	if (!j->win_start_ns || now - j->win_start_ns > 1000000000ULL) {
		j->win_start_ns = now;
		j->win_bytes = 0;
	}
	j->win_bytes += bytes;
	due_ns = (uint64_t)((double)j->win_bytes * 1e9 / (double)bw);
	for (;;) {
		elapsed = time_now_ns() - j->win_start_ns;
		if (elapsed >= due_ns || mig_sync_cancelled(&j->sync))
			return;
		{
			uint64_t ns = MIN(due_ns - elapsed, THROTTLE_SLICE_NS);
			struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ns};

			nanosleep(&ts, NULL);
		}
	}
}

static int send_pages(struct mig_out *j, uint64_t first, uint64_t n, bool limit, struct qerr *e)
{
	uint8_t hdr[MIG_PAGES_HDR];
	uint64_t p;
	int ret;

	for (int i = 0; i < 8; i++)
		hdr[i] = (uint8_t)(first >> (8 * i));
	for (int i = 0; i < 4; i++)
		hdr[8 + i] = (uint8_t)(n >> (8 * i));
	ret = out_send(j, MIG_MSG_PAGES, hdr, sizeof(hdr), j->vm->mem.base + first * MIG_PAGE,
		       n * MIG_PAGE, e);
	if (ret)
		return ret;
	for (p = first; p < first + n; p++)
		mig_bit_set(j->synced, p);
	j->normal += n;
	if (limit)
		throttle(j, n * MIG_PAGE + MIG_PAGES_HDR + MIG_HDR_LEN);
	return 0;
}

static int send_zero(struct mig_out *j, uint64_t first, uint64_t n, struct qerr *e)
{
	uint8_t msg[16];
	uint64_t p;

	for (int i = 0; i < 8; i++) {
		msg[i] = (uint8_t)(first >> (8 * i));
		msg[8 + i] = (uint8_t)(n >> (8 * i));
	}
	for (p = first; p < first + n; p++)
		mig_bit_set(j->synced, p);
	j->duplicate += n;
	return out_send(j, MIG_MSG_ZERO, msg, sizeof(msg), NULL, 0, e);
}

static int send_round_msg(struct mig_out *j, uint32_t round, uint64_t pages, struct qerr *e)
{
	uint8_t msg[12];
	struct mig_event ev = {.kind = MIG_EV_PASS, .pass = round + 1};

	for (int i = 0; i < 4; i++)
		msg[i] = (uint8_t)(round >> (8 * i));
	for (int i = 0; i < 8; i++)
		msg[4 + i] = (uint8_t)(pages >> (8 * i));
	j->rounds = round + 1;
	mig_sync_post(&j->sync, &ev);
	return out_send(j, MIG_MSG_ROUND, msg, sizeof(msg), NULL, 0, e);
}

/*
 * A page that reads as zero. A memfd page the balloon gave back is a hole:
 * reading it through the mapping would allocate it, so ask the file.
 */
static bool page_is_zero(const struct guest_mem *m, uint64_t p)
{
	const uint64_t *w = (const uint64_t *)(m->base + p * MIG_PAGE);

	if (m->backend == MEM_BACKEND_MEMFD && mem_page_discarded(m, p)) {
		off_t off = lseek(m->memfd, (off_t)(p * MIG_PAGE), SEEK_DATA);

		if (off < 0 || (uint64_t)off >= (p + 1) * MIG_PAGE)
			return true;
	}
	return !w[0] && !memcmp(w, zero_page, MIG_PAGE);
}

/*
 * Send the pages in @set: data in runs of up to MIG_RUN_MAX, zero pages
 * as ZERO markers (round 0: not at all, the destination's memory is
 * fresh). j->remaining counts down as they go.
 */
static int send_set(struct mig_out *j, const unsigned long *set, bool round0, bool limit,
		    struct qerr *e)
{
	const struct guest_mem *m = &j->vm->mem;
	uint64_t p, run = 0, run_first = 0, zrun = 0, zfirst = 0;
	int ret = 0;

	for (p = 0; p < j->npages && !ret; p++) {
		if (!(set[p / MIG_BITS])) {
			p = ALIGN_UP(p + 1, (uint64_t)MIG_BITS) - 1; /* a whole empty word */
			continue;
		}
		if (!mig_bit_test(set, p))
			continue;
		if (page_is_zero(m, p)) {
			if (run) {
				ret = send_pages(j, run_first, run, limit, e);
				run = 0;
			}
			if (round0) {
				j->duplicate++;
				mig_bit_set(j->synced, p); /* the destination's is zero too */
			} else if (zrun && zfirst + zrun == p) {
				zrun++;
			} else {
				if (zrun && !ret)
					ret = send_zero(j, zfirst, zrun, e);
				zfirst = p;
				zrun = 1;
			}
		} else {
			if (zrun) {
				ret = send_zero(j, zfirst, zrun, e);
				zrun = 0;
			}
			if (run && run_first + run == p && run < MIG_RUN_MAX) {
				run++;
			} else {
				if (run && !ret)
					ret = send_pages(j, run_first, run, limit, e);
				run_first = p;
				run = 1;
			}
		}
		if (j->remaining)
			j->remaining--;
	}
	if (!ret && run)
		ret = send_pages(j, run_first, run, limit, e);
	if (!ret && zrun)
		ret = send_zero(j, zfirst, zrun, e);
	return ret;
}

/* Bits set among the first @npages (the last word's tail does not count). */
static uint64_t popcount(const unsigned long *b, uint64_t npages)
{
	uint64_t n = 0, full = npages / MIG_BITS, w;

	for (w = 0; w < full; w++)
		n += (uint64_t)__builtin_popcountl(b[w]);
	if (npages % MIG_BITS)
		n += (uint64_t)__builtin_popcountl(b[full] & ((1UL << (npages % MIG_BITS)) - 1));
	return n;
}

/* What the guest and the VMM wrote since the last call, into j->dirty (@keep: added). */
static int collect_dirty(struct mig_out *j, bool keep, struct qerr *e)
{
	struct guest_mem *m = &j->vm->mem;
	size_t w, nw = mig_bitmap_words(j->npages);
	int ret;

	if (!keep)
		memset(j->dirty, 0, nw * sizeof(unsigned long));
	ret = vm_dirty_log_collect(j->vm, j->dirty, e);
	if (ret)
		return ret;
	for (w = 0; w < nw; w++)
		j->dirty[w] |= __atomic_exchange_n(&m->dirty[w], 0, __ATOMIC_RELAXED);
	/* Bits past the end of RAM (the last word's tail) mean nothing. */
	if (j->npages % MIG_BITS)
		j->dirty[nw - 1] &= (1UL << (j->npages % MIG_BITS)) - 1;
	else
		j->dirty[nw - 1] = 0;
	for (w = 0; w < nw; w++)
		j->synced[w] &= ~j->dirty[w];
	return 0;
}

/* Between rounds: did the destination give up (an ERROR, or a closed socket)? */
static int check_peer(struct mig_out *j, struct qerr *e)
{
	struct pollfd p = {.fd = j->conn.fd, .events = POLLIN};
	uint32_t type, len;
	int ret;

	if (poll(&p, 1, 0) <= 0)
		return 0;
	ret = mig_recv(&j->conn, &type, &len, 1000, e);
	if (ret)
		return ret;
	if (type == MIG_MSG_ERROR) {
		char text[MIG_MAX_ERROR + 1];
		int err = mig_error_decode(j->conn.buf, len, text, sizeof(text));

		return qerr_set(e, err, "the destination failed: %s", text);
	}
	return qerr_set(e, EPROTO, "the destination sent %s during pre-copy", mig_msg_name(type));
}

/*
 * Wait for @want from the destination; its ERROR (*@refused set, if given)
 * or anything else fails.
 */
static int expect(struct mig_out *j, uint32_t want, int timeout_ms, bool *refused, struct qerr *e)
{
	uint32_t type, len;
	int ret = mig_recv(&j->conn, &type, &len, timeout_ms, e);

	if (ret)
		return ret;
	if (type == MIG_MSG_ERROR) {
		if (refused)
			*refused = true;
		char text[MIG_MAX_ERROR + 1];
		int err = mig_error_decode(j->conn.buf, len, text, sizeof(text));

		return qerr_set(e, err, "the destination failed: %s", text);
	}
	if (type != want)
		return qerr_set(e, EPROTO, "the destination sent %s where %s was due",
				mig_msg_name(type), mig_msg_name(want));
	return 0;
}

/*
 * GO, then wait for RUNNING. Past GO the destination may run the VM: the
 * source never resumes unasked, unless the destination refuses (it sends
 * that only if nothing runs there).
 */
static int hand_over(struct mig_out *j, bool postcopy, struct qerr *e)
{
	struct qerr he = { 0 };
	bool refused = false;
	int ret;

	pthread_mutex_lock(&j->sync.lock);
	if (j->sync.cancel) {
		pthread_mutex_unlock(&j->sync.lock);
		return qerr_set(e, ECANCELED, "cancelled");
	}
	j->handed_over = true;
	pthread_mutex_unlock(&j->sync.lock);
	ret = mig_send(&j->conn, MIG_MSG_GO, NULL, 0, NULL, 0, &he);
	if (!ret)
		ret = expect(j, MIG_MSG_RUNNING, ACK_TIMEOUT_MS, &refused, &he);
	if (ret && refused) {
		pthread_mutex_lock(&j->sync.lock);
		j->handed_over = false;
		pthread_mutex_unlock(&j->sync.lock);
		return qerr_set(e, -ret, "%s", he.msg);
	}
	if (ret && postcopy)
		return qerr_set(e, -ret,
				"the VM was handed over (post-copy) but the destination did not "
				"confirm it runs it (%s); it stays paused here",
				he.msg);
	if (ret)
		return qerr_set(e, -ret,
				"the VM was handed over but the destination did not confirm it "
				"runs it (%s); it stays paused here: resume it ('cont') only if "
				"the destination is not running it",
				he.msg);
	return 0;
}


static int handshake(struct mig_out *j, struct qerr *e)
{
	struct mig_hello h = {
		.vmin = MIG_VERSION_MIN,
		.vmax = MIG_VERSION_MAX,
		.features = j->postcopy ? MIG_F_POSTCOPY : 0,
		.channel = MIG_CH_MAIN,
		.page_size = MIG_PAGE,
		.ram_pages = j->npages,
	};
	struct stream_writer w;
	struct sbuf b;
	uint32_t version;
	uint64_t features;
	char *json = NULL;
	int ret, fd;

	memcpy(h.session, j->session, MIG_SESSION_LEN);
	sbuf_init(&b);
	mig_hello_encode(&h, &b);
	ret = sbuf_status(&b) ? qerr_set(e, ENOMEM, "out of memory")
			      : out_send(j, MIG_MSG_HELLO, b.data, b.len, NULL, 0, e);
	sbuf_free(&b);
	if (ret)
		return ret;
	ret = expect(j, MIG_MSG_HELLO_ACK, ACK_TIMEOUT_MS, NULL, e);
	if (ret)
		return ret;
	ret = mig_ack_decode(j->conn.buf, MIG_ACK_LEN, &version, &features, e);
	if (ret)
		return ret;
	if (version < MIG_VERSION_MIN || version > MIG_VERSION_MAX)
		return qerr_set(
			e, EPROTONOSUPPORT,
			"the destination chose protocol version %u; this qlite speaks %u..%u",
			version, MIG_VERSION_MIN, MIG_VERSION_MAX);
	if (features & ~h.features)
		return qerr_set(e, EPROTO,
				"the destination accepted features 0x%llx it was not offered",
				(unsigned long long)features);
	j->pc_negotiated = features & MIG_F_POSTCOPY;
	/* CONFIG: the VM section alone, as a state stream of its own. */
	fd = memfd_create("qlite-mig-config", MFD_CLOEXEC);
	if (fd < 0)
		return qerr_set(e, errno, "memfd_create: %s", strerror(errno));
	json = ckpt_config_to_json(&j->vm->cfg);
	stream_writer_init(&w, fd);
	ret = json ? stream_begin(&w, e) : qerr_set(e, ENOMEM, "out of memory");
	if (!ret)
		ret = stream_put(&w, STREAM_VM, "vm", 0, CKPT_VM_VERSION, json, strlen(json), e);
	if (!ret)
		ret = stream_finish(&w, e);
	free(json);
	if (!ret && w.bytes > MIG_MAX_CONFIG)
		ret = qerr_set(e, EFBIG, "the VM configuration is too large (%llu bytes)",
			       (unsigned long long)w.bytes);
	if (!ret) {
		uint8_t *buf = malloc(w.bytes);

		if (!buf)
			ret = qerr_set(e, ENOMEM, "out of memory");
		else if (pread(fd, buf, w.bytes, 0) != (ssize_t)w.bytes)
			ret = qerr_set(e, EIO, "cannot read the configuration back");
		else
			ret = out_send(j, MIG_MSG_CONFIG, buf, w.bytes, NULL, 0, e);
		free(buf);
	}
	close(fd);
	return ret;
}

/* Round 0: every populated page, once; the dirty log catches what changes meanwhile. */
static int round0(struct mig_out *j, struct qerr *e)
{
	unsigned long *pop;
	uint64_t n;
	int ret;

	/* Writes before now are in what round 0 reads: drop the old log. */
	ret = collect_dirty(j, false, e);
	if (ret)
		return ret;
	pop = ckpt_find_populated(&j->vm->mem, j->npages);
	if (!pop)
		return qerr_set(e, ENOMEM, "out of memory");
	n = popcount(pop, j->npages);
	/* Never populated: zero on both sides, nothing to send. */
	j->duplicate += j->npages - n;
	for (size_t w = 0; w < mig_bitmap_words(j->npages); w++)
		j->synced[w] = ~pop[w];
	j->remaining = n;
	ret = send_round_msg(j, 0, n, e);
	if (!ret)
		ret = send_set(j, pop, true, true, e);
	free(pop);
	return ret;
}

static void update_estimates(struct mig_out *j, uint64_t dirty, uint64_t round_ns)
{
	uint64_t bw;

	j->sent_bytes = j->conn.tx_bytes;
	j->sent_ns = time_now_ns() - j->setup_ns - j->start_ns;
	bw = j->sent_ns ? (uint64_t)((double)j->sent_bytes * 1e9 / (double)j->sent_ns) : 0;
	if (!bw)
		bw = j->max_bw ? j->max_bw : 1 * GiB;
	j->bandwidth = bw;
	j->dirty_rate = round_ns ? (uint64_t)((double)dirty * 1e9 / (double)round_ns) : 0;
	j->expected_downtime_ns = (uint64_t)((double)dirty * MIG_PAGE * 1e9 / (double)bw);
}

static int precopy(struct mig_out *j, uint32_t *round, bool *pc, struct qerr *e)
{
	uint64_t t0 = time_now_ns();
	int ret = round0(j, e);

	while (!ret) {
		uint64_t n, now;

		/* After round 0 at least: post-copy then starts from every populated page. */
		if (j->pc_request) {
			if (!j->pc_negotiated)
				return qerr_set(e, EOPNOTSUPP,
						"post-copy was requested, but the destination does "
						"not support it");
			*pc = true;
			return 0;
		}
		ret = collect_dirty(j, false, e);
		if (ret)
			break;
		now = time_now_ns();
		n = popcount(j->dirty, j->npages);
		j->remaining = n;
		update_estimates(j, n, now - t0);
		t0 = now;
		/* Fits the pause allowed at the rate we get: switch over (this set is redone then).
		 */
		if (j->expected_downtime_ns <= j->downtime_ms * 1000000ULL)
			break;
		ret = check_peer(j, e);
		if (!ret)
			ret = send_round_msg(j, ++*round, n, e);
		if (!ret)
			ret = send_set(j, j->dirty, false, true, e);
	}
	return ret;
}

static int switchover(struct mig_out *j, uint32_t round, struct qerr *e)
{
	uint8_t flags[4] = {0};
	uint64_t n;
	int ret;

	j->pause_req_ns = time_now_ns();
	ret = mig_sync_call(&j->sync, MIG_EV_SWITCHOVER, e);
	if (ret)
		return ret;
	/* Paused: the logs are complete now; the set that fitted is still to send. */
	ret = collect_dirty(j, true, e);
	if (ret)
		return ret;
	n = popcount(j->dirty, j->npages);
	j->remaining = n;
	ret = send_round_msg(j, round + 1, n, e);
	if (!ret)
		ret = send_set(j, j->dirty, false, false, e);
	/* Paused and all sent: every page must be in sync now, or the bookkeeping is wrong. */
	if (!ret && (n = popcount(j->synced, j->npages)) != j->npages)
		ret = qerr_set(e, EIO, "internal error: %llu pages never reached the destination",
			       (unsigned long long)(j->npages - n));
	if (!ret)
		ret = out_send(j, MIG_MSG_STATE, j->state, j->state_len, NULL, 0, e);
	flags[0] = j->was_running ? MIG_END_RUN : 0;
	if (!ret)
		ret = out_send(j, MIG_MSG_END, flags, sizeof(flags), NULL, 0, e);
	if (!ret)
		ret = expect(j, MIG_MSG_READY, READY_TIMEOUT_MS, NULL, e);
	if (ret)
		return ret;
	ret = hand_over(j, false, e);
	if (ret)
		return ret;
	j->downtime_ns = time_now_ns() - j->pause_req_ns;
	return 0;
}

/* ---- post-copy ---- */

static int pages_msg_send(struct mig_conn *c, uint64_t first, uint64_t n, const uint8_t *data,
			  struct qerr *e)
{
	uint8_t hdr[MIG_PAGES_HDR];

	for (int i = 0; i < 8; i++)
		hdr[i] = (uint8_t)(first >> (8 * i));
	for (int i = 0; i < 4; i++)
		hdr[8 + i] = (uint8_t)(n >> (8 * i));
	return mig_send(c, MIG_MSG_PAGES, hdr, sizeof(hdr), data, n * MIG_PAGE, e);
}

/* The urgent channel: a HELLO naming channel 1 and this session, and its HELLO_ACK. */
static int urgent_connect(struct mig_out *j, struct qerr *e)
{
	struct mig_hello h = {
		.vmin = MIG_VERSION_MIN,
		.vmax = MIG_VERSION_MAX,
		.features = MIG_F_POSTCOPY,
		.channel = MIG_CH_URGENT,
		.page_size = MIG_PAGE,
		.ram_pages = j->npages,
	};
	struct sbuf b;
	uint32_t type, len, version;
	uint64_t features;
	int ret;

	ret = out_connect(j, &j->uconn, &j->usock, e);
	if (ret)
		return qerr_set(e, -ret, "the urgent channel: %s", e->msg);
	memcpy(h.session, j->session, MIG_SESSION_LEN);
	sbuf_init(&b);
	mig_hello_encode(&h, &b);
	ret = sbuf_status(&b) ? qerr_set(e, ENOMEM, "out of memory")
			      : mig_send(&j->uconn, MIG_MSG_HELLO, b.data, b.len, NULL, 0, e);
	sbuf_free(&b);
	if (!ret)
		ret = mig_recv(&j->uconn, &type, &len, ACK_TIMEOUT_MS, e);
	if (ret)
		return qerr_set(e, -ret, "the urgent channel: %s", e->msg);
	if (type == MIG_MSG_ERROR) {
		char text[MIG_MAX_ERROR + 1];
		int err = mig_error_decode(j->uconn.buf, len, text, sizeof(text));

		return qerr_set(e, err, "the destination refused the urgent channel: %s", text);
	}
	if (type != MIG_MSG_HELLO_ACK)
		return qerr_set(e, EPROTO, "the destination sent %s on the urgent channel",
				mig_msg_name(type));
	ret = mig_ack_decode(j->uconn.buf, len, &version, &features, e);
	if (!ret && !(features & MIG_F_POSTCOPY))
		ret = qerr_set(e, EPROTO, "the urgent channel's HELLO_ACK lacks post-copy");
	return ret;
}

/*
 * The urgent channel's thread: each PAGE_REQUEST is answered at once with
 * the pages (the VM is paused here: they are final), ahead of the push on
 * the main channel, and becomes the push's newest pivot. Ends when the
 * destination closes the channel (it has every page) or it breaks.
 */
static void *urgent_main(void *opaque)
{
	struct mig_out *j = opaque;
	struct qerr *e = &j->uerr;
	int ret;

	pthread_setname_np(pthread_self(), "mig-urgent");
	for (;;) {
		uint32_t type, len, n;
		uint64_t first;

		ret = mig_recv(&j->uconn, &type, &len, -1, e);
		if (ret == -ECONNRESET) {
			ret = 0; /* closed at a message boundary: done */
			break;
		}
		if (ret)
			break;
		if (type == MIG_MSG_ERROR) {
			char text[MIG_MAX_ERROR + 1];
			int err = mig_error_decode(j->uconn.buf, len, text, sizeof(text));

			ret = qerr_set(e, err, "the destination failed: %s", text);
			break;
		}
		if (type != MIG_MSG_PAGE_REQUEST) {
			ret = qerr_set(e, EPROTO, "the destination sent %s on the urgent channel",
				       mig_msg_name(type));
			break;
		}
		ret = mig_page_req_decode(j->uconn.buf, len, j->npages, &first, &n, e);
		if (ret)
			break;
		pthread_mutex_lock(&j->pc_lock);
		mig_prepage_fault(&j->pp, first);
		for (uint32_t i = 0; i < n; i++)
			mig_prepage_mark(&j->pp, first + i);
		pthread_mutex_unlock(&j->pc_lock);
		ret = pages_msg_send(&j->uconn, first, n, j->vm->mem.base + first * MIG_PAGE, e);
		if (ret)
			break;
		j->pc_requests++;
	}
	j->uresult = ret;
	if (ret && j->sock >= 0)
		shutdown(j->sock, SHUT_RDWR); /* the push pauses too (post-copy recovery) */
	return NULL;
}

/* One pushed run [first, first + n): zero pages as ZERO runs, the rest as PAGES. */
static int push_run(struct mig_out *j, uint64_t first, uint64_t n, struct qerr *e)
{
	const struct guest_mem *m = &j->vm->mem;
	uint64_t p = first, end = first + n;
	int ret = 0;

	while (p < end && !ret) {
		bool zero = page_is_zero(m, p);
		uint64_t q = p + 1;

		while (q < end && page_is_zero(m, q) == zero)
			q++;
		if (zero) {
			uint8_t msg[16];

			for (int i = 0; i < 8; i++) {
				msg[i] = (uint8_t)(p >> (8 * i));
				msg[8 + i] = (uint8_t)((q - p) >> (8 * i));
			}
			ret = out_send(j, MIG_MSG_ZERO, msg, sizeof(msg), NULL, 0, e);
			j->duplicate += q - p;
		} else {
			struct qerr se = {0};

			ret = pages_msg_send(&j->conn, p, q - p, m->base + p * MIG_PAGE, &se);
			if (ret)
				ret = peer_reason(j, ret, e);
			j->normal += q - p;
		}
		p = q;
	}
	return ret;
}

/* Tell the destination which pages it lacks (or holds stale): DISCARD runs. */
static int send_discards(struct mig_out *j, uint64_t *missing, struct qerr *e)
{
	uint64_t p = 0;
	int ret = 0;

	*missing = 0;
	while (p < j->npages && !ret) {
		uint64_t q;
		uint8_t msg[16];

		if (mig_bit_test(j->synced, p)) {
			p++;
			continue;
		}
		for (q = p + 1; q < j->npages && !mig_bit_test(j->synced, q); q++)
			;
		for (int i = 0; i < 8; i++) {
			msg[i] = (uint8_t)(p >> (8 * i));
			msg[8 + i] = (uint8_t)((q - p) >> (8 * i));
		}
		ret = out_send(j, MIG_MSG_DISCARD, msg, sizeof(msg), NULL, 0, e);
		*missing += q - p;
		p = q;
	}
	return ret;
}

/*
 * Switch to post-copy: connect the urgent channel, pause, send DISCARD for
 * every page not in sync, the state, POSTCOPY_RUN; hand over (READY, GO,
 * RUNNING), then push the rest in pre-paging order while the urgent
 * thread answers requests; END, and done when the destination closes.
 */
static int pc_push(struct mig_out *j, struct qerr *e);

static int postcopy(struct mig_out *j, struct qerr *e)
{
	uint8_t run[MIG_PCRUN_LEN];
	uint64_t missing;
	int ret;

	ret = urgent_connect(j, e);
	if (ret)
		return ret;
	j->pause_req_ns = time_now_ns();
	ret = mig_sync_call(&j->sync, MIG_EV_SWITCHOVER, e);
	if (ret)
		return ret;
	ret = collect_dirty(j, false, e);
	if (!ret)
		ret = send_discards(j, &missing, e);
	if (ret)
		return ret;
	j->remaining = missing;
	pthread_mutex_lock(&j->pc_lock);
	mig_prepage_init(&j->pp, j->npages, j->synced);
	mig_prepage_set_pivots(&j->pp, j->pivots);
	pthread_mutex_unlock(&j->pc_lock);
	/* Loading the state there may fault already: answer from now on. */
	if (pthread_create(&j->uthread, NULL, urgent_main, j))
		return qerr_set(e, EAGAIN, "cannot start the urgent channel's thread");
	j->uthread_started = true;
	ret = out_send(j, MIG_MSG_STATE, j->state, j->state_len, NULL, 0, e);
	mig_pcrun_encode(j->was_running ? MIG_END_RUN : 0, missing, run);
	if (!ret)
		ret = out_send(j, MIG_MSG_POSTCOPY_RUN, run, sizeof(run), NULL, 0, e);
	if (!ret)
		ret = expect(j, MIG_MSG_READY, READY_TIMEOUT_MS, NULL, e);
	if (ret)
		return ret;
	ret = hand_over(j, true, e);
	if (ret)
		return ret;
	j->downtime_ns = time_now_ns() - j->pause_req_ns;
	j->pc_tx_start = j->conn.tx_bytes + j->uconn.tx_bytes;
	set_status(j, MIG_STATUS_POSTCOPY_ACTIVE);
	return pc_push(j, e);
}

/* Push what the destination lacks, END, and wait for it to close. */
static int pc_push(struct mig_out *j, struct qerr *e)
{
	struct qerr he = {0};
	int ret;

	for (;;) {
		uint64_t first, n;

		pthread_mutex_lock(&j->pc_lock);
		n = mig_prepage_next(&j->pp, PUSH_RUN, &first);
		j->remaining = mig_prepage_left(&j->pp);
		pthread_mutex_unlock(&j->pc_lock);
		if (!n)
			break;
		ret = push_run(j, first, n, e);
		if (ret)
			return ret;
		j->pc_pushed += n;
	}
	{
		uint8_t flags[4] = {0};
		uint32_t type, len;

		ret = out_send(j, MIG_MSG_END, flags, sizeof(flags), NULL, 0, e);
		if (ret)
			return ret;
		/* PC_DONE once every page is in place (a bare close may be a broken link). */
		ret = mig_recv(&j->conn, &type, &len, PC_DONE_TIMEOUT_MS, &he);
		if (!ret && type == MIG_MSG_PC_DONE)
			return 0;
		if (!ret && type == MIG_MSG_ERROR) {
			char text[MIG_MAX_ERROR + 1];
			int err = mig_error_decode(j->conn.buf, len, text, sizeof(text));

			return qerr_set(e, err, "the destination failed in post-copy: %s", text);
		}
		return qerr_set(e, ret ? -ret : EPROTO, "after the last page: %s",
				ret ? he.msg : "the destination sent a message other than PC_DONE");
	}
}

/* The urgent thread, once the main channel is done (or failed). */
static int urgent_stop(struct mig_out *j, bool wait, struct qerr *e)
{
	if (!j->uthread_started)
		return 0;
	if (!wait && j->usock >= 0)
		shutdown(j->usock, SHUT_RDWR);
	pthread_join(j->uthread, NULL);
	j->uthread_started = false;
	if (wait && j->uresult)
		return qerr_set(e, j->uerr.errnum ? j->uerr.errnum : -j->uresult, "%s",
				j->uerr.msg);
	return 0;
}

/* The resumed main channel: HELLO (MIG_F_RESUME, this session), HELLO_ACK, MISSING. */
static int pc_reconnect(struct mig_out *j, struct qerr *e)
{
	struct mig_hello h = {
		.vmin = MIG_VERSION_MIN,
		.vmax = MIG_VERSION_MAX,
		.features = MIG_F_POSTCOPY | MIG_F_RESUME,
		.channel = MIG_CH_MAIN,
		.page_size = MIG_PAGE,
		.ram_pages = j->npages,
	};
	unsigned long *lack = NULL;
	uint32_t version, type, len;
	uint64_t features, n = 0;
	struct sbuf b;
	int ret;

	ret = out_connect(j, &j->conn, &j->sock, e);
	if (ret)
		return ret;
	memcpy(h.session, j->session, MIG_SESSION_LEN);
	sbuf_init(&b);
	mig_hello_encode(&h, &b);
	ret = sbuf_status(&b) ? qerr_set(e, ENOMEM, "out of memory")
			      : out_send(j, MIG_MSG_HELLO, b.data, b.len, NULL, 0, e);
	sbuf_free(&b);
	if (!ret)
		ret = expect(j, MIG_MSG_HELLO_ACK, ACK_TIMEOUT_MS, NULL, e);
	if (!ret)
		ret = mig_ack_decode(j->conn.buf, MIG_ACK_LEN, &version, &features, e);
	if (!ret && (features & ~h.features || !(features & MIG_F_RESUME)))
		ret = qerr_set(e, EPROTO, "the destination answered a resume with features 0x%llx",
			       (unsigned long long)features);
	if (!ret)
		ret = mig_recv(&j->conn, &type, &len, ACK_TIMEOUT_MS, e);
	if (ret)
		return ret;
	if (type != MIG_MSG_MISSING)
		return qerr_set(e, EPROTO, "the destination sent %s where MISSING was due",
				mig_msg_name(type));
	lack = malloc(mig_bitmap_words(j->npages) * sizeof(*lack));
	if (!lack)
		return qerr_set(e, ENOMEM, "out of memory");
	ret = mig_missing_decode(j->conn.buf, len, j->npages, lack, e);
	if (!ret) {
		/* Sent but lost with the link (or never sent): they go again. */
		pthread_mutex_lock(&j->pc_lock);
		for (uint64_t p = 0; p < j->npages; p++)
			if (mig_bit_test(lack, p) && mig_prepage_unmark(&j->pp, p))
				n++;
		j->remaining = mig_prepage_left(&j->pp);
		pthread_mutex_unlock(&j->pc_lock);
		log_msg("migration: resuming post-copy: %llu page(s) lost in flight, %llu to send",
			(unsigned long long)n, (unsigned long long)j->remaining);
	}
	free(lack);
	if (!ret)
		ret = urgent_connect(j, e);
	j->uresult = 0;
	j->uerr = (struct qerr){0};
	if (!ret && pthread_create(&j->uthread, NULL, urgent_main, j))
		ret = qerr_set(e, EAGAIN, "cannot start the urgent channel's thread");
	if (!ret)
		j->uthread_started = true;
	return ret;
}

/*
 * Post-copy broke after the destination took the VM: keep every page (the
 * VM stays paused here), status postcopy-paused, and wait for
 * mig_out_resume(); reconnect and go on. 0: resumed; else abandoned.
 */
static int pc_pause(struct mig_out *j, struct qerr *e)
{
	urgent_stop(j, false, NULL);
	j->usock = -1;
	mig_conn_free(&j->uconn);
	j->sock = -1;
	mig_conn_free(&j->conn);
	log_msg("migration: post-copy paused: %s", e->msg);
	set_status(j, MIG_STATUS_POSTCOPY_PAUSED);
	for (;;) {
		struct qerr ce = {0};
		int ret;

		pthread_mutex_lock(&j->pc_lock);
		while (!j->resume_req && !mig_sync_cancelled(&j->sync)) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec++;
			pthread_cond_timedwait(&j->pc_cond, &j->pc_lock, &ts);
		}
		j->resume_req = false;
		if (!mig_sync_cancelled(&j->sync))
			j->uri = j->resume_uri;
		pthread_mutex_unlock(&j->pc_lock);
		if (mig_sync_cancelled(&j->sync)) {
			struct qerr why = *e;

			*e = (struct qerr){0};
			return qerr_set(e, ECANCELED, "post-copy paused (%s), then abandoned",
					why.msg);
		}
		set_status(j, MIG_STATUS_POSTCOPY_RECOVER);
		ret = pc_reconnect(j, &ce);
		if (!ret) {
			*e = (struct qerr){0}; /* the first error wins: clear the break's */
			set_status(j, MIG_STATUS_POSTCOPY_ACTIVE);
			return 0;
		}
		log_msg("migration: post-copy recovery failed: %s", ce.msg);
		urgent_stop(j, false, NULL);
		j->usock = -1;
		mig_conn_free(&j->uconn);
		j->sock = -1;
		mig_conn_free(&j->conn);
		*e = (struct qerr){0};
		qerr_set(e, ce.errnum ? ce.errnum : -ret, "%s", ce.msg);
		set_status(j, MIG_STATUS_POSTCOPY_PAUSED);
	}
}

static void *worker(void *opaque)
{
	struct mig_out *j = opaque;
	struct qerr *e = &j->err;
	uint32_t round = 0;
	bool pc = false;
	int ret;

	ret = out_connect(j, &j->conn, &j->sock, e);
	if (!ret)
		ret = handshake(j, e);
	if (!ret) {
		j->setup_ns = time_now_ns() - j->start_ns;
		set_status(j, MIG_STATUS_ACTIVE);
		ret = precopy(j, &round, &pc, e);
	}
	if (!ret && pc) {
		ret = postcopy(j, e);
		/* Done: the destination closed the urgent channel too (or it broke). */
		if (!ret)
			ret = urgent_stop(j, true, e);
		/* After RUNNING the destination runs the VM: pause, never fail. */
		while (ret && j->pc_tx_start && !mig_sync_cancelled(&j->sync)) {
			ret = pc_pause(j, e);
			if (!ret)
				ret = pc_push(j, e);
			if (!ret)
				ret = urgent_stop(j, true, e);
		}
	} else if (!ret) {
		ret = switchover(j, round, e);
	}
	urgent_stop(j, false, NULL);
	if (ret && !j->handed_over && j->conn.fd >= 0 && !mig_sync_cancelled(&j->sync))
		mig_send_error(&j->conn, -ret, e->msg); /* best effort: the destination says why */
	if (ret && mig_sync_cancelled(&j->sync) && !j->handed_over) {
		memset(e, 0, sizeof(*e));
		ret = qerr_set(e, ECANCELED, "migration cancelled");
	}
	j->result = ret;
	j->remaining = ret ? j->remaining : 0;
	j->end_ns = time_now_ns();
	mig_sync_end(&j->sync);
	return NULL;
}

/* ---- the job (main thread) ---- */

static int check_fd(int fd, struct qerr *e)
{
	int type = 0, acc = 0;
	socklen_t len = sizeof(type);
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return qerr_set(e, EBADF, "fd:%d is not a socket this process has", fd);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
		return qerr_set(e, EBADF, "fd:%d is not a stream socket", fd);
	len = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc)
		return qerr_set(e, EINVAL,
				"fd:%d is a listening socket; the source needs a connected one",
				fd);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return 0;
}

void mig_out_free(struct mig_out *j)
{
	if (!j)
		return;
	if (j->thread_started) {
		mig_sync_cancel(&j->sync);
		if (j->sock >= 0)
			shutdown(j->sock, SHUT_RDWR);
		pthread_join(j->thread, NULL);
	}
	mig_conn_free(&j->conn);
	mig_conn_free(&j->uconn);
	pthread_mutex_destroy(&j->pc_lock);
	pthread_cond_destroy(&j->pc_cond);
	if (j->uri.kind == MIG_URI_FD && j->uri.fd >= 0)
		close(j->uri.fd);
	mig_sync_destroy(&j->sync);
	free(j->dirty);
	free(j->synced);
	free(j->state);
	free(j);
}

int mig_out_start(struct vm *vm, const char *uri, const struct mig_params *p, struct mig_out **out,
		  struct qerr *e)
{
	struct ckpt_vm *cv = ckpt_vm_get(vm);
	struct mig_out *j;
	int ret;

	if (!cv)
		return qerr_set(e, ENOMEM, "out of memory");
	j = calloc(1, sizeof(*j));
	if (!j)
		return qerr_set(e, ENOMEM, "out of memory");
	j->vm = vm;
	j->sock = -1;
	j->conn.fd = -1;
	j->usock = -1;
	j->uconn.fd = -1;
	pthread_mutex_init(&j->pc_lock, NULL);
	pthread_cond_init(&j->pc_cond, NULL);
	j->sync.efd = -1;
	j->npages = vm->mem.ram_size / MIG_PAGE;
	j->max_bw = p->max_bandwidth;
	j->downtime_ms = p->downtime_limit_ms;
	j->pivots = p->prepage_pivots;
	j->postcopy = p->postcopy_ram;
	j->start_ns = time_now_ns();
	ret = mig_uri_parse(uri, &j->uri, e);
	if (!ret && j->uri.kind == MIG_URI_FD)
		ret = check_fd(j->uri.fd, e);
	if (ret) {
		j->uri.fd = -1; /* not ours unless the URI was good */
		goto err;
	}
	/* Before anything changes: a device that cannot be saved fails the command. */
	ret = vm_check_savable(vm, e);
	if (ret)
		goto err;
	ret = mig_sync_init(&j->sync, e);
	if (ret)
		goto err;
	j->dirty = calloc(mig_bitmap_words(j->npages), sizeof(unsigned long));
	j->synced = calloc(mig_bitmap_words(j->npages), sizeof(unsigned long));
	if (!j->dirty || !j->synced) {
		ret = qerr_set(e, ENOMEM, "out of memory for the dirty bitmaps");
		goto err;
	}
	if (getrandom(j->session, sizeof(j->session), 0) != sizeof(j->session)) {
		ret = qerr_set(e, errno, "getrandom: %s", strerror(errno));
		goto err;
	}
	/* A lazy restore still filling memory must finish: we read all of it. */
	ret = ckpt_restore_complete(vm, e);
	if (ret)
		goto err;
	ret = vm_dirty_log_start(vm, e);
	if (ret)
		goto err;
	/* We take the dirty log: an incremental checkpoint has nothing to build on now. */
	cv->have_last = false;
	j->status = MIG_STATUS_SETUP;
	if (pthread_create(&j->thread, NULL, worker, j)) {
		ret = qerr_set(e, EAGAIN, "cannot start the migration thread");
		vm_dirty_log_stop(vm, NULL);
		goto err;
	}
	j->thread_started = true;
	*out = j;
	return 0;
err:
	mig_out_free(j);
	return ret;
}

int mig_out_eventfd(const struct mig_out *j)
{
	return j->sync.efd;
}

void mig_out_next_event(struct mig_out *j, struct mig_event *ev)
{
	uint64_t v;

	if (read(j->sync.efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_msg("migration eventfd: %s", strerror(errno));
	mig_sync_next(&j->sync, ev);
}

/* The device state of the paused VM, as a state stream in memory. */
static int capture_state(struct mig_out *j, struct qerr *e)
{
	struct stream_writer w;
	int fd = memfd_create("qlite-mig-state", MFD_CLOEXEC), ret;

	if (fd < 0)
		return qerr_set(e, errno, "memfd_create: %s", strerror(errno));
	stream_writer_init(&w, fd);
	ret = stream_begin(&w, e);
	if (!ret)
		ret = ckpt_state_write(j->vm, &w, e);
	if (!ret)
		ret = stream_finish(&w, e);
	if (!ret && w.bytes > MIG_MAX_STATE)
		ret = qerr_set(e, EFBIG, "the device state is too large (%llu bytes)",
			       (unsigned long long)w.bytes);
	if (!ret) {
		j->state = malloc(w.bytes);
		j->state_len = w.bytes;
		if (!j->state)
			ret = qerr_set(e, ENOMEM, "out of memory");
		else if (pread(fd, j->state, w.bytes, 0) != (ssize_t)w.bytes)
			ret = qerr_set(e, EIO, "cannot read the device state back");
	}
	close(fd);
	return ret;
}

void mig_out_switchover(struct mig_out *j, bool was_running, int pause_err)
{
	struct qerr e = {0};
	int ret;

	if (pause_err) {
		ret = qerr_set(&e, -pause_err, "cannot pause the VM: %s", strerror(-pause_err));
	} else {
		j->was_running = was_running;
		ret = capture_state(j, &e);
	}
	mig_sync_answer(&j->sync, ret, e.msg);
}

int mig_out_start_postcopy(struct mig_out *j, struct qerr *e)
{
	if (!j->postcopy)
		return qerr_set(e, EINVAL, "the postcopy-ram capability is not set");
	if (j->uri.kind == MIG_URI_FD)
		return qerr_set(e, EOPNOTSUPP,
				"post-copy needs a second connection, which fd:N cannot make");
	if (j->status != MIG_STATUS_SETUP && j->status != MIG_STATUS_ACTIVE)
		return qerr_set(e, EINVAL, "the migration is past pre-copy (status %s)",
				mig_status_name(j->status));
	j->pc_request = true;
	return 0;
}

int mig_out_resume(struct mig_out *j, const char *uri, struct qerr *e)
{
	struct mig_uri u;
	int ret;

	if (j->status != MIG_STATUS_POSTCOPY_PAUSED)
		return qerr_set(e, EINVAL, "migrate resume: the migration is %s, not postcopy-paused",
				mig_status_name(j->status));
	ret = mig_uri_parse(uri, &u, e);
	if (ret)
		return ret;
	if (u.kind == MIG_URI_FD)
		return qerr_set(e, EOPNOTSUPP,
				"migrate resume: post-copy needs two connections, which fd:N "
				"cannot make");
	pthread_mutex_lock(&j->pc_lock);
	j->resume_uri = u;
	j->resume_req = true;
	pthread_cond_broadcast(&j->pc_cond);
	pthread_mutex_unlock(&j->pc_lock);
	return 0;
}

void mig_out_set_params(struct mig_out *j, const struct mig_params *p)
{
	j->max_bw = p->max_bandwidth;
	j->downtime_ms = p->downtime_limit_ms;
	pthread_mutex_lock(&j->pc_lock);
	j->pivots = p->prepage_pivots;
	mig_prepage_set_pivots(&j->pp, j->pivots); /* before post-copy: init sets it again */
	pthread_mutex_unlock(&j->pc_lock);
}

int mig_out_cancel(struct mig_out *j, struct qerr *e)
{
	bool late;

	pthread_mutex_lock(&j->sync.lock);
	late = j->handed_over;
	if (!late)
		j->sync.cancel = true;
	pthread_cond_broadcast(&j->sync.cond);
	pthread_mutex_unlock(&j->sync.lock);
	if (late)
		return qerr_set(
			e, EBUSY,
			"too late to cancel: the VM has been handed over to the destination");
	j->status = MIG_STATUS_CANCELLING;
	if (j->sock >= 0)
		shutdown(j->sock, SHUT_RDWR);
	return 0;
}

void mig_out_stats(struct mig_out *j, struct mig_stats *st)
{
	uint64_t end = j->end_ns;

	memset(st, 0, sizeof(*st));
	st->status = j->status;
	st->transferred = j->conn.tx_bytes;
	st->remaining = j->remaining * MIG_PAGE;
	st->total = j->npages * MIG_PAGE;
	st->duplicate = j->duplicate;
	st->normal = j->normal;
	st->dirty_sync_count = j->rounds;
	st->dirty_pages_rate = j->dirty_rate;
	st->bandwidth = j->bandwidth;
	st->setup_ns = j->setup_ns;
	st->total_ns = (end ? end : time_now_ns()) - j->start_ns;
	st->downtime_ns = j->downtime_ns;
	st->expected_downtime_ns = j->expected_downtime_ns;
	st->postcopy_requests = j->pc_requests;
	st->pages_pushed = j->pc_pushed;
	st->postcopy = j->pc_tx_start != 0;
	if (j->pc_tx_start)
		st->postcopy_bytes = j->conn.tx_bytes + j->uconn.tx_bytes - j->pc_tx_start;
	st->transferred += j->uconn.tx_bytes;
	st->dirty_tracking = vm_dirty_tracking_name(j->vm);
}

int mig_out_finish(struct mig_out *j, struct mig_stats *st, bool *handed_over, struct qerr *e)
{
	int ret;

	if (j->thread_started) {
		bool ended;

		pthread_mutex_lock(&j->sync.lock);
		ended = j->sync.ended;
		pthread_mutex_unlock(&j->sync.lock);
		if (!ended) {
			/* Abandoned (the VM goes away): stop the worker wherever it waits. */
			mig_out_cancel(j, NULL);
			mig_sync_cancel(&j->sync);
			if (j->sock >= 0)
				shutdown(j->sock, SHUT_RDWR);
		}
		pthread_join(j->thread, NULL);
		j->thread_started = false;
	}
	ret = j->result;
	if (ret == -ECANCELED && !j->handed_over)
		j->status = MIG_STATUS_CANCELLED;
	else
		j->status = ret ? MIG_STATUS_FAILED : MIG_STATUS_COMPLETED;
	*handed_over = j->handed_over;
	if (ret)
		qerr_set(e, j->err.errnum ? j->err.errnum : -ret, "%s", j->err.msg);
	mig_out_stats(j, st);
	if (ret)
		snprintf(st->error, sizeof(st->error), "%s", j->err.msg);
	/* Still the source's VM: KVM may map it with huge pages again. */
	if (ret && !j->handed_over)
		vm_dirty_log_stop(j->vm, NULL);
	mig_conn_free(&j->conn);
	j->sock = -1;
	return ret;
}
