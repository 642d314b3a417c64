// SPDX-License-Identifier: MIT
/*
 * Live migration end to end. A guest rewriting and checksumming a buffer
 * (GT_MIGRATE_SUM) runs here with a QMP socket; mid-run it is migrated
 * with pre-copy over a UNIX socket to a `qlite run --incoming defer`
 * process (QMP migrate-incoming; bandwidth throttled), which is migrated on over TCP on 127.0.0.1
 * by `qlite migrate --wait --json` to a third process, which must print the RESULT of an
 * uninterrupted run; the middle one, a source now, must exit 0. A second guest goes over an
 * inherited socket (fd:N) on the memfd backend. Its two disks are shared:
 * their image locks go to the destination with the VM (and back to a
 * source that resumes).
 *
 * Before that, the source must survive bad destinations and keep running:
 * nobody listening, a wrong protocol version, a destination that hangs up
 * mid-stream, a cancel (whose destination exits 1), a destination refusing
 * the VM, one refusing after GO (the source resumes) and one vanishing
 * after GO (the source stays paused until cont). And destinations
 * must refuse bad sources with exit status 1 and a clear message: garbage,
 * a truncated stream, a version mismatch, a page beyond the VM, HELLO and
 * CONFIG disagreeing, a VM bigger than this host, messages out of order, a
 * port already in use.
 *
 * Then post-copy (run 5): a guest switched after round 0 to a `qlite run
 * --incoming` destination must print the RESULT of an uninterrupted run;
 * both sides report post-copy figures. Then recovery (run 6): the link,
 * through a relay that holds the push after GO, is cut mid-post-copy; both
 * sides must report postcopy-paused, migrate-recover and migrate {resume}
 * must finish it with the exact RESULT. MIG_TEST=postcopy runs only those.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/migration/mig_internal.h"
#include "harness.h"
#include "qlite/blk.h"
#include "qlite/client.h"
#include "qlite/sbuf.h"
#include "qlite/stream.h"
#include "qlite/virtio.h"

#define MEM (128ULL << 20)

static int failures;
static char tmpdir[] = "/tmp/qlite-mig-XXXXXX";
/* The migrating VM's two disks (shared: the destinations open the same files). */
static char src_disk[2][300];

/* Does someone (another open file description) hold @path's image lock? */
static bool image_locked(const char *path)
{
	struct blk_opts o = {.path = path};
	struct blk_backend *b;
	struct qerr e = {0};
	int ret = blk_backend_open(&b, &o, NULL, &e);

	if (!ret)
		blk_backend_close(b);
	return ret == -EBUSY;
}
static const char *qlite;

/* "RESULT x" from console output; false if there is none. */
static bool find_result(const char *out, char *res, size_t len)
{
	const char *p = out ? strstr(out, "RESULT ") : NULL;

	if (!p)
		return false;
	snprintf(res, len, "%.16s", p + 7);
	return strlen(res) == 16;
}

/* ---- child processes ---- */

struct child {
	pid_t pid;
	int out, err;
	char *obuf, *ebuf;
};

/* Run qlite with @argv; @fd3 (if >= 0) becomes its fd 3. */
static void child_spawn(struct child *ch, char *const argv[], int fd3)
{
	int po[2], pe[2];

	memset(ch, 0, sizeof(*ch));
	if (pipe(po) || pipe(pe)) {
		ch->pid = -1;
		return;
	}
	ch->pid = fork();
	if (ch->pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		if (fd3 >= 0)
			dup2(fd3, 3);
		alarm(120); /* a hang guard */
		execv(argv[0], argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	ch->out = po[0];
	ch->err = pe[0];
}

static char *slurp(int fd)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap);

	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len - 1);

		if (n <= 0)
			break;
		len += (size_t)n;
		if (cap - len < 4096)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = 0;
	close(fd);
	return buf;
}

