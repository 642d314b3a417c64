// SPDX-License-Identifier: MIT
/* qlite entry point: subcommand dispatch, terminal and signal set-up. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/sysinfo.h>
#include <termios.h>
#include <unistd.h>

#include "qlite/boot.h"
#include "qlite/checkpoint.h"
#include "qlite/cli.h"
#include "qlite/client.h"
#include "qlite/ctl.h"
#include "version.h"
#include "qlite/vm.h"

enum {
	EXIT_OK = 0,
	EXIT_SETUP = 1,
	EXIT_GUEST_CRASH = 2,
};

/*
 * The terminal is process state, not VM state: the saved mode must be
 * reachable from the fatal-signal handler, hence file scope.
 */
static struct termios saved_tty;
static volatile sig_atomic_t tty_saved;

static void tty_restore(void)
{
	if (tty_saved) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
		tty_saved = 0;
	}
}

static void fatal_signal(int sig)
{
	tty_restore();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void tty_make_raw(void)
{
	struct termios t;
	static const int fatal[] = { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL };
	unsigned int i;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) < 0)
		return;
	t = saved_tty;
	cfmakeraw(&t);
	/* Keep output post-processing off too: the guest sends its own CRLF. */
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) < 0)
		return;
	tty_saved = 1;
	atexit(tty_restore);
	for (i = 0; i < ARRAY_SIZE(fatal); i++)
		signal(fatal[i], fatal_signal);
}

