// SPDX-License-Identifier: MIT
/* The controller: run state, VM lifecycle, console and signals (see ctl.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <json-c/json.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "qlite/ctl.h"
#include "qlite/devices.h"
#include "qlite/loop.h"
#include "qlite/profile.h"
#include "qlite/qmp.h"
#include "qlite/virtio.h"

static const char *const runstate_names[] = {
	[RUN_PRELAUNCH] = "prelaunch",
	[RUN_RUNNING] = "running",
	[RUN_PAUSED] = "paused",
	[RUN_SHUTDOWN] = "shutdown",
	[RUN_GUEST_PANICKED] = "guest-panicked",
	[RUN_INTERNAL_ERROR] = "internal-error",
	[RUN_INMIGRATE] = "inmigrate",
	[RUN_FINISH_MIGRATE] = "finish-migrate",
	[RUN_POSTMIGRATE] = "postmigrate",
};

const char *runstate_name(enum runstate s)
{
	return s < ARRAY_SIZE(runstate_names) ? runstate_names[s] : "debug";
}

bool ctl_running(const struct ctl *c)
{
	return c->state == RUN_RUNNING;
}

static void ctl_on_vm_stop(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	uint64_t v;

	(void)events;
	if (read(c->vm->stop_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_msg("stop eventfd: %s", strerror(errno));
	c->vm_stopped = true;
}

/* Once a second: is the guest still able to run at all? */
static void ctl_on_liveness(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->liveness_fd, &n, sizeof(n)) < 0 || !c->vm || c->state != RUN_RUNNING)
		return;
	if (vm_check_dead(c->vm))
		vm_request_stop(c->vm, VM_STOP_GUEST_CRASH);
}

/* A lazy restore could not read guest memory: the guest cannot go on. */
static void ctl_on_restore_error(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	struct qerr e = { 0 };

	(void)events;
	loop_del(c->loop, c->restore_err_fd);
	c->restore_err_fd = -1;
	ckpt_restore_error(c->vm, &e);
	log_msg("restore failed: %s", e.msg[0] ? e.msg : "guest memory cannot be read");
	vm_request_stop(c->vm, VM_STOP_ERROR);
}

static int ctl_build_vm(struct ctl *c, struct qerr *e)
{
	int ret;

	c->cfg.vm.loop = c->loop;
	ret = vm_create(&c->cfg.vm, &c->vm, e);
	if (ret)
		return ret;
	if (c->restore_pending) {
		/* Only the first VM: a guest reset after a restore boots afresh. */
		ret = ckpt_restore(c->vm, c->cfg.restore_dir, c->cfg.restore_mode, e);
		c->restore_pending = false;
		c->restore_err_fd = ret ? -1 : ckpt_restore_error_fd(c->vm);
		if (c->restore_err_fd >= 0 &&
		    loop_add(c->loop, c->restore_err_fd, EPOLLIN, ctl_on_restore_error, c))
			c->restore_err_fd = -1;
	} else if (c->mig_building) {
		ret = 0; /* memory and state arrive by migration */
	} else if (!c->cfg.boot) {
		ret = qerr_set(e, ENOENT, "no kernel to boot (the checkpoint recorded none)");
	} else {
		ret = c->cfg.boot(c->vm, c->cfg.boot_opaque, e);
	}
	if (!ret) {
		ret = loop_add(c->loop, c->vm->stop_efd, EPOLLIN, ctl_on_vm_stop, c);
		if (ret)
			qerr_set(e, -ret, "cannot watch the VM: %s", strerror(-ret));
	}
	if (ret) {
		vm_destroy(c->vm);
		c->vm = NULL;
	}
	c->vm_stopped = false;
	return ret;
}

static void ctl_profile_end(struct ctl *c, const char *reason);

static void ctl_snapshot_end(struct ctl *c);
static void ctl_mig_out_end(struct ctl *c, bool vm_going);

static void ctl_destroy_vm(struct ctl *c)
{
	if (!c->vm)
		return;
	if (c->mig_out)
		ctl_mig_out_end(c, true); /* the guest reset or stopped: the migration fails */
	if (c->snap) {
		c->snap_was_running = false; /* the VM is going: nothing to resume */
		ctl_snapshot_end(c);
	}
	if (c->restore_err_fd >= 0) {
		loop_del(c->loop, c->restore_err_fd);
		c->restore_err_fd = -1;
	}
	ctl_profile_end(c, "vm-stopped"); /* before the vCPUs it is attached to go */
	loop_del(c->loop, c->vm->stop_efd);
	vm_destroy(c->vm);
	c->vm = NULL;
}

#define ESCAPE_CHAR 0x01 /* Ctrl-A, as in QEMU: Ctrl-A x quits */

static void ctl_console_throttle(struct ctl *c, bool on)
{
	if (c->console_throttled == on)
		return;
	c->console_throttled = on;
	loop_mod(c->loop, c->cfg.vm.console_in, on ? 0 : EPOLLIN);
}

/* Host input to the UART, with the escape sequence filtered out. */
static void ctl_on_console(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	uint8_t buf[256], out[256];
	size_t space, n_out = 0;
	ssize_t n, i;

	if (!c->vm)
		return;
	space = vm_console_space(c->vm);
	if (!space) {
		ctl_console_throttle(c, true); /* the guest reads; poll again soon */
		return;
	}
	n = read(c->cfg.vm.console_in, buf, MIN(space, sizeof(buf)));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* EOF or error: the guest keeps running without input. */
		loop_del(c->loop, c->cfg.vm.console_in);
		c->console_open = false;
		return;
	}
	for (i = 0; i < n; i++) {
		if (c->escape) {
			c->escape = false;
			if (buf[i] == 'x' || buf[i] == 'X') {
				log_msg("terminated by user (Ctrl-A x)");
				ctl_quit(c, "host-ui");
				return;
			}
			if (buf[i] != ESCAPE_CHAR)
				continue;
		} else if (buf[i] == ESCAPE_CHAR) {
			c->escape = true;
			continue;
		}
		out[n_out++] = buf[i];
	}
	vm_console_push(c->vm, out, n_out);
}

