// SPDX-License-Identifier: MIT
/*
 * QMP protocol: sockets, framing, validation, replies and events. Input is
 * hostile: every message is bounded (QMP_MAX_MESSAGE), malformed input gets
 * an error reply and the connection carries on, and a client that does not
 * read its replies is dropped once its backlog passes a limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "qlite/ctl.h"
#include "qlite/loop.h"
#include "qlite/qmp.h"
#include "qmp_internal.h"
#include "version.h"

#define QMP_MAX_BACKLOG (16 * 1024 * 1024) /* unread output before we drop a client */

struct qmp_client {
	struct qmp_server *srv;
	int fd;
	bool attached_only; /* test client: not registered with the loop */
	bool negotiated;
	bool skip_line; /* resynchronising after bad input: drop to next newline */
	bool closing;
	size_t msg_bytes; /* bytes of the message being parsed so far */
	struct json_tokener *tok;
	char *out;
	size_t out_len, out_cap;
	struct qmp_client *next;
};

struct qmp_server {
	struct ctl *ctl;
	int listen_fd;
	char *unlink_path; /* socket path we created */
	bool wait;
	unsigned int nr_clients;
	struct qmp_client *clients;
};

static void qmp_client_close(struct qmp_client *cl);

/* ---- output ---------------------------------------------------------- */

static void qmp_client_flush(struct qmp_client *cl)
{
	while (cl->out_len) {
		ssize_t n = send(cl->fd, cl->out, cl->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				cl->closing = true;
			break;
		}
		memmove(cl->out, cl->out + n, cl->out_len - n);
		cl->out_len -= n;
	}
	if (!cl->attached_only && !cl->closing)
		loop_mod(cl->srv->ctl->loop, cl->fd,
			 EPOLLIN | EPOLLRDHUP | (cl->out_len ? EPOLLOUT : 0));
}

static void qmp_client_send(struct qmp_client *cl, struct json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);

	if (cl->closing)
		return;
	if (cl->out_len + len + 2 > QMP_MAX_BACKLOG) {
		log_msg("qmp: client does not read its replies; disconnecting it");
		cl->closing = true;
		return;
	}
	if (cl->out_len + len + 2 > cl->out_cap) {
		size_t cap = MAX(cl->out_cap * 2, cl->out_len + len + 2);
		char *p = realloc(cl->out, cap);

		if (!p) {
			cl->closing = true;
			return;
		}
		cl->out = p;
		cl->out_cap = cap;
	}
	memcpy(cl->out + cl->out_len, s, len);
	memcpy(cl->out + cl->out_len + len, "\r\n", 2);
	cl->out_len += len + 2;
	qmp_client_flush(cl);
}

static void qmp_add_id(struct json_object *reply, struct json_object *id)
{
	if (id)
		json_object_object_add(reply, "id", json_object_get(id));
}

void qmp_send_error(struct qmp_client *cl, struct json_object *id, const char *cls,
		    const char *desc)
{
	struct json_object *reply = json_object_new_object();
	struct json_object *err = json_object_new_object();

	json_object_object_add(err, "class", json_object_new_string(cls));
	json_object_object_add(err, "desc", json_object_new_string(desc));
	json_object_object_add(reply, "error", err);
	qmp_add_id(reply, id);
	qmp_client_send(cl, reply);
	json_object_put(reply);
}

static void qmp_send_return(struct qmp_client *cl, struct json_object *id,
			    struct json_object *ret)
{
	struct json_object *reply = json_object_new_object();

	json_object_object_add(reply, "return", ret ? ret : json_object_new_object());
	qmp_add_id(reply, id);
	qmp_client_send(cl, reply);
	json_object_put(reply);
}

static struct json_object *qmp_version_object(void)
{
	struct json_object *v = json_object_new_object();
	struct json_object *q = json_object_new_object();

	json_object_object_add(q, "major", json_object_new_int(QMP_QEMU_MAJOR));
	json_object_object_add(q, "minor", json_object_new_int(QMP_QEMU_MINOR));
	json_object_object_add(q, "micro", json_object_new_int(QMP_QEMU_MICRO));
	json_object_object_add(v, "qemu", q);
	json_object_object_add(v, "package", json_object_new_string("qlite " QLITE_VERSION));
	return v;
}

struct json_object *qmp_version_reply(void)
{
	return qmp_version_object();
}

