/* SPDX-License-Identifier: MIT */
/* The qlite CLI's QMP client side: a connection API and the subcommands. */
#ifndef QLITE_CLIENT_H
#define QLITE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "qlite/util.h"

struct json_object;
struct json_tokener;
struct client_options;
struct profile_options;

#define QMP_CONN_TIMEOUT_MS 10000

/* A QMP connection, negotiated (qmp_capabilities done) once opened. */
struct qmp_conn {
	int fd;
	struct json_tokener *tok;
	char buf[65536];
	size_t len, off;
	bool closed; /* the server went away */
	/* Events seen while waiting for replies; @ev is borrowed. */
	void (*on_event)(void *opaque, struct json_object *ev);
	void *opaque;
};

/* Connect to "PATH" or "unix:PATH[,...]", read the greeting, negotiate. */
int qmp_conn_open(struct qmp_conn *c, const char *spec, struct qerr *e);
void qmp_conn_close(struct qmp_conn *c);
/*
 * Run @cmd with @args (borrowed; may be NULL). Returns its "return" value
 * (a new reference) or NULL: @e then holds the server's error description
 * (*@qmp_error true) or why the connection failed.
 */
struct json_object *qmp_conn_execute(struct qmp_conn *c, const char *cmd,
				     struct json_object *args, bool *qmp_error, struct qerr *e);
/* Wait up to @timeout_ms for messages, passing events to on_event. -errno if closed. */
int qmp_conn_wait(struct qmp_conn *c, int timeout_ms, struct qerr *e);

/* Run one client subcommand against a QMP socket; returns the exit status. */
int client_run(const struct client_options *o);
/* `qlite profile`; returns the exit status. */
int profile_client_run(const struct profile_options *o);
struct snapshot_options;
/* `qlite snapshot`; returns the exit status. */
int snapshot_client_run(const struct snapshot_options *o);
struct migrate_options;
/* `qlite migrate`; returns the exit status. */
int migrate_client_run(const struct migrate_options *o);

#endif
