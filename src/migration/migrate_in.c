// SPDX-License-Identifier: MIT
/*
 * The destination of a live migration (migrate.h, docs/migration.md). It
 * listens; the first connection's worker feeds every message through the
 * state machine (mig_rx_msg: order, sizes, page ranges), writes pages into
 * the VM the main thread built from the stream's configuration, then has
 * the main thread load the device state, says READY, and on GO has it
 * start the VM and says RUNNING. Any failure is sent to the source as an
 * ERROR (so the source resumes) and ends the migration here.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "mig_internal.h"
#include "qlite/mem.h"
#include "qlite/uffd.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"

#define HELLO_TIMEOUT_MS 30000 /* from connection to HELLO */
#define GO_TIMEOUT_MS 60000    /* from READY to GO */
#define DRAIN_MS 2000	       /* after an ERROR: let it reach the source before closing */
#define STAGE_MAX 4096	       /* pushed pages waiting for placement: 16 MiB, then the push waits */
#define WAIT_TICK_NS 100000000LL

struct mig_in {
	struct mig_uri uri;
	int listen_fd;
	char *unlink_path;
	struct mig_sync sync;
	struct mig_conn conn;
	_Atomic int sock;
	pthread_t thread;
	bool thread_started;
	struct mig_rx rx;
	struct vm *vm; /* built by the main thread (mig_in_built) */
	bool started;  /* the VM runs (or sits paused) here now */
	_Atomic int status;
	int result;
	struct qerr err;
	uint64_t start_ns, conn_ns;
	_Atomic uint64_t end_ns;

	/*
	 * Post-copy. Missing pages are filled by the uffd engine: a fault's
	 * fill() takes the page if it arrived, else sends PAGE_REQUEST on the
	 * urgent channel and waits; pushed pages are staged as they arrive and
	 * the engine's prefetch places them in arrival order (prefetch_next).
	 */
	_Atomic bool pc_ok; /* negotiated: a second connection may be the urgent channel */
	struct mig_conn uconn;
	_Atomic int usock;
	pthread_t uthread;
	bool uthread_started;
	struct uffd_lazy *lazy;
	unsigned long *missing; /* pages DISCARD named: the engine's DATA pages */
	bool nohuge;		/* MADV_NOHUGEPAGE done */
	pthread_mutex_t pc_lock;
	pthread_cond_t pc_cond;
	pthread_mutex_t usend_lock; /* PAGE_REQUEST senders */
	uint8_t **stage;	    /* per page: arrived, not placed yet */
	uint64_t nstaged;
	uint64_t *queue; /* arrival order */
	uint64_t qcap, qhead, qlen;
	unsigned long *requested; /* a fill asked for it and has not taken it yet */
	bool urgent_ready, pushed_all, pc_stop;
	int pc_err;
	/*
	 * Recovery: after GO (until END) a broken channel pauses instead of
	 * failing: faults wait, the worker waits for migrate-recover's
	 * connection (resume_fd) and answers it with MISSING.
	 */
	unsigned long *placed;	 /* DISCARDed pages the engine has placed */
	_Atomic bool resumable;	 /* between GO and END in post-copy */
	bool paused;		 /* pc_lock: a channel broke, not resumed yet */
	int resume_fd;		 /* pc_lock: that connection, for the worker */
	bool link_broke;	 /* worker: run_incoming() lost the main connection */
	_Atomic uint64_t pc_requests, pc_waited, pc_pushed;
	int engine_err;		   /* pc_lock: the fill engine failed: not resumable */
	char engine_msg[256];	   /* pc_lock: its message */
	struct uffd_lazy_stats lazy_st;
	bool have_lazy_st;
};

static uint8_t staged_zero[MIG_PAGE] __attribute__((aligned(MIG_PAGE)));

static void set_status(struct mig_in *m, enum mig_status s)
{
	struct mig_event ev = {.kind = MIG_EV_STATUS, .status = s};

	m->status = s;
	mig_sync_post(&m->sync, &ev);
}

/* ---- the state machine's hooks (worker thread) ---- */

static int on_config(void *opaque, const struct vm_config *cfg, struct qerr *e)
{
	struct mig_in *m = opaque;

	(void)cfg;
	return mig_sync_call(&m->sync, MIG_EV_BUILD, e);
}

static int pc_stage(struct mig_in *m, uint64_t first, uint64_t n, const uint8_t *data,
		    struct qerr *e);

static int on_pages(void *opaque, uint64_t first, uint64_t n, const uint8_t *data, struct qerr *e)
{
	struct mig_in *m = opaque;
	struct guest_mem *mem = &m->vm->mem;
	uint8_t *dst = mem->base + first * MIG_PAGE;
	int ret;

	if (first + n > mem->ram_size / MIG_PAGE) /* the state machine checked; the VM agrees */
		return qerr_set(e, ERANGE, "pages %llu..+%llu are beyond guest RAM",
				(unsigned long long)first, (unsigned long long)n);
	if (m->rx.postcopy) /* registered memory: the engine places them */
		return pc_stage(m, first, n, data, e);
	if (data) {
		memcpy(dst, data, n * MIG_PAGE);
		return 0;
	}
	/* Became zero on the source: drop ours (and the memory holding it). */
	if (mem->backend == MEM_BACKEND_MEMFD)
		ret = fallocate(mem->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)(first * MIG_PAGE), (off_t)(n * MIG_PAGE));
	else
		ret = madvise(dst, n * MIG_PAGE, MADV_DONTNEED);
	if (ret < 0)
		memset(dst, 0, n * MIG_PAGE);
	return 0;
}

