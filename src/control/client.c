// SPDX-License-Identifier: MIT
/* `qlite status|pause|resume|powerdown|quit|events|qmp`, on a small QMP client. */
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

static int conn_connect(struct qmp_conn *c, const char *spec, struct qerr *e)
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
		c->fd = -1;
		return qerr_set(e, err, "cannot connect to %s: %s (is qlite running with --qmp?)",
				sa.sun_path, strerror(err));
	}
	c->tok = json_tokener_new();
	return c->tok ? 0 : qerr_set(e, ENOMEM, "out of memory");
}

/*
 * Next complete JSON message, or NULL with @e set (-ETIMEDOUT after
 * @timeout_ms without one; the connection stays usable then).
 */
static struct json_object *conn_read(struct qmp_conn *c, int timeout_ms, struct qerr *e)
{
	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t n;
		int r;

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
		if (c->closed) {
			qerr_set(e, ECONNRESET, "the QMP server closed the connection");
			return NULL;
		}
		r = poll(&p, 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			qerr_set(e, ETIMEDOUT, "no answer from the QMP server");
			return NULL;
		}
		n = read(c->fd, c->buf, sizeof(c->buf));
		if (n <= 0) {
			c->closed = true;
			qerr_set(e, ECONNRESET, "the QMP server closed the connection");
			return NULL;
		}
		c->len = n;
		c->off = 0;
	}
}

static bool is_event(struct qmp_conn *c, struct json_object *o)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, "event", &v))
		return false;
	if (c->on_event)
		c->on_event(c->opaque, o);
	return true;
}

int qmp_conn_wait(struct qmp_conn *c, int timeout_ms, struct qerr *e)
{
	struct qerr te = { 0 };
	struct json_object *o = conn_read(c, timeout_ms, &te);

	if (!o) {
		if (te.errnum == ETIMEDOUT)
			return 0;
		return qerr_set(e, te.errnum, "%s", te.msg);
	}
	if (!is_event(c, o)) {
		/* A reply nobody waits for: ignore it. */
	}
	json_object_put(o);
	return 0;
}

/* Send a command; return the whole reply (events in between go to on_event). */
static struct json_object *conn_execute_raw(struct qmp_conn *c, const char *cmd,
					    struct json_object *args, struct qerr *e)
{
	struct json_object *req = json_object_new_object();
	char *s;
	size_t len, off = 0;

	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", json_object_get(args));
	/* One send with its newline: a server may act (quit) and go before a second. */
	if (asprintf(&s, "%s\n", json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN)) < 0) {
		json_object_put(req);
		qerr_set(e, ENOMEM, "out of memory");
		return NULL;
	}
	json_object_put(req);
	len = strlen(s);
	while (off < len) {
		ssize_t n = send(c->fd, s + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			qerr_set(e, errno ? errno : EIO, "cannot send to the QMP server: %s",
				 strerror(errno ? errno : EIO));
			free(s);
			return NULL;
		}
		off += n;
	}
	free(s);
	for (;;) {
		struct json_object *o = conn_read(c, QMP_CONN_TIMEOUT_MS, e), *v;

		if (!o)
			return NULL;
		if (json_object_object_get_ex(o, "return", &v) ||
		    json_object_object_get_ex(o, "error", &v))
			return o;
		is_event(c, o);
		json_object_put(o);
	}
}

struct json_object *qmp_conn_execute(struct qmp_conn *c, const char *cmd,
				     struct json_object *args, bool *qmp_error, struct qerr *e)
{
	struct json_object *reply = conn_execute_raw(c, cmd, args, e), *v, *desc, *ret = NULL;

	if (qmp_error)
		*qmp_error = false;
	if (!reply)
		return NULL;
	if (json_object_object_get_ex(reply, "error", &v)) {
		json_object_object_get_ex(v, "desc", &desc);
		qerr_set(e, EIO, "%s", desc ? json_object_get_string(desc) : "error");
		if (qmp_error)
			*qmp_error = true;
	} else if (json_object_object_get_ex(reply, "return", &v)) {
		ret = json_object_get(v);
	}
	json_object_put(reply);
	return ret;
}

int qmp_conn_open(struct qmp_conn *c, const char *spec, struct qerr *e)
{
	struct json_object *greeting, *v;
	int ret;

	c->fd = -1;
	c->tok = NULL;
	c->len = c->off = 0;
	c->closed = false;
	ret = conn_connect(c, spec, e);
	if (ret)
		return ret;
	greeting = conn_read(c, QMP_CONN_TIMEOUT_MS, e);
	if (!greeting || !json_object_object_get_ex(greeting, "QMP", &v)) {
		json_object_put(greeting);
		qmp_conn_close(c);
		return qerr_set(e, EPROTO, "%s does not speak QMP", spec);
	}
	json_object_put(greeting);
	v = qmp_conn_execute(c, "qmp_capabilities", NULL, NULL, e);
	if (!v) {
		qmp_conn_close(c);
		return -EPROTO;
	}
	json_object_put(v);
	return 0;
}

void qmp_conn_close(struct qmp_conn *c)
{
	if (c->tok)
		json_tokener_free(c->tok);
	if (c->fd >= 0)
		close(c->fd);
	c->tok = NULL;
	c->fd = -1;
}

/* Print events as JSON lines until the server goes away (the VM ended). */
static int client_events(struct qmp_conn *c, struct qerr *e)
{
	for (;;) {
		struct json_object *o = conn_read(c, -1, e);

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
	struct qmp_conn *c = calloc(1, sizeof(*c));
	struct json_object *reply = NULL, *v, *err, *args = NULL;
	struct qerr e = { 0 };
	const char *qmp = NULL, *done = NULL;
	bool raw = !strcmp(o->command, "qmp");
	unsigned int i;
	int ret = 1;

	if (!c)
		return 1;
	c->fd = -1;
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
	if (qmp_conn_open(c, o->qmp, &e))
		goto out;
	if (!qmp) { /* events */
		ret = client_events(c, &e) ? 1 : 0;
		goto out;
	}
	reply = conn_execute_raw(c, qmp, args, &e);
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
	json_object_put(reply);
	json_object_put(args);
	qmp_conn_close(c);
	free(c);
	return ret;
}