static void ctl_on_signal(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	struct signalfd_siginfo si;

	(void)events;
	if (read(c->signal_fd, &si, sizeof(si)) != sizeof(si))
		return;
	log_msg("terminating on signal %u", si.ssi_signo);
	ctl_quit(c, "host-signal");
}

int ctl_watch_signals(struct ctl *c, int signal_fd)
{
	c->signal_fd = signal_fd;
	return loop_add(c->loop, signal_fd, EPOLLIN, ctl_on_signal, c);
}

static int ctl_watch_console(struct ctl *c, struct qerr *e)
{
	int ret;

	if (c->cfg.vm.console_in < 0)
		return 0;
	ret = loop_add(c->loop, c->cfg.vm.console_in, EPOLLIN, ctl_on_console, c);
	/* EPERM: /dev/null or a regular file, which cannot be polled: no input. */
	if (ret && ret != -EPERM)
		return qerr_set(e, -ret, "cannot watch the console: %s", strerror(-ret));
	c->console_open = !ret;
	return 0;
}

int ctl_create(const struct ctl_config *cfg, struct ctl **out, struct qerr *e)
{
	struct ctl *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return qerr_set(e, ENOMEM, "out of memory");
	c->cfg = *cfg;
	c->signal_fd = -1;
	c->liveness_fd = -1;
	c->prof_timer_fd = -1;
	c->snap_timer_fd = -1;
	c->mig_timer_fd = -1;
	c->restore_err_fd = -1;
	c->restore_pending = cfg->restore_dir != NULL;
	c->state = cfg->start_paused ? RUN_PRELAUNCH : RUN_RUNNING;
	ret = loop_create(&c->loop);
	if (ret) {
		free(c);
		return qerr_set(e, -ret, "cannot create the event loop: %s", strerror(-ret));
	}
	c->liveness_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (c->liveness_fd >= 0) {
		struct itimerspec its = { .it_interval = { 1, 0 }, .it_value = { 1, 0 } };

		timerfd_settime(c->liveness_fd, 0, &its, NULL);
		loop_add(c->loop, c->liveness_fd, EPOLLIN, ctl_on_liveness, c);
	}
	/* The control socket first: a path in use fails before any VM exists. */
	if (cfg->qmp) {
		ret = qmp_server_create(c, cfg->qmp, &c->qmp, e);
		if (ret)
			goto err;
	}
	mig_params_default(&c->mig_params);
	if (cfg->incoming) {
		/* No VM yet: it arrives by migration (now, or after QMP migrate-incoming). */
		c->incoming = true;
		c->state = RUN_INMIGRATE;
		if (strcmp(cfg->incoming, "defer")) {
			ret = ctl_migrate_incoming(c, cfg->incoming, e);
			if (ret)
				goto err;
		}
	} else {
		ret = ctl_build_vm(c, e);
		if (!ret)
			ret = ctl_watch_console(c, e);
		if (ret)
			goto err;
	}
	*out = c;
	return 0;
err:
	ctl_destroy(c);
	return ret;
}

static void ctl_mig_in_end(struct ctl *c);

void ctl_destroy(struct ctl *c)
{
	if (!c)
		return;
	if (c->mig_in)
		ctl_mig_in_end(c); /* stops its worker before the VM it fills goes */
	ctl_destroy_vm(c);
	profile_destroy(c->prof);
	if (c->prof_timer_fd >= 0) {
		loop_del(c->loop, c->prof_timer_fd);
		close(c->prof_timer_fd);
	}
	if (c->snap_timer_fd >= 0)
		close(c->snap_timer_fd);
	if (c->mig_timer_fd >= 0)
		close(c->mig_timer_fd);
	qmp_server_destroy(c->qmp);
	ckpt_config_free(c->restore_cfg);
	free((char *)c->restore_load_dir);
	if (c->liveness_fd >= 0)
		close(c->liveness_fd);
	loop_destroy(c->loop);
	free(c);
}

static void ctl_event(struct ctl *c, const char *name, const char *data_json)
{
	if (c->qmp)
		qmp_event(c->qmp, name, data_json);
}

int ctl_stop(struct ctl *c, struct qerr *e)
{
	int ret;

	if (c->state == RUN_FINISH_MIGRATE)
		c->mig_was_running = false; /* should the migration fail, stay paused */
	if (c->state != RUN_RUNNING)
		return 0; /* QEMU: stopping a stopped VM is not an error */
	ret = vm_pause(c->vm);
	if (ret)
		return qerr_set(e, -ret, "cannot pause the VM: %s", strerror(-ret));
	c->state = RUN_PAUSED;
	ctl_event(c, "STOP", NULL);
	return 0;
}

int ctl_cont(struct ctl *c, struct qerr *e)
{
	int ret;

	if (c->state == RUN_RUNNING)
		return 0;
	if (c->snap)
		return qerr_set(e, EBUSY, "a checkpoint is being written; the VM resumes after it");
	if (c->state == RUN_FINISH_MIGRATE)
		return qerr_set(e, EBUSY,
				"the VM is being handed over to the migration destination; it resumes here if that fails");
	if (c->state != RUN_PAUSED && c->state != RUN_PRELAUNCH)
		return qerr_set(e, EINVAL, "cannot continue a VM in state '%s'",
				runstate_name(c->state));
	ret = vm_resume(c->vm);
	if (ret)
		return qerr_set(e, -ret, "cannot resume the VM: %s", strerror(-ret));
	c->state = RUN_RUNNING;
	ctl_event(c, "RESUME", NULL);
	return 0;
}

void ctl_powerdown(struct ctl *c)
{
	ctl_event(c, "POWERDOWN", NULL);
	acpi_pm_power_button(c->vm);
}

void ctl_reset(struct ctl *c)
{
	c->shutdown_reason = "host-qmp-system-reset";
	vm_request_stop(c->vm, VM_STOP_RESET);
}

void ctl_quit(struct ctl *c, const char *reason)
{
	if (!c->shutdown_reason)
		c->shutdown_reason = reason;
	if (!c->vm) {
		c->quit_no_vm = true; /* still waiting for an incoming VM */
		return;
	}
	vm_request_stop(c->vm, VM_STOP_QUIT);
}