/* ---- post-copy (worker, urgent thread and the uffd engine's threads) ---- */

static void pc_timed_wait(struct mig_in *m)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += WAIT_TICK_NS;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&m->pc_cond, &m->pc_lock, &ts);
}

/* Give up waiting for pages (the connection broke, or we are stopping). */
static void pc_fail(struct mig_in *m, int err)
{
	pthread_mutex_lock(&m->pc_lock);
	if (!m->pc_err)
		m->pc_err = err;
	pthread_cond_broadcast(&m->pc_cond);
	pthread_mutex_unlock(&m->pc_lock);
}

/*
 * A channel broke: between GO and END, pause (faults wait, both channels
 * are shut so the worker and the urgent thread notice); else fail.
 */
static void pc_broke(struct mig_in *m, int err)
{
	if (!m->resumable) {
		pc_fail(m, err);
		return;
	}
	pthread_mutex_lock(&m->pc_lock);
	if (!m->paused) {
		m->paused = true;
		m->urgent_ready = false;
		/* Asked on the lost channel: ask again once resumed. */
		memset(m->requested, 0, mig_bitmap_words(m->rx.npages) * sizeof(unsigned long));
		if (m->sock >= 0)
			shutdown(m->sock, SHUT_RDWR);
		if (m->usock >= 0)
			shutdown(m->usock, SHUT_RDWR);
	}
	pthread_cond_broadcast(&m->pc_cond);
	pthread_mutex_unlock(&m->pc_lock);
}

static enum uffd_page_kind pc_kind(void *opaque, uint64_t page)
{
	struct mig_in *m = opaque;

	return mig_bit_test(m->missing, page) ? UFFD_PAGE_DATA : UFFD_PAGE_ZERO;
}

static void unstage(struct mig_in *m, uint64_t page)
{
	if (m->stage[page] != staged_zero)
		free(m->stage[page]);
	m->stage[page] = NULL;
	m->nstaged--;
	pthread_cond_broadcast(&m->pc_cond);
}

static int pc_fill(void *opaque, uint64_t page, void *dst)
{
	struct mig_in *m = opaque;
	bool waited = false;
	int ret = 0;

	pthread_mutex_lock(&m->pc_lock);
	while (!m->stage[page] && !m->pc_err) {
		if (!waited) {
			waited = true;
			m->pc_waited++;
		}
		if (!mig_bit_test(m->requested, page) && m->urgent_ready) {
			uint8_t req[MIG_PAGE_REQ_LEN];
			struct qerr e = {0};

			mig_bit_set(m->requested, page);
			pthread_mutex_unlock(&m->pc_lock);
			mig_page_req_encode(page, 1, req);
			pthread_mutex_lock(&m->usend_lock);
			ret = mig_send(&m->uconn, MIG_MSG_PAGE_REQUEST, req, sizeof(req), NULL, 0,
				       &e);
			pthread_mutex_unlock(&m->usend_lock);
			m->pc_requests++;
			if (ret) {
				log_msg("migration: cannot request page %llu: %s",
					(unsigned long long)page, e.msg);
				pc_broke(m, ret);
			}
			pthread_mutex_lock(&m->pc_lock);
			continue;
		}
		pc_timed_wait(m);
	}
	if (m->stage[page]) {
		memcpy(dst, m->stage[page], MIG_PAGE);
		unstage(m, page);
		mig_bit_set(m->placed, page);
		/* Answered: pc_next() may drop a later copy of it. */
		m->requested[page / MIG_BITS] &= ~(1UL << (page % MIG_BITS));
		ret = 0;
	} else {
		ret = m->pc_err ? m->pc_err : -ECONNRESET;
	}
	pthread_mutex_unlock(&m->pc_lock);
	return ret;
}

/* Arrival order; UINT64_MAX once everything pushed was taken (the engine sweeps the rest). */
static uint64_t pc_next(void *opaque, uint64_t prev, uint64_t last_fault)
{
	struct mig_in *m = opaque;
	uint64_t page = UINT64_MAX;

	(void)last_fault; /* the source pivots on requests itself */
	pthread_mutex_lock(&m->pc_lock);
	/*
	 * Skipped by the engine: present already (drop the copy), or being
	 * filled by a fault; if that fill asked for it, this is its answer:
	 * keep it (a fill that did not ask yet will, and get it again).
	 */
	if (prev < m->rx.npages && m->stage[prev] && !mig_bit_test(m->requested, prev))
		unstage(m, prev);
	while (!m->qlen && !m->pushed_all && !m->pc_err && !m->pc_stop)
		pc_timed_wait(m);
	if (m->qlen) {
		page = m->queue[m->qhead];
		m->qhead = (m->qhead + 1) % m->qcap;
		m->qlen--;
	}
	pthread_mutex_unlock(&m->pc_lock);
	return page;
}

/* A page arrived (pushed, or an answer): stage it for the engine. */
static int pc_stage(struct mig_in *m, uint64_t first, uint64_t n, const uint8_t *data,
		    struct qerr *e)
{
	bool push = pthread_equal(pthread_self(), m->thread);

	pthread_mutex_lock(&m->pc_lock);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t page = first + i;