static void qmp_send_greeting(struct qmp_client *cl)
{
	struct json_object *g = json_object_new_object();
	struct json_object *qmp = json_object_new_object();

	json_object_object_add(qmp, "version", qmp_version_object());
	json_object_object_add(qmp, "capabilities", json_object_new_array());
	json_object_object_add(g, "QMP", qmp);
	qmp_client_send(cl, g);
	json_object_put(g);
}

void qmp_event(struct qmp_server *s, const char *name, const char *data_json)
{
	struct json_object *ev, *ts;
	struct qmp_client *cl;
	struct timeval tv;

	if (!s)
		return;
	gettimeofday(&tv, NULL);
	ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string(name));
	if (data_json) {
		struct json_object *data = json_tokener_parse(data_json);

		if (data)
			json_object_object_add(ev, "data", data);
	}
	ts = json_object_new_object();
	json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
	json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
	json_object_object_add(ev, "timestamp", ts);
	for (cl = s->clients; cl; cl = cl->next)
		if (cl->negotiated)
			qmp_client_send(cl, ev);
	json_object_put(ev);
}

/* ---- requests -------------------------------------------------------- */

static void qmp_dispatch(struct qmp_client *cl, struct json_object *req)
{
	struct json_object *exec = NULL, *args = NULL, *id = NULL, *ret = NULL;
	const struct qmp_command *cmd;
	const char *name;
	char msg[256];
	struct qerr e = { 0 };

	if (!json_object_is_type(req, json_type_object)) {
		qmp_send_error(cl, NULL, "GenericError", "QMP input must be a JSON object");
		return;
	}
	json_object_object_get_ex(req, "id", &id);
	json_object_object_foreach(req, key, val)
	{
		(void)val;
		if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
			snprintf(msg, sizeof(msg), "QMP input member '%.64s' is unexpected", key);
			qmp_send_error(cl, id, "GenericError", msg);
			return;
		}
	}
	if (!json_object_object_get_ex(req, "execute", &exec)) {
		qmp_send_error(cl, id, "GenericError", "QMP input lacks member 'execute'");
		return;
	}
	if (!json_object_is_type(exec, json_type_string)) {
		qmp_send_error(cl, id, "GenericError", "QMP input member 'execute' must be a string");
		return;
	}
	if (json_object_object_get_ex(req, "arguments", &args) &&
	    !json_object_is_type(args, json_type_object)) {
		qmp_send_error(cl, id, "GenericError",
			       "QMP input member 'arguments' must be an object");
		return;
	}
	name = json_object_get_string(exec);
	if (!cl->negotiated && strcmp(name, "qmp_capabilities")) {
		qmp_send_error(cl, id, "CommandNotFound",
			       "Expecting capabilities negotiation with 'qmp_capabilities'");
		return;
	}
	if (cl->negotiated && !strcmp(name, "qmp_capabilities")) {
		qmp_send_error(cl, id, "CommandNotFound",
			       "Capabilities negotiation is already complete, command ignored");
		return;
	}
	cmd = qmp_command_find(name);
	if (!cmd) {
		snprintf(msg, sizeof(msg), "The command %.128s has not been found", name);
		qmp_send_error(cl, id, "CommandNotFound", msg);
		return;
	}
	if (qmp_check_args(cmd, args, &e)) {
		qmp_send_error(cl, id, "GenericError", e.msg);
		return;
	}
	if (cmd->fn(cl->srv->ctl, args, &ret, &e)) {
		json_object_put(ret);
		qmp_send_error(cl, id, e.msg[0] ? "GenericError" : "GenericError",
			       e.msg[0] ? e.msg : "command failed");
		return;
	}
	if (!strcmp(name, "qmp_capabilities"))
		cl->negotiated = true;
	qmp_send_return(cl, id, ret);
	if (cmd->after)
		cmd->after(cl->srv->ctl);
}

