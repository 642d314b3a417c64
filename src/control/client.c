// SPDX-License-Identifier: MIT
/* `qlite status|pause|resume|powerdown|quit`: a small QMP client. */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "qlite/cli.h"
#include "qlite/client.h"

#define CLIENT_TIMEOUT_MS 10000

struct conn {
	int fd;
	struct json_tokener *tok;
	char buf[4096];
	size_t len, off;
};

static int conn_open(struct conn *c, const char *spec, struct qerr *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = spec;
	size_t plen;

	if (!strncmp(path, "unix:", 5))
		path += 5;
	plen = strcspn(path, ","); /* tolerate ",server=on,wait=off" */
	if (!plen || plen >= sizeof(sa.sun_path))
		return qerr_set(e, EINVAL, "bad QMP socket path '%s'", spec);
	memcpy(sa.sun_path, path, plen);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return qerr_set(e, errno, "socket: %s", strerror(errno));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;

		close(c->fd);
		return qerr_set(e, err, "cannot connect to %s: %s (is qlite running with --qmp?)",
				sa.sun_path, strerror(err));
	}
	c->tok = json_tokener_new();
	return 0;
}

/* Next complete JSON message, or NULL with @e set; @timeout_ms -1: forever. */
static struct json_object *conn_read(struct conn *c, struct qerr *e, int timeout_ms)
{
	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		while (c->off < c->len) {
			struct json_object *o;
			enum json_tokener_error err;

			if (strchr(" \t\r\n", c->buf[c->off])) {
				c->off++;
				continue;
			}
			o = json_tokener_parse_ex(c->tok, c->buf + c->off, (int)(c->len - c->off));
			err = json_tokener_get_error(c->tok);
			if (err == json_tokener_continue) {
				c->off = c->len;
				break;
			}
			c->off += json_tokener_get_parse_end(c->tok);
			json_tokener_reset(c->tok);
			if (err != json_tokener_success) {
				qerr_set(e, EPROTO, "bad JSON from the QMP server");
				return NULL;
			}
			return o;
		}
		if (poll(&p, 1, timeout_ms) <= 0) {
			qerr_set(e, ETIMEDOUT, "no answer from the QMP server");
			return NULL;
		}
		n = read(c->fd, c->buf, sizeof(c->buf));
		if (n <= 0) {
			qerr_set(e, ECONNRESET, "the QMP server closed the connection");
			return NULL;
		}
		c->len = n;
		c->off = 0;
	}
}

/* Send a request; return its reply (events in between are skipped). */
static struct json_object *conn_request(struct conn *c, struct json_object *req_obj,
					struct qerr *e)
{
	const char *req = json_object_to_json_string_ext(req_obj, JSON_C_TO_STRING_PLAIN);
	size_t n = strlen(req);

	if (write(c->fd, req, n) != (ssize_t)n || write(c->fd, "\n", 1) != 1) {
		qerr_set(e, errno, "cannot send to the QMP server: %s", strerror(errno));
		return NULL;
	}
	for (;;) {
		struct json_object *o = conn_read(c, e, CLIENT_TIMEOUT_MS), *v;

		if (!o)
			return NULL;
		if (json_object_object_get_ex(o, "return", &v) ||
		    json_object_object_get_ex(o, "error", &v))
			return o;
		json_object_put(o); /* an event */
	}
}

static struct json_object *conn_execute(struct conn *c, const char *cmd, struct json_object *args,
					struct qerr *e)
{
	struct json_object *req = json_object_new_object(), *reply;

	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", json_object_get(args));
	reply = conn_request(c, req, e);
	json_object_put(req);
	return reply;
}

/* Print events as JSON lines until the server goes away (the VM ended). */
static int client_events(struct conn *c, struct qerr *e)
{
	for (;;) {
		struct json_object *o = conn_read(c, e, -1);

		if (!o)
			return e->errnum == ECONNRESET ? 0 : -1;
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		fflush(stdout);
		json_object_put(o);
	}
}

static const struct {
	const char *verb, *qmp, *done;
} verbs[] = {
	{ "status", "query-status", NULL },
	{ "pause", "stop", "paused" },
	{ "resume", "cont", "running" },
	{ "powerdown", "system_powerdown", "power button pressed; the guest is shutting down" },
	{ "quit", "quit", "stopped" },
	{ "events", NULL, NULL },
	{ "qmp", NULL, NULL },
};

int client_run(const struct client_options *o)
{
	struct conn c = { .fd = -1 };
	struct json_object *greeting = NULL, *reply = NULL, *v, *err;
	struct qerr e = { 0 };
	struct json_object *args = NULL;
	const char *qmp = NULL, *done = NULL;
	bool raw = !strcmp(o->command, "qmp");
	unsigned int i;
	int ret = 1;

	for (i = 0; i < ARRAY_SIZE(verbs); i++)
		if (!strcmp(o->command, verbs[i].verb)) {
			qmp = verbs[i].qmp;
			done = verbs[i].done;
		}
	if (raw) {
		qmp = o->execute;
		if (o->arguments) {
			args = json_tokener_parse(o->arguments);
			if (!args || !json_object_is_type(args, json_type_object)) {
				qerr_set(&e, EINVAL, "arguments must be a JSON object: %s",
					 o->arguments);
				goto out;
			}
		}
	}
	if (conn_open(&c, o->qmp, &e))
		goto out;
	greeting = conn_read(&c, &e, CLIENT_TIMEOUT_MS);
	if (!greeting || !json_object_object_get_ex(greeting, "QMP", &v)) {
		qerr_set(&e, EPROTO, "%s does not speak QMP", o->qmp);
		goto out;
	}
	reply = conn_execute(&c, "qmp_capabilities", NULL, &e);
	if (!reply)
		goto out;
	json_object_put(reply);
	reply = NULL;
	if (!qmp) { /* events */
		ret = client_events(&c, &e) ? 1 : 0;
		goto out;
	}
	reply = conn_execute(&c, qmp, args, &e);
	if (!reply)
		goto out;
	if (o->json || raw) {
		json_object_object_del(reply, "id");
		printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
	}
	if (json_object_object_get_ex(reply, "error", &err)) {
		struct json_object *desc;

		json_object_object_get_ex(err, "desc", &desc);
		qerr_set(&e, EIO, "%s", desc ? json_object_get_string(desc) : "error");
		goto out;
	}
	if (!o->json && !raw) {
		if (done) {
			printf("%s\n", done);
		} else {
			struct json_object *st;

			json_object_object_get_ex(reply, "return", &v);
			json_object_object_get_ex(v, "status", &st);
			printf("%s\n", st ? json_object_get_string(st) : "unknown");
		}
	}
	ret = 0;
out:
	if (ret && e.msg[0])
		fprintf(stderr, "qlite %s: %s\n", o->command, e.msg);
	json_object_put(greeting);
	json_object_put(reply);
	json_object_put(args);
	if (c.tok)
		json_tokener_free(c.tok);
	if (c.fd >= 0)
		close(c.fd);
	return ret;
}