		/* Only pages we lack; a placed one is never written over. */
		if (!mig_bit_test(m->missing, page) || m->stage[page])
			continue;
		while (push && m->nstaged >= STAGE_MAX && !m->pc_err && !m->pc_stop)
			pc_timed_wait(m);
		if (data) {
			m->stage[page] = malloc(MIG_PAGE);
			if (!m->stage[page]) {
				pthread_mutex_unlock(&m->pc_lock);
				return qerr_set(e, ENOMEM, "out of memory for arriving pages");
			}
			memcpy(m->stage[page], data + i * MIG_PAGE, MIG_PAGE);
		} else {
			m->stage[page] = staged_zero;
		}
		m->nstaged++;
		if (push)
			m->pc_pushed++;
		if (m->qlen < m->qcap) {
			m->queue[(m->qhead + m->qlen) % m->qcap] = page;
			m->qlen++;
		}
	}
	pthread_cond_broadcast(&m->pc_cond);
	pthread_mutex_unlock(&m->pc_lock);
	return 0;
}

static int pc_alloc(struct mig_in *m, struct qerr *e)
{
	uint64_t np = m->rx.npages;

	if (m->missing)
		return 0;
	m->missing = calloc(mig_bitmap_words(np), sizeof(unsigned long));
	m->requested = calloc(mig_bitmap_words(np), sizeof(unsigned long));
	m->placed = calloc(mig_bitmap_words(np), sizeof(unsigned long));
	m->stage = calloc(np, sizeof(*m->stage));
	m->qcap = 2 * np + 16;
	m->queue = calloc(m->qcap, sizeof(*m->queue));
	if (!m->missing || !m->requested || !m->placed || !m->stage || !m->queue)
		return qerr_set(e, ENOMEM, "out of memory for post-copy");
	return 0;
}

/* Drop [first, first + n) so it faults: its content changed on the source. */
static int on_discard(void *opaque, uint64_t first, uint64_t n, struct qerr *e)
{
	struct mig_in *m = opaque;
	struct guest_mem *mem = &m->vm->mem;
	uint8_t *dst = mem->base + first * MIG_PAGE;
	int ret = pc_alloc(m, e);

	if (ret)
		return ret;
	if (first + n > mem->ram_size / MIG_PAGE)
		return qerr_set(e, ERANGE, "pages %llu..+%llu are beyond guest RAM",
				(unsigned long long)first, (unsigned long long)n);
	/* Or a write nearby, or khugepaged, populates the dropped pages again as zero. */
	if (!m->nohuge) {
		if (madvise(mem->base, mem->ram_size, MADV_NOHUGEPAGE) < 0 && errno != EINVAL)
			return qerr_set(e, errno, "madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
		m->nohuge = true;
	}
	if (mem->backend == MEM_BACKEND_MEMFD)
		ret = fallocate(mem->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)(first * MIG_PAGE), (off_t)(n * MIG_PAGE));
	else
		ret = madvise(dst, n * MIG_PAGE, MADV_DONTNEED);
	if (ret < 0)
		return qerr_set(e, errno, "cannot drop pages %llu..+%llu: %s",
				(unsigned long long)first, (unsigned long long)n, strerror(errno));
	for (uint64_t p = first; p < first + n; p++)
		mig_bit_set(m->missing, p);
	return 0;
}

/*
 * The engine could not place a page (an UFFDIO error, say): the guest's
 * memory cannot be completed, and a new connection would not help. End
 * the migration: the worker's reads return at once (SHUT_RD keeps the
 * way out open for its ERROR to the source), faults stop waiting.
 */
static void pc_engine_failed(void *opaque, int err, const char *msg)
{
	struct mig_in *m = opaque;

	pthread_mutex_lock(&m->pc_lock);
	if (m->pc_stop || m->engine_err || m->pc_err) {
		/* Stopping anyway, or a fill gave up because the migration failed. */
		pthread_mutex_unlock(&m->pc_lock);
		return;
	}
	m->engine_err = err;
	snprintf(m->engine_msg, sizeof(m->engine_msg), "%s", msg);
	m->resumable = false;
	m->pc_err = err;
	if (m->sock >= 0)
		shutdown(m->sock, SHUT_RD);
	if (m->usock >= 0)
		shutdown(m->usock, SHUT_RDWR);
	pthread_cond_broadcast(&m->pc_cond);
	pthread_mutex_unlock(&m->pc_lock);
}

/* POSTCOPY_RUN: guest RAM faults from now on; what pre-copy placed stays. */
static int pc_start_lazy(struct mig_in *m, struct qerr *e)
{
	struct uffd_source src = {
		.kind = pc_kind,
		.fill = pc_fill,
		.prefetch_next = pc_next,
		.opaque = m,
		.run_pages = 1, /* only the arrived page: its neighbours may not be there yet */
		.keep_present = true,
		.failed = pc_engine_failed,
	};
	int ret = pc_alloc(m, e);

	if (!ret && !m->nohuge) {
		madvise(m->vm->mem.base, m->vm->mem.ram_size, MADV_NOHUGEPAGE);
		m->nohuge = true;
	}
	if (!ret)
		ret = uffd_lazy_start(&m->vm->mem, &src, &m->lazy, e);
	return ret;
}

