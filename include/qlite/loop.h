/* SPDX-License-Identifier: MIT */
/* The main thread's event loop: epoll over fds with a callback each. */
#ifndef QLITE_LOOP_H
#define QLITE_LOOP_H

#include <stdint.h>

struct loop;
typedef void (*loop_cb)(void *opaque, uint32_t events);

int loop_create(struct loop **out);
void loop_destroy(struct loop *l);
/* Watch @fd for @events (EPOLLIN, ...); one registration per fd. */
int loop_add(struct loop *l, int fd, uint32_t events, loop_cb cb, void *opaque);
int loop_mod(struct loop *l, int fd, uint32_t events);
/* Safe from inside a callback, including for the fd being dispatched. */
int loop_del(struct loop *l, int fd);
/* Wait up to @timeout_ms (-1: forever) and dispatch; -errno on failure. */
int loop_run_once(struct loop *l, int timeout_ms);

#endif