static void ctl_shutdown_event(struct ctl *c, bool guest, const char *reason)
{
	char data[128];

	snprintf(data, sizeof(data), "{\"guest\": %s, \"reason\": \"%s\"}",
		 guest ? "true" : "false", reason);
	ctl_event(c, "SHUTDOWN", data);
}

/* ---- profiling ---------------------------------------------------------- */

static void ctl_profile_disarm(struct ctl *c)
{
	struct itimerspec off = { { 0, 0 }, { 0, 0 } };

	if (c->prof_timer_fd >= 0)
		timerfd_settime(c->prof_timer_fd, 0, &off, NULL);
}

/* A session ends without a request (duration, VM gone): tell every client. */
static void ctl_profile_end(struct ctl *c, const char *reason)
{
	struct profile_data d;
	struct json_object *ev;

	if (!profile_running(c->prof))
		return;
	ctl_profile_disarm(c);
	profile_stop(c->prof, reason);
	if (!c->qmp || profile_snapshot(c->prof, &d))
		return;
	ev = json_object_new_object();
	json_object_object_add(ev, "reason", json_object_new_string(reason));
	json_object_object_add(ev, "profile", profile_data_to_json(&d));
	ctl_event(c, "PROFILE_STOPPED", json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN));
	json_object_put(ev);
	profile_data_free(&d);
}

static void ctl_on_profile_timer(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->prof_timer_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_msg("profile timer: %s", strerror(errno));
	if (profile_due(c->prof, time_now_ns()))
		ctl_profile_end(c, "duration");
}

int ctl_profile_start(struct ctl *c, const struct profile_params *pp, struct qerr *e)
{
	struct profile *p;
	int ret;

	if (!c->vm)
		return qerr_set(e, ENODEV, "no VM");
	if (profile_running(c->prof))
		return qerr_set(e, EBUSY, "a profile is already running (profile-stop ends it)");
	if (pp->duration_ns && c->prof_timer_fd < 0) {
		c->prof_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (c->prof_timer_fd < 0)
			return qerr_set(e, errno, "timerfd: %s", strerror(errno));
		ret = loop_add(c->loop, c->prof_timer_fd, EPOLLIN, ctl_on_profile_timer, c);
		if (ret) {
			close(c->prof_timer_fd);
			c->prof_timer_fd = -1;
			return qerr_set(e, -ret, "cannot watch the profile timer: %s", strerror(-ret));
		}
	}
	ret = profile_start(c->vm, pp, &p, e);
	if (ret)
		return ret;
	profile_destroy(c->prof); /* the previous result */
	c->prof = p;
	if (pp->duration_ns) {
		struct itimerspec its = {
			.it_value = { .tv_sec = (time_t)(pp->duration_ns / 1000000000ULL),
				      .tv_nsec = (long)(pp->duration_ns % 1000000000ULL) },
		};

		timerfd_settime(c->prof_timer_fd, 0, &its, NULL);
	}
	return 0;
}

int ctl_profile_stop(struct ctl *c, struct profile_data *d, struct qerr *e)
{
	if (!c->prof)
		return qerr_set(e, ENOENT, "no profile has been started (profile-start)");
	ctl_profile_disarm(c);
	profile_stop(c->prof, "stopped");
	return ctl_profile_query(c, d, e);
}

int ctl_profile_query(struct ctl *c, struct profile_data *d, struct qerr *e)
{
	int ret;

	if (!c->prof)
		return qerr_set(e, ENOENT, "no profile has been started (profile-start)");
	ret = profile_snapshot(c->prof, d);
	return ret ? qerr_set(e, -ret, "cannot read the profile: %s", strerror(-ret)) : 0;
}

/* The VM stopped for a reset: rebuild it. Returns false if that failed. */
/*
 * Start the vCPUs. A restored VM comes out of ckpt_restore() paused, its
 * devices quiesced: resuming it kicks every queue (requests the guest
 * queued before the checkpoint) and releases the held clock.
 */
static int ctl_start_vm(struct ctl *c, bool paused)
{
	bool restored = c->vm->paused;
	int ret;

	ret = vm_start(c->vm, paused || restored);
	if (!ret && restored && !paused)
		ret = vm_resume(c->vm);
	if (!ret)
		ckpt_restore_started(c->vm);
	return ret;
}

static bool ctl_rebuild(struct ctl *c)
{
	bool paused = c->state != RUN_RUNNING;
	struct qerr e = { 0 };

	ctl_destroy_vm(c);
	if (ctl_build_vm(c, &e)) {
		log_msg("cannot rebuild the VM after a reset: %s", e.msg);
		return false;
	}
	/* A reset keeps the run state: a paused VM stays paused. */
	if (vm_start(c->vm, paused)) {
		log_msg("cannot start vCPU threads");
		return false;
	}
	return true;
}

enum vm_stop_reason ctl_run(struct ctl *c)
{
	/* Captured first: a migration may even arrive (and start) in the wait below. */
	bool arriving = c->incoming;
	enum vm_stop_reason why;
	int ret;