/* Its exit status; its stdout and stderr in ch->obuf, ch->ebuf. */
static int child_wait(struct child *ch)
{
	int status = -1;

	if (ch->pid <= 0)
		return -1;
	ch->obuf = slurp(ch->out);
	ch->ebuf = slurp(ch->err);
	waitpid(ch->pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void child_free(struct child *ch)
{
	free(ch->obuf);
	free(ch->ebuf);
}

/* ---- QMP ---- */

static bool qmp_open_retry(struct qmp_conn *q, const char *path)
{
	void (*on_event_cb)(void *, struct json_object *) = q->on_event;
	void *opaque = q->opaque;
	struct qerr e = {0};
	int i;

	for (i = 0; i < 200; i++) {
		memset(&e, 0, sizeof(e));
		memset(q, 0, sizeof(*q));
		q->fd = -1;
		q->on_event = on_event_cb;
		q->opaque = opaque;
		if (!qmp_conn_open(q, path, &e))
			return true;
		usleep(50000);
	}
	fprintf(stderr, "FAIL cannot connect to %s: %s\n", path, e.msg);
	failures++;
	return false;
}

/* Run @cmd with JSON @args (may be NULL); NULL and @e on an error. */
static struct json_object *qmp(struct qmp_conn *q, const char *cmd, const char *args,
			       struct qerr *e)
{
	struct json_object *a = args ? json_tokener_parse(args) : NULL, *r;
	bool qerr_flag = false;

	memset(e, 0, sizeof(*e));
	r = qmp_conn_execute(q, cmd, a, &qerr_flag, e);
	json_object_put(a);
	return r;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

static int64_t jint(struct json_object *o, const char *k)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : -1;
}

static bool vm_status_is(struct qmp_conn *q, const char *want)
{
	struct qerr e;
	struct json_object *r = qmp(q, "query-status", NULL, &e);
	bool ok = r && !strcmp(jstr(r, "status"), want);

	if (!ok)
		fprintf(stderr, "status '%s', wanted '%s'\n", r ? jstr(r, "status") : e.msg, want);
	json_object_put(r);
	return ok;
}

/* ---- the in-process source ---- */

struct driver {
	struct ktest *t;
	char qmp_path[256];
	struct qmp_conn q;     /* the driver thread's: the main thread runs the VM's loop */
	char statuses[16][24];/* MIGRATION events of the current migration */
	unsigned int nstatus;
	unsigned int passes, stops, resumes;
	struct json_object *last; /* the last MIGRATION_PROGRESS */
	bool ended;
	/* For the main thread. */
	struct json_object *final; /* figures of the migration that completed */
	char d1_qmp[256];
	const char *d1_opt; /* D1's --dirty-ring */
	struct child d1;
};

static void on_event(void *opaque, struct json_object *ev)
{
	struct driver *d = opaque;
	struct json_object *name, *data = NULL;
	const char *n;

	if (!json_object_object_get_ex(ev, "event", &name))
		return;
	n = json_object_get_string(name);
	json_object_object_get_ex(ev, "data", &data);
	if (!strcmp(n, "MIGRATION")) {
		const char *s = jstr(data, "status");

		if (d->nstatus < 16)
			snprintf(d->statuses[d->nstatus++], sizeof(d->statuses[0]), "%s", s);
		if (!strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled"))
			d->ended = true;
	} else if (!strcmp(n, "MIGRATION_PROGRESS")) {
		json_object_put(d->last);
		d->last = json_object_get(data);
	} else if (!strcmp(n, "MIGRATION_PASS")) {
		d->passes++;
	} else if (!strcmp(n, "STOP")) {
		d->stops++;
	} else if (!strcmp(n, "RESUME")) {
		d->resumes++;
	}
}

static uint64_t guest_round(struct driver *d)
{
	return __atomic_load_n(&ktest_shared(d->t)[MG_ROUND], __ATOMIC_RELAXED);
}

static uint64_t wait_round(struct driver *d, uint64_t n)
{
	int i;

	for (i = 0; i < 60000 && guest_round(d) < n; i++) /* a hang guard */
		usleep(1000);
	return guest_round(d);
}

/* Start a migration; the QMP error (if any) in @e. */
static bool migrate_start(struct driver *d, const char *uri, struct qerr *e)
{
	char args[512];
	struct json_object *r;

	d->nstatus = 0;
	d->ended = false;
	d->passes = d->stops = d->resumes = 0;
	json_object_put(d->last);
	d->last = NULL;
	snprintf(args, sizeof(args), "{\"uri\": \"%s\"}", uri);
	r = qmp(&d->q, "migrate", args, e);
	json_object_put(r);
	return r != NULL;
}

/* Wait for the end; the final status, its figures in d->last. */
static const char *migrate_wait(struct driver *d)
{
	struct qerr e = {0};
	int i;

	for (i = 0; i < 600 && !d->ended; i++) /* a hang guard */
		if (qmp_conn_wait(&d->q, 100, &e))
			break;
	return d->nstatus ? d->statuses[d->nstatus - 1] : "(none)";
}

/* A migration that must fail (or be cancelled) and leave the VM running. */
static void expect_source_survives(struct driver *d, const char *what, const char *want_status,
				   const char *needle)
{
	const char *st = migrate_wait(d);
	const char *err = jstr(d->last, "error-desc");
	uint64_t r = guest_round(d);

	if (strcmp(st, want_status) || (needle && !strstr(err, needle))) {
		fprintf(stderr, "FAIL %s: status %s, error '%s' (wanted %s, '%s')\n", what, st, err,
			want_status, needle ? needle : "");
		failures++;
	} else {
		printf("source survived (%s): %s%s%s\n", what, st, err[0] ? ": " : "", err);
	}
	CHECK(d->nstatus >= 2 && !strcmp(d->statuses[0], "setup"));
	CHECK(vm_status_is(&d->q, "running"));
	CHECK(wait_round(d, r + 1) > r); /* and the guest goes on */
}

/* ---- a fake destination, for the source's bad cases ---- */

enum fake_mode {
	FAKE_BAD_VERSION,     /* answers HELLO with version 99 */
	FAKE_HANG_UP,	      /* takes 64 KiB of pre-copy, then closes */
	FAKE_REFUSE_AFTER_GO, /* READY, then an ERROR instead of RUNNING */
	FAKE_VANISH_AFTER_GO, /* READY, then gone without a word */
};

struct fake {
	int lfd;
	enum fake_mode mode;
	pthread_t th;
	char err[256]; /* the ERROR the source sent, if any */
	uint64_t got;
};

static void *fake_dest(void *arg)
{
	struct fake *f = arg;
	struct mig_conn c;
	uint32_t type, len;
	struct qerr e = {0};
	struct sbuf b;
	int fd = accept(f->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	mig_conn_init(&c, fd, true);
	if (mig_recv(&c, &type, &len, 10000, &e) || type != MIG_MSG_HELLO) {
		mig_conn_free(&c);
		return NULL;
	}
	sbuf_init(&b);
	mig_ack_encode(f->mode == FAKE_BAD_VERSION ? 99 : 1, 0, &b);
	mig_send(&c, MIG_MSG_HELLO_ACK, b.data, b.len, NULL, 0, &e);
	sbuf_free(&b);
	while (!mig_recv(&c, &type, &len, 10000, &e)) {
		if (type == MIG_MSG_ERROR) {
			mig_error_decode(c.buf, len, f->err, sizeof(f->err));
			break;
		}
		f->got += len;
		if (f->mode == FAKE_HANG_UP && f->got > 65536)
			break;
		if (type == MIG_MSG_END)
			mig_send(&c, MIG_MSG_READY, NULL, 0, NULL, 0, &e);
		if (type == MIG_MSG_GO && f->mode == FAKE_VANISH_AFTER_GO)
			break;
		if (type == MIG_MSG_GO)
			mig_send_error(&c, ENODEV, "cannot start the VM here");
	}
	mig_conn_free(&c);
	return NULL;
}

static void fake_start(struct fake *f, const char *path, enum fake_mode mode)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	unlink(path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(f->lfd, 1) == 0);
	pthread_create(&f->th, NULL, fake_dest, f);
}

static void fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR); /* unblocks accept() if nobody came */
	pthread_join(f->th, NULL);
	close(f->lfd);
}

/* A destination process; its QMP answering means it listens. */
static void start_dest_opt(struct child *ch, const char *incoming, const char *qmp_path,
			   const char *extra, int fd3, const char *opt)
{
	char spec[300], *argv[14];
	struct qmp_conn q = {.fd = -1};
	int n = 0;

	snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", qmp_path);
	argv[n++] = (char *)qlite;
	argv[n++] = "run";
	argv[n++] = "--incoming";
	argv[n++] = (char *)incoming;
	argv[n++] = "--qmp";
	argv[n++] = spec;
	argv[n++] = "--console";
	argv[n++] = "stdio";
	if (extra) {
		argv[n++] = "--disk";
		argv[n++] = (char *)extra;
	}
	if (opt)
		argv[n++] = (char *)opt;
	argv[n] = NULL;
	unlink(qmp_path);
	child_spawn(ch, argv, fd3);
	if (qmp_open_retry(&q, qmp_path))
		qmp_conn_close(&q);
}

static void start_dest(struct child *ch, const char *incoming, const char *qmp_path,
		       const char *extra, int fd3)
{
	start_dest_opt(ch, incoming, qmp_path, extra, fd3, NULL);
}

/* query-migrate's ram.dirty-tracking (qlite's): "ring" or "bitmap". */
static const char *dirty_tracking(struct json_object *info)
{
	struct json_object *ram = NULL;

	json_object_object_get_ex(info, "ram", &ram);
	return jstr(ram, "dirty-tracking");
}

static void *drive(void *arg)
{
	struct driver *d = arg;
	char path[256], uri[300], dq[256];
	struct json_object *r;
	struct qerr e = {0};
	struct child cancelled;
	struct fake f;

	if (!qmp_open_retry(&d->q, d->qmp_path))
		return NULL;
	d->q.on_event = on_event;
	d->q.opaque = d;
	wait_round(d, 2);

	/* 1. Bad destinations: each fails, the VM runs on. */
	snprintf(path, sizeof(path), "%s/nobody.sock", tmpdir);
	snprintf(uri, sizeof(uri), "unix:%s", path);
	CHECK(migrate_start(d, uri, &e));
	expect_source_survives(d, "nobody listening", "failed", "cannot connect");

	snprintf(path, sizeof(path), "%s/fake.sock", tmpdir);
	snprintf(uri, sizeof(uri), "unix:%s", path);
	fake_start(&f, path, FAKE_BAD_VERSION);
	CHECK(migrate_start(d, uri, &e));
	expect_source_survives(d, "version mismatch", "failed", "version 99");
	fake_stop(&f);
	CHECK(strstr(f.err, "version 99") != NULL); /* the source told it why */

	fake_start(&f, path, FAKE_HANG_UP);
	CHECK(migrate_start(d, uri, &e));
	expect_source_survives(d, "destination hangs up", "failed", "destination");
	fake_stop(&f);

	/*
	 * To a real destination, slow enough to cancel mid-way (meanwhile other
	 * commands are refused): the source goes on, the destination gives up.
	 */
	r = qmp(&d->q, "migrate-set-parameters", "{\"max-bandwidth\": 65536}", &e);
	CHECK(r);
	json_object_put(r);
	snprintf(path, sizeof(path), "%s/cancel.sock", tmpdir);
	snprintf(uri, sizeof(uri), "unix:%s", path);
	snprintf(dq, sizeof(dq), "%s/cancel-qmp.sock", tmpdir);
	start_dest(&cancelled, uri, dq, NULL, -1);
	CHECK(migrate_start(d, uri, &e));
	usleep(300000);
	r = qmp(&d->q, "migrate", "{\"uri\": \"unix:/nonexistent\"}", &e);
	CHECK(!r && strstr(e.msg, "in progress"));
	json_object_put(r);
	r = qmp(&d->q, "snapshot-save", "{\"dir\": \"/tmp/qlite-mig-never\"}", &e);
	CHECK(!r && strstr(e.msg, "migration"));
	json_object_put(r);
	r = qmp(&d->q, "query-migrate", NULL, &e);
	CHECK(r && !strcmp(jstr(r, "status"), "active"));
	json_object_put(r);
	r = qmp(&d->q, "migrate-cancel", NULL, &e);
	CHECK(r);
	json_object_put(r);
	expect_source_survives(d, "cancelled", "cancelled", NULL);
	if (child_wait(&cancelled) != 1 ||
	    !strstr(cancelled.ebuf, "the source went away during pre-copy")) {
		fprintf(stderr, "FAIL destination of a cancelled migration: %s\n", cancelled.ebuf);
		failures++;
	} else {
		printf("destination of a cancelled migration: %s", cancelled.ebuf);
	}
	child_free(&cancelled);
	snprintf(path, sizeof(path), "%s/fake.sock", tmpdir);
	snprintf(uri, sizeof(uri), "unix:%s", path);
	r = qmp(&d->q, "migrate-set-parameters", "{\"max-bandwidth\": 134217728}", &e);
	CHECK(r);
	json_object_put(r);

	/* After GO: a destination that says it cannot start the VM: the source resumes. */
	fake_start(&f, path, FAKE_REFUSE_AFTER_GO);
	CHECK(migrate_start(d, uri, &e));
	expect_source_survives(d, "refused after GO", "failed", "cannot start the VM here");
	fake_stop(&f);
	CHECK(d->stops == 1 && d->resumes == 1);
	/* It dropped its image locks at the switchover and took them back to resume. */
	CHECK(image_locked(src_disk[0]) && image_locked(src_disk[1]));

	/*
	 * After GO, silence: the destination may run the VM, so the source must
	 * stay paused until told otherwise.
	 */
	fake_start(&f, path, FAKE_VANISH_AFTER_GO);
	CHECK(migrate_start(d, uri, &e));
	if (strcmp(migrate_wait(d), "failed") ||
	    !strstr(jstr(d->last, "error-desc"), "did not confirm")) {
		fprintf(stderr, "FAIL vanished after GO: %s\n", jstr(d->last, "error-desc"));
		failures++;
	} else {
		uint64_t round = guest_round(d);

		printf("source stays paused (vanished after GO): %s\n",
		       jstr(d->last, "error-desc"));
		CHECK(vm_status_is(&d->q, "paused"));
		CHECK(d->resumes == 0);
		usleep(600000);
		CHECK(guest_round(d) == round);
		r = qmp(&d->q, "cont", NULL, &e);
		CHECK(r);
		json_object_put(r);
		CHECK(vm_status_is(&d->q, "running"));
		CHECK(wait_round(d, round + 1) > round);
	}
	fake_stop(&f);

	/* A real destination that cannot build the VM (a disk the source has not). */
	snprintf(path, sizeof(path), "%s/refuse.sock", tmpdir);
	snprintf(uri, sizeof(uri), "unix:%s", path);
	snprintf(dq, sizeof(dq), "%s/refuse-qmp.sock", tmpdir);
	{
		struct child ch;
		char disk[300];

		snprintf(disk, sizeof(disk), "path=%s/disk.img", tmpdir);
		start_dest(&ch, uri, dq, disk, -1);
		CHECK(migrate_start(d, uri, &e));
		expect_source_survives(d, "destination refuses", "failed", "--disk was given 1");
		CHECK(child_wait(&ch) == 1 && strstr(ch.ebuf, "incoming migration failed"));
		child_free(&ch);
	}

	/* 2. The real one, to a `qlite run --incoming defer`, throttled to take rounds. */
	snprintf(path, sizeof(path), "%s/mig1.sock", tmpdir);
	snprintf(uri, sizeof(uri), "unix:%s", path);
	snprintf(d->d1_qmp, sizeof(d->d1_qmp), "%s/d1-qmp.sock", tmpdir);
	start_dest_opt(&d->d1, "defer", d->d1_qmp, NULL, -1, d->d1_opt);
	{
		struct qmp_conn q1 = {.fd = -1};
		char args[400];

		CHECK(qmp_open_retry(&q1, d->d1_qmp));
		CHECK(vm_status_is(&q1, "inmigrate"));
		snprintf(args, sizeof(args), "{\"uri\": \"%s\"}", uri);
		r = qmp(&q1, "migrate-incoming", args, &e);
		CHECK(r);
		json_object_put(r);
		r = qmp(&q1, "migrate-incoming", args, &e);
		CHECK(!r && strstr(e.msg, "already"));
		json_object_put(r);
		qmp_conn_close(&q1);
	}
	r = qmp(&d->q, "migrate-set-parameters",
		"{\"max-bandwidth\": 2097152, \"downtime-limit\": 50}", &e);
	CHECK(r);
	json_object_put(r);
	/* x-prepage-pivots: 0..64, shown; a refused value changes nothing. */
	r = qmp(&d->q, "migrate-set-parameters", "{\"x-prepage-pivots\": 65}", &e);
	CHECK(!r && strstr(e.msg, "'x-prepage-pivots'") && strstr(e.msg, "0 to 64"));
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-parameters", "{\"x-prepage-pivots\": -1}", &e);
	CHECK(!r && strstr(e.msg, "x-prepage-pivots"));
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-parameters", "{\"x-prepage-pivots\": \"7\"}", &e);
	CHECK(!r && strstr(e.msg, "x-prepage-pivots"));
	json_object_put(r);
	r = qmp(&d->q, "query-migrate-parameters", NULL, &e);
	CHECK(r && jint(r, "x-prepage-pivots") == 7 && jint(r, "downtime-limit") == 50);
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-parameters", "{\"x-prepage-pivots\": 0}", &e);
	CHECK(r);
	json_object_put(r);
	r = qmp(&d->q, "query-migrate-parameters", NULL, &e);
	CHECK(r && jint(r, "x-prepage-pivots") == 0);
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-parameters", "{\"x-prepage-pivots\": 7}", &e);
	CHECK(r);
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-capabilities",
		"{\"capabilities\": [{\"capability\": \"events\", \"state\": true},"
		" {\"capability\": \"postcopy-ram\", \"state\": true}]}",
		&e);
	CHECK(r);
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-capabilities",
		"{\"capabilities\": [{\"capability\": \"xbzrle\", \"state\": true}]}", &e);
	CHECK(!r && strstr(e.msg, "xbzrle"));
	json_object_put(r);
	wait_round(d, guest_round(d) + 1);
	printf("migrating at guest round %llu\n", (unsigned long long)guest_round(d));
	CHECK(migrate_start(d, uri, &e));
	if (strcmp(migrate_wait(d), "completed")) {
		fprintf(stderr, "FAIL migration: %s\n", jstr(d->last, "error-desc"));
		failures++;
	}
	d->final = json_object_get(d->last);
	/* setup, active, completed; STOP for the switchover, no RESUME here. */
	CHECK(d->nstatus == 3 && !strcmp(d->statuses[0], "setup") &&
	      !strcmp(d->statuses[1], "active") && !strcmp(d->statuses[2], "completed"));
	CHECK(d->stops == 1 && d->resumes == 0);
	{
		struct json_object *ram = NULL;

		/* A MIGRATION_PASS per round (the events capability). */
		json_object_object_get_ex(d->last, "ram", &ram);
		CHECK(d->passes >= 2 && d->passes == (unsigned int)jint(ram, "dirty-sync-count"));
	}
	qmp_conn_close(&d->q);
	return NULL;
}

