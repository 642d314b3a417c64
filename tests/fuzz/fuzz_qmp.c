// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: arbitrary bytes into a QMP connection, split into two
 * feeds at a data-chosen point (framing must not depend on read sizes).
 * Covers framing, the 1 MiB limit, JSON parsing, request validation and the
 * commands that need no VM.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qlite/ctl.h"
#include "qlite/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void drain(int fd)
{
	char buf[65536];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl ctl = { .state = RUN_RUNNING };
	struct qmp_server *srv;
	struct qmp_client *cl;
	size_t split = size ? data[0] % (size + 1) : 0;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
		abort(); /* out of fds would silently test nothing */
	if (qmp_server_create_detached(&ctl, &srv)) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	ctl.qmp = srv;
	cl = qmp_client_attach(srv, sv[0]);
	if (cl) {
		/* Pretend negotiation happened half the time, to reach commands. */
		if (size && (data[0] & 1))
			qmp_client_feed(cl, "{\"execute\":\"qmp_capabilities\"}", 31);
		qmp_client_feed(cl, (const char *)data, split);
		drain(sv[1]);
		qmp_client_feed(cl, (const char *)data + split, size - split);
		drain(sv[1]);
	}
	qmp_server_destroy(srv); /* attached clients' fds stay the caller's */
	close(sv[0]);
	close(sv[1]);
	return 0;
}