	/* wait=on: nothing runs until a management client is connected. */
	while (qmp_server_wait_client(c->qmp) && !c->vm_stopped && !c->quit_no_vm)
		loop_run_once(c->loop, -1);
	if (arriving) {
		/* The VM arrives by migration; ctl_mig_start() starts it. */
		while (c->incoming && !c->vm_stopped && !c->quit_no_vm) {
			ret = loop_run_once(c->loop, -1);
			if (ret) {
				log_msg("event loop: %s", strerror(-ret));
				return VM_STOP_ERROR;
			}
		}
		if (c->incoming_failed)
			return VM_STOP_ERROR;
		if (c->incoming) { /* asked to quit meanwhile */
			c->state = RUN_SHUTDOWN;
			ctl_shutdown_event(c, false,
					   c->shutdown_reason ? c->shutdown_reason : "host-qmp-quit");
			return VM_STOP_QUIT;
		}
	} else {
		ret = ctl_start_vm(c, c->state != RUN_RUNNING);
		if (ret) {
			log_msg("cannot start vCPU threads: %s", strerror(-ret));
			return VM_STOP_ERROR;
		}
	}
	for (;;) {
		while (!c->vm_stopped) {
			ret = loop_run_once(c->loop, c->console_throttled ? 10 : -1);
			if (ret) {
				log_msg("event loop: %s", strerror(-ret));
				vm_request_stop(c->vm, VM_STOP_ERROR);
			}
			if (c->console_throttled && vm_console_space(c->vm))
				ctl_console_throttle(c, false);
		}
		/* The profile's last words (PROFILE_STOPPED) before the VM's. */
		ctl_profile_end(c, "vm-stopped");
		vm_stop_vcpus(c->vm);
		why = atomic_load(&c->vm->stop_reason);
		switch (why) {
		case VM_STOP_RESET: {
			bool guest = !c->shutdown_reason;

			ctl_event(c, "RESET",
				  guest ? "{\"guest\": true, \"reason\": \"guest-reset\"}" :
					  "{\"guest\": false, \"reason\": \"host-qmp-system-reset\"}");
			c->shutdown_reason = NULL;
			if (c->cfg.vm.no_reboot) {
				ctl_shutdown_event(c, guest, guest ? "guest-reset" :
								     "host-qmp-system-reset");
				c->state = RUN_SHUTDOWN;
				return why;
			}
			if (!ctl_rebuild(c))
				return VM_STOP_ERROR;
			continue;
		}
		case VM_STOP_POWEROFF:
			c->state = RUN_SHUTDOWN;
			ctl_shutdown_event(c, true, "guest-shutdown");
			return why;
		case VM_STOP_QUIT:
			if (c->migrated) {
				/* The guest did not shut down: it runs on the destination now. */
				c->state = RUN_POSTMIGRATE;
				return why;
			}
			c->state = RUN_SHUTDOWN;
			ctl_shutdown_event(c, false,
					   c->shutdown_reason ? c->shutdown_reason : "host-qmp-quit");
			return why;
		case VM_STOP_GUEST_CRASH:
			c->state = RUN_GUEST_PANICKED;
			return why;
		default:
			c->state = RUN_INTERNAL_ERROR;
			return why;
		}
	}
}

/* ---- checkpoints ------------------------------------------------------------ */

static void ctl_snapshot_progress(struct ctl *c)
{
	struct json_object *o = json_object_new_object();
	uint64_t bytes, done, total, ns;

	if (c->snap) {
		ckpt_job_progress(c->snap, &bytes, &done, &total, &ns);
	} else { /* the final figures */
		bytes = c->snap_stats.bytes_memory + c->snap_stats.bytes_state;
		done = total = c->snap_stats.pages_total;
		ns = c->snap_stats.total_ns;
	}
	json_object_object_add(o, "dir", json_object_new_string(c->snap_dir));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)bytes));
	json_object_object_add(o, "pages-done", json_object_new_int64((int64_t)done));
	json_object_object_add(o, "pages-total", json_object_new_int64((int64_t)total));
	json_object_object_add(o, "rate", json_object_new_int64((int64_t)(
		ns ? (double)bytes * 1e9 / (double)ns : 0)));
	ctl_event(c, "SNAPSHOT_PROGRESS", json_object_to_json_string(o));
	json_object_put(o);
}

static void ctl_on_snapshot_timer(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->snap_timer_fd, &n, sizeof(n)) < 0 || !c->snap)
		return;
	ctl_snapshot_progress(c);
}

struct json_object *ctl_snapshot_stats_json(const struct ctl *c)
{
	const struct ckpt_stats *st = &c->snap_stats;
	struct json_object *o = json_object_new_object(), *pg = json_object_new_object();

	json_object_object_add(o, "dir", json_object_new_string(c->snap_dir));
	json_object_object_add(o, "incremental", json_object_new_boolean(c->snap_incremental));
	json_object_object_add(o, "bytes",
			       json_object_new_int64((int64_t)(st->bytes_memory + st->bytes_state)));
	json_object_object_add(o, "memory-bytes", json_object_new_int64((int64_t)st->bytes_memory));
	json_object_object_add(o, "state-bytes", json_object_new_int64((int64_t)st->bytes_state));
	json_object_object_add(o, "duration-ms",
			       json_object_new_double((double)st->total_ns / 1e6));
	json_object_object_add(pg, "total", json_object_new_int64((int64_t)st->pages_total));
	json_object_object_add(pg, "data", json_object_new_int64((int64_t)st->pages_data));
	json_object_object_add(pg, "zero", json_object_new_int64((int64_t)st->pages_zero));
	json_object_object_add(pg, "disk", json_object_new_int64((int64_t)st->pages_disk));
	json_object_object_add(pg, "parent", json_object_new_int64((int64_t)st->pages_parent));
	json_object_object_add(pg, "balloon", json_object_new_int64((int64_t)st->pages_balloon));
	json_object_object_add(o, "pages", pg);
	return o;
}

/* The job ended (or the VM goes away): collect it, resume, tell everyone. */
static void ctl_snapshot_end(struct ctl *c)
{
	struct qerr e = { 0 };
	int ret;

	if (c->snap_timer_fd >= 0) {
		loop_del(c->loop, c->snap_timer_fd);
		close(c->snap_timer_fd);
		c->snap_timer_fd = -1;
	}
	loop_del(c->loop, ckpt_job_eventfd(c->snap));
	ret = ckpt_job_finish(c->snap, &c->snap_stats, &e);
	ckpt_job_free(c->snap);
	c->snap = NULL;
	if (!ret)
		ctl_snapshot_progress(c); /* the final figures, for progress displays */
	if (ret) {
		struct json_object *o = json_object_new_object();

		c->snap_status = SNAP_FAILED;
		snprintf(c->snap_error, sizeof(c->snap_error), "%s", e.msg);
		log_msg("checkpoint to %s failed: %s", c->snap_dir, e.msg);
		json_object_object_add(o, "dir", json_object_new_string(c->snap_dir));
		json_object_object_add(o, "error", json_object_new_string(e.msg));
		ctl_event(c, "SNAPSHOT_FAILED", json_object_to_json_string(o));
		json_object_put(o);
	} else {
		struct json_object *o = ctl_snapshot_stats_json(c);

		c->snap_status = SNAP_COMPLETED;
		ctl_event(c, "SNAPSHOT_COMPLETED", json_object_to_json_string(o));
		json_object_put(o);
	}
	/* Resume on success and on failure alike: nothing is lost either way. */
	if (c->snap_was_running && c->vm && (ret || !c->snap_stop)) {
		if (vm_resume(c->vm) == 0) {
			c->state = RUN_RUNNING;
			ctl_event(c, "RESUME", NULL);
		}
	}
}