/* Stop the engine and anything waiting for pages (the VM must not run on). */
static void pc_teardown(struct mig_in *m)
{
	pthread_mutex_lock(&m->pc_lock);
	m->pc_stop = true;
	if (!m->pc_err)
		m->pc_err = -ECANCELED;
	pthread_cond_broadcast(&m->pc_cond);
	pthread_mutex_unlock(&m->pc_lock);
	if (m->lazy) {
		uffd_lazy_stats(m->lazy, &m->lazy_st);
		m->have_lazy_st = true;
		uffd_lazy_destroy(m->lazy);
		m->lazy = NULL;
	}
	if (m->uthread_started) {
		if (m->usock >= 0)
			shutdown(m->usock, SHUT_RDWR);
		pthread_join(m->uthread, NULL);
		m->uthread_started = false;
	}
	if (m->stage)
		for (uint64_t p = 0; p < m->rx.npages; p++)
			if (m->stage[p] && m->stage[p] != staged_zero)
				free(m->stage[p]);
	free(m->stage);
	m->stage = NULL;
	free(m->queue);
	m->queue = NULL;
	free(m->missing);
	m->missing = NULL;
	free(m->requested);
	m->requested = NULL;
	free(m->placed);
	m->placed = NULL;
}

/* The urgent channel: its HELLO, then answers to our requests. */
static void *urgent_main(void *opaque)
{
	struct mig_in *m = opaque;
	struct qerr e = {0};
	uint32_t type, len;
	int ret;

	pthread_setname_np(pthread_self(), "mig-urgent");
	ret = mig_recv(&m->uconn, &type, &len, HELLO_TIMEOUT_MS, &e);
	if (!ret && type != MIG_MSG_HELLO)
		ret = qerr_set(&e, EPROTO, "the urgent channel starts with %s", mig_msg_name(type));
	if (!ret)
		ret = mig_rx_urgent_hello(&m->rx, m->uconn.buf, len, &e);
	if (!ret) {
		struct sbuf b;

		sbuf_init(&b);
		mig_ack_encode(m->rx.version, MIG_F_POSTCOPY, &b);
		ret = sbuf_status(&b)
			      ? qerr_set(&e, ENOMEM, "out of memory")
			      : mig_send(&m->uconn, MIG_MSG_HELLO_ACK, b.data, b.len, NULL, 0, &e);
		sbuf_free(&b);
	}
	if (ret) {
		log_msg("migration: urgent channel refused: %s", e.msg);
		mig_send_error(&m->uconn, -ret, e.msg);
		return NULL;
	}
	pthread_mutex_lock(&m->pc_lock);
	m->urgent_ready = true;
	pthread_cond_broadcast(&m->pc_cond);
	pthread_mutex_unlock(&m->pc_lock);
	for (;;) {
		ret = mig_recv(&m->uconn, &type, &len, -1, &e);
		if (!ret)
			ret = mig_rx_urgent_msg(&m->rx, type, m->uconn.buf, len, &e);
		if (ret)
			break;
	}
	/* Closed by us at the end, or broken: a fault waiting for an answer fails. */
	pthread_mutex_lock(&m->pc_lock);
	if (!m->pc_stop && !m->paused)
		log_msg("migration: the urgent channel ended: %s", e.msg);
	pthread_mutex_unlock(&m->pc_lock);
	pc_broke(m, ret);
	return NULL;
}

static const struct mig_rx_ops rx_ops = {
	.config = on_config,
	.pages = on_pages,
	.discard = on_discard,
};

/* ---- the worker ---- */

