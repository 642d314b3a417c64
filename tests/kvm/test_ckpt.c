// SPDX-License-Identifier: MIT
/*
 * Checkpoint/restore end to end: a guest rewriting and checksumming a
 * buffer is checkpointed mid-run over QMP (snapshot-save; the VM goes on),
 * then incrementally a few rounds later (stop), the VM quits, and `qlite
 * run --restore` in new processes finishes the work from either checkpoint,
 * eagerly and lazily, with the same RESULT as an uninterrupted run. (The
 * buffer is small: kvm-pvm takes an exit on every first write to a page.) Then damaged
 * checkpoints (a flipped byte, a truncated stream, a short memory file, a
 * missing file) must each be refused with a message and exit status 1.
 * The checkpointing runs three times: with KVM's dirty ring (the default;
 * kvm-pvm dirties a page on every exit, so its rings fill and vCPUs exit
 * KVM_EXIT_DIRTY_RING_FULL), the bitmap (--dirty-ring=off), and a ring of
 * 256 entries, which must give the exact result too or, where KVM writes
 * past such a ring (kvm-pvm), fail the checkpoint naming the overflow.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/client.h"
#include "qlite/vcpu.h"

#define MEM (128ULL << 20)

static int failures;
static char tmpdir[] = "/tmp/qlite-ckpt-XXXXXX";

/* "RESULT x" from console output; false if there is none. */
static bool find_result(const char *out, char *res, size_t len)
{
	const char *p = out ? strstr(out, "RESULT ") : NULL;

	if (!p)
		return false;
	p += 7;
	snprintf(res, len, "%.16s", p);
	return strlen(res) == 16;
}

struct driver {
	struct ktest *t;
	const char *sock;
	const char *dir, *dir2;
	bool completed;
	uint64_t stats_round; /* the guest's round when the last save completed */
	uint64_t round_at_ckpt, round_at_ckpt2;
	struct json_object *stats, *stats1;
	bool allow_overflow; /* a save may fail naming a dirty ring overflow */
	bool overflowed;
};

static void on_event(void *opaque, struct json_object *ev)
{
	struct driver *d = opaque;
	struct json_object *name, *data;

	if (!json_object_object_get_ex(ev, "event", &name) ||
	    strcmp(json_object_get_string(name), "SNAPSHOT_COMPLETED"))
		return;
	d->completed = true;
	if (json_object_object_get_ex(ev, "data", &data))
		d->stats = json_object_get(data);
}

static bool save(struct driver *d, struct qmp_conn *q, const char *dir, bool stop,
		 bool incremental)
{
	struct json_object *args = json_object_new_object(), *r;
	struct qerr e = { 0 };
	bool qerr_flag = false;
	int i;

	json_object_object_add(args, "dir", json_object_new_string(dir));
	json_object_object_add(args, "stop", json_object_new_boolean(stop));
	json_object_object_add(args, "incremental", json_object_new_boolean(incremental));
	d->completed = false;
	r = qmp_conn_execute(q, "snapshot-save", args, &qerr_flag, &e);
	json_object_put(args);
	if (!r && d->allow_overflow && strstr(e.msg, "overflowed a dirty ring")) {
		printf("snapshot-save %s refused: %s\n", dir, e.msg);
		d->overflowed = true;
		return false;
	}
	if (!r) {
		fprintf(stderr, "FAIL snapshot-save %s: %s\n", dir, e.msg);
		failures++;
		return false;
	}
	json_object_put(r);
	/* The VM stays paused until memory is written: this is the round it holds. */
	d->stats_round = ktest_shared(d->t)[CK_ROUND];
	for (i = 0; i < 600 && !d->completed; i++) /* a hang guard */
		qmp_conn_wait(q, 100, &e);
	CHECK(d->completed);
	return d->completed;
}

static uint64_t wait_round(struct driver *d, uint64_t n)
{
	int i;

	/* A hang guard, not a timing assertion. */
	for (i = 0; i < 60000 && __atomic_load_n(&ktest_shared(d->t)[CK_ROUND], __ATOMIC_RELAXED) < n;
	     i++)
		usleep(1000);
	return ktest_shared(d->t)[CK_ROUND];
}

