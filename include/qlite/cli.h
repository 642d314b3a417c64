/* SPDX-License-Identifier: MIT */
/* Command-line parsing for the qlite subcommands (pure; no side effects). */
#ifndef QLITE_CLI_H
#define QLITE_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include "qlite/mem.h"
#include "qlite/profile.h"
#include "qlite/util.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"
#include "qlite/vpmu.h"

#define CLI_DEFAULT_MEM (512 * MiB)
#define CLI_MIN_MEM (16 * MiB)
#define CLI_MAX_DISKS 8
#define CLI_MAX_NETS 4

struct run_options {
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	uint64_t mem_size;
	enum mem_backend mem_backend;
	unsigned int ncpus;
	bool no_reboot;
	bool console; /* false: --console none */
	bool console_virtio; /* --console virtio */
	bool help;
	bool paused; /* -S */
	const char *qmp;
	const char *name;
	bool rng;
	bool balloon;
	bool balloon_no_reporting;
	struct disk_config disks[CLI_MAX_DISKS];
	unsigned int ndisks;
	char *disk_specs[CLI_MAX_DISKS]; /* copies the disks point into */
	struct net_config nets[CLI_MAX_NETS];
	unsigned int nnets;
	char *net_specs[CLI_MAX_NETS];
	struct vpmu_config pmu; /* --pmu */
	enum vm_dirty_ring dirty_ring; /* --dirty-ring (host-local: --restore, --incoming too) */
	unsigned int dirty_ring_entries; /* --dirty-ring=ENTRIES; 0: the default */
	const char *restore; /* --restore DIR */
	const char *incoming; /* --incoming URI|defer */
	bool restore_eager; /* --restore-mode eager */
	bool restore_mode_given;
	/* The first option given that shapes the VM (which --restore takes from the checkpoint). */
	const char *vm_opt;
};

/* `qlite status|pause|resume|powerdown|quit|events|qmp --qmp PATH [--json]` */
struct client_options {
	const char *command;
	const char *execute; /* qlite qmp: the command */
	const char *arguments; /* qlite qmp: JSON object text */
	const char *qmp;
	bool json;
	bool help;
};

int cli_parse_client(int argc, char **argv, struct client_options *o, struct qerr *e);

#define CLI_PROFILE_DEFAULT_DURATION (10ULL * 1000000000ULL)
#define CLI_PROFILE_MIN_DURATION (100ULL * 1000000ULL)
#define CLI_PROFILE_MAX_DURATION (24ULL * 3600 * 1000000000ULL)
#define CLI_PROFILE_DEFAULT_TOP 15
#define CLI_PROFILE_DEFAULT_REFRESH (1000000000ULL)

/* `qlite profile --qmp PATH [--duration D] [--freq HZ] [--symbols FILE] ...` */
struct profile_options {
	const char *qmp;
	uint64_t duration_ns;
	unsigned int freq;
	enum profile_method method;
	const char *symbols; /* System.map, kallsyms or vmlinux */
	const char *user_symbols; /* ELF or map for user-space addresses */
	const char *out; /* output directory */
	unsigned int top;
	uint64_t refresh_ns; /* live table refresh; 0: none (least overhead) */
	bool kaslr_given;
	int64_t kaslr_offset;
	bool help;
};

int cli_parse_profile(int argc, char **argv, struct profile_options *o, struct qerr *e);
/* "10s", "500ms", "2m", "1h", or seconds ("10"). */
int cli_parse_duration(const char *s, uint64_t *ns);
extern const char cli_profile_usage[];
/* `qlite snapshot save|load --qmp PATH DIR [...]` */
struct snapshot_options {
	const char *action; /* "save" or "load" */
	const char *qmp;
	const char *dir;
	bool stop, incremental, no_elide, json, eager, help;
};

int cli_parse_snapshot(int argc, char **argv, struct snapshot_options *o, struct qerr *e);
extern const char cli_snapshot_usage[];

enum cli_postcopy {
	CLI_POSTCOPY_OFF,
	CLI_POSTCOPY_ON, /* --postcopy */
	CLI_POSTCOPY_AUTO, /* --postcopy=auto */
};

/* `qlite migrate --qmp PATH URI [--wait] [--json] [...]` */
struct migrate_options {
	const char *qmp;
	const char *uri;
	bool wait, json, help;
	enum cli_postcopy postcopy;
	bool max_bandwidth_given, downtime_given;
	uint64_t max_bandwidth; /* bytes/s */
	uint64_t downtime_ms;
};

int cli_parse_migrate(int argc, char **argv, struct migrate_options *o, struct qerr *e);
extern const char cli_migrate_usage[];
bool cli_is_client_command(const char *name);
extern const char cli_client_usage[];

/*
 * Parse `qlite run` arguments (argv[0] is "run"). @host_mem and @max_cpus
 * bound --mem and --cpus (0: unchecked). Returns 0 or -errno with a
 * one-line message in @e.
 */
int cli_parse_run(int argc, char **argv, uint64_t host_mem, unsigned int max_cpus,
		  struct run_options *o, struct qerr *e);
/* Free what cli_parse_run allocated (the --disk copies). */
void cli_run_options_free(struct run_options *o);
/* "path=FILE[,readonly=on][,direct=on][,serial=S]" into @dc; @spec is modified. */
int cli_parse_disk(char *spec, struct disk_config *dc, struct qerr *e);
/* "tap=NAME|fd=N[,mac=52:54:00:12:34:56]" into @nc; @spec is modified. */
int cli_parse_net(char *spec, struct net_config *nc, struct qerr *e);
extern const char cli_run_usage[];
extern const char cli_main_usage[];

#endif
