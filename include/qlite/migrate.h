/* SPDX-License-Identifier: MIT */
/*
 * Live migration (docs/migration.md). The source's guest memory goes over
 * a socket in pre-copy rounds while the guest runs (KVM's dirty log plus
 * the VMM's own bitmap say what to send again), then the VM pauses for the
 * last dirty pages and its device state, the destination loads them and
 * resumes, and the source exits. Disks are shared storage: not migrated.
 *
 * A migration's I/O runs on a worker thread; what must happen on the main
 * thread (pausing the source, building, loading and starting the
 * destination's VM) is asked for through an eventfd: the controller reads
 * mig_*_next_event() and answers. Everything here but the worker runs on
 * the main thread.
 */
#ifndef QLITE_MIGRATE_H
#define QLITE_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "qlite/util.h"

struct vm;
struct vm_config;
struct json_object;

/* QEMU's MigrationStatus values (query-migrate, the MIGRATION event). */
enum mig_status {
	MIG_STATUS_NONE,
	MIG_STATUS_SETUP,
	MIG_STATUS_ACTIVE,
	MIG_STATUS_COMPLETED,
	MIG_STATUS_FAILED,
	MIG_STATUS_CANCELLING,
	MIG_STATUS_CANCELLED,
	MIG_STATUS_POSTCOPY_ACTIVE, /* the VM runs on the destination; pages still arrive */
	MIG_STATUS_POSTCOPY_PAUSED,
	MIG_STATUS_POSTCOPY_RECOVER,
};

const char *mig_status_name(enum mig_status s);

#define MIG_DEFAULT_MAX_BANDWIDTH (128ULL * MiB) /* bytes/s, QEMU's default */
#define MIG_DEFAULT_DOWNTIME_MS 300ULL
#define MIG_MAX_DOWNTIME_MS 2000000ULL /* QEMU's limit */
/* x-prepage-pivots: post-copy pre-paging around this many recent faults; 0: off */
#define MIG_DEFAULT_PREPAGE_PIVOTS 7
#define MIG_MAX_PREPAGE_PIVOTS 64

/* migrate-set-parameters / migrate-set-capabilities. */
struct mig_params {
	uint64_t max_bandwidth;	     /* bytes/s of pre-copy; 0: unlimited */
	uint64_t downtime_limit_ms;  /* the pause the switchover may take */
	unsigned int prepage_pivots; /* x-prepage-pivots, 0..MIG_MAX_PREPAGE_PIVOTS */
	bool postcopy_ram;	     /* capability: offer post-copy (migrate-start-postcopy) */
	bool events;		     /* capability: MIGRATION_PASS events */
};

void mig_params_default(struct mig_params *p);

enum mig_uri_kind {
	MIG_URI_TCP,
	MIG_URI_UNIX,
	MIG_URI_FD,
};

struct mig_uri {
	enum mig_uri_kind kind;
	char host[256]; /* TCP: name or address, without brackets; "" = any (listening) */
	char port[16];
	char path[108]; /* UNIX: socket path */
	int fd;		/* FD: a socket this process inherited */
};

/* "tcp:HOST:PORT" ("tcp:[::1]:PORT", "tcp::PORT"), "unix:PATH" or "fd:N". */
int mig_uri_parse(const char *s, struct mig_uri *u, struct qerr *e);

/* query-migrate's figures (QEMU's MigrationInfo / MigrationStats). */
struct mig_stats {
	enum mig_status status;
	bool incoming;
	uint64_t transferred;	   /* bytes on the wire (received, on the destination) */
	uint64_t remaining;	   /* bytes still dirty */
	uint64_t total;		   /* guest RAM */
	uint64_t duplicate;	   /* zero pages: not sent, or sent as a marker */
	uint64_t normal;	   /* pages sent as data */
	uint64_t dirty_sync_count; /* rounds (dirty bitmap syncs) */
	uint64_t dirty_pages_rate; /* pages/s dirtied in the last round */
	uint64_t bandwidth;	   /* bytes/s measured over the last round */
	uint64_t setup_ns, total_ns, downtime_ns, expected_downtime_ns;
	/* Post-copy. */
	bool postcopy;		    /* it switched to post-copy */
	uint64_t postcopy_requests; /* PAGE_REQUESTs (sent, or answered on the source) */
	uint64_t postcopy_bytes;    /* bytes after the VM left the source */
	uint64_t pages_pushed;	    /* pages sent (received) in the background */
	uint64_t faults;	    /* destination: page faults (guest, KVM, VMM) */
	uint64_t faults_waited;	    /* of which waited for the network */
	uint64_t fault_p50_ns, fault_p99_ns;
	const char *dirty_tracking; /* source: vm_dirty_tracking_name() (static) */
	char error[512];
};

