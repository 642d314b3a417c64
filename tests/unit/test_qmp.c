// SPDX-License-Identifier: MIT
/*
 * QMP protocol layer against hostile input: a detached server (no socket,
 * no VM) and a client on one end of a socketpair; replies are read from
 * the other end. Every bad input must get an error reply and leave the
 * connection usable.
 */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "qlite/ctl.h"
#include "qlite/qmp.h"

struct fx {
	struct ctl ctl;
	struct qmp_server *srv;
	struct qmp_client *cl;
	int fd;
	int peer;
	char buf[1 << 16];
	size_t len;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	int sv[2];

	if (!f || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
		return -1;
	f->ctl.state = RUN_RUNNING;
	f->ctl.cfg.name = "unit-vm";
	if (qmp_server_create_detached(&f->ctl, &f->srv))
		return -1;
	f->ctl.qmp = f->srv;
	f->cl = qmp_client_attach(f->srv, sv[0]);
	f->fd = sv[0];
	f->peer = sv[1];
	*state = f;
	return f->cl ? 0 : -1;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	qmp_server_destroy(f->srv); /* frees the client; ASan checks for leaks */
	close(f->fd);
	close(f->peer);
	free(f);
	return 0;
}

/* Next reply (one \r\n-terminated JSON message) the client was sent. */
static struct json_object *next_msg(struct fx *f)
{
	for (;;) {
		char *nl = memmem(f->buf, f->len, "\r\n", 2);
		ssize_t n;

		if (nl) {
			struct json_object *o;

			*nl = '\0';
			o = json_tokener_parse(f->buf);
			memmove(f->buf, nl + 2, f->len - (nl + 2 - f->buf));
			f->len -= nl + 2 - f->buf;
			assert_non_null(o);
			return o;
		}
		n = read(f->peer, f->buf + f->len, sizeof(f->buf) - f->len);
		if (n <= 0)
			return NULL; /* nothing (more) was sent */
		f->len += n;
	}
}

static void feed(struct fx *f, const char *s)
{
	qmp_client_feed(f->cl, s, strlen(s));
}

/* The error class of the next reply, or "" if it was not an error. */
static const char *next_error_class(struct fx *f, char *out, size_t len)
{
	struct json_object *o = next_msg(f), *err, *cls;

	out[0] = '\0';
	assert_non_null(o);
	if (json_object_object_get_ex(o, "error", &err) &&
	    json_object_object_get_ex(err, "class", &cls))
		snprintf(out, len, "%s", json_object_get_string(cls));
	json_object_put(o);
	return out;
}

static void expect_error(struct fx *f, const char *cls)
{
	char got[64];

	assert_string_equal(next_error_class(f, got, sizeof(got)), cls);
}

static void expect_return(struct fx *f)
{
	struct json_object *o = next_msg(f), *r;

	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "return", &r));
	json_object_put(o);
}

static void greet_and_negotiate(struct fx *f)
{
	struct json_object *g = next_msg(f), *qmp, *ver, *q, *maj;

	assert_true(json_object_object_get_ex(g, "QMP", &qmp));
	assert_true(json_object_object_get_ex(qmp, "version", &ver));
	assert_true(json_object_object_get_ex(ver, "qemu", &q));
	assert_true(json_object_object_get_ex(q, "major", &maj));
	assert_int_equal(json_object_get_int(maj), QMP_QEMU_MAJOR);
	json_object_put(g);
	feed(f, "{\"execute\": \"qmp_capabilities\"}\n");
	expect_return(f);
}

static void skip_greeting(struct fx *f)
{
	struct json_object *g = next_msg(f);

	assert_non_null(g);
	json_object_put(g);
}

static void test_negotiation(void **state)
{
	struct fx *f = *state;

	skip_greeting(f);
	feed(f, "{\"execute\": \"query-status\"}");
	expect_error(f, "CommandNotFound");
	feed(f, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"qmp_capabilities\"}");
	expect_return(f);
	feed(f, "{\"execute\": \"qmp_capabilities\"}");
	expect_error(f, "CommandNotFound");
}

