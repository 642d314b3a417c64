// SPDX-License-Identifier: MIT
/* QMP commands: names, arguments and results as QEMU's schema has them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "qlite/ctl.h"
#include "qlite/profile.h"
#include "qlite/vcpu.h"
#include "qlite/virtio.h"
#include "qmp_internal.h"

static int need_vm(struct ctl *c, struct qerr *e)
{
	return c->vm ? 0 : qerr_set(e, ENODEV, "no VM");
}

static int cmd_qmp_capabilities(struct ctl *c, struct json_object *args,
				struct json_object **ret, struct qerr *e)
{
	struct json_object *en;

	/* No optional capabilities (oob) are offered, so none may be enabled. */
	if (args && json_object_object_get_ex(args, "enable", &en) &&
	    json_object_array_length(en) > 0)
		return qerr_set(e, EINVAL, "Capability '%s' not available",
				json_object_get_string(json_object_array_get_idx(en, 0)));
	return 0;
}

static int cmd_query_version(struct ctl *c, struct json_object *args, struct json_object **ret,
			     struct qerr *e)
{
	*ret = qmp_version_reply();
	return 0;
}

static int cmd_query_status(struct ctl *c, struct json_object *args, struct json_object **ret,
			    struct qerr *e)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "running", json_object_new_boolean(ctl_running(c)));
	json_object_object_add(o, "singlestep", json_object_new_boolean(false));
	json_object_object_add(o, "status", json_object_new_string(runstate_name(c->state)));
	*ret = o;
	return 0;
}

static int cmd_query_name(struct ctl *c, struct json_object *args, struct json_object **ret,
			  struct qerr *e)
{
	struct json_object *o = json_object_new_object();

	if (c->cfg.name)
		json_object_object_add(o, "name", json_object_new_string(c->cfg.name));
	*ret = o;
	return 0;
}

static int cmd_query_commands(struct ctl *c, struct json_object *args,
			      struct json_object **ret, struct qerr *e);

static int cmd_stop(struct ctl *c, struct json_object *args, struct json_object **ret,
		    struct qerr *e)
{
	return need_vm(c, e) ?: ctl_stop(c, e);
}

static int cmd_cont(struct ctl *c, struct json_object *args, struct json_object **ret,
		    struct qerr *e)
{
	return need_vm(c, e) ?: ctl_cont(c, e);
}

static int cmd_need_vm(struct ctl *c, struct json_object *args, struct json_object **ret,
		       struct qerr *e)
{
	return need_vm(c, e);
}

static int cmd_quit(struct ctl *c, struct json_object *args, struct json_object **ret,
		    struct qerr *e)
{
	return 0;
}

static void after_powerdown(struct ctl *c)
{
	ctl_powerdown(c);
}

static void after_reset(struct ctl *c)
{
	ctl_reset(c);
}

static void after_quit(struct ctl *c)
{
	ctl_quit(c, "host-qmp-quit"); /* with no VM yet (--incoming), the wait ends */
}

static int cmd_query_cpus_fast(struct ctl *c, struct json_object *args,
			       struct json_object **ret, struct qerr *e)
{
	struct json_object *list;
	unsigned int i;

	if (need_vm(c, e))
		return -ENODEV;
	list = json_object_new_array();
	for (i = 0; i < c->vm->ncpus; i++) {
		struct json_object *o = json_object_new_object();
		struct json_object *props = json_object_new_object();
		char path[64];

		snprintf(path, sizeof(path), "/machine/unattached/device[%u]", i);
		json_object_object_add(o, "cpu-index", json_object_new_int(i));
		json_object_object_add(o, "qom-path", json_object_new_string(path));
		json_object_object_add(o, "thread-id", json_object_new_int(c->vm->vcpus[i]->tid));
		/* One socket per vCPU, as the MADT/CPUID describe them. */
		json_object_object_add(props, "core-id", json_object_new_int(0));
		json_object_object_add(props, "thread-id", json_object_new_int(0));
		json_object_object_add(props, "socket-id", json_object_new_int(i));
		json_object_object_add(o, "props", props);
		json_object_object_add(o, "target", json_object_new_string("x86_64"));
		json_object_array_add(list, o);
	}
	*ret = list;
	return 0;
}