/* After an ERROR: stop sending, and read until the source closes (briefly), so it gets it. */
static void drain(struct mig_conn *c)
{
	uint64_t end = time_now_ns() + DRAIN_MS * 1000000ULL;
	uint8_t scratch[16384];

	shutdown(c->fd, SHUT_WR);
	for (;;) {
		uint64_t now = time_now_ns();
		struct pollfd p = {.fd = c->fd, .events = POLLIN};

		if (now >= end || poll(&p, 1, (int)((end - now) / 1000000ULL) + 1) <= 0)
			return;
		if (recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
			return;
	}
}

static int run_incoming(struct mig_in *m, struct qerr *e)
{
	struct mig_rx *rx = &m->rx;
	uint32_t type, len;
	bool first = rx->phase == MIG_RX_HELLO;
	int ret, timeout;

	for (;;) {
		struct qerr re = {0};

		timeout = rx->phase == MIG_RX_HELLO ? HELLO_TIMEOUT_MS
			  : rx->phase == MIG_RX_GO  ? GO_TIMEOUT_MS
						    : -1;
		ret = mig_recv(&m->conn, &type, &len, timeout, &re);
		if (ret == -EBADMSG && first)
			return qerr_set(e, EBADMSG,
					"not a qlite migration stream (%s at its start)", re.msg);
		if (ret && rx->phase == MIG_RX_HELLO && first)
			return qerr_set(e, -ret, "%s before the migration began", re.msg);
		if (ret && m->resumable)
			m->link_broke = true; /* post-copy: pause, not fail */
		if (ret == -ECONNRESET || ret == -EPIPE)
			return qerr_set(e, -ret,
					"the source went away during %s, after %llu bytes "
					"(cancelled, or it "
					"failed): %s",
					mig_rx_phase_name(rx->phase),
					(unsigned long long)m->conn.rx_bytes, re.msg);
		if (ret)
			return qerr_set(e, -ret, "%s (during %s, after %llu bytes)", re.msg,
					mig_rx_phase_name(rx->phase),
					(unsigned long long)m->conn.rx_bytes);
		first = false;
		ret = mig_rx_msg(rx, type, m->conn.buf, len, e);
		if (ret)
			return ret;
		switch (type) {
		case MIG_MSG_HELLO: {
			struct sbuf b;

			sbuf_init(&b);
			mig_ack_encode(rx->version, rx->features, &b);
			ret = sbuf_status(&b) ? qerr_set(e, ENOMEM, "out of memory")
					      : mig_send(&m->conn, MIG_MSG_HELLO_ACK, b.data, b.len,
							 NULL, 0, e);
			sbuf_free(&b);
			if (ret)
				return ret;
			m->pc_ok = rx->features & MIG_F_POSTCOPY;
			set_status(m, MIG_STATUS_ACTIVE);
			break;
		}
		case MIG_MSG_POSTCOPY_RUN:
			/* Before the state loads: loading may touch missing pages. */
			ret = pc_start_lazy(m, e);
			if (!ret)
				ret = mig_sync_call(&m->sync, MIG_EV_APPLY, e);
			if (!ret)
				ret = mig_send(&m->conn, MIG_MSG_READY, NULL, 0, NULL, 0, e);
			if (ret)
				return ret;
			break;
		case MIG_MSG_END:
			if (rx->postcopy) {
				m->resumable = false;
				/* Everything was pushed: the engine places the rest, then done. */
				pthread_mutex_lock(&m->pc_lock);
				m->pushed_all = true;
				pthread_cond_broadcast(&m->pc_cond);
				pthread_mutex_unlock(&m->pc_lock);
				ret = uffd_lazy_finish(m->lazy, e);
				if (ret)
					return ret;
				uffd_lazy_stats(m->lazy, &m->lazy_st);
				m->have_lazy_st = true;
				if (mig_send(&m->conn, MIG_MSG_PC_DONE, NULL, 0, NULL, 0, &re))
					log_msg("migration: every page is here, but the source was "
						"not told: %s",
						re.msg);
				return 0;
			}
			ret = mig_sync_call(&m->sync, MIG_EV_APPLY, e);
			if (!ret)
				ret = mig_send(&m->conn, MIG_MSG_READY, NULL, 0, NULL, 0, e);
			if (ret)
				return ret;
			break;
		case MIG_MSG_GO:
			ret = mig_sync_call(&m->sync, MIG_EV_START, e);
			if (ret)
				return ret;
			m->started = true;
			/* The VM is ours now, whether or not the source hears it. */
			if (mig_send(&m->conn, MIG_MSG_RUNNING, NULL, 0, NULL, 0, &re))
				log_msg("migration: the VM runs here, but the source was not told: "
					"%s",
					re.msg);
			if (!rx->postcopy)
				return 0;
			m->resumable = true;
			set_status(m, MIG_STATUS_POSTCOPY_ACTIVE);
			break;
		}
	}
}

/*
 * Post-copy's link broke: keep the VM (its faults wait) and wait for
 * migrate-recover's connection; a resumed HELLO gets HELLO_ACK and MISSING,
 * the pages not placed nor staged here. 0: go on; else stopping.
 */
static int pc_resume(struct mig_in *m, struct qerr *e)
{
	bool joined;

	pc_broke(m, -ECONNRESET);
	pthread_mutex_lock(&m->pc_lock);
	joined = m->uthread_started;
	m->usock = -1; /* pc_broke() shuts it under pc_lock: not once it is closed */
	m->sock = -1;
	pthread_mutex_unlock(&m->pc_lock);
	if (joined)
		pthread_join(m->uthread, NULL);
	mig_conn_free(&m->uconn);
	mig_conn_free(&m->conn);
	pthread_mutex_lock(&m->pc_lock);
	m->uthread_started = false;
	pthread_mutex_unlock(&m->pc_lock);
	log_msg("migration: post-copy paused: %s; waiting for migrate-recover", e->msg);
	set_status(m, MIG_STATUS_POSTCOPY_PAUSED);
	for (;;) {
		struct qerr he = {0};
		uint32_t type, len;
		struct sbuf b;
		int fd, ret;

		pthread_mutex_lock(&m->pc_lock);
		while (m->resume_fd < 0 && !m->pc_err && !mig_sync_cancelled(&m->sync))
			pc_timed_wait(m);
		fd = m->resume_fd;
		m->resume_fd = -1;
		pthread_mutex_unlock(&m->pc_lock);
		if (fd < 0) {
			struct qerr why = *e;

			*e = (struct qerr){0};
			return qerr_set(e, ECANCELED, "post-copy paused, then stopped: %s",
					why.msg);
		}
		set_status(m, MIG_STATUS_POSTCOPY_RECOVER);
		mig_sock_tcp_options(fd);
		mig_conn_init(&m->conn, fd, true);
		m->sock = fd;
		ret = mig_recv(&m->conn, &type, &len, HELLO_TIMEOUT_MS, &he);
		if (!ret && type != MIG_MSG_HELLO)
			ret = qerr_set(&he, EPROTO, "it starts with %s", mig_msg_name(type));
		if (!ret)
			ret = mig_rx_resume_hello(&m->rx, m->conn.buf, len, &he);
		sbuf_init(&b);
		if (!ret) {
			mig_ack_encode(m->rx.version, MIG_F_POSTCOPY | MIG_F_RESUME, &b);
			ret = sbuf_status(&b) ? qerr_set(&he, ENOMEM, "out of memory")
					      : mig_send(&m->conn, MIG_MSG_HELLO_ACK, b.data, b.len,
							 NULL, 0, &he);
		}
		if (!ret) {
			unsigned long *lack =
				calloc(mig_bitmap_words(m->rx.npages), sizeof(unsigned long));

			pthread_mutex_lock(&m->pc_lock);
			for (uint64_t p = 0; lack && p < m->rx.npages; p++)
				if (mig_bit_test(m->missing, p) && !mig_bit_test(m->placed, p) &&
				    !m->stage[p])
					mig_bit_set(lack, p);
			m->paused = false; /* the urgent channel may join now */
			pthread_mutex_unlock(&m->pc_lock);
			sbuf_free(&b);
			sbuf_init(&b);
			if (lack)
				mig_missing_encode(m->rx.npages, lack, &b);
			free(lack);
			ret = !lack || sbuf_status(&b)
				      ? qerr_set(&he, ENOMEM, "out of memory")
				      : mig_send(&m->conn, MIG_MSG_MISSING, b.data, b.len, NULL, 0,
						 &he);
		}
		sbuf_free(&b);
		if (!ret) {
			m->link_broke = false;
			*e = (struct qerr){0}; /* the first error wins: clear the break's */
			log_msg("migration: post-copy resumed");
			set_status(m, MIG_STATUS_POSTCOPY_ACTIVE);
			return 0;
		}
		/* Not the source we wait for (or it broke again): keep waiting. */
		log_msg("migration: post-copy recovery refused: %s", he.msg);
		mig_send_error(&m->conn, -ret, he.msg);
		pthread_mutex_lock(&m->pc_lock);
		m->paused = true;
		m->sock = -1;
		pthread_mutex_unlock(&m->pc_lock);
		mig_conn_free(&m->conn);
		set_status(m, MIG_STATUS_POSTCOPY_PAUSED);
	}
}

static void *worker(void *opaque)
{
	struct mig_in *m = opaque;
	int ret;

	ret = run_incoming(m, &m->err);
	while (ret && m->link_broke && m->resumable) {
		/* A recovery that gave up (stopped, cancelled) ends it: no retry. */
		ret = pc_resume(m, &m->err);
		if (ret)
			break;
		ret = run_incoming(m, &m->err);
	}
	pthread_mutex_lock(&m->pc_lock);
	if (m->engine_err) {
		/* The cause, not the read it cut short. */
		ret = qerr_set(&m->err, -m->engine_err, "cannot place guest memory: %s",
			       m->engine_msg);
	}
	pthread_mutex_unlock(&m->pc_lock);
	if (ret && (!m->started || m->rx.postcopy)) {
		if (!mig_sync_cancelled(&m->sync)) {
			mig_send_error(&m->conn, -ret, m->err.msg);
			drain(&m->conn);
		}
	}
	if (m->rx.postcopy) {
		/*
		 * Done (every page placed: closing the urgent channel and then the
		 * main one tells the source), or failed: the guest cannot go on
		 * without its pages; it stays stuck on them until the VM goes.
		 */
		if (ret)
			pc_fail(m, ret);
		else
			pc_teardown(m);
		m->result = ret;
	} else {
		m->result = m->started ? 0 : ret;
	}
	m->end_ns = time_now_ns();
	mig_sync_end(&m->sync);
	return NULL;
}

static int start_worker(struct mig_in *m, int fd, struct qerr *e)
{
	mig_sock_tcp_options(fd);
	mig_conn_init(&m->conn, fd, true);
	m->sock = fd;
	m->conn_ns = time_now_ns();
	if (pthread_create(&m->thread, NULL, worker, m)) {
		mig_conn_free(&m->conn);
		m->sock = -1;
		return qerr_set(e, EAGAIN, "cannot start the migration thread");
	}
	m->thread_started = true;
	return 0;
}

/* ---- listening (main thread) ---- */

static int listen_tcp(struct mig_in *m, struct qerr *e)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res, *ai;
	int ret, err = 0, one = 1;

	ret = getaddrinfo(m->uri.host[0] ? m->uri.host : NULL, m->uri.port, &hints, &res);
	if (ret)
		return qerr_set(e, EADDRNOTAVAIL, "cannot resolve %s: %s", m->uri.host,
				gai_strerror(ret));
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4) < 0) {
			err = errno;
			close(fd);
			continue;
		}
		m->listen_fd = fd;
		break;
	}
	freeaddrinfo(res);
	if (m->listen_fd < 0)
		return qerr_set(e, err ? err : EADDRNOTAVAIL, "cannot listen on tcp:%s:%s: %s",
				m->uri.host[0] ? m->uri.host : "*", m->uri.port,
				strerror(err ? err : EADDRNOTAVAIL));
	return 0;
}

