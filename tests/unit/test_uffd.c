// SPDX-License-Identifier: MIT
/*
 * userfaultfd lazy page fill on real guest RAM (mem_init, both backends), no
 * KVM: test threads play the vCPUs, touching pages while the prefetch
 * thread runs. The source's DATA pages hold a pattern naming the page in
 * every word, and it counts fills per page to check exactly-once. Needs
 * userfaultfd without UFFD_USER_MODE_ONLY (root, or the sysctl).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qlite/mem.h"
#include "qlite/uffd.h"

#define RAM_SIZE (64 * MiB)
#define NPAGES (RAM_SIZE / UFFD_PAGE_SIZE)
#define PAGE_WORDS (UFFD_PAGE_SIZE / 8)
#define NONE UINT64_MAX
#define JOIN_TIMEOUT_S 10

static uint64_t pattern(uint64_t pg)
{
	return 0xa5a5000000000000ULL | pg;
}

/* ---- the test source -------------------------------------------------- */

struct tsrc {
	uint64_t pages;
	uint8_t *kind; /* enum uffd_page_kind per page */
	uint32_t *fills; /* fill calls per page */
	unsigned int delay_us; /* per fill (atomic): keeps prefetch behind the touches */
	uint64_t slow_page; /* takes slow_us instead */
	unsigned int slow_us;
	uint64_t fail_page; /* fill returns -EIO */
	/* fill of gate_page blocks until the gate opens */
	uint64_t gate_page;
	bool gate_entered, gate_open;
	/*
	 * fill of hold_page waits while hold is set: prefetch cannot finish
	 * and unregister, which would wake a thread whose fault we lost.
	 */
	uint64_t hold_page;
	bool hold;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* pages the prefetch thread filled, in order */
	uint64_t *order;
	uint64_t norder;
	uint64_t fault_fills, prefetch_fills;
	/* prefetch_next hook: last_fault values seen */
	uint64_t hook_fault;
	/* failed hook: calls, and the last error and message */
	unsigned int failed_calls;
	int failed_err;
	char failed_msg[256];
};