/* QEMU's BlockInfo for each virtio-blk disk. */
static int cmd_query_block(struct ctl *c, struct json_object *args, struct json_object **ret,
			   struct qerr *e)
{
	struct json_object *list = json_object_new_array();
	struct blk_disk_info di;
	struct vblk *b = NULL;

	while (c->vm && (b = virtio_blk_next(c->vm, b, &di))) {
		struct json_object *o = json_object_new_object(), *ins = json_object_new_object();

		json_object_object_add(o, "device", json_object_new_string(di.name));
		json_object_object_add(o, "qdev", json_object_new_string(di.name));
		json_object_object_add(o, "type", json_object_new_string("unknown"));
		json_object_object_add(o, "removable", json_object_new_boolean(false));
		json_object_object_add(o, "locked", json_object_new_boolean(false));
		json_object_object_add(ins, "file", json_object_new_string(di.path));
		json_object_object_add(ins, "ro", json_object_new_boolean(di.readonly));
		json_object_object_add(ins, "drv", json_object_new_string("raw"));
		json_object_object_add(ins, "encrypted", json_object_new_boolean(false));
		json_object_object_add(ins, "image", json_object_new_object());
		json_object_object_add(json_object_object_get(ins, "image"), "virtual-size",
				       json_object_new_int64((int64_t)di.size));
		json_object_object_add(json_object_object_get(ins, "image"), "filename",
				       json_object_new_string(di.path));
		json_object_object_add(json_object_object_get(ins, "image"), "format",
				       json_object_new_string("raw"));
		json_object_object_add(o, "inserted", ins);
		json_object_array_add(list, o);
	}
	*ret = list;
	return 0;
}

/* QEMU's BlockStats (the counters qlite keeps) for each disk. */
static int cmd_query_blockstats(struct ctl *c, struct json_object *args,
				struct json_object **ret, struct qerr *e)
{
	struct json_object *list = json_object_new_array();
	struct blk_disk_info di;
	struct vblk *b = NULL;

	while (c->vm && (b = virtio_blk_next(c->vm, b, &di))) {
		struct json_object *o = json_object_new_object(), *st = json_object_new_object();

		json_object_object_add(o, "device", json_object_new_string(di.name));
		json_object_object_add(o, "qdev", json_object_new_string(di.name));
		json_object_object_add(st, "rd_bytes", json_object_new_int64(di.stats.rd_bytes));
		json_object_object_add(st, "wr_bytes", json_object_new_int64(di.stats.wr_bytes));
		json_object_object_add(st, "rd_operations", json_object_new_int64(di.stats.rd_ops));
		json_object_object_add(st, "wr_operations", json_object_new_int64(di.stats.wr_ops));
		json_object_object_add(st, "flush_operations",
				       json_object_new_int64(di.stats.flush_ops));
		json_object_object_add(st, "failed_rd_operations", json_object_new_int64(0));
		json_object_object_add(st, "x-failed-operations",
				       json_object_new_int64(di.stats.failed_ops));
		json_object_object_add(st, "x-coalesce", json_object_new_boolean(di.stats.coalesce));
		json_object_object_add(st, "x-coalesce-windows",
				       json_object_new_int64(di.stats.coalesce_windows));
		json_object_object_add(st, "x-coalesced-requests",
				       json_object_new_int64(di.stats.coalesced_reqs));
		json_object_object_add(st, "x-coalesce-tick-ns",
				       json_object_new_int64(di.stats.coalesce_tick_ns));
		json_object_object_add(o, "stats", st);
		json_object_array_add(list, o);
	}
	*ret = list;
	return 0;
}

static int cmd_query_kvm(struct ctl *c, struct json_object *args, struct json_object **ret,
			 struct qerr *e)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "enabled", json_object_new_boolean(true));
	json_object_object_add(o, "present", json_object_new_boolean(true));
	*ret = o;
	return 0;
}

static int cmd_balloon(struct ctl *c, struct json_object *args, struct json_object **ret,
		       struct qerr *e)
{
	struct json_object *v;
	int64_t bytes;

	if (need_vm(c, e))
		return -ENODEV;
	json_object_object_get_ex(args, "value", &v);
	bytes = json_object_get_int64(v);
	if (bytes <= 0)
		return qerr_set(e, EINVAL, "Parameter 'value' expects a size greater than 0");
	if (virtio_balloon_set_target(c->vm, (uint64_t)bytes))
		return qerr_set(e, ENODEV, "No balloon device has been activated");
	return 0;
}