static int listen_unix(struct mig_in *m, struct qerr *e)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	/* Never unlink what is there: it may be another qlite's live socket. */
	if (lstat(m->uri.path, &st) == 0)
		return qerr_set(e, EEXIST, "cannot listen on unix:%s: it already exists",
				m->uri.path);
	memcpy(sa.sun_path, m->uri.path, sizeof(m->uri.path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return qerr_set(e, errno, "socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;

		close(fd);
		return qerr_set(e, err, "cannot listen on unix:%s: %s", m->uri.path, strerror(err));
	}
	m->unlink_path = strdup(m->uri.path);
	if (listen(fd, 4) < 0) {
		int err = errno;

		close(fd);
		return qerr_set(e, err, "cannot listen on unix:%s: %s", m->uri.path, strerror(err));
	}
	m->listen_fd = fd;
	return 0;
}

static int take_fd(struct mig_in *m, struct qerr *e)
{
	int fd = m->uri.fd, type = 0, acc = 0;
	socklen_t len = sizeof(type);
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return qerr_set(e, EBADF, "fd:%d is not a socket this process has", fd);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
		return qerr_set(e, EBADF, "fd:%d is not a stream socket", fd);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	len = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc) {
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		m->listen_fd = fd;
		return 0;
	}
	/* Connected already: the migration starts now. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return start_worker(m, fd, e);
}

/* Post-copy needs userfaultfd that handles kernel faults (KVM's, io_uring's). */
static bool uffd_usable(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd >= 0) {
		close(fd);
		return true;
	}
	return errno == EPERM && access("/dev/userfaultfd", R_OK | W_OK) == 0;
}

