// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "qlite/loop.h"
#include "qlite/util.h"

struct loop_entry {
	int fd;
	loop_cb cb;
	void *opaque;
	struct loop_entry *next;
	int dead; /* removed while its dispatch round is still running */
};

struct loop {
	int epfd;
	struct loop_entry *entries;
	int dispatching;
};

int loop_create(struct loop **out)
{
	struct loop *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		int err = errno;

		free(l);
		return -err;
	}
	*out = l;
	return 0;
}

static void loop_reap(struct loop *l)
{
	struct loop_entry **pp = &l->entries;

	while (*pp) {
		struct loop_entry *e = *pp;

		if (e->dead) {
			*pp = e->next;
			free(e);
		} else {
			pp = &e->next;
		}
	}
}

void loop_destroy(struct loop *l)
{
	struct loop_entry *e;

	if (!l)
		return;
	for (e = l->entries; e; e = e->next)
		e->dead = 1;
	loop_reap(l);
	close(l->epfd);
	free(l);
}

int loop_add(struct loop *l, int fd, uint32_t events, loop_cb cb, void *opaque)
{
	struct loop_entry *e = calloc(1, sizeof(*e));
	struct epoll_event ev = { .events = events };

	if (!e)
		return -ENOMEM;
	e->fd = fd;
	e->cb = cb;
	e->opaque = opaque;
	ev.data.ptr = e;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = errno;

		free(e);
		return -err;
	}
	e->next = l->entries;
	l->entries = e;
	return 0;
}

static struct loop_entry *loop_find(struct loop *l, int fd)
{
	struct loop_entry *e;

	for (e = l->entries; e; e = e->next)
		if (e->fd == fd && !e->dead)
			return e;
	return NULL;
}

int loop_mod(struct loop *l, int fd, uint32_t events)
{
	struct loop_entry *e = loop_find(l, fd);
	struct epoll_event ev = { .events = events };

	if (!e)
		return -ENOENT;
	ev.data.ptr = e;
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int loop_del(struct loop *l, int fd)
{
	struct loop_entry *e = loop_find(l, fd);

	if (!e)
		return -ENOENT;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	/* Freed after the dispatch round: its event may still be pending. */
	e->dead = 1;
	if (!l->dispatching)
		loop_reap(l);
	return 0;
}

int loop_run_once(struct loop *l, int timeout_ms)
{
	struct epoll_event evs[16];
	int n, i;

	n = epoll_wait(l->epfd, evs, ARRAY_SIZE(evs), timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	l->dispatching = 1;
	for (i = 0; i < n; i++) {
		struct loop_entry *e = evs[i].data.ptr;

		if (!e->dead)
			e->cb(e->opaque, evs[i].events);
	}
	l->dispatching = 0;
	loop_reap(l);
	return 0;
}
