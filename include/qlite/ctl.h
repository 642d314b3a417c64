/* SPDX-License-Identifier: MIT */
/*
 * The controller: what `qlite run` is. It owns the event loop, the run state,
 * the console, signals, the QMP server and the current VM, which it rebuilds
 * on a guest reset so that control connections survive reboots. Everything
 * here runs on the main thread.
 */
#ifndef QLITE_CTL_H
#define QLITE_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include "qlite/vm.h"

struct loop;
struct qmp_server;
struct profile;
struct profile_params;
struct profile_data;

/* QEMU's RunState names, so tooling reads query-status the same way. */
enum runstate {
	RUN_PRELAUNCH, /* -S: never run yet */
	RUN_RUNNING,
	RUN_PAUSED,
	RUN_SHUTDOWN,
	RUN_GUEST_PANICKED,
	RUN_INTERNAL_ERROR,
};

struct ctl_config {
	struct vm_config vm;
	bool start_paused;
	/* Puts the guest's code in a fresh VM (Linux loader, or a test's). */
	int (*boot)(struct vm *vm, void *opaque, struct qerr *e);
	void *boot_opaque;
	/* "unix:PATH[,server=on][,wait=off]" or "fd:N"; NULL for none. */
	const char *qmp;
	const char *name; /* reported by query-name; may be NULL */
};

struct ctl {
	struct ctl_config cfg;
	struct loop *loop;
	struct vm *vm;
	struct qmp_server *qmp;
	enum runstate state;
	bool vm_stopped; /* the VM's stop_efd fired */
	const char *shutdown_reason; /* QEMU's ShutdownCause name, for events */
	bool console_open;
	bool console_throttled;
	bool escape;
	int signal_fd;
	int liveness_fd; /* timerfd: the dead-guest check */
	/* The guest profiler's session (or the last one's result) and its duration timer. */
	struct profile *prof;
	int prof_timer_fd;
};

int ctl_create(const struct ctl_config *cfg, struct ctl **out, struct qerr *e);
/* Start the vCPUs (unless -S) and serve until the VM is gone for good. */
enum vm_stop_reason ctl_run(struct ctl *c);
void ctl_destroy(struct ctl *c);

/* Watch a signalfd: SIGTERM/SIGINT/SIGHUP become a clean quit. */
int ctl_watch_signals(struct ctl *c, int signal_fd);

const char *runstate_name(enum runstate s);
bool ctl_running(const struct ctl *c);
int ctl_stop(struct ctl *c, struct qerr *e);
int ctl_cont(struct ctl *c, struct qerr *e);
void ctl_powerdown(struct ctl *c);
void ctl_reset(struct ctl *c);
/* @reason: QEMU ShutdownCause ("host-qmp-quit", "host-signal", ...). */
void ctl_quit(struct ctl *c, const char *reason);

/*
 * Profiling (QMP profile-start, profile-stop, query-profile). A session ends
 * by request, after its duration, or with its VM; the last two broadcast a
 * PROFILE_STOPPED event carrying the result, so a client loses nothing
 * when the VM goes away mid-profile.
 */
int ctl_profile_start(struct ctl *c, const struct profile_params *pp, struct qerr *e);
/* Stop (if running) and return the result; -ENOENT if none was started. */
int ctl_profile_stop(struct ctl *c, struct profile_data *d, struct qerr *e);
int ctl_profile_query(struct ctl *c, struct profile_data *d, struct qerr *e);

#endif