static const char *const stat_names[BALLOON_STAT_MAX] = {
	"stat-swap-in",	     "stat-swap-out",	      "stat-major-faults",
	"stat-minor-faults", "stat-free-memory",      "stat-total-memory",
	"stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc",
	"stat-htlb-pgfail",
};

static int cmd_query_balloon(struct ctl *c, struct json_object *args, struct json_object **ret,
			     struct qerr *e)
{
	struct balloon_stats st;
	struct json_object *o, *stats;
	uint64_t actual;
	unsigned int i;

	if (need_vm(c, e))
		return -ENODEV;
	if (virtio_balloon_query(c->vm, &actual, &st))
		return qerr_set(e, ENODEV, "No balloon device has been activated");
	o = json_object_new_object();
	json_object_object_add(o, "actual", json_object_new_int64((int64_t)actual));
	/* QEMU's guest-stats names; only what the driver reported so far. */
	stats = json_object_new_object();
	for (i = 0; i < BALLOON_STAT_MAX; i++)
		if (st.valid & (1u << i))
			json_object_object_add(stats, stat_names[i],
					       json_object_new_int64((int64_t)st.val[i]));
	json_object_object_add(o, "x-guest-stats", stats);
	*ret = o;
	return 0;
}

static const struct qmp_arg args_balloon[] = {
	{ "value", QMP_ARG_INT, true },
	{ NULL },
};

/*
 * Guest profiler (qlite extension; docs/profiling.md). profile-start takes
 * frequency (Hz, default 999), method ("timer", "kick", "perf") and
 * duration (ms; the session stops by itself and sends PROFILE_STOPPED).
 */
static int cmd_profile_start(struct ctl *c, struct json_object *args, struct json_object **ret,
			     struct qerr *e)
{
	struct profile_params pp = { .freq = PROFILE_DEFAULT_FREQ,
				     .method = PROFILE_METHOD_TIMER };
	struct json_object *v;

	if (args && json_object_object_get_ex(args, "frequency", &v)) {
		int64_t f = json_object_get_int64(v);

		if (f < PROFILE_MIN_FREQ || f > PROFILE_MAX_FREQ)
			return qerr_set(e, ERANGE, "frequency %lld Hz is out of range (%u..%u Hz)",
					(long long)f, PROFILE_MIN_FREQ, PROFILE_MAX_FREQ);
		pp.freq = (unsigned int)f;
	}
	if (args && json_object_object_get_ex(args, "method", &v) &&
	    profile_method_parse(json_object_get_string(v), &pp.method))
		return qerr_set(e, EINVAL, "method '%.32s': expected timer, kick or perf",
				json_object_get_string(v));
	if (args && json_object_object_get_ex(args, "duration", &v)) {
		int64_t ms = json_object_get_int64(v);

		if (ms <= 0 || ms > 7 * 24 * 3600 * 1000LL)
			return qerr_set(e, ERANGE, "duration %lld ms is out of range", (long long)ms);
		pp.duration_ns = (uint64_t)ms * 1000000ULL;
	}
	return ctl_profile_start(c, &pp, e);
}

static int profile_reply(int ret, struct profile_data *d, struct json_object **out)
{
	if (ret)
		return ret;
	*out = profile_data_to_json(d);
	profile_data_free(d);
	return 0;
}

static int cmd_profile_stop(struct ctl *c, struct json_object *args, struct json_object **ret,
			    struct qerr *e)
{
	struct profile_data d;

	return profile_reply(ctl_profile_stop(c, &d, e), &d, ret);
}

static int cmd_query_profile(struct ctl *c, struct json_object *args, struct json_object **ret,
			     struct qerr *e)
{
	struct profile_data d;

	return profile_reply(ctl_profile_query(c, &d, e), &d, ret);
}

static const struct qmp_arg args_profile_start[] = {
	{ "frequency", QMP_ARG_INT, false },
	{ "method", QMP_ARG_STRING, false },
	{ "duration", QMP_ARG_INT, false },
	{ NULL },
};

/*
 * Checkpoints (qlite's own names; QEMU's snapshot-save is a job over
 * qcow2 internal snapshots, which qlite does not have): docs/checkpoint.md.
 */
