// SPDX-License-Identifier: MIT
/*
 * `qlite migrate`: QMP migrate-set-parameters (if asked), migrate, then
 * (--wait) the MIGRATION events and MIGRATION_PROGRESS figures until the
 * migration completes or fails: a progress line for people, the final
 * query-migrate object for scripts (--json).
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qlite/cli.h"
#include "qlite/client.h"

struct mclient {
	const struct migrate_options *o;
	struct json_object *info; /* the latest figures (MIGRATION_PROGRESS) */
	char status[32];
	char error[600];
	bool ended, switchover, tty;
	uint64_t last_line_ns;
	/* --postcopy=auto: the dirty set at each round's start, and how often it did not shrink */
	int64_t round, round_dirty;
	unsigned int stalled;
	bool pc_sent;
};

#define AUTO_STALLED_ROUNDS 3 /* rounds whose dirty set did not shrink: not converging */
#define AUTO_MAX_ROUNDS 10

static int64_t get_int(struct json_object *o, const char *k)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static const char *phase(struct mclient *mc, char *buf, size_t len)
{
	struct json_object *ram = NULL, *v;
	const char *status = mc->status[0] ? mc->status : "setup";

	/* The figures' own status: the final ones come before the MIGRATION event. */
	if (mc->info && json_object_object_get_ex(mc->info, "status", &v))
		status = json_object_get_string(v);
	if (mc->info)
		json_object_object_get_ex(mc->info, "ram", &ram);
	if (!strcmp(status, "active") && mc->switchover)
		return "switchover (VM paused)";
	if (!strcmp(status, "active")) {
		snprintf(buf, len, "pre-copy round %lld",
			 (long long)get_int(ram, "dirty-sync-count"));
		return buf;
	}
	snprintf(buf, len, "%s", status);
	return buf;
}

static void show_progress(struct mclient *mc)
{
	struct json_object *ram = NULL, *v;
	double sent, left, total, mbps = 0;
	uint64_t now = time_now_ns();
	char pbuf[48], bar[21];
	int pct, i;

	if (!mc->o->wait || !mc->info)
		return;
	json_object_object_get_ex(mc->info, "ram", &ram);
	sent = (double)get_int(ram, "transferred") / (1 << 20);
	left = (double)get_int(ram, "remaining") / (1 << 20);
	total = (double)get_int(ram, "total") / (1 << 20);
	if (ram && json_object_object_get_ex(ram, "mbps", &v))
		mbps = json_object_get_double(v);
	pct = total > 0 ? (int)((total - left) * 100 / total) : 0;
	for (i = 0; i < 20; i++)
		bar[i] = i < pct / 5 ? '#' : '.';
	bar[20] = 0;
	if (mc->tty) {
		fprintf(stderr,
			"\rmigration: [%s] %3d%%  %-24s %8.1f MiB sent  %7.1f MiB left  %6.1f "
			"MiB/s ",
			bar, pct, phase(mc, pbuf, sizeof(pbuf)), sent, left, mbps / 8.0);
	} else if (now - mc->last_line_ns >= 1000000000ULL) {
		fprintf(stderr, "migration: %d%% %s, %.1f MiB sent, %.1f MiB left, %.1f MiB/s\n",
			pct, phase(mc, pbuf, sizeof(pbuf)), sent, left, mbps / 8.0);
		mc->last_line_ns = now;
	}
}

static void on_event(void *opaque, struct json_object *ev)
{
	struct mclient *mc = opaque;
	struct json_object *name, *data = NULL, *v;
	const char *n;

	if (!json_object_object_get_ex(ev, "event", &name))
		return;
	n = json_object_get_string(name);
	json_object_object_get_ex(ev, "data", &data);
	if (!strcmp(n, "MIGRATION_PROGRESS") && data) {
		json_object_put(mc->info);
		mc->info = json_object_get(data);
		show_progress(mc);
	} else if (!strcmp(n, "MIGRATION") && data &&
		   json_object_object_get_ex(data, "status", &v)) {
		snprintf(mc->status, sizeof(mc->status), "%s", json_object_get_string(v));
		if (!strcmp(mc->status, "completed") || !strcmp(mc->status, "failed") ||
		    !strcmp(mc->status, "cancelled"))
			mc->ended = true;
	} else if (!strcmp(n, "STOP")) {
		mc->switchover = true;
	} else if (!strcmp(n, "RESUME")) {
		mc->switchover = false;
	} else if (!strcmp(n, "SHUTDOWN") && !mc->ended) {
		snprintf(mc->error, sizeof(mc->error), "the VM shut down");
		mc->ended = true;
	}
}

static bool set_params(struct qmp_conn *conn, const struct migrate_options *o, struct qerr *e)
{
	struct json_object *args = json_object_new_object(), *r;
	bool qerr_flag = false;

	if (o->max_bandwidth_given)
		json_object_object_add(args, "max-bandwidth",
				       json_object_new_int64((int64_t)o->max_bandwidth));
	if (o->downtime_given)
		json_object_object_add(args, "downtime-limit",
				       json_object_new_int64((int64_t)o->downtime_ms));
	r = qmp_conn_execute(conn, "migrate-set-parameters", args, &qerr_flag, e);
	json_object_put(args);
	json_object_put(r);
	return r != NULL;
}

static void print_summary(struct mclient *mc)
{
	struct json_object *ram = NULL;

	json_object_object_get_ex(mc->info, "ram", &ram);
	fprintf(stderr,
		"migrated to %s: %.1f MiB sent in %lld ms (%lld rounds), downtime %lld "
		"ms; "
		"pages: %lld data, %lld zero\n",
		mc->o->uri, (double)get_int(ram, "transferred") / (1 << 20),
		(long long)get_int(mc->info, "total-time"),
		(long long)get_int(ram, "dirty-sync-count"),
		(long long)get_int(mc->info, "downtime"), (long long)get_int(ram, "normal"),
		(long long)get_int(ram, "duplicate"));
}