/*
 * Mid-run: a full checkpoint of the running VM (it goes on), then an
 * incremental one a few rounds later that leaves it stopped; then quit.
 */
static void *drive(void *arg)
{
	struct driver *d = arg;
	struct qmp_conn q = { .fd = -1 };
	struct json_object *r;
	struct qerr e = { 0 };
	bool qerr_flag = false;

	if (qmp_conn_open(&q, d->sock, &e)) {
		fprintf(stderr, "FAIL qmp: %s\n", e.msg);
		failures++;
		return NULL;
	}
	q.on_event = on_event;
	q.opaque = d;
	wait_round(d, 3);
	/* A directory that cannot be written fails before the VM is touched. */
	{
		struct json_object *args = json_object_new_object(), *st, *v;

		json_object_object_add(args, "dir", json_object_new_string("/proc/qlite-ckpt"));
		r = qmp_conn_execute(&q, "snapshot-save", args, &qerr_flag, &e);
		json_object_put(args);
		CHECK(!r && qerr_flag && strstr(e.msg, "/proc/qlite-ckpt"));
		json_object_put(r);
		memset(&e, 0, sizeof(e));
		st = qmp_conn_execute(&q, "query-status", NULL, &qerr_flag, &e);
		CHECK(st && json_object_object_get_ex(st, "status", &v) &&
		      !strcmp(json_object_get_string(v), "running"));
		json_object_put(st);
	}
	if (save(d, &q, d->dir, false, false)) {
		d->round_at_ckpt = d->stats_round;
		d->stats1 = d->stats;
		d->stats = NULL;
	}
	wait_round(d, d->round_at_ckpt + 3);
	if (save(d, &q, d->dir2, true, true))
		d->round_at_ckpt2 = d->stats_round;
	r = qmp_conn_execute(&q, "quit", NULL, &qerr_flag, &e);
	json_object_put(r);
	qmp_conn_close(&q);
	return NULL;
}

