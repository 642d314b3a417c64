// SPDX-License-Identifier: MIT
/*
 * `qlite snapshot save|load`: QMP snapshot-save, then the progress events
 * until SNAPSHOT_COMPLETED or SNAPSHOT_FAILED (a terminal gets a redrawn
 * progress line, anything else a line a second); or snapshot-load.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qlite/cli.h"
#include "qlite/client.h"

struct sclient {
	const struct snapshot_options *o;
	char dir[4096];
	struct json_object *result; /* SNAPSHOT_COMPLETED data */
	char error[600];
	bool ended;
	bool tty;
	uint64_t last_line_ns;
};

static int64_t get_int(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static void show_progress(struct sclient *sc, struct json_object *d)
{
	double mib = (double)get_int(d, "bytes") / (1 << 20);
	double rate = (double)get_int(d, "rate") / (1 << 20);
	int64_t done = get_int(d, "pages-done"), total = get_int(d, "pages-total");
	int pct = total ? (int)(done * 100 / total) : 0;
	uint64_t now = time_now_ns();

	if (sc->tty) {
		fprintf(stderr, "\rcheckpoint: %3d%%  %8.1f MiB written  %7.1f MiB/s ", pct, mib,
			rate);
	} else if (now - sc->last_line_ns >= 1000000000ULL) {
		fprintf(stderr, "checkpoint: %d%% %.1f MiB written %.1f MiB/s\n", pct, mib, rate);
		sc->last_line_ns = now;
	}
}

static void on_event(void *opaque, struct json_object *ev)
{
	struct sclient *sc = opaque;
	struct json_object *name, *data = NULL, *dir;
	const char *n;

	if (!json_object_object_get_ex(ev, "event", &name))
		return;
	n = json_object_get_string(name);
	json_object_object_get_ex(ev, "data", &data);
	if (!strcmp(n, "SHUTDOWN") && !sc->ended) {
		snprintf(sc->error, sizeof(sc->error), "the VM shut down");
		sc->ended = true;
		return;
	}
	if (strncmp(n, "SNAPSHOT_", 9) || !data)
		return;
	/* Only our own checkpoint's events. */
	if (!json_object_object_get_ex(data, "dir", &dir) ||
	    strcmp(json_object_get_string(dir), sc->dir))
		return;
	if (!strcmp(n, "SNAPSHOT_PROGRESS")) {
		show_progress(sc, data);
	} else if (!strcmp(n, "SNAPSHOT_COMPLETED")) {
		sc->result = json_object_get(data);
		sc->ended = true;
	} else if (!strcmp(n, "SNAPSHOT_FAILED")) {
		struct json_object *err;

		snprintf(sc->error, sizeof(sc->error), "%s",
			 json_object_object_get_ex(data, "error", &err) ?
				 json_object_get_string(err) :
				 "unknown error");
		sc->ended = true;
	}
}

static void print_summary(struct sclient *sc)
{
	struct json_object *pages = NULL;
	double ms = 0;
	struct json_object *v;

	if (sc->o->json) {
		printf("%s\n", json_object_to_json_string_ext(sc->result, JSON_C_TO_STRING_PLAIN));
		return;
	}
	json_object_object_get_ex(sc->result, "pages", &pages);
	if (json_object_object_get_ex(sc->result, "duration-ms", &v))
		ms = json_object_get_double(v);
	fprintf(stderr,
		"checkpoint written to %s: %.1f MiB in %.2f s; pages: %lld data, %lld zero, %lld disk references, %lld from the parent, %lld balloon-freed\n",
		sc->dir, (double)get_int(sc->result, "bytes") / (1 << 20), ms / 1000,
		(long long)get_int(pages, "data"), (long long)get_int(pages, "zero"),
		(long long)get_int(pages, "disk"), (long long)get_int(pages, "parent"),
		(long long)get_int(pages, "balloon"));
}

int snapshot_client_run(const struct snapshot_options *o)
{
	struct sclient sc = { .o = o };
	struct qmp_conn conn;
	struct json_object *args = json_object_new_object(), *ret;
	struct qerr e = { 0 };
	bool qmp_error = false;
	int status = 1;

	/* The server resolves paths from its own directory: send an absolute one. */
	if (o->dir[0] == '/') {
		snprintf(sc.dir, sizeof(sc.dir), "%s", o->dir);
	} else {
		char cwd[2048];

		if (!getcwd(cwd, sizeof(cwd))) {
			fprintf(stderr, "qlite snapshot: getcwd: %s\n", strerror(errno));
			json_object_put(args);
			return 1;
		}
		snprintf(sc.dir, sizeof(sc.dir), "%s/%s", cwd, o->dir);
	}
	sc.tty = isatty(STDERR_FILENO);
	if (qmp_conn_open(&conn, o->qmp, &e)) {
		fprintf(stderr, "qlite snapshot: %s\n", e.msg);
		json_object_put(args);
		return 1;
	}
	conn.on_event = on_event;
	conn.opaque = &sc;
	json_object_object_add(args, "dir", json_object_new_string(sc.dir));
	if (!strcmp(o->action, "load")) {
		json_object_object_add(args, "mode", json_object_new_string(o->eager ? "eager" : "lazy"));
		ret = qmp_conn_execute(&conn, "snapshot-load", args, &qmp_error, &e);
		if (!ret) {
			fprintf(stderr, "qlite snapshot: %s\n", e.msg);
		} else {
			if (o->json)
				printf("{\"dir\": %s, \"loaded\": true}\n",
				       json_object_to_json_string(json_object_object_get(args, "dir")));
			else
				fprintf(stderr, "loaded checkpoint %s\n", sc.dir);
			json_object_put(ret);
			status = 0;
		}
		goto out;
	}
	if (o->stop)
		json_object_object_add(args, "stop", json_object_new_boolean(true));
	if (o->incremental)
		json_object_object_add(args, "incremental", json_object_new_boolean(true));
	if (o->no_elide)
		json_object_object_add(args, "elide", json_object_new_boolean(false));
	ret = qmp_conn_execute(&conn, "snapshot-save", args, &qmp_error, &e);
	if (!ret) {
		fprintf(stderr, "qlite snapshot: %s\n", e.msg);
		goto out;
	}
	json_object_put(ret);
	while (!sc.ended) {
		if (qmp_conn_wait(&conn, 1000, &e)) {
			snprintf(sc.error, sizeof(sc.error), "%s", e.msg);
			break;
		}
	}
	if (sc.tty)
		fputc('\n', stderr);
	if (sc.result) {
		print_summary(&sc);
		json_object_put(sc.result);
		status = 0;
	} else {
		fprintf(stderr, "qlite snapshot: checkpoint to %s failed: %s\n", sc.dir, sc.error);
	}
out:
	json_object_put(args);
	qmp_conn_close(&conn);
	return status;
}