static int signals_setup(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	/* Blocked before any thread exists, so only the signalfd sees them. */
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int linux_boot(struct vm *vm, void *opaque, struct qerr *e)
{
	(void)opaque;
	return linux_boot_setup(vm, e);
}

static int run_exit_status(enum vm_stop_reason why)
{
	switch (why) {
	case VM_STOP_POWEROFF:
	case VM_STOP_QUIT:
		return EXIT_OK;
	case VM_STOP_RESET: /* only returns with --no-reboot */
		log_msg("guest reset; exiting (--no-reboot)");
		return EXIT_OK;
	case VM_STOP_GUEST_CRASH:
		log_msg("guest crashed; exiting");
		return EXIT_GUEST_CRASH;
	default:
		log_msg("VMM failure; exiting");
		return EXIT_GUEST_CRASH;
	}
}

/* qlite run --restore DIR: the VM's configuration comes from the checkpoint. */
static int cmd_run_restore(struct run_options *o)
{
	struct json_object *store = NULL;
	struct ctl_config cfg;
	struct ctl *ctl;
	struct qerr e = { 0 };
	enum vm_stop_reason why;
	int sfd, ret;

	memset(&cfg, 0, sizeof(cfg));
	if (ckpt_read_config(o->restore, &cfg.vm, &store, &e)) {
		fprintf(stderr, "qlite run: %s\n", e.msg);
		return EXIT_SETUP;
	}
	/* Disks and NICs may have moved: given again, they replace the recorded ones. */
	if (o->ndisks) {
		if (o->ndisks != cfg.vm.ndisks) {
			fprintf(stderr,
				"qlite run: the checkpoint has %u disk(s); --disk was given %u time(s)\n",
				cfg.vm.ndisks, o->ndisks);
			ckpt_config_free(store);
			return EXIT_SETUP;
		}
		cfg.vm.disks = o->disks;
	}
	if (o->nnets) {
		if (o->nnets != cfg.vm.nnets) {
			fprintf(stderr,
				"qlite run: the checkpoint has %u NIC(s); --net was given %u time(s)\n",
				cfg.vm.nnets, o->nnets);
			ckpt_config_free(store);
			return EXIT_SETUP;
		}
		cfg.vm.nets = o->nets;
	}
	for (unsigned int i = 0; i < cfg.vm.nnets; i++) {
		if (!cfg.vm.nets[i].tap && cfg.vm.nets[i].fd < 0) {
			fprintf(stderr,
				"qlite run: NIC %u was on an inherited tap fd: give it again with --net\n",
				i);
			ckpt_config_free(store);
			return EXIT_SETUP;
		}
	}
	if (o->no_reboot)
		cfg.vm.no_reboot = true;
	cfg.vm.dirty_ring = o->dirty_ring;
	cfg.vm.dirty_ring_entries = o->dirty_ring_entries;
	sfd = signals_setup();
	cfg.vm.console_in = o->console ? STDIN_FILENO : -1;
	cfg.vm.console_out = o->console ? STDOUT_FILENO : -1;
	cfg.start_paused = o->paused;
	cfg.boot = cfg.vm.kernel ? linux_boot : NULL; /* a reset boots the recorded kernel */
	cfg.qmp = o->qmp;
	cfg.name = o->name;
	cfg.restore_dir = o->restore;
	cfg.restore_mode = o->restore_eager ? CKPT_RESTORE_EAGER : CKPT_RESTORE_LAZY;
	ret = ctl_create(&cfg, &ctl, &e);
	if (ret) {
		fprintf(stderr, "qlite run: %s\n", e.msg);
		ckpt_config_free(store);
		return EXIT_SETUP;
	}
	if (sfd >= 0)
		ctl_watch_signals(ctl, sfd);
	if (o->console)
		tty_make_raw();
	why = ctl_run(ctl);
	ctl_destroy(ctl);
	ckpt_config_free(store);
	return run_exit_status(why);
}

/* A guest reset after a migration boots the kernel the source recorded, if any. */
static int recorded_kernel_boot(struct vm *vm, void *opaque, struct qerr *e)
{
	(void)opaque;
	if (!vm->cfg.kernel)
		return qerr_set(e, ENOENT, "no kernel to boot (the migrated VM recorded none)");
	return linux_boot_setup(vm, e);
}

/* qlite run --incoming URI|defer: the VM's configuration comes from the stream. */
static int cmd_run_incoming(struct run_options *o, uint64_t host_mem)
{
	struct ctl_config cfg;
	struct ctl *ctl;
	struct qerr e = { 0 };
	enum vm_stop_reason why;
	int sfd, status;

	memset(&cfg, 0, sizeof(cfg));
	cfg.incoming = o->incoming;
	cfg.incoming_disks = o->disks;
	cfg.incoming_ndisks = o->ndisks;
	cfg.incoming_nets = o->nets;
	cfg.incoming_nnets = o->nnets;
	cfg.incoming_no_reboot = o->no_reboot;
	cfg.host_mem = host_mem;
	cfg.vm.dirty_ring = o->dirty_ring;
	cfg.vm.dirty_ring_entries = o->dirty_ring_entries;
	sfd = signals_setup();
	cfg.vm.console_in = o->console ? STDIN_FILENO : -1;
	cfg.vm.console_out = o->console ? STDOUT_FILENO : -1;
	cfg.start_paused = o->paused;
	cfg.boot = recorded_kernel_boot;
	cfg.qmp = o->qmp;
	cfg.name = o->name;
	if (ctl_create(&cfg, &ctl, &e)) {
		fprintf(stderr, "qlite run: %s\n", e.msg);
		return EXIT_SETUP;
	}
	if (sfd >= 0)
		ctl_watch_signals(ctl, sfd);
	if (o->console)
		tty_make_raw();
	why = ctl_run(ctl);
	if (ctl->incoming_failed) {
		tty_restore();
		fprintf(stderr, "qlite run: incoming migration failed: %s\n", ctl->incoming_error);
		status = EXIT_SETUP;
	} else {
		status = run_exit_status(why);
	}
	ctl_destroy(ctl);
	return status;
}

static int cmd_run(int argc, char **argv)
{
	struct run_options o;
	struct ctl_config cfg;
	struct ctl *ctl;
	struct sysinfo si;
	struct qerr e = { 0 };
	enum vm_stop_reason why;
	uint64_t host_mem = 0;
	int sfd, ret;

	if (sysinfo(&si) == 0)
		host_mem = (uint64_t)si.totalram * si.mem_unit;
	ret = cli_parse_run(argc, argv, host_mem, VM_MAX_VCPUS, &o, &e);
	if (ret) {
		fprintf(stderr, "qlite run: %s\n(see qlite run --help)\n", e.msg);
		cli_run_options_free(&o);
		return EXIT_SETUP;
	}
	if (o.help) {
		fputs(cli_run_usage, stdout);
		return EXIT_OK;
	}
	if (o.restore)
		return cmd_run_restore(&o);
	if (o.incoming)
		return cmd_run_incoming(&o, host_mem);
	if (access(o.kernel, R_OK) < 0) {
		fprintf(stderr, "qlite run: cannot read kernel %s: %s\n", o.kernel,
			strerror(errno));
		return EXIT_SETUP;
	}
	if (o.initrd && access(o.initrd, R_OK) < 0) {
		fprintf(stderr, "qlite run: cannot read initrd %s: %s\n", o.initrd,
			strerror(errno));
		return EXIT_SETUP;
	}
	sfd = signals_setup();

	memset(&cfg, 0, sizeof(cfg));
	cfg.vm.mem_size = o.mem_size;
	cfg.vm.mem_backend = o.mem_backend;
	cfg.vm.ncpus = o.ncpus;
	cfg.vm.kernel = o.kernel;
	cfg.vm.initrd = o.initrd;
	cfg.vm.cmdline = o.cmdline;
	cfg.vm.no_reboot = o.no_reboot;
	cfg.vm.rng = o.rng;
	cfg.vm.disks = o.disks;
	cfg.vm.ndisks = o.ndisks;
	cfg.vm.nets = o.nets;
	cfg.vm.nnets = o.nnets;
	cfg.vm.console_virtio = o.console_virtio;
	cfg.vm.balloon = o.balloon;
	cfg.vm.balloon_no_reporting = o.balloon_no_reporting;
	cfg.vm.pmu = &o.pmu;
	cfg.vm.dirty_ring = o.dirty_ring;
	cfg.vm.dirty_ring_entries = o.dirty_ring_entries;
	cfg.vm.console_in = o.console ? STDIN_FILENO : -1;
	cfg.vm.console_out = o.console ? STDOUT_FILENO : -1;
	cfg.start_paused = o.paused;
	cfg.boot = linux_boot;
	cfg.qmp = o.qmp;
	cfg.name = o.name;

	ret = ctl_create(&cfg, &ctl, &e);
	if (ret) {
		fprintf(stderr, "qlite run: %s\n", e.msg);
		return EXIT_SETUP;
	}
	if (sfd >= 0)
		ctl_watch_signals(ctl, sfd);
	if (o.console)
		tty_make_raw();
	why = ctl_run(ctl);
	ctl_destroy(ctl);
	return run_exit_status(why);
}

static int cmd_client(int argc, char **argv)
{
	struct client_options o;
	struct qerr e = { 0 };

	if (cli_parse_client(argc, argv, &o, &e)) {
		fprintf(stderr, "qlite %s: %s\n(see qlite %s --help)\n", argv[0], e.msg, argv[0]);
		return EXIT_SETUP;
	}
	if (o.help) {
		fputs(cli_client_usage, stdout);
		return EXIT_OK;
	}
	return client_run(&o);
}

static int cmd_profile(int argc, char **argv)
{
	struct profile_options o;
	struct qerr e = { 0 };

	if (cli_parse_profile(argc, argv, &o, &e)) {
		fprintf(stderr, "qlite profile: %s\n(see qlite profile --help)\n", e.msg);
		return EXIT_SETUP;
	}
	if (o.help) {
		fputs(cli_profile_usage, stdout);
		return EXIT_OK;
	}
	return profile_client_run(&o);
}

static int cmd_migrate(int argc, char **argv)
{
	struct migrate_options o;
	struct qerr e = { 0 };

	if (cli_parse_migrate(argc, argv, &o, &e)) {
		fprintf(stderr, "qlite migrate: %s\n(see qlite migrate --help)\n", e.msg);
		return EXIT_SETUP;
	}
	if (o.help) {
		fputs(cli_migrate_usage, stdout);
		return EXIT_OK;
	}
	return migrate_client_run(&o);
}

static int cmd_snapshot(int argc, char **argv)
{
	struct snapshot_options o;
	struct qerr e = { 0 };

	if (cli_parse_snapshot(argc, argv, &o, &e)) {
		fprintf(stderr, "qlite snapshot: %s\n(see qlite snapshot --help)\n", e.msg);
		return EXIT_SETUP;
	}
	if (o.help) {
		fputs(cli_snapshot_usage, stdout);
		return EXIT_OK;
	}
	return snapshot_client_run(&o);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(cli_main_usage, stderr);
		return EXIT_SETUP;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1);
	if (cli_is_client_command(argv[1]))
		return cmd_client(argc - 1, argv + 1);
	if (!strcmp(argv[1], "profile"))
		return cmd_profile(argc - 1, argv + 1);
	if (!strcmp(argv[1], "snapshot"))
		return cmd_snapshot(argc - 1, argv + 1);
	if (!strcmp(argv[1], "migrate"))
		return cmd_migrate(argc - 1, argv + 1);
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(cli_main_usage, stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version") ||
	    !strcmp(argv[1], "-V")) {
		printf("qlite %s\n", QLITE_VERSION);
		return EXIT_OK;
	}
	fprintf(stderr, "qlite: unknown command or option '%s'\n(see qlite --help)\n", argv[1]);
	return EXIT_SETUP;
}