static bool arg_bool(struct json_object *args, const char *name)
{
	struct json_object *v;

	return args && json_object_object_get_ex(args, name, &v) && json_object_get_boolean(v);
}

static int cmd_snapshot_save(struct ctl *c, struct json_object *args, struct json_object **ret,
			     struct qerr *e)
{
	struct ckpt_params p = { 0 };
	struct json_object *v;

	if (!json_object_object_get_ex(args, "dir", &v) || !json_object_get_string_len(v))
		return qerr_set(e, EINVAL, "Parameter 'dir' is missing");
	p.dir = json_object_get_string(v);
	p.stop = arg_bool(args, "stop");
	p.incremental = arg_bool(args, "incremental");
	p.no_elide = args && json_object_object_get_ex(args, "elide", &v) &&
		     !json_object_get_boolean(v);
	return ctl_snapshot_save(c, &p, e);
}

static int restore_mode_arg(struct json_object *args, enum ckpt_restore_mode *m, struct qerr *e)
{
	struct json_object *v;
	const char *s;

	*m = CKPT_RESTORE_LAZY;
	if (!args || !json_object_object_get_ex(args, "mode", &v))
		return 0;
	s = json_object_get_string(v);
	if (!strcmp(s, "lazy"))
		return 0;
	if (!strcmp(s, "eager")) {
		*m = CKPT_RESTORE_EAGER;
		return 0;
	}
	return qerr_set(e, EINVAL, "mode '%.32s': expected lazy or eager", s);
}

static int cmd_snapshot_load(struct ctl *c, struct json_object *args, struct json_object **ret,
			     struct qerr *e)
{
	enum ckpt_restore_mode mode;
	struct json_object *v;

	if (!json_object_object_get_ex(args, "dir", &v) || !json_object_get_string_len(v))
		return qerr_set(e, EINVAL, "Parameter 'dir' is missing");
	return restore_mode_arg(args, &mode, e) ?: ctl_snapshot_load(c, json_object_get_string(v),
								      mode, e);
}

static int cmd_query_snapshot(struct ctl *c, struct json_object *args, struct json_object **ret,
			      struct qerr *e)
{
	static const char *const names[] = { "none", "active", "completed", "failed" };
	struct json_object *o = json_object_new_object();
	struct ckpt_restore_stats rs;

	json_object_object_add(o, "status", json_object_new_string(names[c->snap_status]));
	if (c->snap_status == SNAP_ACTIVE) {
		uint64_t bytes, done, total, ns;

		ckpt_job_progress(c->snap, &bytes, &done, &total, &ns);
		json_object_object_add(o, "dir", json_object_new_string(c->snap_dir));
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)bytes));
		json_object_object_add(o, "pages-done", json_object_new_int64((int64_t)done));
		json_object_object_add(o, "pages-total", json_object_new_int64((int64_t)total));
	} else if (c->snap_status == SNAP_COMPLETED) {
		json_object_object_add(o, "last", ctl_snapshot_stats_json(c));
	} else if (c->snap_status == SNAP_FAILED) {
		json_object_object_add(o, "dir", json_object_new_string(c->snap_dir));
		json_object_object_add(o, "error", json_object_new_string(c->snap_error));
	}
	if (c->vm && c->vm->ckpt) {
		ckpt_restore_stats(c->vm, &rs);
		if (rs.to_running_ns) {
			struct json_object *r = json_object_new_object();

			json_object_object_add(r, "mode", json_object_new_string(
				rs.mode == CKPT_RESTORE_EAGER ? "eager" : "lazy"));
			json_object_object_add(r, "to-running-ms",
					       json_object_new_double((double)rs.to_running_ns / 1e6));
			if (rs.total_ns)
				json_object_object_add(r, "total-ms",
						       json_object_new_double((double)rs.total_ns / 1e6));
			json_object_object_add(r, "done", json_object_new_boolean(rs.done));
			json_object_object_add(r, "faults", json_object_new_int64((int64_t)rs.faults));
			json_object_object_add(r, "prefetched",
					       json_object_new_int64((int64_t)rs.prefetched));
			json_object_object_add(r, "fault-p50-us",
					       json_object_new_double((double)rs.fault_p50_ns / 1e3));
			json_object_object_add(r, "fault-p99-us",
					       json_object_new_double((double)rs.fault_p99_ns / 1e3));
			json_object_object_add(o, "restore", r);
		}
	}
	*ret = o;
	return 0;
}

