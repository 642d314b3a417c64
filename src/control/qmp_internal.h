/* SPDX-License-Identifier: MIT */
/* Between the QMP protocol layer (qmp.c) and the command table (qmp_cmds.c). */
#ifndef QLITE_QMP_INTERNAL_H
#define QLITE_QMP_INTERNAL_H

#include <json-c/json.h>
#include <stdbool.h>

#include "qlite/util.h"

struct ctl;
struct qmp_client;

enum qmp_arg_type {
	QMP_ARG_STRING,
	QMP_ARG_BOOL,
	QMP_ARG_INT,
	QMP_ARG_ARRAY,
	QMP_ARG_OBJECT,
};

struct qmp_arg {
	const char *name;
	enum qmp_arg_type type;
	bool required;
};

struct qmp_command {
	const char *name;
	/* 0 with *ret set (NULL means {}), or -errno with a message in @e. */
	int (*fn)(struct ctl *c, struct json_object *args, struct json_object **ret,
		  struct qerr *e);
	/* Runs after the reply is queued (quit, reset: the reply goes first). */
	void (*after)(struct ctl *c);
	const struct qmp_arg *args; /* NULL-name terminated; NULL: none allowed */
};

const struct qmp_command *qmp_command_find(const char *name);
/* Unknown, missing and mistyped arguments, with QEMU's wording. */
int qmp_check_args(const struct qmp_command *cmd, struct json_object *args, struct qerr *e);
struct json_object *qmp_version_reply(void);
void qmp_send_error(struct qmp_client *cl, struct json_object *id, const char *cls,
		    const char *desc);

#endif
