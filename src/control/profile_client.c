// SPDX-License-Identifier: MIT
/*
 * `qlite profile`: a QMP client that runs a profile-start/query-profile/
 * profile-stop session, shows a live top-N table (a terminal gets a
 * redrawn table with a progress bar; anything else one plain line per
 * second), symbolizes the result and writes the outputs. Everything that
 * can be wrong with the user's input (symbols, output directory) is checked
 * before the VM is touched, so bad input never disturbs it.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qlite/cli.h"
#include "qlite/client.h"
#include "qlite/report.h"

#define WAIT_MS 100
#define SERVER_GRACE_MS 5000 /* the server stops by itself if we vanish */
#define LIVE_ROWS_MAX 20

struct pclient {
	const struct profile_options *o;
	struct symtab ksyms, usyms;
	bool have_k, have_u;
	struct qmp_conn conn;
	struct profile_data last; /* latest snapshot */
	bool have_last;
	struct profile_data final; /* from profile-stop or PROFILE_STOPPED */
	bool have_final;
	char stop_note[64];
	bool tty;
	int drawn; /* lines of the live view on screen */
	int sfd;
	uint64_t t0;
};

static void on_event(void *opaque, struct json_object *ev)
{
	struct pclient *pc = opaque;
	struct json_object *name, *data, *prof, *reason;
	struct qerr e = { 0 };

	if (!json_object_object_get_ex(ev, "event", &name))
		return;
	if (!strcmp(json_object_get_string(name), "SHUTDOWN") && !pc->stop_note[0])
		snprintf(pc->stop_note, sizeof(pc->stop_note), "the VM shut down");
	if (strcmp(json_object_get_string(name), "PROFILE_STOPPED") || pc->have_final ||
	    !json_object_object_get_ex(ev, "data", &data) ||
	    !json_object_object_get_ex(data, "profile", &prof))
		return;
	if (profile_data_from_json(prof, &pc->final, &e)) {
		fprintf(stderr, "qlite profile: PROFILE_STOPPED: %s\n", e.msg);
		return;
	}
	pc->have_final = true;
	if (json_object_object_get_ex(data, "reason", &reason) &&
	    strcmp(json_object_get_string(reason), "duration"))
		snprintf(pc->stop_note, sizeof(pc->stop_note), "profiling ended: %s",
			 json_object_get_string(reason));
}