/* Run 4's driver: migrate to d->d1_qmp (a URI here) mid-run, with the defaults. */
static void *drive_fd(void *arg)
{
	struct driver *d = arg;
	struct qerr e = {0};

	if (!qmp_open_retry(&d->q, d->qmp_path))
		return NULL;
	d->q.on_event = on_event;
	d->q.opaque = d;
	wait_round(d, 3);
	CHECK(migrate_start(d, d->d1_qmp, &e));
	if (strcmp(migrate_wait(d), "completed")) {
		fprintf(stderr, "FAIL migration over %s: %s %s\n", d->d1_qmp,
			jstr(d->last, "error-desc"), e.msg);
		failures++;
	}
	d->final = json_object_get(d->last);
	qmp_conn_close(&d->q);
	return NULL;
}

/* Run 5's driver: post-copy to d->d1_qmp (the URI), switched right after round 0. */
static void *drive_pc(void *arg)
{
	struct driver *d = arg;
	struct qerr e = {0};
	struct json_object *r;
	bool pc_active = false;

	if (!qmp_open_retry(&d->q, d->qmp_path))
		return NULL;
	d->q.on_event = on_event;
	d->q.opaque = d;
	wait_round(d, 2);
	/* Without the capability, there is nothing to switch. */
	r = qmp(&d->q, "migrate-start-postcopy", NULL, &e);
	CHECK(!r);
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-capabilities",
		"{\"capabilities\": [{\"capability\": \"postcopy-ram\", \"state\": true}]}", &e);
	CHECK(r);
	json_object_put(r);
	/* Slow enough that the guest dirties pages during round 0: they go post-copy. */
	r = qmp(&d->q, "migrate-set-parameters", "{\"max-bandwidth\": 1048576}", &e);
	CHECK(r);
	json_object_put(r);
	CHECK(migrate_start(d, d->d1_qmp, &e));
	r = qmp(&d->q, "migrate-start-postcopy", NULL, &e);
	if (!r)
		fprintf(stderr, "FAIL migrate-start-postcopy: %s\n", e.msg), failures++;
	json_object_put(r);
	if (strcmp(migrate_wait(d), "completed")) {
		fprintf(stderr, "FAIL post-copy migration: %s\n", jstr(d->last, "error-desc"));
		failures++;
	}
	for (unsigned int i = 0; i < d->nstatus; i++)
		pc_active |= !strcmp(d->statuses[i], "postcopy-active");
	CHECK(pc_active);
	d->final = json_object_get(d->last);
	qmp_conn_close(&d->q);
	return NULL;
}