/* Consume @buf: complete objects are dispatched; errors resynchronise. */
void qmp_client_feed(struct qmp_client *cl, const char *buf, size_t len)
{
	size_t off = 0;

	while (off < len && !cl->closing) {
		struct json_object *obj;
		enum json_tokener_error err;
		size_t chunk, used;

		if (cl->skip_line) {
			const char *nl = memchr(buf + off, '\n', len - off);

			if (!nl)
				return;
			off = nl - buf + 1;
			cl->skip_line = false;
			continue;
		}
		/* Whitespace between messages does not start a message. */
		if (cl->msg_bytes == 0 && strchr(" \t\r\n", buf[off])) {
			off++;
			continue;
		}
		chunk = MIN(len - off, (size_t)QMP_MAX_MESSAGE + 1 - cl->msg_bytes);
		obj = json_tokener_parse_ex(cl->tok, buf + off, (int)chunk);
		err = json_tokener_get_error(cl->tok);
		used = json_tokener_get_parse_end(cl->tok);
		if (err == json_tokener_continue) {
			cl->msg_bytes += chunk;
			off += chunk;
			if (cl->msg_bytes > QMP_MAX_MESSAGE) {
				qmp_send_error(cl, NULL, "GenericError",
					       "QMP message too large (limit 1 MiB)");
				json_tokener_reset(cl->tok);
				cl->msg_bytes = 0;
				cl->skip_line = true;
			}
			continue;
		}
		json_tokener_reset(cl->tok);
		cl->msg_bytes = 0;
		if (err != json_tokener_success) {
			char msg[160];

			snprintf(msg, sizeof(msg), "JSON parse error, %s",
				 json_tokener_error_desc(err));
			qmp_send_error(cl, NULL, "GenericError", msg);
			off += used;
			cl->skip_line = true;
			continue;
		}
		off += used ? used : chunk;
		qmp_dispatch(cl, obj);
		json_object_put(obj);
	}
}

/* ---- connections ----------------------------------------------------- */

static void qmp_client_free(struct qmp_client *cl)
{
	struct qmp_client **pp;

	for (pp = &cl->srv->clients; *pp; pp = &(*pp)->next)
		if (*pp == cl) {
			*pp = cl->next;
			break;
		}
	cl->srv->nr_clients--;
	json_tokener_free(cl->tok);
	free(cl->out);
	free(cl);
}

static void qmp_client_close(struct qmp_client *cl)
{
	if (!cl->attached_only)
		loop_del(cl->srv->ctl->loop, cl->fd);
	close(cl->fd);
	qmp_client_free(cl);
}

static void qmp_on_client(void *opaque, uint32_t events)
{
	struct qmp_client *cl = opaque;
	char buf[4096];

	if (events & EPOLLOUT)
		qmp_client_flush(cl);
	if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
		ssize_t n = recv(cl->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0)
			qmp_client_feed(cl, buf, n);
		else if (n == 0 || (errno != EAGAIN && errno != EINTR))
			cl->closing = true;
	}
	if (cl->closing)
		qmp_client_close(cl);
}

static struct qmp_client *qmp_client_new(struct qmp_server *s, int fd)
{
	struct qmp_client *cl = calloc(1, sizeof(*cl));

	if (!cl)
		return NULL;
	cl->tok = json_tokener_new_ex(32);
	if (!cl->tok) {
		free(cl);
		return NULL;
	}
	cl->srv = s;
	cl->fd = fd;
	cl->next = s->clients;
	s->clients = cl;
	s->nr_clients++;
	return cl;
}

struct qmp_client *qmp_client_attach(struct qmp_server *s, int fd)
{
	struct qmp_client *cl = qmp_client_new(s, fd);

	if (!cl)
		return NULL;
	cl->attached_only = true;
	qmp_send_greeting(cl);
	return cl;
}

static void qmp_on_listen(void *opaque, uint32_t events)
{
	struct qmp_server *s = opaque;
	struct qmp_client *cl;
	int fd;

	(void)events;
	fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (s->nr_clients >= QMP_MAX_CLIENTS) {
		log_msg("qmp: too many clients (%u); refusing one", s->nr_clients);
		close(fd);
		return;
	}
	cl = qmp_client_new(s, fd);
	if (!cl) {
		close(fd);
		return;
	}
	if (loop_add(s->ctl->loop, fd, EPOLLIN | EPOLLRDHUP, qmp_on_client, cl)) {
		close(fd);
		qmp_client_free(cl);
		return;
	}
	qmp_send_greeting(cl);
	if (cl->closing)
		qmp_client_close(cl);
}