/* Create @dir if needed and prove we can write there, before starting. */
static int prepare_outdir(const char *dir, struct qerr *e)
{
	char probe[4096];
	struct stat st;
	int fd;

	if (mkdir(dir, 0777) < 0 && errno != EEXIST)
		return qerr_set(e, errno, "cannot create output directory %s: %s", dir,
				strerror(errno));
	if (stat(dir, &st) < 0)
		return qerr_set(e, errno, "output directory %s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return qerr_set(e, ENOTDIR, "output directory %s is not a directory", dir);
	snprintf(probe, sizeof(probe), "%s/.qlite-profile-%d", dir, (int)getpid());
	fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return qerr_set(e, errno, "cannot write to output directory %s: %s", dir,
				strerror(errno));
	close(fd);
	unlink(probe);
	return 0;
}

static int build_report(struct pclient *pc, const struct profile_data *d, struct report *r,
			struct qerr *e)
{
	struct report_options ro = {
		.kernel = pc->have_k ? &pc->ksyms : NULL,
		.user = pc->have_u ? &pc->usyms : NULL,
		.kaslr_given = pc->o->kaslr_given,
		.kaslr_offset = pc->o->kaslr_offset,
	};

	return report_build(d, &ro, r, e);
}

static void progress_bar(char *buf, size_t len, double frac)
{
	size_t width = 30, i, n = (size_t)(frac * (double)width + 0.5);

	if (n > width)
		n = width;
	for (i = 0; i < width && i + 1 < len; i++)
		buf[i] = i < n ? '#' : '.';
	buf[i] = '\0';
}

static void live_view(struct pclient *pc, const struct profile_data *d)
{
	double el = (double)(time_now_ns() - pc->t0) / 1e9;
	double dur = (double)pc->o->duration_ns / 1e9;
	struct qerr e = { 0 };
	struct report r;
	char bar[40];
	size_t rows;

	if (build_report(pc, d, &r, &e))
		return;
	if (!pc->tty) {
		/* One plain line per refresh: logs and pipes stay readable. */
		printf("profile: %.1f/%.1f s, %llu samples, idle %.1f%%", el, dur,
		       (unsigned long long)r.total,
		       r.total ? 100.0 * (double)r.idle / (double)r.total : 0.0);
		if (r.n)
			printf(", top: %s %.1f%%", r.e[0].stack,
			       100.0 * (double)r.e[0].count / (double)(r.kernel + r.user));
		printf("\n");
		fflush(stdout);
		report_free(&r);
		return;
	}
	if (pc->drawn)
		printf("\033[%dA\033[J", pc->drawn);
	progress_bar(bar, sizeof(bar), dur > 0 ? el / dur : 1);
	printf("qlite profile [%s] %5.1f/%.1f s  %u Hz %s  %u vCPU%s\n", bar, el, dur, d->freq,
	       d->method, d->nvcpus, d->nvcpus == 1 ? "" : "s");
	rows = MIN((size_t)pc->o->top, (size_t)LIVE_ROWS_MAX);
	pc->drawn = 1 + (int)report_print_top(&r, (unsigned int)rows, stdout);
	fflush(stdout);
	report_free(&r);
}

static int write_output(const char *dir, const char *name, char *path, size_t plen, FILE **f,
			struct qerr *e)
{
	snprintf(path, plen, "%s/%s", dir, name);
	*f = fopen(path, "w");
	if (!*f)
		return qerr_set(e, errno, "cannot write %s: %s", path, strerror(errno));
	return 0;
}

static int close_output(FILE *f, const char *path, int ret, struct qerr *e)
{
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	if (ret)
		return qerr_set(e, -ret, "cannot write %s: %s", path, strerror(-ret));
	return 0;
}

static void print_header(struct pclient *pc, const struct profile_data *d,
			 const struct report *r, FILE *f)
{
	fprintf(f, "qlite profile: %llu samples in %.1f s at %u Hz (method %s), %u vCPU%s; stop: %s\n",
		(unsigned long long)r->total, (double)d->elapsed_ns / 1e9, d->freq, d->method,
		d->nvcpus, d->nvcpus == 1 ? "" : "s", d->stop_reason[0] ? d->stop_reason : "?");
	if (pc->have_k)
		fprintf(f, "kernel symbols: %s (%s, %zu symbols); KASLR offset %s%llx (%s)\n",
			pc->o->symbols, symtab_format_name(pc->ksyms.format), pc->ksyms.n,
			r->kaslr_known ? "0x" : "unknown, using 0x",
			(unsigned long long)r->kaslr_offset, r->kaslr_how);
	else
		fprintf(f, "kernel symbols: none (--symbols); kernel addresses shown as they are\n");
	if (r->unresolved && pc->have_k)
		fprintf(f, "%llu kernel samples outside the symbol file (modules?)\n",
			(unsigned long long)r->unresolved);
	if (r->dropped)
		fprintf(f, "%llu samples dropped (too many distinct addresses)\n",
			(unsigned long long)r->dropped);
	if (!r->total)
		fprintf(f, "no samples were taken (a paused VM's vCPUs are not sampled)\n");
}

static int write_outputs(struct pclient *pc, const struct profile_data *d, struct qerr *e)
{
	const char *dir = pc->o->out;
	char path[4096], title[256];
	struct report r;
	FILE *f;
	int ret;

	ret = build_report(pc, d, &r, e);
	if (ret)
		return ret;
	ret = write_output(dir, "profile.folded", path, sizeof(path), &f, e);
	if (!ret)
		ret = close_output(f, path, report_write_folded(&r, f), e);
	if (!ret)
		ret = write_output(dir, "flamegraph.svg", path, sizeof(path), &f, e);
	if (!ret) {
		snprintf(title, sizeof(title), "qlite guest profile: %.1f s at %u Hz, %u vCPU%s",
			 (double)d->elapsed_ns / 1e9, d->freq, d->nvcpus, d->nvcpus == 1 ? "" : "s");
		ret = close_output(f, path, report_write_svg(&r, title, f), e);
	}
	if (!ret)
		ret = write_output(dir, "summary.json", path, sizeof(path), &f, e);
	if (!ret)
		ret = close_output(f, path,
				   report_write_summary(&r, d, pc->have_k ? pc->o->symbols : NULL, f),
				   e);
	if (!ret)
		ret = write_output(dir, "report.txt", path, sizeof(path), &f, e);
	if (!ret) {
		print_header(pc, d, &r, f);
		report_print_top(&r, pc->o->top, f);
		report_print_exits(d, f);
		ret = close_output(f, path, ferror(f) ? -EIO : 0, e);
	}
	if (!ret) {
		print_header(pc, d, &r, stdout);
		report_print_top(&r, pc->o->top, stdout);
		report_print_exits(d, stdout);
		printf("wrote %s/profile.folded, %s/flamegraph.svg, %s/summary.json, %s/report.txt\n",
		       dir, dir, dir, dir);
	}
	report_free(&r);
	return ret;
}

static bool interrupted(struct pclient *pc)
{
	struct signalfd_siginfo si;

	return pc->sfd >= 0 && read(pc->sfd, &si, sizeof(si)) == sizeof(si);
}

/* query-profile into pc->last (the fallback if the VM vanishes). */
static void snapshot(struct pclient *pc)
{
	struct json_object *ret;
	struct profile_data d;
	struct qerr e = { 0 };

	ret = qmp_conn_execute(&pc->conn, "query-profile", NULL, NULL, &e);
	if (!ret)
		return;
	if (!profile_data_from_json(ret, &d, &e)) {
		profile_data_free(&pc->last);
		pc->last = d;
		pc->have_last = true;
		live_view(pc, &d);
	}
	json_object_put(ret);
}

static int run_session(struct pclient *pc, struct qerr *e)
{
	struct json_object *args = json_object_new_object(), *ret;
	uint64_t last_poll = 0;
	bool qerror;

	json_object_object_add(args, "frequency", json_object_new_int((int)pc->o->freq));
	json_object_object_add(args, "method",
			       json_object_new_string(profile_method_name(pc->o->method)));
	json_object_object_add(args, "duration",
			       json_object_new_int64((int64_t)(pc->o->duration_ns / 1000000ULL) +
						     SERVER_GRACE_MS));
	ret = qmp_conn_execute(&pc->conn, "profile-start", args, &qerror, e);
	json_object_put(args);
	if (!ret)
		return -EIO;
	json_object_put(ret);
	pc->t0 = time_now_ns();
	if (!pc->tty) {
		printf("profile: sampling for %.1f s at %u Hz (method %s)\n",
		       (double)pc->o->duration_ns / 1e9, pc->o->freq,
		       profile_method_name(pc->o->method));
		fflush(stdout);
	}
	while (!pc->have_final && !pc->conn.closed) {
		uint64_t now = time_now_ns();

		if (now - pc->t0 >= pc->o->duration_ns)
			break;
		if (interrupted(pc)) {
			snprintf(pc->stop_note, sizeof(pc->stop_note), "interrupted");
			break;
		}
		if (pc->o->refresh_ns && now - last_poll >= pc->o->refresh_ns) {
			last_poll = now;
			snapshot(pc);
			continue;
		}
		if (qmp_conn_wait(&pc->conn, WAIT_MS, e))
			break;
	}
	if (!pc->have_final && !pc->conn.closed) {
		struct qerr se = { 0 };

		ret = qmp_conn_execute(&pc->conn, "profile-stop", NULL, &qerror, &se);
		if (ret) {
			if (!profile_data_from_json(ret, &pc->final, &se))
				pc->have_final = true;
			json_object_put(ret);
		}
	}
	if (pc->tty && pc->drawn)
		printf("\033[%dA\033[J", pc->drawn);
	if (!pc->have_final && !pc->have_last)
		return qerr_set(e, EIO, "the VM went away before any profile data arrived");
	memset(e, 0, sizeof(*e));
	return 0;
}

int profile_client_run(const struct profile_options *o)
{
	struct pclient *pc = calloc(1, sizeof(*pc));
	struct qerr e = { 0 };
	sigset_t set;
	int ret = 1;

	if (!pc)
		return 1;
	pc->o = o;
	pc->sfd = -1;
	pc->conn.fd = -1;
	pc->tty = isatty(STDOUT_FILENO);
	/* Bad input is refused before the VM is touched. */
	if (o->symbols) {
		if (symtab_load(o->symbols, &pc->ksyms, &e))
			goto out;
		pc->have_k = true;
	}
	if (o->user_symbols) {
		if (symtab_load(o->user_symbols, &pc->usyms, &e))
			goto out;
		pc->have_u = true;
	}
	if (prepare_outdir(o->out, &e))
		goto out;
	/* Ctrl-C ends the profile early; the outputs are still written. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (!sigprocmask(SIG_BLOCK, &set, NULL))
		pc->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	pc->conn.on_event = on_event;
	pc->conn.opaque = pc;
	if (qmp_conn_open(&pc->conn, o->qmp, &e))
		goto out;
	if (run_session(pc, &e))
		goto out;
	if (!pc->have_final) {
		fprintf(stderr, "qlite profile: lost the VM after %.1f s; writing the last snapshot\n",
			(double)(time_now_ns() - pc->t0) / 1e9);
		pc->final = pc->last;
		memset(&pc->last, 0, sizeof(pc->last));
		pc->have_final = true;
	} else if (pc->stop_note[0]) {
		fprintf(stderr, "qlite profile: %s after %.1f s; writing what was collected\n",
			pc->stop_note, (double)pc->final.elapsed_ns / 1e9);
	}
	if (write_outputs(pc, &pc->final, &e))
		goto out;
	ret = 0;
out:
	if (ret && e.msg[0])
		fprintf(stderr, "qlite profile: %s\n", e.msg);
	qmp_conn_close(&pc->conn);
	if (pc->sfd >= 0)
		close(pc->sfd);
	profile_data_free(&pc->last);
	profile_data_free(&pc->final);
	symtab_free(&pc->ksyms);
	symtab_free(&pc->usyms);
	free(pc);
	return ret;
}