static void ctl_on_snapshot_done(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;

	(void)events;
	if (c->snap)
		ctl_snapshot_end(c);
}

int ctl_snapshot_save(struct ctl *c, const struct ckpt_params *p, struct qerr *e)
{
	bool was_running = c->state == RUN_RUNNING;
	struct ckpt_job *j;
	int ret;

	if (!c->vm)
		return qerr_set(e, ENODEV, "no VM");
	if (c->snap)
		return qerr_set(e, EBUSY, "a checkpoint is already being written (to %s)",
				c->snap_dir);
	if (ctl_migrating(c))
		return qerr_set(e, EBUSY, "a migration is under way");
	if (c->state != RUN_RUNNING && c->state != RUN_PAUSED && c->state != RUN_PRELAUNCH)
		return qerr_set(e, EINVAL, "cannot checkpoint a VM in state '%s'",
				runstate_name(c->state));
	ret = ckpt_save_start(c->vm, p, was_running, &j, e);
	if (ret) {
		/* It may have paused the VM before failing: undo that. */
		if (was_running)
			vm_resume(c->vm);
		return ret;
	}
	c->snap = j;
	c->snap_was_running = was_running;
	c->snap_stop = p->stop;
	c->snap_incremental = p->incremental;
	c->snap_status = SNAP_ACTIVE;
	c->snap_error[0] = 0;
	memset(&c->snap_stats, 0, sizeof(c->snap_stats));
	snprintf(c->snap_dir, sizeof(c->snap_dir), "%s", ckpt_job_dir(j));
	if (was_running) {
		c->state = RUN_PAUSED;
		ctl_event(c, "STOP", NULL);
	}
	ret = loop_add(c->loop, ckpt_job_eventfd(j), EPOLLIN, ctl_on_snapshot_done, c);
	if (ret) {
		/* Cannot hear it finish: wait for it here instead. */
		ctl_snapshot_end(c);
		return 0;
	}
	c->snap_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (c->snap_timer_fd >= 0) {
		struct itimerspec its = { .it_interval = { 0, 250000000 },
					  .it_value = { 0, 250000000 } };

		timerfd_settime(c->snap_timer_fd, 0, &its, NULL);
		if (loop_add(c->loop, c->snap_timer_fd, EPOLLIN, ctl_on_snapshot_timer, c)) {
			close(c->snap_timer_fd);
			c->snap_timer_fd = -1;
		}
	}
	return 0;
}

int ctl_snapshot_load(struct ctl *c, const char *dir, enum ckpt_restore_mode mode,
		      struct qerr *e)
{
	struct json_object *store = NULL;
	struct ctl_config saved = c->cfg;
	struct vm_config vc;
	struct vm *old = c->vm;
	bool was_running = c->state == RUN_RUNNING;
	char *dir_copy;
	int ret;

	if (c->snap)
		return qerr_set(e, EBUSY, "a checkpoint is being written");
	if (ctl_migrating(c) || c->incoming)
		return qerr_set(e, EBUSY, "a migration is under way");
	ret = ckpt_read_config(dir, &vc, &store, e);
	if (ret)
		return ret;
	dir_copy = strdup(dir);
	if (!dir_copy) {
		ckpt_config_free(store);
		return qerr_set(e, ENOMEM, "out of memory");
	}
	/* Host-side wiring stays: console, the event loop. */
	vc.console_in = c->cfg.vm.console_in;
	vc.console_out = c->cfg.vm.console_out;
	vc.dirty_ring = c->cfg.vm.dirty_ring;
	vc.dirty_ring_entries = c->cfg.vm.dirty_ring_entries;
	vc.loop = c->loop;
	if (old && was_running)
		vm_pause(old);
	c->cfg.vm = vc;
	c->cfg.restore_dir = dir_copy;
	c->cfg.restore_mode = mode;
	c->restore_pending = true;
	c->vm = NULL;
	ret = ctl_build_vm(c, e);
	if (ret) {
		/* The running VM stays as it was. */
		free(dir_copy);
		ckpt_config_free(store);
		c->cfg = saved;
		c->restore_pending = false;
		c->vm = old;
		if (old && was_running)
			vm_resume(old);
		return ret;
	}
	if (old) {
		struct vm *new_vm = c->vm;

		c->vm = old;
		ctl_destroy_vm(c);
		c->vm = new_vm;
	}
	ckpt_config_free(c->restore_cfg);
	c->restore_cfg = store;
	free((char *)c->restore_load_dir);
	c->restore_load_dir = dir_copy;
	ret = ctl_start_vm(c, !was_running);
	if (ret)
		return qerr_set(e, -ret, "cannot start the restored VM: %s", strerror(-ret));
	return 0;
}

/* ---- live migration ---------------------------------------------------------- */

bool ctl_migrating(const struct ctl *c)
{
	return c->mig_out || c->mig_in;
}

static void ctl_mig_status_event(struct ctl *c, enum mig_status s)
{
	char data[64];

	snprintf(data, sizeof(data), "{\"status\": \"%s\"}", mig_status_name(s));
	ctl_event(c, "MIGRATION", data);
}