static const struct qmp_arg args_snapshot_save[] = {
	{ "dir", QMP_ARG_STRING, true },
	{ "stop", QMP_ARG_BOOL, false },
	{ "incremental", QMP_ARG_BOOL, false },
	{ "elide", QMP_ARG_BOOL, false },
	{ NULL },
};

static const struct qmp_arg args_snapshot_load[] = {
	{ "dir", QMP_ARG_STRING, true },
	{ "mode", QMP_ARG_STRING, false },
	{ NULL },
};

/*
 * Live migration: QEMU's commands, arguments and result shapes, so its
 * tooling carries over (docs/migration.md).
 */
static int cmd_migrate(struct ctl *c, struct json_object *args, struct json_object **ret,
		       struct qerr *e)
{
	struct json_object *v;

	if (arg_bool(args, "blk") || arg_bool(args, "inc"))
		return qerr_set(e, ENOTSUP,
				"block migration is not supported: the disks must be on storage both hosts share");
	json_object_object_get_ex(args, "uri", &v);
	if (arg_bool(args, "resume"))
		return ctl_migrate_resume(c, json_object_get_string(v), e);
	return ctl_migrate(c, json_object_get_string(v), e);
}

static int cmd_migrate_recover(struct ctl *c, struct json_object *args, struct json_object **ret,
			       struct qerr *e)
{
	struct json_object *v;

	json_object_object_get_ex(args, "uri", &v);
	return ctl_migrate_recover(c, json_object_get_string(v), e);
}

static int cmd_migrate_incoming(struct ctl *c, struct json_object *args,
				struct json_object **ret, struct qerr *e)
{
	struct json_object *v;

	json_object_object_get_ex(args, "uri", &v);
	return ctl_migrate_incoming(c, json_object_get_string(v), e);
}

static int cmd_query_migrate(struct ctl *c, struct json_object *args, struct json_object **ret,
			     struct qerr *e)
{
	*ret = ctl_migrate_info_json(c);
	return 0;
}

static int cmd_migrate_cancel(struct ctl *c, struct json_object *args, struct json_object **ret,
			      struct qerr *e)
{
	return ctl_migrate_cancel(c, e);
}

static int cmd_migrate_start_postcopy(struct ctl *c, struct json_object *args,
				      struct json_object **ret, struct qerr *e)
{
	return ctl_migrate_start_postcopy(c, e);
}

/* Capabilities qlite has; any other may be set to false (it is off). */
static const char *const mig_caps[] = { "postcopy-ram", "events", "return-path" };

static bool *mig_cap(struct mig_params *p, const char *name)
{
	if (!strcmp(name, "postcopy-ram"))
		return &p->postcopy_ram;
	if (!strcmp(name, "events"))
		return &p->events;
	return NULL;
}

static int cmd_migrate_set_capabilities(struct ctl *c, struct json_object *args,
					struct json_object **ret, struct qerr *e)
{
	struct mig_params p = c->mig_params;
	struct json_object *list, *item, *name, *state;
	size_t i, n;

	if (c->mig_out || c->mig_in)
		return qerr_set(e, EBUSY, "There's a migration process in progress");
	json_object_object_get_ex(args, "capabilities", &list);
	n = json_object_array_length(list);
	for (i = 0; i < n; i++) {
		const char *cap;
		bool on, *slot;

		item = json_object_array_get_idx(list, i);
		if (!json_object_is_type(item, json_type_object) ||
		    !json_object_object_get_ex(item, "capability", &name) ||
		    !json_object_is_type(name, json_type_string) ||
		    !json_object_object_get_ex(item, "state", &state) ||
		    !json_object_is_type(state, json_type_boolean) ||
		    json_object_object_length(item) != 2)
			return qerr_set(e, EINVAL,
					"capabilities[%zu]: expected {\"capability\": NAME, \"state\": BOOL}", i);
		cap = json_object_get_string(name);
		on = json_object_get_boolean(state);
		slot = mig_cap(&p, cap);
		if (slot)
			*slot = on;
		else if (on && strcmp(cap, "return-path")) /* qlite always has one */
			return qerr_set(e, ENOTSUP, "migration capability '%.64s' is not supported by qlite",
					cap);
	}
	return ctl_migrate_set_params(c, &p, e);
}