static void sleep_us(unsigned int us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static enum uffd_page_kind tsrc_kind(void *opaque, uint64_t pg)
{
	struct tsrc *s = opaque;

	assert_true(pg < s->pages);
	return s->kind[pg];
}

static int tsrc_fill(void *opaque, uint64_t pg, void *dst)
{
	struct tsrc *s = opaque;
	uint64_t *w = dst;
	char name[16] = "";
	unsigned int i, us;

	/* A page-aligned buffer, and never a ZERO page or a foreign page. */
	if (pg >= s->pages || s->kind[pg] != UFFD_PAGE_DATA || (uintptr_t)dst % UFFD_PAGE_SIZE)
		return -EINVAL;
	__atomic_fetch_add(&s->fills[pg], 1, __ATOMIC_SEQ_CST);
	pthread_getname_np(pthread_self(), name, sizeof(name));
	if (!strcmp(name, "uffd-prefetch")) {
		uint64_t n = __atomic_fetch_add(&s->norder, 1, __ATOMIC_SEQ_CST);

		if (n < s->pages)
			s->order[n] = pg;
		__atomic_fetch_add(&s->prefetch_fills, 1, __ATOMIC_SEQ_CST);
	} else if (!strcmp(name, "uffd-fault")) {
		__atomic_fetch_add(&s->fault_fills, 1, __ATOMIC_SEQ_CST);
	}
	if (pg == s->gate_page) {
		pthread_mutex_lock(&s->lock);
		s->gate_entered = true;
		pthread_cond_broadcast(&s->cond);
		while (!s->gate_open)
			pthread_cond_wait(&s->cond, &s->lock);
		pthread_mutex_unlock(&s->lock);
	}
	while (pg == s->hold_page && __atomic_load_n(&s->hold, __ATOMIC_SEQ_CST))
		sleep_us(1000);
	us = pg == s->slow_page ? s->slow_us : __atomic_load_n(&s->delay_us, __ATOMIC_RELAXED);
	if (us)
		sleep_us(us);
	if (pg == s->fail_page)
		return -EIO;
	for (i = 0; i < PAGE_WORDS; i++)
		w[i] = pattern(pg);
	return 0;
}

static void gate_wait_entered(struct tsrc *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->gate_entered)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static void gate_open(struct tsrc *s)
{
	pthread_mutex_lock(&s->lock);
	s->gate_open = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* ---- fixture ---------------------------------------------------------- */

struct fixture {
	struct guest_mem m;
	struct tsrc s;
	struct uffd_source src;
	struct uffd_lazy *l;
	uint64_t data_pages;
};

static const enum mem_backend backend_anon = MEM_BACKEND_ANON;
static const enum mem_backend backend_memfd = MEM_BACKEND_MEMFD;

/* ZERO: every 7th page, and a 2 MiB hole at 16 MiB; DATA otherwise. */
static enum uffd_page_kind default_kind(uint64_t pg)
{
	if (pg % 7 == 3 || (pg >= 4096 && pg < 4096 + 512))
		return UFFD_PAGE_ZERO;
	return UFFD_PAGE_DATA;
}

static int fixture_make(void **state, uint64_t size, enum uffd_page_kind (*kind)(uint64_t))
{
	enum mem_backend backend = *(const enum mem_backend *)*state;
	struct fixture *f = calloc(1, sizeof(*f));
	struct qerr e = { 0 };
	uint64_t pg;

	if (!f)
		return -1;
	if (mem_init(&f->m, size, backend, &e)) {
		print_error("mem_init: %s\n", e.msg);
		free(f);
		return -1;
	}
	f->s.pages = size / UFFD_PAGE_SIZE;
	f->s.kind = malloc(f->s.pages);
	f->s.fills = calloc(f->s.pages, sizeof(uint32_t));
	f->s.order = calloc(f->s.pages, sizeof(uint64_t));
	if (!f->s.kind || !f->s.fills || !f->s.order)
		return -1;
	for (pg = 0; pg < f->s.pages; pg++) {
		f->s.kind[pg] = kind(pg);
		f->data_pages += f->s.kind[pg] == UFFD_PAGE_DATA;
	}
	f->s.slow_page = f->s.fail_page = f->s.gate_page = f->s.hold_page = NONE;
	f->s.hook_fault = NONE;
	pthread_mutex_init(&f->s.lock, NULL);
	pthread_cond_init(&f->s.cond, NULL);
	f->src = (struct uffd_source){ .kind = tsrc_kind, .fill = tsrc_fill, .opaque = &f->s };
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return fixture_make(state, RAM_SIZE, default_kind);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	/* A failed test may leave a fill waiting. */
	gate_open(&f->s);
	__atomic_store_n(&f->s.hold, false, __ATOMIC_SEQ_CST);
	uffd_lazy_destroy(f->l);
	mem_destroy(&f->m);
	pthread_cond_destroy(&f->s.cond);
	pthread_mutex_destroy(&f->s.lock);
	free(f->s.kind);
	free(f->s.fills);
	free(f->s.order);
	free(f);
	return 0;
}

static void start(struct fixture *f)
{
	struct qerr e = { 0 };
	int ret = uffd_lazy_start(&f->m, &f->src, &f->l, &e);

	if (ret)
		fail_msg("uffd_lazy_start: %s", e.msg);
}

/* Keep the engine registered (not done) until finish(). */
static void hold(struct fixture *f)
{
	f->s.hold_page = f->s.pages - 2;
	assert_int_equal(f->s.kind[f->s.hold_page], UFFD_PAGE_DATA);
	f->s.hold = true;
}

/* Threads were served by the engine, not released by unregistering. */
static void assert_not_done(struct fixture *f)
{
	struct uffd_lazy_stats st;

	uffd_lazy_stats(f->l, &st);
	assert_false(st.done);
}

static void finish(struct fixture *f)
{
	struct qerr e = { 0 };

	__atomic_store_n(&f->s.delay_us, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&f->s.hold, false, __ATOMIC_SEQ_CST);
	if (uffd_lazy_finish(f->l, &e))
		fail_msg("uffd_lazy_finish: %s", e.msg);
}

static uint64_t *page_ptr(struct fixture *f, uint64_t pg)
{
	return (uint64_t *)(f->m.base + pg * UFFD_PAGE_SIZE);
}

/* Read the whole page (faulting it in); true if it holds what it should. */
static bool page_ok(struct fixture *f, uint64_t pg)
{
	const volatile uint64_t *w = page_ptr(f, pg);
	uint64_t want = f->s.kind[pg] == UFFD_PAGE_DATA ? pattern(pg) : 0;
	unsigned int i;

	for (i = 0; i < PAGE_WORDS; i++)
		if (w[i] != want)
			return false;
	return true;
}

static void check_all_pages(struct fixture *f)
{
	uint64_t pg, bad = 0, first_bad = NONE;

	for (pg = 0; pg < f->s.pages; pg++) {
		if (page_ok(f, pg))
			continue;
		if (!bad++)
			first_bad = pg;
	}
	if (bad)
		fail_msg("%llu pages hold the wrong content, the first is %llu",
			 (unsigned long long)bad, (unsigned long long)first_bad);
}

/* Every DATA page fetched exactly once, no ZERO page ever. */
static void check_exactly_once(struct fixture *f)
{
	uint64_t pg;

	for (pg = 0; pg < f->s.pages; pg++) {
		uint32_t want = f->s.kind[pg] == UFFD_PAGE_DATA ? 1 : 0;

		if (f->s.fills[pg] != want)
			fail_msg("page %llu (%s) was fetched %u times", (unsigned long long)pg,
				 want ? "data" : "zero", f->s.fills[pg]);
	}
}

static bool resident(struct fixture *f, uint64_t pg)
{
	unsigned char v = 0;

	assert_int_equal(mincore(page_ptr(f, pg), UFFD_PAGE_SIZE, &v), 0);
	return v & 1;
}

/* Join, failing the test rather than hanging on a thread stuck in a fault. */
static void join_timeout(pthread_t t, unsigned int secs)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	if (pthread_timedjoin_np(t, NULL, &ts))
		fail_msg("a thread touching guest RAM did not return within %u s", secs);
}

static unsigned int count_threads(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	unsigned int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char path[300], comm[32] = "";
		FILE *fp;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		fp = fopen(path, "r");
		if (!fp)
			continue;
		if (fgets(comm, sizeof(comm), fp))
			comm[strcspn(comm, "\n")] = 0;
		fclose(fp);
		n += !strcmp(comm, name);
	}
	closedir(d);
	return n;
}