static void test_queries(void **state)
{
	struct fx *f = *state;
	struct json_object *o, *r, *v, *id;

	greet_and_negotiate(f);
	feed(f, "{\"execute\": \"query-status\", \"id\": \"abc\"}");
	o = next_msg(f);
	assert_true(json_object_object_get_ex(o, "id", &id));
	assert_string_equal(json_object_get_string(id), "abc");
	assert_true(json_object_object_get_ex(o, "return", &r));
	assert_true(json_object_object_get_ex(r, "status", &v));
	assert_string_equal(json_object_get_string(v), "running");
	assert_true(json_object_object_get_ex(r, "running", &v));
	assert_true(json_object_get_boolean(v));
	json_object_put(o);

	feed(f, "{\"execute\": \"query-name\", \"id\": 7}");
	o = next_msg(f);
	assert_true(json_object_object_get_ex(o, "id", &id));
	assert_int_equal(json_object_get_int(id), 7);
	assert_true(json_object_object_get_ex(o, "return", &r));
	assert_true(json_object_object_get_ex(r, "name", &v));
	assert_string_equal(json_object_get_string(v), "unit-vm");
	json_object_put(o);

	feed(f, "{\"execute\": \"query-commands\"}");
	o = next_msg(f);
	assert_true(json_object_object_get_ex(o, "return", &r));
	assert_true(json_object_array_length(r) >= 14);
	json_object_put(o);

	feed(f, "{\"execute\": \"query-version\"}{\"execute\": \"query-kvm\"}");
	expect_return(f);
	expect_return(f); /* two messages in one buffer, two replies */
	feed(f, "{\"execute\": \"query-block\"}");
	expect_return(f);
}

static void test_bad_requests(void **state)
{
	struct fx *f = *state;

	greet_and_negotiate(f);
	feed(f, "[1, 2, 3]");
	expect_error(f, "GenericError");
	feed(f, "\"just a string\"\n");
	expect_error(f, "GenericError");
	feed(f, "{\"arguments\": {}}");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": 42}");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"query-status\", \"arguments\": []}");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"query-status\", \"bogus\": 1}");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"no-such-command\"}");
	expect_error(f, "CommandNotFound");
	feed(f, "{\"execute\": \"query-status\", \"arguments\": {\"x\": 1}}");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"query-blockstats\", \"arguments\": {\"query-nodes\": \"yes\"}}");
	expect_error(f, "GenericError");
	/* Commands that need a VM fail cleanly without one. */
	feed(f, "{\"execute\": \"stop\"}");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"query-cpus-fast\"}");
	expect_error(f, "GenericError");
	/* Still usable after all that. */
	feed(f, "{\"execute\": \"query-status\"}");
	expect_return(f);
}

static void test_malformed_json(void **state)
{
	struct fx *f = *state;
	char deep[200];

	greet_and_negotiate(f);
	feed(f, "{\"execute\": \"query-status\" ]]] garbage\n");
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"query-status\"}");
	expect_return(f);
	/* Nesting deeper than the tokener allows. */
	memset(deep, '[', sizeof(deep) - 2);
	deep[sizeof(deep) - 2] = '\n';
	deep[sizeof(deep) - 1] = '\0';
	feed(f, deep);
	expect_error(f, "GenericError");
	feed(f, "{\"execute\": \"query-status\"}");
	expect_return(f);
	/* Byte by byte: framing does not depend on read boundaries. */
	{
		const char *m = "{\"execute\": \"query-version\"}";
		size_t i;

		for (i = 0; m[i]; i++)
			qmp_client_feed(f->cl, m + i, 1);
		expect_return(f);
	}
}

static void test_oversized(void **state)
{
	struct fx *f = *state;
	size_t big = QMP_MAX_MESSAGE + 4096, off;
	char *msg = malloc(big + 64);

	greet_and_negotiate(f);
	strcpy(msg, "{\"execute\": \"query-status\", \"arguments\": {\"x\": \"");
	off = strlen(msg);
	memset(msg + off, 'a', big - off);
	strcpy(msg + big, "\"}}\n");
	/* Fed in chunks, as a socket would deliver it. */
	for (off = 0; off < strlen(msg); off += 60000)
		qmp_client_feed(f->cl, msg + off, MIN(60000, strlen(msg) - off));
	expect_error(f, "GenericError");
	assert_null(next_msg(f)); /* nothing else: the tail was skipped */
	feed(f, "{\"execute\": \"query-status\"}");
	expect_return(f);
	free(msg);
}