static bool qmp_simple(struct qmp_conn *conn, const char *cmd, const char *args_json, struct qerr *e)
{
	struct json_object *args = args_json ? json_tokener_parse(args_json) : NULL, *r;
	bool qmp_error = false;

	r = qmp_conn_execute(conn, cmd, args, &qmp_error, e);
	json_object_put(args);
	json_object_put(r);
	return r != NULL;
}

/* --postcopy=auto: has pre-copy stopped converging? (called with each new figure) */
static bool auto_wants_postcopy(struct mclient *mc)
{
	struct json_object *ram = NULL;
	int64_t round, dirty;

	if (!mc->info || strcmp(mc->status, "active"))
		return false;
	json_object_object_get_ex(mc->info, "ram", &ram);
	round = get_int(ram, "dirty-sync-count");
	dirty = get_int(ram, "remaining");
	if (round <= mc->round)
		return false;
	/* A new round: its first figure is about its whole dirty set. */
	if (round >= 2 && dirty >= mc->round_dirty)
		mc->stalled++;
	else
		mc->stalled = 0;
	mc->round = round;
	mc->round_dirty = dirty;
	return mc->stalled >= AUTO_STALLED_ROUNDS || round >= AUTO_MAX_ROUNDS;
}

int migrate_client_run(const struct migrate_options *o)
{
	struct mclient mc = {.o = o};
	struct qmp_conn conn;
	struct json_object *args, *ret, *v;
	struct qerr e = {0};
	bool qmp_error = false;
	int status = 1;

	if (o->postcopy == CLI_POSTCOPY_AUTO && !o->wait) {
		fprintf(stderr, "qlite migrate: --postcopy=auto needs --wait (it watches the "
				"rounds)\n");
		return 1;
	}
	mc.tty = isatty(STDERR_FILENO);
	if (qmp_conn_open(&conn, o->qmp, &e)) {
		fprintf(stderr, "qlite migrate: %s\n", e.msg);
		return 1;
	}
	conn.on_event = on_event;
	conn.opaque = &mc;
	if ((o->max_bandwidth_given || o->downtime_given) && !set_params(&conn, o, &e)) {
		fprintf(stderr, "qlite migrate: %s\n", e.msg);
		goto out;
	}
	if (o->postcopy != CLI_POSTCOPY_OFF &&
	    !qmp_simple(&conn, "migrate-set-capabilities",
			"{\"capabilities\": [{\"capability\": \"postcopy-ram\", \"state\": true}]}",
			&e)) {
		fprintf(stderr, "qlite migrate: %s\n", e.msg);
		goto out;
	}
	args = json_object_new_object();
	json_object_object_add(args, "uri", json_object_new_string(o->uri));
	ret = qmp_conn_execute(&conn, "migrate", args, &qmp_error, &e);
	json_object_put(args);
	if (!ret) {
		fprintf(stderr, "qlite migrate: %s\n", e.msg);
		goto out;
	}
	json_object_put(ret);
	/* --postcopy: switch once round 0 (every populated page) is through. */
	if (o->postcopy == CLI_POSTCOPY_ON) {
		if (!qmp_simple(&conn, "migrate-start-postcopy", NULL, &e)) {
			fprintf(stderr, "qlite migrate: migrate-start-postcopy: %s\n", e.msg);
			goto out;
		}
		mc.pc_sent = true;
	}
	if (!o->wait) {
		ret = qmp_conn_execute(&conn, "query-migrate", NULL, &qmp_error, &e);
		if (o->json && ret)
			printf("%s\n", json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN));
		else if (!o->json)
			fprintf(stderr,
				"migration to %s started (qlite qmp --qmp %s query-migrate)\n",
				o->uri, o->qmp);
		json_object_put(ret);
		status = 0;
		goto out;
	}
	while (!mc.ended) {
		if (o->postcopy == CLI_POSTCOPY_AUTO && !mc.pc_sent && auto_wants_postcopy(&mc)) {
			mc.pc_sent = true;
			if (!qmp_simple(&conn, "migrate-start-postcopy", NULL, &e))
				fprintf(stderr, "qlite migrate: migrate-start-postcopy: %s\n", e.msg);
		}
		if (qmp_conn_wait(&conn, 1000, &e)) {
			/* The source exits right after completing: its last words are in. */
			if (!mc.ended)
				snprintf(mc.error, sizeof(mc.error), "%s", e.msg);
			break;
		}
	}
	if (mc.tty)
		fputc('\n', stderr);
	if (!strcmp(mc.status, "completed") && mc.info) {
		if (o->json)
			printf("%s\n",
			       json_object_to_json_string_ext(mc.info, JSON_C_TO_STRING_PLAIN));
		else
			print_summary(&mc);
		status = 0;
		goto out;
	}
	if (mc.info && json_object_object_get_ex(mc.info, "error-desc", &v))
		snprintf(mc.error, sizeof(mc.error), "%s", json_object_get_string(v));
	else if (!mc.error[0])
		snprintf(mc.error, sizeof(mc.error), "%s",
			 !strcmp(mc.status, "cancelled") ? "migrate-cancel" : "no outcome");
	if (o->json && mc.info)
		printf("%s\n", json_object_to_json_string_ext(mc.info, JSON_C_TO_STRING_PLAIN));
	fprintf(stderr, "qlite migrate: migration to %s %s: %s\n", o->uri,
		!strcmp(mc.status, "cancelled") ? "was cancelled" : "failed", mc.error);
out:
	json_object_put(mc.info);
	qmp_conn_close(&conn);
	return status;
}