/* ---- toucher threads -------------------------------------------------- */

struct toucher {
	struct fixture *f;
	pthread_barrier_t *barrier;
	uint64_t seed;
	unsigned int iters;
	uint64_t page; /* NONE: random pages */
	bool populate; /* uffd_lazy_populate instead of reading */
	unsigned int bad;
	uint64_t first_word; /* what the first word read */
};

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	unsigned int i;

	if (t->barrier)
		pthread_barrier_wait(t->barrier);
	for (i = 0; i < t->iters; i++) {
		uint64_t pg = t->page != NONE ? t->page : xorshift(&t->seed) % t->f->s.pages;

		if (t->populate && uffd_lazy_populate(t->f->l, pg, 1))
			t->bad++;
		t->first_word = *(volatile uint64_t *)page_ptr(t->f, pg);
		if (!page_ok(t->f, pg))
			t->bad++;
	}
	return NULL;
}

/* ---- tests ------------------------------------------------------------ */

/* Four vCPU-like threads fault at random while prefetch runs. */
static void test_random_touch(void **state)
{
	struct fixture *f = *state;
	struct toucher t[4];
	pthread_t th[4];
	struct uffd_lazy_stats st;
	unsigned int i;

	f->s.delay_us = 20; /* prefetch of 16k pages takes > 300 ms */
	hold(f);
	start(f);
	for (i = 0; i < 4; i++) {
		t[i] = (struct toucher){ .f = f, .seed = 0x9e3779b97f4a7c15ULL * (i + 1),
					 .iters = 400, .page = NONE };
		assert_int_equal(pthread_create(&th[i], NULL, toucher_main, &t[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		join_timeout(th[i], JOIN_TIMEOUT_S);
		assert_int_equal(t[i].bad, 0);
	}
	assert_not_done(f);
	finish(f);
	check_all_pages(f);
	check_exactly_once(f);
	uffd_lazy_stats(f->l, &st);
	assert_true(st.done);
	assert_int_equal(st.pages, NPAGES);
	assert_true(st.faults > 0);
	assert_true(st.fault_pages > 0);
	assert_true(st.prefetch_pages > 0);
	assert_true(f->s.fault_fills > 0 && f->s.prefetch_fills > 0);
	assert_int_equal(st.refaults, 0);
	assert_int_equal(st.eexist, 0);
	/* Prefetch fills only DATA pages; faults and populate resolve both. */
	assert_int_equal(st.fault_pages + st.populate_pages + st.prefetch_pages,
			 f->data_pages + st.zero_pages);
	assert_true(st.fault_p50_ns > 0 && st.fault_p50_ns <= st.fault_p99_ns &&
		    st.fault_p99_ns <= st.fault_max_ns);
	assert_true(st.elapsed_ns > 0);
	print_message("      %llu faults, %llu by fault, %llu prefetched, %llu zero, p50 %llu ns, "
		      "p99 %llu ns, %llu ms\n",
		      (unsigned long long)st.faults, (unsigned long long)st.fault_pages,
		      (unsigned long long)st.prefetch_pages, (unsigned long long)st.zero_pages,
		      (unsigned long long)st.fault_p50_ns, (unsigned long long)st.fault_p99_ns,
		      (unsigned long long)(st.elapsed_ns / 1000000));
}

/* populate makes pages present now; prefetch is far behind. */
static void test_populate(void **state)
{
	struct fixture *f = *state;
	uint64_t pg;

	f->s.delay_us = 200;
	start(f);
	assert_int_equal(uffd_lazy_populate(f->l, 8000, 300), 0);
	for (pg = 8000; pg < 8300; pg++) {
		if (!resident(f, pg))
			fail_msg("page %llu not present after populate", (unsigned long long)pg);
		assert_int_equal(f->s.fills[pg], f->s.kind[pg] == UFFD_PAGE_DATA);
	}
	assert_false(resident(f, 12000));
	/* Again: nothing to do, nothing fetched twice. */
	assert_int_equal(uffd_lazy_populate(f->l, 8000, 300), 0);
	assert_int_equal(uffd_lazy_populate(f->l, 0, 0), 0);
	assert_int_equal(uffd_lazy_populate(f->l, NPAGES, 1), -EINVAL);
	assert_int_equal(uffd_lazy_populate(f->l, NPAGES - 1, 2), -EINVAL);
	assert_int_equal(uffd_lazy_populate(f->l, 1, UINT64_MAX), -EINVAL);
	for (pg = 8000; pg < 8300; pg++)
		assert_true(page_ok(f, pg));
	finish(f);
	check_all_pages(f);
	check_exactly_once(f);
	/* After finish: ordinary memory. */
	assert_int_equal(uffd_lazy_populate(f->l, 0, NPAGES), 0);
}

/* Many threads fault and populate one DATA page and one ZERO page at once. */
static void test_same_page_race(void **state)
{
	struct fixture *f = *state;
	const uint64_t data_pg = 9001, zero_pg = 9000 - 9000 % 7 + 3;
	struct toucher t[16];
	pthread_t th[16];
	pthread_barrier_t b;
	unsigned int i;

	assert_int_equal(f->s.kind[data_pg], UFFD_PAGE_DATA);
	assert_int_equal(f->s.kind[zero_pg], UFFD_PAGE_ZERO);
	f->s.delay_us = 100;
	f->s.slow_page = data_pg; /* the others pile up while it is filled */
	f->s.slow_us = 20000;
	hold(f);
	start(f);
	pthread_barrier_init(&b, NULL, 16);
	for (i = 0; i < 16; i++) {
		t[i] = (struct toucher){ .f = f, .barrier = &b, .iters = 3,
					 .page = i % 4 == 3 ? zero_pg : data_pg,
					 .populate = i % 2 };
		assert_int_equal(pthread_create(&th[i], NULL, toucher_main, &t[i]), 0);
	}
	for (i = 0; i < 16; i++) {
		join_timeout(th[i], JOIN_TIMEOUT_S);
		assert_int_equal(t[i].bad, 0);
	}
	pthread_barrier_destroy(&b);
	assert_not_done(f);
	assert_int_equal(f->s.fills[data_pg], 1);
	assert_int_equal(f->s.fills[zero_pg], 0);
	finish(f);
	check_all_pages(f);
	check_exactly_once(f);
}

static void *touch_one(void *arg)
{
	struct toucher *t = arg;

	t->first_word = *(volatile uint64_t *)page_ptr(t->f, t->page);
	return NULL;
}

/*
 * memfd: the page is written through the fd while its fill is under way,
 * so UFFDIO_COPY finds it (EEXIST). The write wins, and the faulting
 * thread must be woken (UFFDIO_WAKE) or it sleeps forever.
 */
static void test_eexist_wakes(void **state)
{
	struct fixture *f = *state;
	const uint64_t pg = 10001, x = 0x1234567887654321ULL;
	struct uffd_lazy_stats st;
	struct toucher t = { .f = f, .page = pg };
	pthread_t th;

	assert_int_equal(f->s.kind[pg], UFFD_PAGE_DATA);
	f->s.delay_us = 100;
	f->s.gate_page = pg;
	hold(f);
	start(f);
	assert_int_equal(pthread_create(&th, NULL, touch_one, &t), 0);
	gate_wait_entered(&f->s);
	assert_int_equal(pwrite(f->m.memfd, &x, sizeof(x), pg * UFFD_PAGE_SIZE), sizeof(x));
	gate_open(&f->s);
	join_timeout(th, JOIN_TIMEOUT_S);
	assert_not_done(f);
	assert_int_equal(t.first_word, x);
	uffd_lazy_stats(f->l, &st);
	assert_int_equal(st.eexist, 1);
	assert_int_equal(f->s.fills[pg], 1);
	finish(f);
	assert_int_equal(page_ptr(f, pg)[0], x);
	assert_int_equal(page_ptr(f, pg)[1], 0);
}

static void wait_error_fd(struct fixture *f)
{
	struct pollfd p = { .fd = uffd_lazy_error_fd(f->l), .events = POLLIN };

	assert_int_equal(poll(&p, 1, JOIN_TIMEOUT_S * 1000), 1);
}

/* A failed fill on the fault path: reported, the fault stays unresolved. */
static void test_fill_error_fault(void **state)
{
	struct fixture *f = *state;
	const uint64_t pg = 7001;
	struct qerr e = { 0 };
	struct toucher t = { .f = f, .page = pg, .first_word = 1 };
	pthread_t th;
	char want[64];

	assert_int_equal(f->s.kind[pg], UFFD_PAGE_DATA);
	f->s.delay_us = 200;
	f->s.fail_page = pg;
	start(f);
	assert_int_equal(uffd_lazy_error(f->l, &e), 0);
	assert_int_equal(pthread_create(&th, NULL, touch_one, &t), 0);
	wait_error_fd(f);
	assert_int_equal(uffd_lazy_error(f->l, &e), -EIO);
	snprintf(want, sizeof(want), "page %llu (gpa 0x%llx)", (unsigned long long)pg,
		 (unsigned long long)pg * UFFD_PAGE_SIZE);
	assert_non_null(strstr(e.msg, want));
	memset(&e, 0, sizeof(e));
	assert_int_equal(uffd_lazy_finish(f->l, &e), -EIO);
	assert_non_null(strstr(e.msg, want));
	assert_int_equal(uffd_lazy_populate(f->l, 0, 1), -EIO);
	/* Still stuck: nothing may hand the guest a page we could not fetch. */
	usleep(100 * 1000);
	assert_int_equal(pthread_tryjoin_np(th, NULL), EBUSY);
	/* Destroying (VM stopped) releases it; the page is then plain memory. */
	uffd_lazy_destroy(f->l);
	f->l = NULL;
	join_timeout(th, JOIN_TIMEOUT_S);
	assert_int_equal(t.first_word, 0);
}

static void tsrc_failed(void *opaque, int err, const char *msg)
{
	struct tsrc *s = opaque;

	pthread_mutex_lock(&s->lock);
	s->failed_calls++;
	s->failed_err = err;
	snprintf(s->failed_msg, sizeof(s->failed_msg), "%s", msg);
	pthread_mutex_unlock(&s->lock);
}

/* A failed fill on the prefetch path, nobody touching: still reported. */
static void test_fill_error_prefetch(void **state)
{
	struct fixture *f = *state;
	struct uffd_lazy_stats st;
	struct qerr e = { 0 };

	f->s.fail_page = 1000;
	f->src.failed = tsrc_failed;
	start(f);
	wait_error_fd(f);
	/* The hook runs right after the eventfd is signalled, once. */
	for (int i = 0; i < 1000 && !__atomic_load_n(&f->s.failed_calls, __ATOMIC_SEQ_CST); i++)
		usleep(1000);
	pthread_mutex_lock(&f->s.lock);
	assert_int_equal(f->s.failed_calls, 1);
	assert_int_equal(f->s.failed_err, -EIO);
	assert_non_null(strstr(f->s.failed_msg, "cannot fetch page 1000"));
	pthread_mutex_unlock(&f->s.lock);
	assert_int_equal(uffd_lazy_finish(f->l, &e), -EIO);
	assert_non_null(strstr(e.msg, "cannot fetch page 1000"));
	uffd_lazy_stats(f->l, &st);
	assert_false(st.done);
	assert_int_equal(f->s.fills[1000], 1);
	assert_int_equal(f->s.fills[2000], 0); /* prefetch stopped */
}

/*
 * A present page discarded while registered (balloon) faults again and
 * reads zero; a missing page discarded is simply filled later.
 */
static void test_discard_refault(void **state)
{
	struct fixture *f = *state;
	const uint64_t p = 1001, q = 12002, gate = 6001;
	struct uffd_lazy_stats st;
	struct toucher t = { .f = f, .page = p };
	volatile uint64_t *w;
	pthread_t th;

	assert_int_equal(f->s.kind[p], UFFD_PAGE_DATA);
	assert_int_equal(f->s.kind[q], UFFD_PAGE_DATA);
	assert_int_equal(f->s.kind[gate], UFFD_PAGE_DATA);
	f->s.gate_page = gate; /* keeps the range registered meanwhile */
	start(f);
	assert_true(page_ok(f, p));
	assert_int_equal(mem_discard(&f->m, p * UFFD_PAGE_SIZE, UFFD_PAGE_SIZE), 0);
	t.first_word = 1;
	assert_int_equal(pthread_create(&th, NULL, touch_one, &t), 0);
	join_timeout(th, JOIN_TIMEOUT_S); /* the refault must be resolved */
	assert_int_equal(t.first_word, 0);
	w = page_ptr(f, p);
	assert_int_equal(w[0], 0);
	assert_int_equal(w[PAGE_WORDS - 1], 0);
	w[5] = 77;
	assert_int_equal(w[5], 77);
	gate_wait_entered(&f->s);
	assert_int_equal(mem_discard(&f->m, q * UFFD_PAGE_SIZE, UFFD_PAGE_SIZE), 0);
	assert_true(page_ok(f, q));
	uffd_lazy_stats(f->l, &st);
	assert_false(st.done);
	assert_int_equal(st.refaults, 1);
	gate_open(&f->s);
	finish(f);
	assert_int_equal(w[5], 77);
	assert_int_equal(w[0], 0);
	assert_int_equal(f->s.fills[p], 1);
	assert_int_equal(f->s.fills[q], 1);
}

/*
 * Discard pages the moment prefetch installs them, then read them back:
 * the refault can reach the fault thread before the filler has marked the
 * page present, and must still be resolved (as zero).
 */
struct chaser {
	struct fixture *f;
	uint64_t pages, bad;
};

static void *chaser_main(void *arg)
{
	struct chaser *c = arg;
	struct fixture *f = c->f;
	uint64_t pg;

	for (pg = 15; pg < f->s.pages - 64; pg += 16) { /* stay clear of the held page */
		unsigned char v = 0;

		if (f->s.kind[pg] != UFFD_PAGE_DATA)
			continue;
		while (mincore(page_ptr(f, pg), UFFD_PAGE_SIZE, &v) == 0 && !(v & 1))
			;
		if (mem_discard(&f->m, pg * UFFD_PAGE_SIZE, UFFD_PAGE_SIZE))
			c->bad++;
		if (*(volatile uint64_t *)page_ptr(f, pg))
			c->bad++;
		c->pages++;
	}
	return NULL;
}

static void test_discard_chase(void **state)
{
	struct fixture *f = *state;
	struct chaser c = { .f = f };
	pthread_t th;

	f->s.delay_us = 5;
	hold(f);
	start(f);
	assert_int_equal(pthread_create(&th, NULL, chaser_main, &c), 0);
	join_timeout(th, 60);
	assert_not_done(f);
	assert_int_equal(c.bad, 0);
	assert_true(c.pages > 500);
	finish(f);
	check_exactly_once(f);
}

/* Destroy with prefetch half-way: prompt, no leak (ASan), memory usable. */
static void test_destroy_midway(void **state)
{
	struct fixture *f = *state;
	struct uffd_lazy_stats st;
	struct toucher t = { .f = f, .seed = 42, .iters = 50, .page = NONE };
	uint64_t t0;
	pthread_t th;

	f->s.delay_us = 50;
	hold(f);
	start(f);
	assert_int_equal(count_threads("uffd-fault"), 1);
	assert_int_equal(count_threads("uffd-prefetch"), 1);
	assert_int_equal(pthread_create(&th, NULL, toucher_main, &t), 0);
	join_timeout(th, JOIN_TIMEOUT_S);
	assert_int_equal(t.bad, 0);
	/* Midway: the prefetch has placed some (on a loaded host it may start late) ... */
	for (int i = 0; i < JOIN_TIMEOUT_S * 100; i++) {
		uffd_lazy_stats(f->l, &st);
		if (st.prefetch_pages)
			break;
		usleep(10 * 1000);
	}
	/* ... and cannot finish: it is held on the last data pages. */
	assert_false(st.done);
	assert_true(st.prefetch_pages > 0 && st.prefetch_pages < f->data_pages);
	__atomic_store_n(&f->s.hold, false, __ATOMIC_SEQ_CST); /* a blocked fill would block destroy */
	t0 = time_now_ns();
	uffd_lazy_destroy(f->l);
	f->l = NULL;
	assert_true(time_now_ns() - t0 < 1000ULL * 1000 * 1000);
	assert_int_equal(count_threads("uffd-fault"), 0);
	assert_int_equal(count_threads("uffd-prefetch"), 0);
	/* Unregistered: a missing page is ordinary zero-fill memory now. */
	if (!f->s.fills[NPAGES - 2])
		assert_int_equal(page_ptr(f, NPAGES - 2)[0], 0);
}

/* After finish: unregistered, threads gone, no fault reaches the engine. */
static void test_finish_unregisters(void **state)
{
	struct fixture *f = *state;
	struct uffd_lazy_stats st, st2;
	struct toucher t = { .f = f, .page = 4096 + 100 };
	uint64_t pg, fills = 0;
	unsigned int i;
	pthread_t th;

	start(f);
	finish(f);
	uffd_lazy_stats(f->l, &st);
	assert_true(st.done);
	assert_int_equal(st.faults, 0);
	assert_int_equal(st.prefetch_pages, f->data_pages);
	/* ZERO pages were never filled: not resident, and zero-fill now. */
	assert_false(resident(f, 4096 + 100));
	assert_int_equal(pthread_create(&th, NULL, touch_one, &t), 0);
	join_timeout(th, JOIN_TIMEOUT_S); /* a registered touch would hang */
	assert_int_equal(t.first_word, 0);
	check_all_pages(f);
	check_exactly_once(f);
	assert_int_equal(mem_discard(&f->m, 1 * UFFD_PAGE_SIZE, UFFD_PAGE_SIZE), 0);
	assert_int_equal(page_ptr(f, 1)[0], 0);
	uffd_lazy_stats(f->l, &st2);
	assert_int_equal(st2.faults, 0);
	assert_int_equal(st2.zero_pages, 0);
	for (pg = 0; pg < f->s.pages; pg++)
		fills += f->s.fills[pg];
	assert_int_equal(fills, f->data_pages);
	/* The threads exit on their own. */
	for (i = 0; i < 500 && count_threads("uffd-fault") + count_threads("uffd-prefetch"); i++)
		usleep(10 * 1000);
	assert_int_equal(count_threads("uffd-fault") + count_threads("uffd-prefetch"), 0);
}

/* A reordering hook: descending, seeing the fault pivots. */
static uint64_t order_desc(void *opaque, uint64_t prev, uint64_t last_fault)
{
	struct tsrc *s = opaque;

	if (last_fault != NONE)
		__atomic_store_n(&s->hook_fault, last_fault, __ATOMIC_SEQ_CST);
	if (prev == NONE)
		return s->pages - 1;
	return prev ? prev - 1 : NONE;
}

static void test_prefetch_order(void **state)
{
	struct fixture *f = *state;
	uint64_t i;

	f->src.prefetch_next = order_desc;
	f->src.run_pages = 4;
	f->s.delay_us = 10;
	start(f);
	assert_true(page_ok(f, 100));
	finish(f);
	check_exactly_once(f);
	assert_int_equal(f->s.hook_fault, 100);
	assert_int_equal(f->s.norder + f->s.fault_fills, f->data_pages);
	for (i = 1; i < f->s.norder; i++)
		if (f->s.order[i] >= f->s.order[i - 1])
			fail_msg("prefetch went from page %llu to %llu",
				 (unsigned long long)f->s.order[i - 1],
				 (unsigned long long)f->s.order[i]);
	check_all_pages(f);
}

/* Default order: ascending runs. */
static void test_prefetch_ascending(void **state)
{
	struct fixture *f = *state;
	uint64_t i;

	start(f);
	finish(f);
	assert_int_equal(f->s.norder, f->data_pages);
	for (i = 1; i < f->s.norder; i++)
		assert_true(f->s.order[i] > f->s.order[i - 1]);
}

#define BIG_RAM (MEM_32BIT_GAP_START + 64 * MiB)
#define LOW_PAGES (MEM_32BIT_GAP_START / UFFD_PAGE_SIZE)

/* Sparse: DATA only every 4096th page and at the region edges. */
static enum uffd_page_kind sparse_kind(uint64_t pg)
{
	if (pg % 4096 == 0 || pg == LOW_PAGES - 1 || pg == LOW_PAGES ||
	    pg == BIG_RAM / UFFD_PAGE_SIZE - 1)
		return UFFD_PAGE_DATA;
	return UFFD_PAGE_ZERO;
}

static int setup_big(void **state)
{
	return fixture_make(state, BIG_RAM, sparse_kind);
}

/* Two regions (below and above the 32-bit hole); zero pages never fetched. */
static void test_two_regions(void **state)
{
	struct fixture *f = *state;
	struct uffd_lazy_stats st;
	uint64_t pg;

	assert_int_equal(f->m.nr_regions, 2);
	start(f);
	assert_true(page_ok(f, LOW_PAGES + 5000)); /* zero page above 4 GiB */
	finish(f);
	uffd_lazy_stats(f->l, &st);
	assert_int_equal(st.prefetch_pages + st.fault_pages - st.zero_pages, f->data_pages);
	check_exactly_once(f);
	for (pg = 0; pg < f->s.pages; pg++)
		if (f->s.kind[pg] == UFFD_PAGE_DATA && !page_ok(f, pg))
			fail_msg("page %llu", (unsigned long long)pg);
	assert_true(page_ok(f, LOW_PAGES - 2));
	assert_true(page_ok(f, LOW_PAGES + 1));
	assert_true(page_ok(f, 12345));
}

static void test_invalid(void **state)
{
	struct fixture *f = *state;
	struct uffd_source bad = f->src;
	struct uffd_lazy *l = (struct uffd_lazy *)1;
	struct qerr e = { 0 };

	bad.fill = NULL;
	assert_int_equal(uffd_lazy_start(&f->m, &bad, &l, &e), -EINVAL);
	assert_null(l);
	assert_non_null(strstr(e.msg, "kind and fill"));
	bad = f->src;
	bad.run_pages = UFFD_RUN_MAX + 1;
	memset(&e, 0, sizeof(e));
	assert_int_equal(uffd_lazy_start(&f->m, &bad, &l, &e), -EINVAL);
	/* Memory already written would never be filled: refused. */
	page_ptr(f, 5)[0] = 1;
	memset(&e, 0, sizeof(e));
	assert_int_equal(uffd_lazy_start(&f->m, &f->src, &l, &e), -EBUSY);
	assert_null(l);
	/* (With THP the whole 2 MiB around it is populated.) */
	assert_non_null(strstr(e.msg, "is already populated: lazy fill needs untouched memory"));
	uffd_lazy_destroy(NULL);
}

/*
 * Without CAP_SYS_PTRACE (and the sysctl at 0), userfaultfd(2) refuses
 * kernel-fault handling: the engine must open /dev/userfaultfd instead.
 */
static int drop_ptrace_cap(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data))
		return -errno;
	data[CAP_SYS_PTRACE / 32].effective &= ~(1u << (CAP_SYS_PTRACE % 32));
	return syscall(SYS_capset, &hdr, data) ? -errno : 0;
}

/* In a forked child: no cmocka assertions (a failure would run the rest there). */
static int child_fallback(struct fixture *f)
{
	FILE *fp = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");
	struct qerr e = { 0 };
	int sysctl = 1, fd;
	uint64_t pg;

	if (fp) {
		if (fscanf(fp, "%d", &sysctl) != 1)
			sysctl = 1;
		fclose(fp);
	}
	if (drop_ptrace_cap())
		return 10;
	fd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (!sysctl && (fd >= 0 || errno != EPERM))
		return 11; /* the direct path was not refused: not testing the fallback */
	if (fd >= 0)
		close(fd);
	if (uffd_lazy_start(&f->m, &f->src, &f->l, &e)) {
		fprintf(stderr, "uffd_lazy_start: %s\n", e.msg);
		return 12;
	}
	if (!page_ok(f, 77))
		return 13;
	if (uffd_lazy_finish(f->l, &e)) {
		fprintf(stderr, "uffd_lazy_finish: %s\n", e.msg);
		return 14;
	}
	for (pg = 0; pg < f->s.pages; pg++)
		if (!page_ok(f, pg) || f->s.fills[pg] != (f->s.kind[pg] == UFFD_PAGE_DATA))
			return 15;
	return 0;
}

static void test_dev_fallback(void **state)
{
	struct fixture *f = *state;
	int status;
	pid_t pid;

	if (geteuid() != 0 || access("/dev/userfaultfd", R_OK | W_OK))
		skip();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_fallback(f));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * keep_present: pages resident at start keep their content and are never
 * fetched; the caller drops those it wants filled (a write may have
 * populated a whole huge page).
 */
static void test_keep_present(void **state)
{
	struct fixture *f = *state;
	struct uffd_lazy_stats st;
	uint64_t pg, kept = 0;

	/* Or khugepaged may fill the dropped pages in again before registration. */
	assert_int_equal(madvise(f->m.base, f->m.ram_size, MADV_NOHUGEPAGE), 0);
	for (pg = 0; pg < f->s.pages; pg += 5) {
		page_ptr(f, pg)[0] = ~pattern(pg); /* what "pre-copy" placed */
		kept += f->s.kind[pg] == UFFD_PAGE_DATA;
	}
	/* After all writes: a later one would populate its huge page again. */
	for (pg = 0; pg < f->s.pages; pg += 5) {
		if (pg + 1 < f->s.pages)
			assert_int_equal(mem_discard(&f->m, (pg + 1) * UFFD_PAGE_SIZE,
						     MIN(4, f->s.pages - pg - 1) * UFFD_PAGE_SIZE),
					 0);
	}
	f->src.keep_present = true;
	start(f);
	assert_true(page_ok(f, 1));
	assert_int_equal(page_ptr(f, 5)[0], ~pattern(5));
	finish(f);
	uffd_lazy_stats(f->l, &st);
	assert_true(st.done);
	for (pg = 0; pg < f->s.pages; pg++) {
		if (pg % 5 == 0) {
			assert_int_equal(f->s.fills[pg], 0);
			assert_int_equal(page_ptr(f, pg)[0], ~pattern(pg));
			assert_int_equal(page_ptr(f, pg)[1], 0);
		} else if (!page_ok(f, pg)) {
			fail_msg("page %llu holds the wrong content", (unsigned long long)pg);
		} else {
			assert_int_equal(f->s.fills[pg], f->s.kind[pg] == UFFD_PAGE_DATA);
		}
	}
	assert_int_equal(st.fault_pages + st.prefetch_pages - st.zero_pages, f->data_pages - kept);
}

#define T(fn, b) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&b)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_random_touch, backend_anon),
		T(test_random_touch, backend_memfd),
		T(test_populate, backend_anon),
		T(test_populate, backend_memfd),
		T(test_same_page_race, backend_anon),
		T(test_same_page_race, backend_memfd),
		T(test_eexist_wakes, backend_memfd),
		T(test_fill_error_fault, backend_anon),
		T(test_fill_error_fault, backend_memfd),
		T(test_fill_error_prefetch, backend_anon),
		T(test_discard_refault, backend_anon),
		T(test_discard_refault, backend_memfd),
		T(test_discard_chase, backend_anon),
		T(test_discard_chase, backend_memfd),
		T(test_destroy_midway, backend_anon),
		T(test_destroy_midway, backend_memfd),
		T(test_finish_unregisters, backend_anon),
		T(test_finish_unregisters, backend_memfd),
		T(test_prefetch_order, backend_anon),
		T(test_prefetch_ascending, backend_memfd),
		T(test_keep_present, backend_anon),
		T(test_keep_present, backend_memfd),
		cmocka_unit_test_prestate_setup_teardown(test_two_regions, setup_big, teardown,
							 (void *)&backend_anon),
		cmocka_unit_test_prestate_setup_teardown(test_two_regions, setup_big, teardown,
							 (void *)&backend_memfd),
		T(test_invalid, backend_anon),
		T(test_invalid, backend_memfd),
		T(test_dev_fallback, backend_anon),
	};

	int fd = syscall(SYS_userfaultfd, O_CLOEXEC), err = errno;

	/* The engine needs kernel-fault handling: the syscall or the device. */
	if (fd < 0 && access("/dev/userfaultfd", R_OK | W_OK)) {
		printf("SKIP: userfaultfd for kernel faults refused (%s) and no usable "
		       "/dev/userfaultfd: run as root or set vm.unprivileged_userfaultfd=1\n",
		       strerror(err));
		return 77;
	}
	if (fd >= 0)
		close(fd);
	if (getenv("UFFD_TEST_FILTER")) /* e.g. UFFD_TEST_FILTER=test_populate */
		cmocka_set_test_filter(getenv("UFFD_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