static void test_events(void **state)
{
	struct fx *f = *state;
	struct json_object *o, *v, *ts;

	skip_greeting(f);
	qmp_event(f->srv, "STOP", NULL);
	assert_null(next_msg(f)); /* not before negotiation */
	feed(f, "{\"execute\": \"qmp_capabilities\"}");
	expect_return(f);
	qmp_event(f->srv, "SHUTDOWN", "{\"guest\": true, \"reason\": \"guest-shutdown\"}");
	o = next_msg(f);
	assert_true(json_object_object_get_ex(o, "event", &v));
	assert_string_equal(json_object_get_string(v), "SHUTDOWN");
	assert_true(json_object_object_get_ex(o, "timestamp", &ts));
	assert_true(json_object_object_get_ex(ts, "seconds", &v));
	assert_true(json_object_get_int64(v) > 0);
	assert_true(json_object_object_get_ex(o, "data", &v));
	json_object_put(o);
}

/* Error description of the next reply (which must be an error). */
static void expect_error_desc(struct fx *f, const char *needle)
{
	struct json_object *o = next_msg(f), *err, *desc;

	assert_true(json_object_object_get_ex(o, "error", &err));
	assert_true(json_object_object_get_ex(err, "desc", &desc));
	if (!strstr(json_object_get_string(desc), needle))
		fail_msg("\"%s\" lacks \"%s\"", json_object_get_string(desc), needle);
	json_object_put(o);
}

/* The profiler's commands exist, and refuse bad input with QMP errors. */
static void test_profile_commands(void **state)
{
	struct fx *f = *state;
	struct json_object *o, *list;
	const char *names[] = { "profile-start", "profile-stop", "query-profile" };
	unsigned int i, j;

	greet_and_negotiate(f);
	feed(f, "{\"execute\": \"query-commands\"}\n");
	o = next_msg(f);
	assert_true(json_object_object_get_ex(o, "return", &list));
	for (i = 0; i < 3; i++) {
		bool found = false;

		for (j = 0; j < json_object_array_length(list); j++) {
			struct json_object *n;

			json_object_object_get_ex(json_object_array_get_idx(list, j), "name", &n);
			found |= !strcmp(json_object_get_string(n), names[i]);
		}
		assert_true(found);
	}
	json_object_put(o);
	feed(f, "{\"execute\": \"profile-start\", \"arguments\": {\"frequency\": 0}}\n");
	expect_error_desc(f, "out of range (1..10000 Hz)");
	feed(f, "{\"execute\": \"profile-start\", \"arguments\": {\"frequency\": 10001}}\n");
	expect_error_desc(f, "out of range");
	feed(f, "{\"execute\": \"profile-start\", \"arguments\": {\"frequency\": \"fast\"}}\n");
	expect_error_desc(f, "Invalid parameter type for 'frequency'");
	feed(f, "{\"execute\": \"profile-start\", \"arguments\": {\"method\": \"pmu\"}}\n");
	expect_error_desc(f, "expected timer, kick or perf");
	feed(f, "{\"execute\": \"profile-start\", \"arguments\": {\"duration\": -1}}\n");
	expect_error_desc(f, "duration");
	feed(f, "{\"execute\": \"profile-start\", \"arguments\": {\"rate\": 5}}\n");
	expect_error_desc(f, "'rate' is unexpected");
	feed(f, "{\"execute\": \"profile-start\"}\n");
	expect_error_desc(f, "no VM");
	feed(f, "{\"execute\": \"profile-stop\"}\n");
	expect_error_desc(f, "no profile has been started");
	feed(f, "{\"execute\": \"query-profile\"}\n");
	expect_error_desc(f, "no profile has been started");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_negotiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_profile_commands, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