void mig_in_free(struct mig_in *m)
{
	if (!m)
		return;
	if (m->thread_started) {
		mig_sync_cancel(&m->sync);
		pc_fail(m, -ECANCELED); /* a fill the worker waits behind */
		if (m->sock >= 0)
			shutdown(m->sock, SHUT_RDWR);
		pthread_join(m->thread, NULL);
	}
	pc_teardown(m);
	if (m->resume_fd >= 0)
		close(m->resume_fd);
	mig_conn_free(&m->conn);
	mig_conn_free(&m->uconn);
	pthread_mutex_destroy(&m->pc_lock);
	pthread_cond_destroy(&m->pc_cond);
	pthread_mutex_destroy(&m->usend_lock);
	if (m->listen_fd >= 0)
		close(m->listen_fd);
	if (m->unlink_path) {
		unlink(m->unlink_path);
		free(m->unlink_path);
	}
	mig_rx_free(&m->rx);
	mig_sync_destroy(&m->sync);
	free(m);
}

int mig_in_start(const char *uri, struct mig_in **out, struct qerr *e)
{
	struct mig_in *m = calloc(1, sizeof(*m));
	int ret;

	if (!m)
		return qerr_set(e, ENOMEM, "out of memory");
	m->listen_fd = -1;
	m->sock = -1;
	m->conn.fd = -1;
	m->usock = -1;
	m->uconn.fd = -1;
	m->resume_fd = -1;
	m->sync.efd = -1;
	m->start_ns = time_now_ns();
	pthread_mutex_init(&m->pc_lock, NULL);
	pthread_cond_init(&m->pc_cond, NULL);
	pthread_mutex_init(&m->usend_lock, NULL);
	mig_rx_init(&m->rx, &rx_ops, m);
	if (uffd_usable())
		m->rx.supported = MIG_F_POSTCOPY;
	ret = mig_uri_parse(uri, &m->uri, e);
	if (!ret)
		ret = mig_sync_init(&m->sync, e);
	if (ret)
		goto err;
	m->status = MIG_STATUS_SETUP;
	switch (m->uri.kind) {
	case MIG_URI_TCP:
		ret = listen_tcp(m, e);
		break;
	case MIG_URI_UNIX:
		ret = listen_unix(m, e);
		break;
	case MIG_URI_FD:
		ret = take_fd(m, e);
		break;
	}
	if (ret)
		goto err;
	*out = m;
	return 0;
err:
	mig_in_free(m);
	return ret;
}

int mig_in_recover(struct mig_in *m, const char *uri, struct qerr *e)
{
	struct mig_uri old = m->uri;
	int old_fd = m->listen_fd, ret;
	char *old_unlink = m->unlink_path;

	if (m->status != MIG_STATUS_POSTCOPY_PAUSED)
		return qerr_set(e, EINVAL, "migrate-recover: the migration is %s, not postcopy-paused",
				mig_status_name(m->status));
	ret = mig_uri_parse(uri, &m->uri, e);
	if (!ret && m->uri.kind == MIG_URI_FD)
		ret = qerr_set(e, EINVAL, "migrate-recover: fd:N cannot be listened on again");
	if (ret) {
		m->uri = old;
		return ret;
	}
	m->listen_fd = -1;
	m->unlink_path = NULL;
	ret = m->uri.kind == MIG_URI_TCP ? listen_tcp(m, e) : listen_unix(m, e);
	if (ret) {
		if (m->unlink_path) {
			unlink(m->unlink_path);
			free(m->unlink_path);
		}
		m->uri = old;
		m->listen_fd = old_fd;
		m->unlink_path = old_unlink;
		return ret;
	}
	if (old_fd >= 0)
		close(old_fd);
	if (old_unlink) {
		unlink(old_unlink);
		free(old_unlink);
	}
	log_msg("migration: waiting for the source to resume post-copy on %s", uri);
	return 0;
}

int mig_in_listen_fd(const struct mig_in *m)
{
	return m->listen_fd;
}

int mig_in_accept(struct mig_in *m, struct qerr *e)
{
	int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return errno == EAGAIN || errno == EINTR
			       ? 0
			       : qerr_set(e, errno, "accept: %s", strerror(errno));
	bool urgent = false;

	pthread_mutex_lock(&m->pc_lock);
	if (m->paused && m->resume_fd < 0) {
		/* Post-copy recovery: the worker checks its HELLO. */
		m->resume_fd = fd;
		pthread_cond_broadcast(&m->pc_cond);
		pthread_mutex_unlock(&m->pc_lock);
		return 0;
	}
	if (m->thread_started && m->pc_ok && !m->uthread_started && !m->paused) {
		urgent = true;
		m->uthread_started = true;
		mig_sock_tcp_options(fd);
		mig_conn_init(&m->uconn, fd, true);
		m->usock = fd;
	}
	pthread_mutex_unlock(&m->pc_lock);
	if (urgent) {
		/* Post-copy's urgent channel (its HELLO says; the thread checks). */
		if (pthread_create(&m->uthread, NULL, urgent_main, m)) {
			pthread_mutex_lock(&m->pc_lock);
			m->usock = -1;
			m->uthread_started = false;
			pthread_mutex_unlock(&m->pc_lock);
			mig_conn_free(&m->uconn);
			return qerr_set(e, EAGAIN, "cannot start the urgent channel's thread");
		}
		return 0;
	}
	if (m->thread_started) {
		/* One migration per destination, and one urgent channel. */
		struct mig_conn c;

		mig_conn_init(&c, fd, true);
		mig_send_error(&c, EBUSY, "a migration is already arriving here");
		mig_conn_free(&c);
		return 0;
	}
	return start_worker(m, fd, e);
}