/*
 * ---- a link that breaks mid-post-copy (run 6) ----
 * A relay between the source and the destination. On the first (main)
 * connection it forwards the source's messages up to GO, then holds the
 * rest (the push stays in flight); other connections (the urgent channel)
 * go through. proxy_cut() closes everything: the link is gone with
 * pages in it.
 */
struct proxy {
	char path[200], dest[200];
	int lfd, cut_pipe[2];
	pthread_t th;
};

static bool read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);

		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

static bool write_full(int fd, const void *buf, size_t n)
{
	size_t put = 0;

	while (put < n) {
		ssize_t r = send(fd, (const char *)buf + put, n - put, MSG_NOSIGNAL);

		if (r <= 0)
			return false;
		put += (size_t)r;
	}
	return true;
}

static void *proxy_main(void *arg)
{
	struct proxy *px = arg;
	int src[2] = {-1, -1}, dst[2] = {-1, -1}, nconn = 0;
	bool held = false, done = false;

	while (!done) {
		struct pollfd pf[6];
		int n = 0, ip = -1, is[2] = {-1, -1}, id[2] = {-1, -1};

		pf[n] = (struct pollfd){.fd = px->cut_pipe[0], .events = POLLIN};
		n++;
		if (nconn < 2) {
			ip = n;
			pf[n++] = (struct pollfd){.fd = px->lfd, .events = POLLIN};
		}
		for (int i = 0; i < nconn; i++) {
			if (!(i == 0 && held)) {
				is[i] = n;
				pf[n++] = (struct pollfd){.fd = src[i], .events = POLLIN};
			}
			id[i] = n;
			pf[n++] = (struct pollfd){.fd = dst[i], .events = POLLIN};
		}
		if (poll(pf, (nfds_t)n, -1) < 0)
			break;
		if (pf[0].revents)
			break;
		if (ip >= 0 && pf[ip].revents) {
			struct sockaddr_un sa = {.sun_family = AF_UNIX};
			int a = accept(px->lfd, NULL, NULL), b = socket(AF_UNIX, SOCK_STREAM, 0);

			snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", px->dest);
			if (a < 0 || b < 0 || connect(b, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
				fprintf(stderr, "FAIL proxy: cannot relay a connection\n"), failures++;
				break;
			}
			src[nconn] = a;
			dst[nconn] = b;
			nconn++;
		}
		for (int i = 0; i < nconn && !done; i++) {
			char buf[65536];

			if (is[i] >= 0 && pf[is[i]].revents) {
				if (i == 0) {
					/* Message by message, to stop right after GO. */
					uint8_t hdr[8];
					uint32_t type, len;
					char *pl;

					if (!read_full(src[0], hdr, 8)) {
						done = true;
						break;
					}
					type = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 |
					       (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
					len = (uint32_t)hdr[4] | (uint32_t)hdr[5] << 8 |
					      (uint32_t)hdr[6] << 16 | (uint32_t)hdr[7] << 24;
					pl = malloc(len ? len : 1);
					if (!pl || !read_full(src[0], pl, len) ||
					    !write_full(dst[0], hdr, 8) || !write_full(dst[0], pl, len))
						done = true;
					free(pl);
					if (type == MIG_MSG_GO)
						held = true;
				} else {
					ssize_t r = read(src[i], buf, sizeof(buf));

					if (r <= 0 || !write_full(dst[i], buf, (size_t)r))
						done = true;
				}
			}
			if (!done && id[i] >= 0 && pf[id[i]].revents) {
				ssize_t r = read(dst[i], buf, sizeof(buf));

				if (r <= 0 || !write_full(src[i], buf, (size_t)r))
					done = true;
			}
		}
	}
	/* Cut (or an end): whatever is held is lost with the link. */
	for (int i = 0; i < nconn; i++) {
		shutdown(src[i], SHUT_RDWR);
		shutdown(dst[i], SHUT_RDWR);
		close(src[i]);
		close(dst[i]);
	}
	return NULL;
}

static void proxy_start(struct proxy *px, const char *path, const char *dest)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	snprintf(px->path, sizeof(px->path), "%s", path);
	snprintf(px->dest, sizeof(px->dest), "%s", dest);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", path);
	px->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(px->lfd >= 0 && bind(px->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	      listen(px->lfd, 4) == 0);
	CHECK(pipe(px->cut_pipe) == 0);
	pthread_create(&px->th, NULL, proxy_main, px);
}

static void proxy_cut(struct proxy *px)
{
	if (px->cut_pipe[1] < 0)
		return;
	if (write(px->cut_pipe[1], "x", 1) != 1)
		fprintf(stderr, "proxy: cannot signal the cut\n");
	pthread_join(px->th, NULL);
	close(px->lfd);
	close(px->cut_pipe[0]);
	close(px->cut_pipe[1]);
	px->cut_pipe[1] = -1;
}

struct recover_run {
	struct driver d;
	struct proxy px;
	char dqmp[256], rec_uri[220];
};

static bool saw_status(struct driver *d, const char *s)
{
	for (unsigned int i = 0; i < d->nstatus; i++)
		if (!strcmp(d->statuses[i], s))
			return true;
	return false;
}

/* Wait for a MIGRATION status on the source (events) for up to @ms. */
static bool wait_status(struct driver *d, const char *s, int ms)
{
	struct qerr e = {0};

	for (int i = 0; i < ms / 50 && !saw_status(d, s); i++)
		if (qmp_conn_wait(&d->q, 50, &e))
			break;
	return saw_status(d, s);
}

/* The destination's query-migrate status. */
static bool dest_status_is(struct qmp_conn *q, const char *want, int ms)
{
	for (int i = 0; i < ms / 50; i++) {
		struct qerr e = {0};
		struct json_object *r = qmp(q, "query-migrate", NULL, &e);
		bool ok = r && !strcmp(jstr(r, "status"), want);

		json_object_put(r);
		if (ok)
			return true;
		usleep(50000);
	}
	return false;
}

static void *drive_recover(void *arg)
{
	struct recover_run *rr = arg;
	struct driver *d = &rr->d;
	struct qmp_conn dq = {.fd = -1};
	struct qerr e = {0};
	struct json_object *r;
	char args[300];

	if (!qmp_open_retry(&d->q, d->qmp_path) || !qmp_open_retry(&dq, rr->dqmp))
		return NULL;
	d->q.on_event = on_event;
	d->q.opaque = d;
	wait_round(d, 2);
	r = qmp(&d->q, "migrate-set-capabilities",
		"{\"capabilities\": [{\"capability\": \"postcopy-ram\", \"state\": true}]}", &e);
	CHECK(r);
	json_object_put(r);
	r = qmp(&d->q, "migrate-set-parameters", "{\"max-bandwidth\": 1048576}", &e);
	CHECK(r);
	json_object_put(r);
	/* Nothing to resume yet. */
	snprintf(args, sizeof(args), "{\"uri\": \"%s\", \"resume\": true}", rr->rec_uri);
	r = qmp(&d->q, "migrate", args, &e);
	CHECK(!r);
	json_object_put(r);
	CHECK(migrate_start(d, d->d1_qmp, &e));
	r = qmp(&d->q, "migrate-start-postcopy", NULL, &e);
	CHECK(r);
	json_object_put(r);
	/* The proxy holds the push after GO: post-copy cannot finish before the cut. */
	if (!wait_status(d, "postcopy-active", 60000)) {
		fprintf(stderr, "FAIL recovery: no postcopy-active\n"), failures++;
		proxy_cut(&rr->px);
		goto out;
	}
	usleep(200000); /* the guest runs there, faulting on what is missing */
	proxy_cut(&rr->px);
	CHECK(wait_status(d, "postcopy-paused", 30000));
	CHECK(dest_status_is(&dq, "postcopy-paused", 30000));
	/* A resume before the destination listens again fails, and stays paused. */
	snprintf(args, sizeof(args), "{\"uri\": \"%s\"}", rr->rec_uri);
	r = qmp(&dq, "migrate-recover", args, &e);
	CHECK(r);
	json_object_put(r);
	snprintf(args, sizeof(args), "{\"uri\": \"%s\", \"resume\": true}", rr->rec_uri);
	r = qmp(&d->q, "migrate", args, &e);
	if (!r)
		fprintf(stderr, "FAIL migrate resume: %s\n", e.msg), failures++;
	json_object_put(r);
	if (strcmp(migrate_wait(d), "completed")) {
		fprintf(stderr, "FAIL recovered post-copy: %s\n", jstr(d->last, "error-desc"));
		failures++;
	}
	CHECK(saw_status(d, "postcopy-recover"));
	CHECK(dest_status_is(&dq, "completed", 30000));
	/*
	 * The relay held the whole push: every pushed page the destination
	 * got came after the resume, because MISSING gave them back.
	 */
	r = qmp(&dq, "query-migrate", NULL, &e);
	{
		struct json_object *pc = NULL;

		CHECK(r && json_object_object_get_ex(r, "postcopy", &pc) &&
		      jint(pc, "pages-pushed") > 0);
		if (pc)
			printf("post-copy recovery, the destination: %s\n",
			       json_object_to_json_string(pc));
	}
	json_object_put(r);
	printf("post-copy recovery, source statuses:");
	for (unsigned int i = 0; i < d->nstatus; i++)
		printf(" %s", d->statuses[i]);
	printf("\n");
	d->final = json_object_get(d->last);
out:
	qmp_conn_close(&dq);
	qmp_conn_close(&d->q);
	return NULL;
}

/* ---- a fake source, for the destination's bad cases ---- */

static int connect_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(path) >= sizeof(sa.sun_path)) {
		close(fd);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void send_hello(struct mig_conn *c, uint32_t vmin, uint32_t vmax, uint64_t pages)
{
	struct mig_hello h = {.vmin = vmin, .vmax = vmax, .page_size = 4096, .ram_pages = pages};
	struct qerr e = {0};
	struct sbuf b;

	sbuf_init(&b);
	mig_hello_encode(&h, &b);
	mig_send(c, MIG_MSG_HELLO, b.data, b.len, NULL, 0, &e);
	sbuf_free(&b);
}

/* HELLO, its answer, and CONFIG for a 16 MiB, 1-vCPU VM (4096 pages). */
static bool send_prologue_mem(struct mig_conn *c, uint64_t hello_pages, uint64_t mem)
{
	struct vm_config cfg = {.mem_size = mem, .ncpus = 1};
	struct stream_writer w;
	struct qerr e = {0};
	uint32_t type, len;
	char *json = ckpt_config_to_json(&cfg);
	int fd = memfd_create("cfg", MFD_CLOEXEC);
	uint8_t buf[4096];
	ssize_t n;

	send_hello(c, 1, 1, hello_pages);
	if (mig_recv(c, &type, &len, 10000, &e) || type != MIG_MSG_HELLO_ACK) {
		fprintf(stderr, "no HELLO_ACK: %s\n", e.msg);
		free(json);
		close(fd);
		return false;
	}
	stream_writer_init(&w, fd);
	stream_begin(&w, &e);
	stream_put(&w, STREAM_VM, "vm", 0, CKPT_VM_VERSION, json, strlen(json), &e);
	stream_finish(&w, &e);
	free(json);
	n = pread(fd, buf, sizeof(buf), 0);
	close(fd);
	mig_send(c, MIG_MSG_CONFIG, buf, (size_t)n, NULL, 0, &e);
	return true;
}

static bool send_prologue(struct mig_conn *c, uint64_t hello_pages)
{
	return send_prologue_mem(c, hello_pages, 16ULL << 20);
}

static void send_round(struct mig_conn *c, uint32_t round)
{
	uint8_t m[12] = {0};
	struct qerr e = {0};

	memcpy(m, &round, 4);
	mig_send(c, MIG_MSG_ROUND, m, sizeof(m), NULL, 0, &e);
}

enum bad_source {
	BAD_GARBAGE,
	BAD_TRUNCATED,
	BAD_VERSION,
	BAD_PAGE_RANGE,
	BAD_ORDER,
	BAD_HELLO_PAGES,
	BAD_TOO_BIG,
};

static void bad_source(enum bad_source what, const char *name, const char *needle)
{
	char sock[256], dq[256], uri[300], reply[MIG_MAX_ERROR + 1] = "";
	struct child ch;
	struct mig_conn c;
	struct qerr e = {0};
	uint32_t type, len;
	int rc, fd;

	snprintf(sock, sizeof(sock), "%s/bad.sock", tmpdir);
	snprintf(dq, sizeof(dq), "%s/bad-qmp.sock", tmpdir);
	snprintf(uri, sizeof(uri), "unix:%s", sock);
	unlink(sock);
	start_dest(&ch, uri, dq, NULL, -1);
	fd = connect_unix(sock);
	CHECK(fd >= 0);
	mig_conn_init(&c, fd, false);
	switch (what) {
	case BAD_GARBAGE: {
		static const char req[] = "GET / HTTP/1.1\r\nHost: qlite\r\n\r\n";

		CHECK(write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1);
		break;
	}
	case BAD_TRUNCATED: {
		uint8_t hdr[8 + 12];
		uint32_t t = MIG_MSG_PAGES, l = 12 + 4096, one = 1;
		uint64_t first = 100;

		if (!send_prologue(&c, 4096))
			break;
		send_round(&c, 0);
		/* A PAGES header and half its page, then the source is gone. */
		memcpy(hdr, &t, 4);
		memcpy(hdr + 4, &l, 4);
		memcpy(hdr + 8, &first, 8);
		memcpy(hdr + 16, &one, 4);
		CHECK(write(fd, hdr, sizeof(hdr)) == (ssize_t)sizeof(hdr));
		{
			uint8_t half[2048] = {0};

			CHECK(write(fd, half, sizeof(half)) == (ssize_t)sizeof(half));
		}
		break;
	}
	case BAD_VERSION:
		send_hello(&c, 7, 9, 4096);
		break;
	case BAD_PAGE_RANGE: {
		uint8_t page[4096] = {1}, h[12];
		uint64_t first = 4096;
		uint32_t n = 1;

		if (!send_prologue(&c, 4096))
			break;
		send_round(&c, 0);
		memcpy(h, &first, 8);
		memcpy(h + 8, &n, 4);
		mig_send(&c, MIG_MSG_PAGES, h, sizeof(h), page, sizeof(page), &e);
		break;
	}
	case BAD_ORDER:
		if (send_prologue(&c, 4096))
			mig_send(&c, MIG_MSG_GO, NULL, 0, NULL, 0, &e);
		break;
	case BAD_HELLO_PAGES:
		send_prologue(&c, 100);
		break;
	case BAD_TOO_BIG: /* a destination with less memory than the VM */
		send_prologue_mem(&c, (4ULL << 40) / 4096, 4ULL << 40);
		break;
	}
	/* The destination says why before it goes (not for a truncation: we hung up). */
	if (what != BAD_TRUNCATED) {
		shutdown(fd, SHUT_WR);
		while (!mig_recv(&c, &type, &len, 10000, &e))
			if (type == MIG_MSG_ERROR)
				mig_error_decode(c.buf, len, reply, sizeof(reply));
	}
	mig_conn_free(&c);
	rc = child_wait(&ch);
	if (rc != 1 || !strstr(ch.ebuf, needle) || strstr(ch.obuf, "RESULT")) {
		fprintf(stderr, "FAIL bad source (%s): exit %d, stderr '%s' (wanted '%s')\n", name,
			rc, ch.ebuf, needle);
		failures++;
	} else {
		printf("destination refused (%s): %s", name, ch.ebuf);
	}
	if (what != BAD_TRUNCATED && !strstr(reply, needle)) {
		fprintf(stderr, "FAIL bad source (%s): the source was told '%s'\n", name, reply);
		failures++;
	}
	child_free(&ch);
}

static void port_in_use(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	char uri[64], *argv[8];
	struct child ch;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;

	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 1) == 0);
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", ntohs(sa.sin_port));
	argv[0] = (char *)qlite;
	argv[1] = "run";
	argv[2] = "--incoming";
	argv[3] = uri;
	argv[4] = NULL;
	child_spawn(&ch, argv, -1);
	rc = child_wait(&ch);
	if (rc != 1 || !strstr(ch.ebuf, "Address already in use")) {
		fprintf(stderr, "FAIL port in use: exit %d, stderr '%s'\n", rc, ch.ebuf);
		failures++;
	} else {
		printf("destination refused (port in use): %s", ch.ebuf);
	}
	child_free(&ch);
	close(fd);
}