static int cmd_query_migrate_capabilities(struct ctl *c, struct json_object *args,
					  struct json_object **ret, struct qerr *e)
{
	struct json_object *list = json_object_new_array();
	struct mig_params p = c->mig_params;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(mig_caps); i++) {
		struct json_object *o = json_object_new_object();
		bool *slot = mig_cap(&p, mig_caps[i]);

		json_object_object_add(o, "capability", json_object_new_string(mig_caps[i]));
		json_object_object_add(o, "state", json_object_new_boolean(slot ? *slot : true));
		json_object_array_add(list, o);
	}
	*ret = list;
	return 0;
}

static int cmd_migrate_set_parameters(struct ctl *c, struct json_object *args,
				      struct json_object **ret, struct qerr *e)
{
	struct mig_params p = c->mig_params;
	struct json_object *v;

	if (args && json_object_object_get_ex(args, "max-bandwidth", &v)) {
		int64_t bw = json_object_get_int64(v);

		if (bw < 0)
			return qerr_set(e, EINVAL,
					"Parameter 'max-bandwidth' expects a size in bytes per second (0: unlimited)");
		p.max_bandwidth = (uint64_t)bw;
	}
	if (args && json_object_object_get_ex(args, "downtime-limit", &v)) {
		int64_t ms = json_object_get_int64(v);

		if (ms < 0 || (uint64_t)ms > MIG_MAX_DOWNTIME_MS)
			return qerr_set(e, EINVAL,
					"Parameter 'downtime-limit' expects an integer in the range of 0 to %llu milliseconds",
					(unsigned long long)MIG_MAX_DOWNTIME_MS);
		p.downtime_limit_ms = (uint64_t)ms;
	}
	if (args && json_object_object_get_ex(args, "x-prepage-pivots", &v)) {
		int64_t n = json_object_get_int64(v);

		if (n < 0 || n > MIG_MAX_PREPAGE_PIVOTS)
			return qerr_set(e, EINVAL,
					"Parameter 'x-prepage-pivots' expects an integer in the range of 0 to %d (0: no pre-paging)",
					MIG_MAX_PREPAGE_PIVOTS);
		p.prepage_pivots = (unsigned int)n;
	}
	return ctl_migrate_set_params(c, &p, e);
}

static int cmd_query_migrate_parameters(struct ctl *c, struct json_object *args,
					struct json_object **ret, struct qerr *e)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "max-bandwidth",
			       json_object_new_int64((int64_t)c->mig_params.max_bandwidth));
	json_object_object_add(o, "downtime-limit",
			       json_object_new_int64((int64_t)c->mig_params.downtime_limit_ms));
	json_object_object_add(o, "x-prepage-pivots",
			       json_object_new_int(c->mig_params.prepage_pivots));
	*ret = o;
	return 0;
}

static const struct qmp_arg args_migrate[] = {
	{ "uri", QMP_ARG_STRING, true },
	{ "blk", QMP_ARG_BOOL, false },
	{ "inc", QMP_ARG_BOOL, false },
	{ "detach", QMP_ARG_BOOL, false },
	{ "resume", QMP_ARG_BOOL, false },
	{ NULL },
};

static const struct qmp_arg args_migrate_incoming[] = {
	{ "uri", QMP_ARG_STRING, true },
	{ NULL },
};

static const struct qmp_arg args_migrate_caps[] = {
	{ "capabilities", QMP_ARG_ARRAY, true },
	{ NULL },
};

static const struct qmp_arg args_migrate_params[] = {
	{ "max-bandwidth", QMP_ARG_INT, false },
	{ "downtime-limit", QMP_ARG_INT, false },
	{ "x-prepage-pivots", QMP_ARG_INT, false },
	{ NULL },
};

static const struct qmp_arg args_capabilities[] = {
	{ "enable", QMP_ARG_ARRAY, false },
	{ NULL },
};

static const struct qmp_arg args_query_blockstats[] = {
	{ "query-nodes", QMP_ARG_BOOL, false },
	{ NULL },
};

static const struct qmp_arg args_query_block[] = {
	{ NULL },
};