static int qmp_listen_unix(struct qmp_server *s, const char *path, struct qerr *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (!*path)
		return qerr_set(e, EINVAL, "--qmp unix: needs a socket path");
	if (strlen(path) >= sizeof(sa.sun_path))
		return qerr_set(e, ENAMETOOLONG, "--qmp socket path is too long (%zu bytes, max %zu)",
				strlen(path), sizeof(sa.sun_path) - 1);
	/* Never unlink what is there: it may be another VM's live socket. */
	if (lstat(path, &st) == 0)
		return qerr_set(e, EEXIST, "--qmp %s already exists; remove it or choose another path",
				path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return qerr_set(e, errno, "socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;

		close(fd);
		return qerr_set(e, err, "cannot create the QMP socket %s: %s", path, strerror(err));
	}
	if (listen(fd, 8) < 0) {
		int err = errno;

		close(fd);
		unlink(path);
		return qerr_set(e, err, "listen on %s: %s", path, strerror(err));
	}
	s->listen_fd = fd;
	s->unlink_path = strdup(path);
	return 0;
}

static int qmp_listen_fd(struct qmp_server *s, const char *num, struct qerr *e)
{
	uint64_t v;
	int acc = 0;
	socklen_t len = sizeof(acc);

	if (parse_uint(num, 0, INT32_MAX, &v))
		return qerr_set(e, EINVAL, "--qmp fd:%s: expected a file descriptor number", num);
	if (getsockopt((int)v, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc)
		return qerr_set(e, EBADF, "--qmp fd:%s is not a listening socket", num);
	fcntl((int)v, F_SETFD, FD_CLOEXEC);
	fcntl((int)v, F_SETFL, fcntl((int)v, F_GETFL) | O_NONBLOCK);
	s->listen_fd = (int)v;
	return 0;
}

/* "unix:PATH[,server=on][,wait=off]" or "fd:N". */
static int qmp_parse_spec(struct qmp_server *s, const char *spec, struct qerr *e)
{
	char *copy = strdup(spec), *opt, *save = NULL, *target;
	int ret = 0;

	if (!copy)
		return qerr_set(e, ENOMEM, "out of memory");
	target = strtok_r(copy, ",", &save);
	while ((opt = strtok_r(NULL, ",", &save))) {
		if (!strcmp(opt, "server=on") || !strcmp(opt, "server")) {
			continue;
		} else if (!strcmp(opt, "wait=off") || !strcmp(opt, "nowait")) {
			s->wait = false;
		} else if (!strcmp(opt, "wait=on")) {
			s->wait = true;
		} else if (!strcmp(opt, "server=off")) {
			ret = qerr_set(e, ENOTSUP, "--qmp: only server sockets are supported");
			goto out;
		} else {
			ret = qerr_set(e, EINVAL, "--qmp: unknown option '%s'", opt);
			goto out;
		}
	}
	if (target && !strncmp(target, "unix:", 5))
		ret = qmp_listen_unix(s, target + 5, e);
	else if (target && !strncmp(target, "fd:", 3))
		ret = qmp_listen_fd(s, target + 3, e);
	else
		ret = qerr_set(e, EINVAL, "--qmp %s: expected unix:PATH or fd:N", spec);
out:
	free(copy);
	return ret;
}

int qmp_server_create_detached(struct ctl *c, struct qmp_server **out)
{
	struct qmp_server *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->ctl = c;
	s->listen_fd = -1;
	*out = s;
	return 0;
}

int qmp_server_create(struct ctl *c, const char *spec, struct qmp_server **out, struct qerr *e)
{
	struct qmp_server *s;
	int ret;

	ret = qmp_server_create_detached(c, &s);
	if (ret)
		return qerr_set(e, -ret, "out of memory");
	ret = qmp_parse_spec(s, spec, e);
	if (!ret) {
		ret = loop_add(c->loop, s->listen_fd, EPOLLIN, qmp_on_listen, s);
		if (ret)
			qerr_set(e, -ret, "cannot watch the QMP socket: %s", strerror(-ret));
	}
	if (ret) {
		qmp_server_destroy(s);
		return ret;
	}
	*out = s;
	return 0;
}

int qmp_server_wait_client(struct qmp_server *s)
{
	return s && s->wait && !s->clients;
}

void qmp_server_destroy(struct qmp_server *s)
{
	if (!s)
		return;
	while (s->clients) {
		struct qmp_client *cl = s->clients;
		int i;

		/* Last words (the SHUTDOWN event): a short, bounded effort. */
		for (i = 0; i < 50 && cl->out_len && !cl->closing; i++) {
			qmp_client_flush(cl);
			if (cl->out_len)
				usleep(1000);
		}
		if (cl->attached_only)
			qmp_client_free(cl);
		else
			qmp_client_close(cl);
	}
	if (s->listen_fd >= 0) {
		if (s->ctl && s->ctl->loop)
			loop_del(s->ctl->loop, s->listen_fd);
		close(s->listen_fd);
	}
	if (s->unlink_path) {
		unlink(s->unlink_path);
		free(s->unlink_path);
	}
	free(s);
}