/* A free TCP port on 127.0.0.1 (free a moment ago). */
static unsigned int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	close(fd);
	return ntohs(sa.sin_port);
}

static void check_result(const char *what, struct child *ch, int rc, const char *ref)
{
	char res[32];

	if (rc != 0 || !find_result(ch->obuf, res, sizeof(res)) || strcmp(res, ref)) {
		fprintf(stderr, "FAIL %s: exit %d, RESULT '%s' vs '%s'\nstdout: %s\nstderr: %s\n",
			what, rc, find_result(ch->obuf, res, sizeof(res)) ? res : "(none)", ref,
			ch->obuf, ch->ebuf);
		failures++;
	} else {
		printf("%s: RESULT %s, as uninterrupted\n", what, res);
	}
	/* It went on where it was, no restart. */
	CHECK(!strstr(ch->obuf, "round 0000000000000001\n"));
}

static void print_figures(const char *what, struct json_object *info)
{
	struct json_object *ram = NULL;

	json_object_object_get_ex(info, "ram", &ram);
	printf("%s: status %s, total-time %lld ms, setup-time %lld ms, downtime %lld ms, "
	       "rounds %lld, transferred %lld bytes, pages %lld data / %lld zero, %.1f Mbit/s, "
	       "dirty tracking %s\n",
	       what, jstr(info, "status"), (long long)jint(info, "total-time"),
	       (long long)jint(info, "setup-time"), (long long)jint(info, "downtime"),
	       (long long)jint(ram, "dirty-sync-count"), (long long)jint(ram, "transferred"),
	       (long long)jint(ram, "normal"), (long long)jint(ram, "duplicate"),
	       ram && json_object_object_get(ram, "mbps")
		       ? json_object_get_double(json_object_object_get(ram, "mbps"))
		       : 0.0,
	       jstr(ram, "dirty-tracking"));
}


