/* SPDX-License-Identifier: MIT */
/*
 * QMP-compatible control socket (the protocol libvirt and QEMU tooling speak):
 * greeting, qmp_capabilities negotiation, execute/return/error, events.
 * Runs on the main thread's loop; requests act through the controller.
 */
#ifndef QLITE_QMP_H
#define QLITE_QMP_H

#include <stddef.h>

#include "qlite/util.h"

struct ctl;
struct qmp_server;
struct qmp_client;

/* The QEMU QMP dialect implemented, reported in the greeting/query-version. */
#define QMP_QEMU_MAJOR 7
#define QMP_QEMU_MINOR 2
#define QMP_QEMU_MICRO 0
#define QMP_MAX_MESSAGE (1024 * 1024)
#define QMP_MAX_CLIENTS 16

/* @spec: "unix:PATH[,server=on][,wait=off]" or "fd:N" (a listening socket). */
int qmp_server_create(struct ctl *c, const char *spec, struct qmp_server **out,
		      struct qerr *e);
void qmp_server_destroy(struct qmp_server *s);
/* Broadcast an event; @data_json is a JSON object's text or NULL. */
void qmp_event(struct qmp_server *s, const char *name, const char *data_json);
/* True if the server was asked to wait for a client before the VM runs. */
int qmp_server_wait_client(struct qmp_server *s);

/*
 * For tests and fuzzing: attach a connected fd as a client (the fd stays the
 * caller's to close), feed it bytes.
 */
struct qmp_client *qmp_client_attach(struct qmp_server *s, int fd);
void qmp_client_feed(struct qmp_client *cl, const char *buf, size_t len);
/* A server with no socket, for tests and fuzzing. */
int qmp_server_create_detached(struct ctl *c, struct qmp_server **out);

#endif