/* Every event a worker raises for the main thread. */
enum mig_event_kind {
	MIG_EV_NONE,
	MIG_EV_STATUS,	   /* announce ev.status (the MIGRATION event) */
	MIG_EV_PASS,	   /* a pre-copy round began (MIGRATION_PASS): ev.pass */
	MIG_EV_SWITCHOVER, /* source: pause the VM, then mig_out_switchover() */
	MIG_EV_BUILD,	   /* destination: build the VM (mig_in_take_config), then mig_in_built() */
	MIG_EV_APPLY,	   /* destination: mig_in_apply() loads the device state */
	MIG_EV_START,	   /* destination: start the VM (mig_in_run()), then mig_in_started() */
	MIG_EV_ENDED,	   /* the worker is done: mig_*_finish() */
};

struct mig_event {
	enum mig_event_kind kind;
	enum mig_status status;
	uint64_t pass;
};

/* ---- source ---- */

struct mig_out;

/*
 * Start migrating @vm (running or paused; its device state must be
 * savable) to @uri: dirty logging starts here, the connection and the
 * rounds on a worker. Bad URIs and unsavable devices fail now.
 */
int mig_out_start(struct vm *vm, const char *uri, const struct mig_params *p, struct mig_out **out,
		  struct qerr *e);
int mig_out_eventfd(const struct mig_out *j);
/* Drain after the eventfd fires: MIG_EV_NONE once nothing is left. */
void mig_out_next_event(struct mig_out *j, struct mig_event *ev);
/*
 * Answer MIG_EV_SWITCHOVER: the VM is paused now (unless @pause_err, which
 * fails the migration); its device state is captured here for the worker.
 */
void mig_out_switchover(struct mig_out *j, bool was_running, int pause_err);
/*
 * migrate-start-postcopy: at the end of the current round, switch to
 * post-copy (the postcopy-ram capability was set and the destination
 * accepted it: else the switch fails the migration, the VM running on).
 */
int mig_out_start_postcopy(struct mig_out *j, struct qerr *e);
/*
 * migrate {"uri", "resume": true}: while post-copy is paused (a channel
 * broke after the destination took the VM), reconnect to @uri (unix or
 * tcp, where the destination's migrate-recover listens) and go on.
 */
int mig_out_resume(struct mig_out *j, const char *uri, struct qerr *e);
/* Parameters changed mid-migration (bandwidth, downtime limit). */
void mig_out_set_params(struct mig_out *j, const struct mig_params *p);
/* -EBUSY once the VM has been handed over (too late to take it back). */
int mig_out_cancel(struct mig_out *j, struct qerr *e);
void mig_out_stats(struct mig_out *j, struct mig_stats *st);
/*
 * After MIG_EV_ENDED (or to abandon it: cancels and waits): 0 when the
 * destination runs the VM; -errno with @e otherwise. *@handed_over is set
 * when the destination may be running it although it was not confirmed:
 * the source must then not resume on its own.
 */
int mig_out_finish(struct mig_out *j, struct mig_stats *st, bool *handed_over, struct qerr *e);
void mig_out_free(struct mig_out *j);

/* ---- destination ---- */

struct mig_in;

/*
 * Listen on @uri (or take the socket fd:N names: listening, or already
 * connected). A port in use fails here. The first connection carries the
 * migration; later ones are refused.
 */
int mig_in_start(const char *uri, struct mig_in **out, struct qerr *e);
/* The listening socket (-1 when there is none): call mig_in_accept() when readable. */
int mig_in_listen_fd(const struct mig_in *m);
/*
 * migrate-recover: while post-copy is paused, listen on @uri (unix or tcp)
 * instead, for the source's `migrate {"resume": true}`; the previous
 * listening socket is closed (take mig_in_listen_fd() out of the loop first).
 */
int mig_in_recover(struct mig_in *m, const char *uri, struct qerr *e);
int mig_in_accept(struct mig_in *m, struct qerr *e);
int mig_in_eventfd(const struct mig_in *m);
void mig_in_next_event(struct mig_in *m, struct mig_event *ev);
/*
 * MIG_EV_BUILD: the configuration the stream's VM section carries; its
 * strings live in *@store (json-c), now the caller's (ckpt_config_free()).
 */
void mig_in_take_config(struct mig_in *m, struct vm_config *cfg, struct json_object **store);
/* The VM was built from it (not booted, not started), or could not be (@err, @msg). */
void mig_in_built(struct mig_in *m, struct vm *vm, int err, const char *msg);
/* MIG_EV_APPLY: load KVM, vCPU and device state into the VM (paused after). */
void mig_in_apply(struct mig_in *m);
/* Whether the VM ran on the source when it paused (then it runs here). */
bool mig_in_run(const struct mig_in *m);
void mig_in_started(struct mig_in *m, int err, const char *msg);
void mig_in_stats(struct mig_in *m, struct mig_stats *st);
/* After MIG_EV_ENDED (or to abandon it: stops the worker): 0 once the VM runs here. */
int mig_in_finish(struct mig_in *m, struct mig_stats *st, struct qerr *e);
void mig_in_free(struct mig_in *m);

#endif