int main(void)
{
	char sock[256], ref[32] = "", d2q[256], d2uri[64], *out;
	struct driver d = {0};
	struct ktest t;
	struct child d2, d3, cli;
	pthread_t th;
	int ret, rc;
	const char *tracking = ktest_dirty_ring_default() ? "ring" : "bitmap";

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	qlite = getenv("QLITE_BIN");
	if (!qlite || !mkdtemp(tmpdir)) {
		fprintf(stderr, "QLITE_BIN is not set (run through meson test)\n");
		return 1;
	}
	/* 1. The uninterrupted run. */
	ret = ktest_create(&t, 1, MEM);
	if (ret == KTEST_SKIP)
		return KTEST_SKIP;
	CHECK(ret == 0 && ktest_start(&t, GT_MIGRATE_SUM) == 0);
	CHECK(ktest_run(&t, 120) == VM_STOP_POWEROFF);
	out = ktest_console(&t);
	CHECK(find_result(out, ref, sizeof(ref)));
	printf("uninterrupted: RESULT %s\n", ref);
	free(out);
	ktest_destroy(&t);

	/* MIG_TEST=postcopy: only the post-copy runs (5, 6), for quick iterations. */
	if (getenv("MIG_TEST") && !strcmp(getenv("MIG_TEST"), "postcopy"))
		goto postcopy;
	/* 2. Destinations refuse bad sources. */
	bad_source(BAD_GARBAGE, "garbage", "not a qlite migration stream");
	bad_source(BAD_TRUNCATED, "truncated", "ends inside message PAGES");
	bad_source(BAD_VERSION, "version mismatch", "version mismatch");
	bad_source(BAD_PAGE_RANGE, "page beyond the VM", "the VM has 4096 pages");
	bad_source(BAD_ORDER, "out of order", "GO out of order");
	bad_source(BAD_HELLO_PAGES, "HELLO and CONFIG disagree", "HELLO announced 100");
	bad_source(BAD_TOO_BIG, "more RAM than this host", "has 4194304 MiB of RAM; this host has");
	port_in_use();
	{
		char disk[300];
		int fd;

		snprintf(disk, sizeof(disk), "%s/disk.img", tmpdir);
		fd = open(disk, O_CREAT | O_RDWR, 0644);
		CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
		close(fd);
	}

	/*
	 * 3. Migrated mid-run: bad destinations first, then to D1, then D1 to D2,
	 * with two disks whose image locks go along (D1 opens them while the
	 * source holds them).
	 */
	snprintf(sock, sizeof(sock), "%s/qmp.sock", tmpdir);
	CHECK(ktest_create(&t, 1, MEM) == 0);
	{
		static struct disk_config dcs[2];
		unsigned int i;
		int fd;

		for (i = 0; i < 2; i++) {
			snprintf(src_disk[i], sizeof(src_disk[i]), "%s/src%u.img", tmpdir, i);
			fd = open(src_disk[i], O_CREAT | O_RDWR, 0644);
			CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
			close(fd);
			dcs[i].path = src_disk[i];
		}
		t.devices.disks = dcs;
		t.devices.ndisks = 2;
	}
	{
		static char spec[300];

		snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", sock);
		t.qmp = spec;
	}
	CHECK(ktest_start(&t, GT_MIGRATE_SUM) == 0);
	d.t = &t;
	snprintf(d.qmp_path, sizeof(d.qmp_path), "%s", sock);
	/* The ring where KVM has one (the default here, asked for on D1). */
	CHECK(!strcmp(vm_dirty_tracking_name(t.vm), tracking));
	if (!strcmp(tracking, "ring"))
		d.d1_opt = "--dirty-ring=on";
	printf("source and D1 track dirty pages with the %s\n", tracking);
	pthread_create(&th, NULL, drive, &d);
	CHECK(ktest_run(&t, 120) == VM_STOP_QUIT);
	pthread_join(th, NULL);
	CHECK(t.ctl->state == RUN_POSTMIGRATE && t.ctl->migrated);
	out = ktest_console(&t);
	CHECK(!strstr(out, "RESULT"));
	free(out);
	ktest_destroy(&t);
	if (d.final) {
		struct json_object *ram = NULL;

		print_figures("source -> D1 (unix, 2 MiB/s, downtime-limit 50 ms)", d.final);
		json_object_object_get_ex(d.final, "ram", &ram);
		/* Round 0 and at least the final round of what was dirtied meanwhile. */
		CHECK(jint(ram, "dirty-sync-count") >= 2);
		/* The buffer's data pages went; the untouched rest of 128 MiB did not. */
		CHECK(jint(ram, "normal") >= (int64_t)(CK_BUF_SIZE / 4096 * 7 / 8));
		CHECK(jint(ram, "duplicate") >= (int64_t)(MEM / 4096 / 2));
		CHECK(jint(ram, "transferred") < (int64_t)(8 << 20));
		CHECK(jint(ram, "remaining") == 0);
		CHECK(!strcmp(dirty_tracking(d.final), tracking));
		CHECK(jint(d.final, "downtime") >= 0 &&
		      jint(d.final, "downtime") <= jint(d.final, "total-time"));
	}
	/* D1 runs it now; then `qlite migrate` sends it on to D2 over TCP. */
	{
		struct qmp_conn q1 = {.fd = -1};
		struct qerr e;
		struct json_object *r;

		CHECK(qmp_open_retry(&q1, d.d1_qmp));
		CHECK(vm_status_is(&q1, "running"));
		r = qmp(&q1, "query-migrate", NULL, &e);
		CHECK(r && !strcmp(jstr(r, "status"), "completed"));
		json_object_put(r);
		qmp_conn_close(&q1);
		/* The source is gone; D1 holds the images now. */
		CHECK(image_locked(src_disk[0]) && image_locked(src_disk[1]));
	}
	sleep(1); /* a guest round or two on D1 */
	snprintf(d2q, sizeof(d2q), "%s/d2-qmp.sock", tmpdir);
	snprintf(d2uri, sizeof(d2uri), "tcp:127.0.0.1:%u", free_port());
	start_dest(&d2, d2uri, d2q, NULL, -1);
	{
		char *argv[] = {(char *)qlite, "migrate", "--qmp",  d.d1_qmp,
				d2uri,	       "--wait",  "--json", NULL};
		struct json_object *res;

		child_spawn(&cli, argv, -1);
		rc = child_wait(&cli);
		res = json_tokener_parse(cli.obuf);
		if (rc != 0 || !res || strcmp(jstr(res, "status"), "completed")) {
			fprintf(stderr, "FAIL qlite migrate D1 -> D2: exit %d\n%s\n%s\n", rc,
				cli.obuf, cli.ebuf);
			failures++;
		} else {
			print_figures("D1 -> D2 (tcp 127.0.0.1, qlite migrate)", res);
			CHECK(!strcmp(dirty_tracking(res), tracking));
		}
		json_object_put(res);
		child_free(&cli);
	}
	/* The middle one was a source: it exits 0 without finishing the work. */
	rc = child_wait(&d.d1);
	if (rc != 0 || strstr(d.d1.obuf, "RESULT"))
		fprintf(stderr, "FAIL D1 (a source at the end): exit %d\n%s\n", rc, d.d1.ebuf),
			failures++;
	child_free(&d.d1);
	rc = child_wait(&d2);
	check_result("D2, after two migrations", &d2, rc, ref);
	child_free(&d2);
	json_object_put(d.final);
	json_object_put(d.last);

	/* 4. Over an inherited socket (fd:N), memfd-backed, default parameters. */
	{
		struct driver d4 = {0};
		int sp[2];
		char d3q[256];

		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
		snprintf(d3q, sizeof(d3q), "%s/d3-qmp.sock", tmpdir);
		/* The bitmap, on both sides (the destination's choice is its own). */
		start_dest_opt(&d3, "fd:3", d3q, NULL, sp[1], "--dirty-ring=off");
		close(sp[1]);
		CHECK(ktest_create(&t, 1, MEM) == 0);
		t.devices.mem_backend = MEM_BACKEND_MEMFD;
		t.devices.dirty_ring = VM_DIRTY_RING_OFF;
		{
			static char spec[300];

			snprintf(sock, sizeof(sock), "%s/qmp2.sock", tmpdir);
			snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", sock);
			t.qmp = spec;
		}
		CHECK(ktest_start(&t, GT_MIGRATE_SUM) == 0);
		d4.t = &t;
		snprintf(d4.qmp_path, sizeof(d4.qmp_path), "%s", sock);
		snprintf(d4.d1_qmp, sizeof(d4.d1_qmp), "fd:%d", sp[0]); /* the URI, for drive_fd */
		pthread_create(&th, NULL, drive_fd, &d4);
		CHECK(ktest_run(&t, 120) == VM_STOP_QUIT);
		pthread_join(th, NULL);
		ktest_destroy(&t);
		if (d4.final) {
			print_figures("source -> D3 (fd:N, memfd backend, bitmap)", d4.final);
			CHECK(!strcmp(dirty_tracking(d4.final), "bitmap"));
		}
		rc = child_wait(&d3);
		check_result("D3, over an inherited socket", &d3, rc, ref);
		child_free(&d3);
		json_object_put(d4.final);
		json_object_put(d4.last);
	}
postcopy:
	/* 5. Post-copy: the VM runs on the destination before its pages are all there. */
	{
		struct driver d5 = {0};
		struct child dpc;
		char dpq[256], pcuri[200];

		snprintf(dpq, sizeof(dpq), "%s/pc-qmp.sock", tmpdir);
		snprintf(pcuri, sizeof(pcuri), "unix:%s/pc.sock", tmpdir);
		start_dest(&dpc, pcuri, dpq, NULL, -1);
		CHECK(ktest_create(&t, 1, MEM) == 0);
		{
			static char spec[300];

			snprintf(sock, sizeof(sock), "%s/qmp3.sock", tmpdir);
			snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", sock);
			t.qmp = spec;
		}
		CHECK(ktest_start(&t, GT_MIGRATE_SUM) == 0);
		d5.t = &t;
		snprintf(d5.qmp_path, sizeof(d5.qmp_path), "%s", sock);
		snprintf(d5.d1_qmp, sizeof(d5.d1_qmp), "%s", pcuri);
		pthread_create(&th, NULL, drive_pc, &d5);
		CHECK(ktest_run(&t, 120) == VM_STOP_QUIT);
		pthread_join(th, NULL);
		ktest_destroy(&t);
		if (d5.final) {
			struct json_object *pc = NULL;

			print_figures("source -> post-copy destination (unix, 1 MiB/s pre-copy)",
				      d5.final);
			CHECK(json_object_object_get_ex(d5.final, "postcopy", &pc));
			printf("post-copy on the source: %s\n", json_object_to_json_string(pc));
		}
		/* The destination's figures, while the guest still runs there. */
		{
			struct qmp_conn q5 = {.fd = -1};
			struct qerr e;
			struct json_object *r, *pc = NULL;

			CHECK(qmp_open_retry(&q5, dpq));
			r = qmp(&q5, "query-migrate", NULL, &e);
			CHECK(r && !strcmp(jstr(r, "status"), "completed"));
			if (r && json_object_object_get_ex(r, "postcopy", &pc))
				printf("post-copy on the destination: %s\n",
				       json_object_to_json_string(pc));
			CHECK(pc != NULL);
			json_object_put(r);
			qmp_conn_close(&q5);
		}
		rc = child_wait(&dpc);
		check_result("post-copy destination", &dpc, rc, ref);
		child_free(&dpc);
		json_object_put(d5.final);
		json_object_put(d5.last);
	}
	/* 6. Post-copy recovery: the link breaks mid-post-copy, migrate-recover and resume. */
	{
		struct recover_run rr = {0};
		struct child dr;
		char durl[220], dsock[200], psock[200];

		snprintf(dsock, sizeof(dsock), "%s/pcr.sock", tmpdir);
		snprintf(durl, sizeof(durl), "unix:%s", dsock);
		snprintf(psock, sizeof(psock), "%s/pcr-proxy.sock", tmpdir);
		snprintf(rr.dqmp, sizeof(rr.dqmp), "%s/pcr-qmp.sock", tmpdir);
		snprintf(rr.rec_uri, sizeof(rr.rec_uri), "unix:%s/pcr-rec.sock", tmpdir);
		start_dest(&dr, durl, rr.dqmp, NULL, -1);
		proxy_start(&rr.px, psock, dsock);
		CHECK(ktest_create(&t, 1, MEM) == 0);
		{
			static char spec[300];

			snprintf(sock, sizeof(sock), "%s/qmp4.sock", tmpdir);
			snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", sock);
			t.qmp = spec;
		}
		CHECK(ktest_start(&t, GT_MIGRATE_SUM) == 0);
		rr.d.t = &t;
		snprintf(rr.d.qmp_path, sizeof(rr.d.qmp_path), "%s", sock);
		snprintf(rr.d.d1_qmp, sizeof(rr.d.d1_qmp), "unix:%s", psock);
		pthread_create(&th, NULL, drive_recover, &rr);
		CHECK(ktest_run(&t, 120) == VM_STOP_QUIT);
		pthread_join(th, NULL);
		proxy_cut(&rr.px);
		ktest_destroy(&t);
		if (rr.d.final)
			print_figures("post-copy, link cut and recovered", rr.d.final);
		rc = child_wait(&dr);
		check_result("recovered post-copy destination", &dr, rc, ref);
		child_free(&dr);
		json_object_put(rr.d.final);
		json_object_put(rr.d.last);
	}
	snprintf(sock, sizeof(sock), "rm -rf '%s'", tmpdir);
	if (system(sock))
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	printf("%s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