static const struct qmp_command commands[] = {
	{ "qmp_capabilities", cmd_qmp_capabilities, NULL, args_capabilities },
	{ "query-version", cmd_query_version },
	{ "query-status", cmd_query_status },
	{ "query-name", cmd_query_name },
	{ "query-commands", cmd_query_commands },
	{ "stop", cmd_stop },
	{ "cont", cmd_cont },
	{ "system_powerdown", cmd_need_vm, after_powerdown },
	{ "system_reset", cmd_need_vm, after_reset },
	{ "quit", cmd_quit, after_quit },
	{ "query-cpus-fast", cmd_query_cpus_fast },
	{ "query-block", cmd_query_block, NULL, args_query_block },
	{ "query-blockstats", cmd_query_blockstats, NULL, args_query_blockstats },
	{ "query-kvm", cmd_query_kvm },
	{ "balloon", cmd_balloon, NULL, args_balloon },
	{ "query-balloon", cmd_query_balloon },
	{ "profile-start", cmd_profile_start, NULL, args_profile_start },
	{ "profile-stop", cmd_profile_stop },
	{ "query-profile", cmd_query_profile },
	{ "snapshot-save", cmd_snapshot_save, NULL, args_snapshot_save },
	{ "snapshot-load", cmd_snapshot_load, NULL, args_snapshot_load },
	{ "query-snapshot", cmd_query_snapshot },
	{ "migrate", cmd_migrate, NULL, args_migrate },
	{ "migrate-incoming", cmd_migrate_incoming, NULL, args_migrate_incoming },
	{ "migrate-recover", cmd_migrate_recover, NULL, args_migrate_incoming },
	{ "query-migrate", cmd_query_migrate },
	{ "migrate-cancel", cmd_migrate_cancel },
	{ "migrate-start-postcopy", cmd_migrate_start_postcopy },
	{ "migrate-set-capabilities", cmd_migrate_set_capabilities, NULL, args_migrate_caps },
	{ "query-migrate-capabilities", cmd_query_migrate_capabilities },
	{ "migrate-set-parameters", cmd_migrate_set_parameters, NULL, args_migrate_params },
	{ "query-migrate-parameters", cmd_query_migrate_parameters },
};

static int cmd_query_commands(struct ctl *c, struct json_object *args,
			      struct json_object **ret, struct qerr *e)
{
	struct json_object *list = json_object_new_array();
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(commands); i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "name", json_object_new_string(commands[i].name));
		json_object_array_add(list, o);
	}
	*ret = list;
	return 0;
}

const struct qmp_command *qmp_command_find(const char *name)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static const char *const type_names[] = {
	[QMP_ARG_STRING] = "string", [QMP_ARG_BOOL] = "boolean", [QMP_ARG_INT] = "int",
	[QMP_ARG_ARRAY] = "array",   [QMP_ARG_OBJECT] = "object",
};

static bool arg_type_ok(struct json_object *v, enum qmp_arg_type t)
{
	switch (t) {
	case QMP_ARG_STRING:
		return json_object_is_type(v, json_type_string);
	case QMP_ARG_BOOL:
		return json_object_is_type(v, json_type_boolean);
	case QMP_ARG_INT:
		return json_object_is_type(v, json_type_int);
	case QMP_ARG_ARRAY:
		return json_object_is_type(v, json_type_array);
	case QMP_ARG_OBJECT:
		return json_object_is_type(v, json_type_object);
	}
	return false;
}

int qmp_check_args(const struct qmp_command *cmd, struct json_object *args, struct qerr *e)
{
	const struct qmp_arg *a;

	if (args) {
		json_object_object_foreach(args, key, val)
		{
			for (a = cmd->args; a && a->name; a++)
				if (!strcmp(a->name, key))
					break;
			if (!a || !a->name)
				return qerr_set(e, EINVAL, "Parameter '%.64s' is unexpected", key);
			if (!arg_type_ok(val, a->type))
				return qerr_set(e, EINVAL,
						"Invalid parameter type for '%s', expected: %s",
						a->name, type_names[a->type]);
		}
	}
	for (a = cmd->args; a && a->name; a++) {
		struct json_object *v;

		if (a->required && (!args || !json_object_object_get_ex(args, a->name, &v)))
			return qerr_set(e, EINVAL, "Parameter '%s' is missing", a->name);
	}
	return 0;
}