static void add_int(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

/* QEMU's MigrationInfo: status, ram {...}, total/setup/expected/downtime, error-desc. */
static struct json_object *mig_stats_json(const struct mig_stats *st)
{
	struct json_object *o = json_object_new_object(), *ram;

	if (st->status == MIG_STATUS_NONE)
		return o; /* QEMU: {} when no migration ever ran */
	json_object_object_add(o, "status", json_object_new_string(mig_status_name(st->status)));
	if (st->status != MIG_STATUS_SETUP) {
		ram = json_object_new_object();
		add_int(ram, "transferred", st->transferred);
		add_int(ram, "remaining", st->remaining);
		add_int(ram, "total", st->total);
		add_int(ram, "duplicate", st->duplicate);
		add_int(ram, "skipped", 0);
		add_int(ram, "normal", st->normal);
		add_int(ram, "normal-bytes", st->normal * 4096);
		add_int(ram, "dirty-pages-rate", st->dirty_pages_rate);
		json_object_object_add(ram, "mbps",
				       json_object_new_double((double)st->bandwidth * 8 / 1e6));
		add_int(ram, "dirty-sync-count", st->dirty_sync_count);
		add_int(ram, "postcopy-requests", st->postcopy_requests);
		add_int(ram, "page-size", 4096);
		add_int(ram, "multifd-bytes", 0);
		add_int(ram, "pages-per-second", st->bandwidth / 4096);
		add_int(ram, "precopy-bytes", st->transferred - st->postcopy_bytes);
		add_int(ram, "postcopy-bytes", st->postcopy_bytes);
		if (st->dirty_tracking)
			/* qlite's: "ring" or "bitmap" (the source's KVM dirty tracking). */
			json_object_object_add(ram, "dirty-tracking",
					       json_object_new_string(st->dirty_tracking));
		json_object_object_add(o, "ram", ram);
		if (st->postcopy) {
			/* qlite's: what post-copy cost the guest (QEMU has no such object). */
			struct json_object *pc = json_object_new_object();

			add_int(pc, "pages-requested", st->postcopy_requests);
			add_int(pc, "pages-pushed", st->pages_pushed);
			add_int(pc, "faults", st->faults);
			add_int(pc, "faults-waited-network", st->faults_waited);
			add_int(pc, "fault-p50-us", st->fault_p50_ns / 1000);
			add_int(pc, "fault-p99-us", st->fault_p99_ns / 1000);
			json_object_object_add(o, "postcopy", pc);
		}
	}
	add_int(o, "total-time", st->total_ns / 1000000);
	if (!st->incoming) {
		add_int(o, "setup-time", st->setup_ns / 1000000);
		if (st->status == MIG_STATUS_ACTIVE)
			add_int(o, "expected-downtime", st->expected_downtime_ns / 1000000);
		if (st->status == MIG_STATUS_COMPLETED)
			add_int(o, "downtime", st->downtime_ns / 1000000);
	}
	if (st->status == MIG_STATUS_FAILED && st->error[0])
		json_object_object_add(o, "error-desc", json_object_new_string(st->error));
	return o;
}

struct json_object *ctl_migrate_info_json(struct ctl *c)
{
	struct mig_stats st = { 0 };

	if (c->mig_out)
		mig_out_stats(c->mig_out, &st);
	else if (c->mig_in)
		mig_in_stats(c->mig_in, &st);
	else if (c->mig_has_stats)
		st = c->mig_stats;
	return mig_stats_json(&st);
}

static void ctl_mig_progress(struct ctl *c)
{
	struct json_object *o = ctl_migrate_info_json(c);

	ctl_event(c, "MIGRATION_PROGRESS", json_object_to_json_string(o));
	json_object_put(o);
}

static void ctl_on_mig_timer(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	uint64_t n;

	(void)events;
	if (read(c->mig_timer_fd, &n, sizeof(n)) < 0 || !ctl_migrating(c))
		return;
	ctl_mig_progress(c);
}

static void ctl_mig_timer(struct ctl *c, bool on)
{
	struct itimerspec its = { .it_interval = { 0, 250000000 }, .it_value = { 0, 250000000 } };

	if (!on) {
		if (c->mig_timer_fd >= 0) {
			loop_del(c->loop, c->mig_timer_fd);
			close(c->mig_timer_fd);
			c->mig_timer_fd = -1;
		}
		return;
	}
	if (c->mig_timer_fd >= 0)
		return;
	c->mig_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (c->mig_timer_fd < 0)
		return; /* no progress events: the migration works without them */
	timerfd_settime(c->mig_timer_fd, 0, &its, NULL);
	if (loop_add(c->loop, c->mig_timer_fd, EPOLLIN, ctl_on_mig_timer, c)) {
		close(c->mig_timer_fd);
		c->mig_timer_fd = -1;
	}
}

/* ---- source ---- */

/* The worker wants the VM paused and its device state captured. */
static void ctl_mig_switchover(struct ctl *c)
{
	bool was_running = c->state == RUN_RUNNING;
	int ret = 0;

	if (was_running) {
		ret = vm_pause(c->vm);
		if (!ret)
			ctl_event(c, "STOP", NULL);
	}
	if (!ret) {
		c->state = RUN_FINISH_MIGRATE;
		/* Paused, requests drained: the destination may open the images for good. */
		virtio_blk_lock_all(c->vm, false, NULL);
	}
	c->mig_was_running = was_running;
	mig_out_switchover(c->mig_out, was_running, ret);
}

/*
 * The job ended (or the VM goes: @vm_going). Completed: the source is done,
 * its run loop ends. Failed before the hand-over: it goes on as it was.
 */
static void ctl_mig_out_end(struct ctl *c, bool vm_going)
{
	struct qerr e = { 0 };
	bool handed = false;
	int ret;

	loop_del(c->loop, mig_out_eventfd(c->mig_out));
	ret = mig_out_finish(c->mig_out, &c->mig_stats, &handed, &e);
	mig_out_free(c->mig_out);
	c->mig_out = NULL;
	c->mig_has_stats = true;
	ctl_mig_timer(c, false);
	ctl_mig_progress(c); /* the final figures, before the end is announced */
	ctl_mig_status_event(c, c->mig_stats.status);
	if (!ret) {
		log_msg("migration completed: %.1f MiB in %llu ms, downtime %llu ms",
			(double)c->mig_stats.transferred / (double)MiB,
			(unsigned long long)(c->mig_stats.total_ns / 1000000),
			(unsigned long long)(c->mig_stats.downtime_ns / 1000000));
		c->state = RUN_POSTMIGRATE;
		c->migrated = true;
		if (!vm_going)
			vm_request_stop(c->vm, VM_STOP_QUIT);
		return;
	}
	log_msg("migration failed: %s", e.msg);
	if (vm_going || c->state != RUN_FINISH_MIGRATE)
		return;
	if (handed) {
		c->state = RUN_PAUSED; /* the destination may run it: the user decides */
		return;
	}
	memset(&e, 0, sizeof(e));
	if (virtio_blk_lock_all(c->vm, true, &e))
		log_msg("migration failed: %s: the VM goes on without that image lock", e.msg);
	if (c->mig_was_running && vm_resume(c->vm) == 0) {
		c->state = RUN_RUNNING;
		ctl_event(c, "RESUME", NULL);
	} else {
		c->state = RUN_PAUSED;
	}
}

static void ctl_on_mig_out(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	struct mig_event ev;

	(void)events;
	while (c->mig_out) {
		mig_out_next_event(c->mig_out, &ev);
		switch (ev.kind) {
		case MIG_EV_NONE:
			return;
		case MIG_EV_STATUS:
			ctl_mig_status_event(c, ev.status);
			break;
		case MIG_EV_PASS:
			if (c->mig_params.events) {
				char data[48];

				snprintf(data, sizeof(data), "{\"pass\": %llu}",
					 (unsigned long long)ev.pass);
				ctl_event(c, "MIGRATION_PASS", data);
			}
			break;
		case MIG_EV_SWITCHOVER:
			ctl_mig_switchover(c);
			break;
		case MIG_EV_ENDED:
			ctl_mig_out_end(c, false);
			return;
		default:
			break;
		}
	}
}

int ctl_migrate(struct ctl *c, const char *uri, struct qerr *e)
{
	struct mig_out *j;
	int ret;

	if (c->incoming || c->mig_in)
		return qerr_set(e, EBUSY, "this VM is itself arriving by migration");
	if (!c->vm)
		return qerr_set(e, ENODEV, "no VM");
	if (c->mig_out)
		return qerr_set(e, EBUSY, "There's a migration process in progress");
	if (c->snap)
		return qerr_set(e, EBUSY, "a checkpoint is being written; migrate after it");
	if (c->state != RUN_RUNNING && c->state != RUN_PAUSED && c->state != RUN_PRELAUNCH)
		return qerr_set(e, EINVAL, "cannot migrate a VM in state '%s'",
				runstate_name(c->state));
	ret = mig_out_start(c->vm, uri, &c->mig_params, &j, e);
	if (ret)
		return ret;
	c->mig_out = j;
	c->mig_has_stats = false;
	ret = loop_add(c->loop, mig_out_eventfd(j), EPOLLIN, ctl_on_mig_out, c);
	if (ret) {
		struct mig_stats st;
		bool handed;

		mig_out_finish(j, &st, &handed, NULL);
		mig_out_free(j);
		c->mig_out = NULL;
		return qerr_set(e, -ret, "cannot watch the migration: %s", strerror(-ret));
	}
	ctl_mig_status_event(c, MIG_STATUS_SETUP);
	ctl_mig_timer(c, true);
	return 0;
}

int ctl_migrate_resume(struct ctl *c, const char *uri, struct qerr *e)
{
	if (!c->mig_out)
		return qerr_set(e, EINVAL, "there is no paused post-copy migration to resume");
	return mig_out_resume(c->mig_out, uri, e);
}

int ctl_migrate_start_postcopy(struct ctl *c, struct qerr *e)
{
	if (!c->mig_out)
		return qerr_set(e, EINVAL, "there is no migration to switch to post-copy");
	return mig_out_start_postcopy(c->mig_out, e);
}

int ctl_migrate_cancel(struct ctl *c, struct qerr *e)
{
	if (!c->mig_out)
		return 0; /* QEMU: nothing to cancel is not an error */
	if (mig_out_cancel(c->mig_out, e))
		return -EBUSY;
	ctl_mig_status_event(c, MIG_STATUS_CANCELLING);
	return 0;
}

int ctl_migrate_set_params(struct ctl *c, const struct mig_params *p, struct qerr *e)
{
	if (c->mig_out && p->postcopy_ram != c->mig_params.postcopy_ram)
		return qerr_set(e, EBUSY, "There's a migration process in progress");
	c->mig_params = *p;
	if (c->mig_out)
		mig_out_set_params(c->mig_out, p);
	return 0;
}

/* ---- destination ---- */

/* The stream's configuration arrived: build that VM (not booted) for the pages. */
static void ctl_mig_build(struct ctl *c)
{
	struct json_object *store = NULL;
	struct vm_config vc;
	struct qerr e = { 0 };
	unsigned int i;
	int ret = 0;

	mig_in_take_config(c->mig_in, &vc, &store);
	/* Disks and NICs may have other paths here: given again, they replace the source's. */
	if (c->cfg.incoming_ndisks) {
		if (c->cfg.incoming_ndisks != vc.ndisks)
			ret = qerr_set(&e, EINVAL,
				       "the migrating VM has %u disk(s); --disk was given %u time(s)",
				       vc.ndisks, c->cfg.incoming_ndisks);
		vc.disks = c->cfg.incoming_disks;
	}
	if (!ret && c->cfg.incoming_nnets) {
		if (c->cfg.incoming_nnets != vc.nnets)
			ret = qerr_set(&e, EINVAL,
				       "the migrating VM has %u NIC(s); --net was given %u time(s)",
				       vc.nnets, c->cfg.incoming_nnets);
		vc.nets = c->cfg.incoming_nets;
	}
	for (i = 0; !ret && i < vc.nnets; i++)
		if (!vc.nets[i].tap && vc.nets[i].fd < 0)
			ret = qerr_set(&e, EINVAL,
				       "NIC %u is on an inherited tap fd on the source: give it with --net", i);
	if (!ret && c->cfg.host_mem && vc.mem_size > c->cfg.host_mem)
		ret = qerr_set(&e, ENOMEM, "the migrating VM has %llu MiB of RAM; this host has %llu MiB",
			       (unsigned long long)(vc.mem_size / MiB),
			       (unsigned long long)(c->cfg.host_mem / MiB));
	if (c->cfg.incoming_no_reboot)
		vc.no_reboot = true;
	vc.console_in = c->cfg.vm.console_in;
	vc.console_out = c->cfg.vm.console_out;
	vc.dirty_ring = c->cfg.vm.dirty_ring;
	vc.dirty_ring_entries = c->cfg.vm.dirty_ring_entries;
	if (!ret) {
		/* The source holds the image locks until it pauses: mig_in_apply() takes them. */
		vc.disks_unlocked = true;
		c->cfg.vm = vc;
		c->mig_building = true;
		ret = ctl_build_vm(c, &e);
		c->mig_building = false;
		c->cfg.vm.disks_unlocked = false; /* a VM rebuilt on reset locks them at once */
	}
	/* The strings of c->cfg.vm live there, for as long as the VM (resets too). */
	ckpt_config_free(c->restore_cfg);
	c->restore_cfg = store;
	mig_in_built(c->mig_in, c->vm, ret, e.msg);
}

static void ctl_mig_start(struct ctl *c)
{
	bool run = mig_in_run(c->mig_in) && !c->cfg.start_paused;
	struct qerr e = { 0 };
	int ret = ctl_start_vm(c, !run);

	if (ret) {
		qerr_set(&e, -ret, "cannot start the VM: %s", strerror(-ret));
	} else {
		c->state = run ? RUN_RUNNING : RUN_PAUSED;
		c->incoming = false;
		if (run)
			ctl_event(c, "RESUME", NULL);
		if (ctl_watch_console(c, &e))
			log_msg("%s", e.msg); /* the guest runs on without console input */
		memset(&e, 0, sizeof(e));
	}
	mig_in_started(c->mig_in, ret, e.msg);
}

static void ctl_mig_in_end(struct ctl *c)
{
	struct qerr e = { 0 };
	int ret;

	loop_del(c->loop, mig_in_eventfd(c->mig_in));
	if (mig_in_listen_fd(c->mig_in) >= 0)
		loop_del(c->loop, mig_in_listen_fd(c->mig_in));
	ret = mig_in_finish(c->mig_in, &c->mig_stats, &e);
	if (ret && !c->incoming && c->vm && !c->mig_pc_failed) {
		/*
		 * Post-copy broke with the VM running here: its missing pages
		 * will never come. Stop it; the engine stays until the vCPUs are
		 * gone (freed again by ctl_destroy), so nothing reads them as zero.
		 */
		c->mig_pc_failed = true;
		c->mig_has_stats = true;
		ctl_mig_timer(c, false);
		ctl_mig_status_event(c, c->mig_stats.status);
		c->incoming_failed = true;
		snprintf(c->incoming_error, sizeof(c->incoming_error),
			 "post-copy failed, the guest's memory is incomplete: %.400s", e.msg);
		vm_request_stop(c->vm, VM_STOP_QUIT);
		return;
	}
	mig_in_free(c->mig_in);
	c->mig_in = NULL;
	c->mig_has_stats = true;
	ctl_mig_timer(c, false);
	if (!c->mig_pc_failed)
		ctl_mig_status_event(c, c->mig_stats.status);
	if (ret && c->incoming) {
		c->incoming = false;
		c->incoming_failed = true;
		snprintf(c->incoming_error, sizeof(c->incoming_error), "%s", e.msg);
	}
}

static void ctl_on_mig_in(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	struct mig_event ev;

	(void)events;
	while (c->mig_in) {
		mig_in_next_event(c->mig_in, &ev);
		switch (ev.kind) {
		case MIG_EV_NONE:
			return;
		case MIG_EV_STATUS:
			ctl_mig_status_event(c, ev.status);
			break;
		case MIG_EV_BUILD:
			ctl_mig_build(c);
			break;
		case MIG_EV_APPLY:
			mig_in_apply(c->mig_in);
			break;
		case MIG_EV_START:
			ctl_mig_start(c);
			break;
		case MIG_EV_ENDED:
			ctl_mig_in_end(c);
			return;
		default:
			break;
		}
	}
}

static void ctl_on_mig_listen(void *opaque, uint32_t events)
{
	struct ctl *c = opaque;
	struct qerr e = { 0 };

	(void)events;
	if (c->mig_in && mig_in_accept(c->mig_in, &e))
		log_msg("incoming migration: %s", e.msg);
}

int ctl_migrate_recover(struct ctl *c, const char *uri, struct qerr *e)
{
	int old, ret;

	if (!c->mig_in)
		return qerr_set(e, EINVAL, "there is no paused incoming post-copy migration");
	old = mig_in_listen_fd(c->mig_in);
	ret = mig_in_recover(c->mig_in, uri, e);
	if (ret)
		return ret;
	if (old >= 0)
		loop_del(c->loop, old);
	ret = loop_add(c->loop, mig_in_listen_fd(c->mig_in), EPOLLIN, ctl_on_mig_listen, c);
	if (ret)
		return qerr_set(e, -ret, "cannot watch %s: %s", uri, strerror(-ret));
	return 0;
}

int ctl_migrate_incoming(struct ctl *c, const char *uri, struct qerr *e)
{
	struct mig_in *m;
	int ret;

	if (!c->incoming)
		return qerr_set(e, EINVAL, "migrate-incoming needs a qlite started with --incoming defer");
	if (c->mig_in || c->mig_has_stats)
		return qerr_set(e, EBUSY, "The incoming migration has already been started");
	ret = mig_in_start(uri, &m, e);
	if (ret)
		return ret;
	c->mig_in = m;
	ret = loop_add(c->loop, mig_in_eventfd(m), EPOLLIN, ctl_on_mig_in, c);
	if (!ret && mig_in_listen_fd(m) >= 0) {
		ret = loop_add(c->loop, mig_in_listen_fd(m), EPOLLIN, ctl_on_mig_listen, c);
		if (ret)
			loop_del(c->loop, mig_in_eventfd(m));
	}
	if (ret) {
		mig_in_free(m);
		c->mig_in = NULL;
		return qerr_set(e, -ret, "cannot watch the migration: %s", strerror(-ret));
	}
	ctl_mig_status_event(c, MIG_STATUS_SETUP);
	ctl_mig_timer(c, true);
	return 0;
}