int mig_in_eventfd(const struct mig_in *m)
{
	return m->sync.efd;
}

void mig_in_next_event(struct mig_in *m, struct mig_event *ev)
{
	uint64_t v;

	if (read(m->sync.efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_msg("migration eventfd: %s", strerror(errno));
	mig_sync_next(&m->sync, ev);
}

void mig_in_take_config(struct mig_in *m, struct vm_config *cfg, struct json_object **store)
{
	*cfg = m->rx.cfg;
	*store = m->rx.cfg_store;
	m->rx.cfg_store = NULL;
}

void mig_in_built(struct mig_in *m, struct vm *vm, int err, const char *msg)
{
	if (!err && vm && vm->mem.ram_size / MIG_PAGE != m->rx.npages) {
		mig_sync_answer(&m->sync, EINVAL, "the VM built has a different memory size");
		return;
	}
	m->vm = err ? NULL : vm;
	mig_sync_answer(&m->sync, err, msg);
}

/* The disks are shared storage: the same size on both sides, or not the same disk. */
static int check_disks(struct mig_in *m, struct qerr *e)
{
	const struct ckpt_state *l = &m->rx.state;
	unsigned int d;

	for (d = 0; d < ELIDE_MAX_DISKS; d++) {
		struct stat st;
		const char *path;

		if (!l->disk[d])
			continue;
		if (d >= m->vm->cfg.ndisks)
			return qerr_set(e, EINVAL, "the source has disk %u, this VM does not", d);
		path = m->vm->cfg.disks[d].path;
		if (stat(path, &st) < 0)
			return qerr_set(e, errno, "disk %u (%s): %s", d, path, strerror(errno));
		if ((uint64_t)st.st_size != l->disk[d]->size)
			return qerr_set(e, EINVAL,
					"disk %u (%s) is %llu bytes here, %llu on the source: not "
					"the same (shared) disk",
					d, path, (unsigned long long)st.st_size,
					(unsigned long long)l->disk[d]->size);
	}
	return 0;
}

void mig_in_apply(struct mig_in *m)
{
	struct qerr e = {0};
	int ret = m->vm ? check_disks(m, &e) : qerr_set(&e, ENODEV, "no VM");

	/* The source dropped them when it paused; the VM runs here from now on. */
	if (!ret)
		ret = virtio_blk_lock_all(m->vm, true, &e);
	if (!ret)
		ret = ckpt_state_apply(m->vm, &m->rx.state, &e);
	mig_sync_answer(&m->sync, ret, e.msg);
}

bool mig_in_run(const struct mig_in *m)
{
	return m->rx.run;
}

void mig_in_started(struct mig_in *m, int err, const char *msg)
{
	mig_sync_answer(&m->sync, err, msg);
}

void mig_in_stats(struct mig_in *m, struct mig_stats *st)
{
	uint64_t end = m->end_ns;

	memset(st, 0, sizeof(*st));
	st->incoming = true;
	st->status = m->status;
	st->transferred = m->conn.rx_bytes;
	st->total = m->rx.npages * MIG_PAGE;
	st->normal = m->rx.pages_data;
	st->duplicate = m->rx.pages_zero;
	st->dirty_sync_count = m->rx.rounds;
	st->total_ns = m->conn_ns ? (end ? end : time_now_ns()) - m->conn_ns : 0;
	st->transferred += m->uconn.rx_bytes;
	st->postcopy = m->rx.postcopy;
	st->postcopy_requests = m->pc_requests;
	st->pages_pushed = m->pc_pushed;
	st->faults_waited = m->pc_waited;
	if (m->have_lazy_st) {
		st->faults = m->lazy_st.faults;
		st->fault_p50_ns = m->lazy_st.fault_p50_ns;
		st->fault_p99_ns = m->lazy_st.fault_p99_ns;
	}
}

int mig_in_finish(struct mig_in *m, struct mig_stats *st, struct qerr *e)
{
	int ret;

	if (m->thread_started) {
		bool ended;

		pthread_mutex_lock(&m->sync.lock);
		ended = m->sync.ended;
		pthread_mutex_unlock(&m->sync.lock);
		if (!ended) {
			mig_sync_cancel(&m->sync);
			pc_fail(m, -ECANCELED);
			if (m->sock >= 0)
				shutdown(m->sock, SHUT_RDWR);
		}
		pthread_join(m->thread, NULL);
		m->thread_started = false;
		ret = m->result;
		if (ret)
			qerr_set(e, m->err.errnum ? m->err.errnum : -ret, "%s", m->err.msg);
	} else {
		ret = qerr_set(e, ECANCELED, "no migration arrived");
	}
	m->status = ret ? MIG_STATUS_FAILED : MIG_STATUS_COMPLETED;
	mig_in_stats(m, st);
	if (ret)
		snprintf(st->error, sizeof(st->error), "%s", e ? e->msg : "");
	mig_conn_free(&m->conn);
	m->sock = -1;
	/* The state is loaded or moot: free it now, not with the job. */
	mig_rx_free(&m->rx);
	return ret;
}