/* Run qlite with @argv; its stdout in *@out (malloc()ed); returns the exit status. */
static int run_qlite(char *const argv[], char **out, char **err)
{
	int po[2], pe[2], status = -1;
	pid_t pid;
	size_t len = 0, elen = 0, cap = 1 << 16, ecap = 1 << 14;
	char *buf = malloc(cap), *ebuf = malloc(ecap);

	if (pipe(po) || pipe(pe))
		return -1;
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		alarm(120); /* a hang guard */
		execv(argv[0], argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	for (;;) {
		ssize_t n = read(po[0], buf + len, cap - len - 1);

		if (n <= 0)
			break;
		len += (size_t)n;
		if (cap - len < 4096)
			buf = realloc(buf, cap *= 2);
	}
	for (;;) {
		ssize_t n = read(pe[0], ebuf + elen, ecap - elen - 1);

		if (n <= 0)
			break;
		elen += (size_t)n;
		if (ecap - elen < 1024)
			ebuf = realloc(ebuf, ecap *= 2);
	}
	buf[len] = 0;
	ebuf[elen] = 0;
	close(po[0]);
	close(pe[0]);
	waitpid(pid, &status, 0);
	*out = buf;
	*err = ebuf;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void copy_file(const char *from, const char *to, long truncate_to)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
	CHECK(system(cmd) == 0);
	if (truncate_to >= 0)
		CHECK(truncate(to, truncate_to) == 0);
}

/* A damaged copy of the checkpoint must be refused, naming what is wrong. */
static void expect_refused(const char *qlite, const char *dir, const char *what,
			   const char *needle)
{
	char *argv[] = { (char *)qlite, "run", "--restore", (char *)dir, "--console", "stdio",
			 NULL };
	char *out, *err;
	int rc = run_qlite(argv, &out, &err);

	if (rc != 1 || !strstr(err, needle) || strstr(out, "RESULT")) {
		fprintf(stderr, "FAIL %s: exit %d, stderr '%s' (wanted '%s')\n", what, rc, err,
			needle);
		failures++;
	} else {
		printf("refused (%s): %s", what, err);
	}
	free(out);
	free(err);
}

/* How one checkpointing run tracks dirty pages, and what its restores get. */
struct track_mode {
	const char *name;
	enum vm_dirty_ring ring;
	unsigned int entries; /* the smallest ring KVM takes here, from this up */
	const char *expect; /* vm_dirty_tracking_name() */
	bool all_restores; /* else only the incremental checkpoint's, eager and lazy */
	bool allow_overflow; /* the incremental save may fail naming an overflow */
	const char *ref; /* the uninterrupted RESULT */
	char dir[256]; /* the full checkpoint */
};

/*
 * Checkpointed mid-run (full, then incremental), the VM quits; restored in
 * new processes (with the same --dirty-ring), each must end with @m->ref.
 */
static void checkpoint_run(const char *qlite, struct track_mode *m)
{
	char sock[256], dir2[256], res[32], ring_opt[64];
	struct driver d = { 0 };
	struct ktest t;
	pthread_t th;
	char *out;
	unsigned int i, entries = m->entries;
	uint64_t ring_full = 0, ring_bad = 0, ring_over = 0;
	const char *modes[] = { "eager", "lazy" };

	printf("--- dirty tracking: %s\n", m->name);
	snprintf(sock, sizeof(sock), "%s/qmp-%s.sock", tmpdir, m->name);
	snprintf(m->dir, sizeof(m->dir), "%s/ckpt-%s", tmpdir, m->name);
	snprintf(dir2, sizeof(dir2), "%s/ckpt-incr-%s", tmpdir, m->name);
	for (;;) {
		CHECK(ktest_create(&t, 1, MEM) == 0);
		/* The other backend here: the restores (and their lazy fill) use it too. */
		t.devices.mem_backend = MEM_BACKEND_MEMFD;
		t.devices.dirty_ring = m->ring;
		t.devices.dirty_ring_entries = entries;
		{
			static char spec[300];

			snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", sock);
			t.qmp = spec;
		}
		if (ktest_start(&t, GT_CKPT_SUM) == 0)
			break;
		ktest_destroy(&t);
		/* A host with PML reserves 576 entries: small rings are refused there. */
		if (!entries || entries >= 4096) {
			fprintf(stderr, "FAIL %s: no VM\n", m->name);
			failures++;
			return;
		}
		entries *= 2;
	}
	if (entries)
		printf("ring of %u entries per vCPU\n", entries);
	CHECK(!strcmp(vm_dirty_tracking_name(t.vm), m->expect));
	d.t = &t;
	d.sock = sock;
	d.dir = m->dir;
	d.dir2 = dir2;
	d.allow_overflow = m->allow_overflow;
	pthread_create(&th, NULL, drive, &d);
	ktest_run(&t, 120);
	pthread_join(th, NULL);
	if (t.ctl->vm) {
		ring_full = __atomic_load_n(&t.ctl->vm->dirty_ring_full, __ATOMIC_RELAXED);
		ring_bad = t.ctl->vm->dirty_ring_bad;
		ring_over = t.ctl->vm->dirty_ring_overflows;
	}
	out = ktest_console(&t);
	CHECK(!strstr(out, "RESULT")); /* it really was stopped mid-run */
	free(out);
	ktest_destroy(&t);
	printf("dirty ring full exits: %llu, bad entries: %llu, overflows: %llu\n",
	       (unsigned long long)ring_full, (unsigned long long)ring_bad,
	       (unsigned long long)ring_over);
	CHECK(ring_bad == 0);
	/* An overflow fails the checkpoint; it is never silent. */
	CHECK(!d.overflowed || ring_over > 0);
	CHECK(m->allow_overflow || ring_over == 0);
	if (!strcmp(m->expect, "bitmap"))
		CHECK(ring_full == 0);
	printf("full checkpoint after round %llu: %s\n", (unsigned long long)d.round_at_ckpt,
	       d.stats1 ? json_object_to_json_string(d.stats1) : "(no stats)");
	printf("incremental checkpoint after round %llu: %s\n",
	       (unsigned long long)d.round_at_ckpt2,
	       d.stats ? json_object_to_json_string(d.stats) : "(no stats)");
	CHECK(d.round_at_ckpt >= 3 &&
	      (d.overflowed || (d.round_at_ckpt2 > d.round_at_ckpt && d.round_at_ckpt2 < CK_ROUNDS)));
	if (d.stats1) {
		struct json_object *pages, *v;

		CHECK(json_object_object_get_ex(d.stats1, "pages", &pages));
		/* The buffer, one page in eight zero, in 128 MiB of RAM. */
		CHECK(json_object_object_get_ex(pages, "data", &v) &&
		      json_object_get_int64(v) >= (int64_t)(CK_BUF_SIZE / 4096 * 7 / 8));
		CHECK(json_object_object_get_ex(pages, "zero", &v) &&
		      json_object_get_int64(v) >= (int64_t)(MEM / 4096 / 2));
		json_object_put(d.stats1);
	}
	if (d.stats) {
		struct json_object *pages, *v;

		/* Incremental: the untouched rest comes from the parent. */
		CHECK(json_object_object_get_ex(d.stats, "pages", &pages));
		CHECK(json_object_object_get_ex(pages, "parent", &v) &&
		      json_object_get_int64(v) >= (int64_t)(MEM / 4096 / 2));
		/* Every page the guest rewrote since the full one: none lost. */
		CHECK(json_object_object_get_ex(pages, "data", &v) &&
		      json_object_get_int64(v) >= (int64_t)(CK_BUF_SIZE / 4096 * 7 / 8));
		json_object_put(d.stats);
	}

	/* Restored in new processes: eager and lazy, full and incremental. */
	if (m->ring == VM_DIRTY_RING_OFF)
		snprintf(ring_opt, sizeof(ring_opt), "--dirty-ring=off");
	else if (entries)
		snprintf(ring_opt, sizeof(ring_opt), "--dirty-ring=%u", entries);
	else
		snprintf(ring_opt, sizeof(ring_opt), "--dirty-ring=%s",
			 !strcmp(m->expect, "ring") ? "on" : "off");
	for (i = m->all_restores || d.overflowed ? 0 : 2; i < 4; i++) {
		/* No incremental checkpoint after an overflow: the full one, eagerly. */
		if (d.overflowed && i != 0)
			break;
		const char *mode = modes[i % 2], *from = i < 2 ? m->dir : dir2;
		uint64_t at = i < 2 ? d.round_at_ckpt : d.round_at_ckpt2;
		char *argv[] = { (char *)qlite, "run",		 "--restore", (char *)from,
				 "--restore-mode", (char *)mode, "--console", "stdio",
				 ring_opt,	   NULL };
		char *err, want[64];
		int rc = run_qlite(argv, &out, &err);

		if (rc != 0 || !find_result(out, res, sizeof(res)) || strcmp(res, m->ref)) {
			fprintf(stderr, "FAIL restore %s (%s): exit %d, RESULT '%s' vs '%s'\n%s\n%s\n",
				from, mode, rc, find_result(out, res, sizeof(res)) ? res : "(none)",
				m->ref, out, err);
			failures++;
		} else {
			printf("restored %s (%s, %s): RESULT %s, as uninterrupted\n", from, mode,
			       ring_opt, res);
		}
		/* It went on from the checkpoint (which may land mid-line), no restart. */
		snprintf(want, sizeof(want), "round %016llx", (unsigned long long)at + 1);
		if (!strstr(out, want) || strstr(out, "round 0000000000000001")) {
			fprintf(stderr, "FAIL restore %s (%s): output '%.80s' does not go on at '%s'\n",
				from, mode, out, want);
			failures++;
		}
		free(out);
		free(err);
	}
}

/* The RESULT of an uninterrupted run of @test. */
static bool uninterrupted(enum guest_test test, char *ref, size_t len, int *skip)
{
	struct ktest t;
	char *out;
	int ret = ktest_create(&t, 1, MEM);

	if (ret == KTEST_SKIP) {
		*skip = 1;
		return false;
	}
	CHECK(ret == 0 && ktest_start(&t, test) == 0);
	CHECK(ktest_run(&t, 120) == VM_STOP_POWEROFF);
	out = ktest_console(&t);
	CHECK(find_result(out, ref, len));
	if (!ref[0]) {
		fprintf(stderr, "console: %s\nround %llu\n", out,
			(unsigned long long)ktest_shared(&t)[CK_ROUND]);
		vcpu_dump(t.vm->vcpus[0], "no result");
	}
	printf("uninterrupted: RESULT %s\n", ref);
	free(out);
	ktest_destroy(&t);
	return ref[0] != 0;
}


int main(void)
{
	const char *qlite = getenv("QLITE_BIN");
	char bad[256], path[512], ref[32] = "";
	bool ring = ktest_dirty_ring_default();
	int skip = 0;
	struct track_mode modes[] = {
		/* The default: the ring where KVM has one. */
		{ .name = "default", .ring = VM_DIRTY_RING_AUTO,
		  .expect = ring ? "ring" : "bitmap", .all_restores = true, .ref = ref },
		{ .name = "bitmap", .ring = VM_DIRTY_RING_OFF, .expect = "bitmap", .ref = ref },
		/* The smallest ring (doubled until KVM takes it): full rings, or an overflow. */
		{ .name = "small-ring", .ring = VM_DIRTY_RING_ON,
		  .entries = VM_DIRTY_RING_MIN_ENTRIES, .expect = "ring", .allow_overflow = true,
		  .ref = ref },
	};
	unsigned int i;

	if (!qlite || !mkdtemp(tmpdir)) {
		fprintf(stderr, "QLITE_BIN is not set (run through meson test)\n");
		return 1;
	}
	/* 1. The uninterrupted runs. */
	if (!uninterrupted(GT_CKPT_SUM, ref, sizeof(ref), &skip) && skip)
		return KTEST_SKIP;
	if (!ring)
		printf("this KVM has no dirty ring: the bitmap only\n");

	/* 2. Checkpointed mid-run, restored: with the ring, the bitmap, a ring that fills. */
	for (i = 0; i < ARRAY_SIZE(modes); i++)
		if (ring || modes[i].ring != VM_DIRTY_RING_ON)
			checkpoint_run(qlite, &modes[i]);

	/* 3. Damaged checkpoints: refused, nothing runs. */
	snprintf(bad, sizeof(bad), "%s/bad", tmpdir);
	mkdir(bad, 0755);
	snprintf(path, sizeof(path), "%s/%s", bad, CKPT_MEMORY_FILE);
	{
		char src[512];
		const char *dir = modes[0].dir;

		snprintf(src, sizeof(src), "%s/%s", dir, CKPT_MEMORY_FILE);
		copy_file(src, path, -1);
		snprintf(src, sizeof(src), "%s/%s", dir, CKPT_STATE_FILE);
		snprintf(path, sizeof(path), "%s/%s", bad, CKPT_STATE_FILE);
		copy_file(src, path, -1);
		/* A flipped byte in the middle of the stream. */
		{
			int fd = open(path, O_RDWR);
			struct stat st;
			uint8_t b;

			fstat(fd, &st);
			pread(fd, &b, 1, st.st_size / 2);
			b ^= 0x40;
			pwrite(fd, &b, 1, st.st_size / 2);
			close(fd);
		}
		expect_refused(qlite, bad, "flipped byte", "corrupt");
		copy_file(src, path, 100);
		expect_refused(qlite, bad, "truncated stream", "truncated");
		copy_file(src, path, -1);
		snprintf(src, sizeof(src), "%s/%s", bad, CKPT_MEMORY_FILE);
		CHECK(truncate(src, 4096) == 0);
		expect_refused(qlite, bad, "short memory file", "memory.img");
		unlink(src);
		expect_refused(qlite, bad, "missing memory file", "memory.img");
	}
	snprintf(path, sizeof(path), "rm -rf '%s'", tmpdir);
	if (system(path))
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	printf("%s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
