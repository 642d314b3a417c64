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

#include "qlite/checkpoint.h"
#include "qlite/migrate.h"
#include "qlite/vm.h"

struct loop;
struct json_object;
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
	RUN_INMIGRATE, /* destination: the VM is arriving */
	RUN_FINISH_MIGRATE, /* source: paused for the switchover */
	RUN_POSTMIGRATE, /* source: handed over; qlite exits */
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
	/* qlite run --restore: the first VM comes from this checkpoint. */
	const char *restore_dir;
	enum ckpt_restore_mode restore_mode;
	/*
	 * qlite run --incoming: "defer" (QMP migrate-incoming) or a URI; the
	 * VM's configuration comes from the migration stream. --disk/--net
	 * given then replace the stream's (same number).
	 */
	const char *incoming;
	const struct disk_config *incoming_disks;
	unsigned int incoming_ndisks;
	const struct net_config *incoming_nets;
	unsigned int incoming_nnets;
	bool incoming_no_reboot;
	uint64_t host_mem; /* an arriving VM must fit (0: unchecked) */
};

enum snap_status {
	SNAP_NONE,
	SNAP_ACTIVE,
	SNAP_COMPLETED,
	SNAP_FAILED,
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
	/* Checkpointing: the job in progress and the outcome of the last one. */
	struct ckpt_job *snap;
	int snap_timer_fd; /* progress events */
	bool snap_was_running;
	enum snap_status snap_status;
	char snap_dir[4096];
	char snap_error[512];
	bool snap_incremental;
	bool snap_stop;
	struct ckpt_stats snap_stats;
	bool restore_pending; /* the next VM build loads cfg.restore_dir */
	struct json_object *restore_cfg; /* a snapshot-load's configuration */
	const char *restore_load_dir;
	int restore_err_fd; /* a lazy restore's failure (checkpoint.h) */
	/* Live migration (migrate.h): the job under way, either direction. */
	struct mig_out *mig_out;
	struct mig_in *mig_in;
	struct mig_params mig_params;
	struct mig_stats mig_stats; /* the last migration's final figures */
	bool mig_has_stats;
	int mig_timer_fd; /* MIGRATION_PROGRESS events */
	bool mig_was_running; /* source: at the switchover */
	bool mig_building; /* destination: the VM being built gets no kernel */
	bool migrated; /* source: handed over; the run loop ends, no SHUTDOWN */
	bool incoming; /* waiting for the VM to arrive */
	bool incoming_failed;
	bool mig_pc_failed; /* destination: post-copy broke while the VM ran here */
	char incoming_error[512];
	bool quit_no_vm; /* quit asked before any VM existed */
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

/*
 * Checkpoints (QMP snapshot-save, snapshot-load, query-snapshot). A save
 * returns once the directory is known writable and the VM's state is
 * captured; memory is written in the background with SNAPSHOT_PROGRESS
 * events, then SNAPSHOT_COMPLETED or SNAPSHOT_FAILED, and the VM resumes
 * unless @p->stop. A load replaces the VM with the checkpoint's.
 */
int ctl_snapshot_save(struct ctl *c, const struct ckpt_params *p, struct qerr *e);
struct json_object *ctl_snapshot_stats_json(const struct ctl *c);
int ctl_snapshot_load(struct ctl *c, const char *dir, enum ckpt_restore_mode mode,
		      struct qerr *e);

/*
 * Live migration (QMP migrate, migrate-incoming, migrate-cancel,
 * query-migrate, migrate-set-parameters/-capabilities; docs/migration.md).
 * migrate returns once the job started; MIGRATION events say how it goes,
 * MIGRATION_PROGRESS carries query-migrate's figures every 250 ms. After a
 * completed migration the source's run loop ends (exit status 0); a failed
 * one leaves the source running. A failed incoming migration ends the
 * destination's run loop with incoming_failed set.
 */
int ctl_migrate(struct ctl *c, const char *uri, struct qerr *e);
int ctl_migrate_incoming(struct ctl *c, const char *uri, struct qerr *e);
int ctl_migrate_cancel(struct ctl *c, struct qerr *e);
/* Post-copy recovery: migrate {resume: true} on the source, migrate-recover on the destination. */
int ctl_migrate_resume(struct ctl *c, const char *uri, struct qerr *e);
int ctl_migrate_recover(struct ctl *c, const char *uri, struct qerr *e);
/* migrate-start-postcopy: the running migration switches after this round. */
int ctl_migrate_start_postcopy(struct ctl *c, struct qerr *e);
int ctl_migrate_set_params(struct ctl *c, const struct mig_params *p, struct qerr *e);
bool ctl_migrating(const struct ctl *c);
struct json_object *ctl_migrate_info_json(struct ctl *c);

#endif
