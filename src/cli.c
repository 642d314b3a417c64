// SPDX-License-Identifier: MIT
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/cli.h"
#include "qlite/migrate.h"

const char cli_main_usage[] =
	"Usage: qlite <command> [options]\n"
	"\n"
	"Commands:\n"
	"  run         boot a Linux guest (qlite run --help for options)\n"
	"  status      show a running VM's state          (these take --qmp PATH)\n"
	"  pause       pause a VM's vCPUs\n"
	"  resume      resume a paused (or -S) VM\n"
	"  powerdown   press the ACPI power button: the guest shuts down\n"
	"  quit        stop a VM at once\n"
	"  events      print a VM's QMP events as JSON lines until it ends\n"
	"  qmp         run any QMP command: qlite qmp --qmp PATH CMD [JSON-ARGS]\n"
	"  profile     profile a running guest (qlite profile --help)\n"
	"  snapshot    checkpoint a running VM, or load a checkpoint into it\n"
	"              (qlite snapshot --help); restore one with qlite run --restore\n"
	"  migrate     live-migrate a running VM to another qlite (qlite migrate\n"
	"              --help); the destination runs qlite run --incoming URI\n"
	"  help        show this text\n"
	"  version     print the version\n"
	"\n"
	"Options: --help, --version\n";

const char cli_run_usage[] =
	"Usage: qlite run --kernel FILE [options]\n"
	"       qlite run --restore DIR [options]\n"
	"       qlite run --incoming URI|defer [options]\n"
	"\n"
	"Boot a Linux kernel (x86-64 bzImage) in a KVM virtual machine. The guest's\n"
	"first serial port (ttyS0) is this terminal; put console=ttyS0 on --cmdline.\n"
	"\n"
	"  -k, --kernel FILE     kernel image (bzImage, boot protocol 2.12+)\n"
	"  -i, --initrd FILE     initial ramdisk\n"
	"  -a, --cmdline TEXT    kernel command line\n"
	"  -m, --mem SIZE        guest RAM, e.g. 256M, 2G (default 512M); binary units\n"
	"      --mem-backend B   anon (default: private memory, transparent huge pages)\n"
	"                        or memfd (shareable with other processes)\n"
	"  -c, --cpus N          number of vCPUs (default 1)\n"
	"      --no-reboot       exit (status 0) when the guest reboots, instead of\n"
	"                        restarting it\n"
	"      --console MODE    stdio (default: the 16550, guest ttyS0), virtio (this\n"
	"                        terminal on virtio-console: guest console=hvc0) or none\n"
	"  -S, --paused          create the VM with vCPUs paused; QMP 'cont' starts it\n"
	"      --qmp SPEC        QMP control socket: unix:PATH[,server=on][,wait=off]\n"
	"                        or fd:N (an inherited listening socket, as libvirt\n"
	"                        passes it); wait=on waits for a client before the\n"
	"                        guest runs (default wait=off)\n"
	"      --name NAME       VM name (QMP query-name)\n"
	"      --disk path=FILE[,readonly=on][,direct=on][,serial=ID][,coalesce=off]\n"
	"                        a virtio-blk disk on a raw image (repeatable, up to 8);\n"
	"                        direct=on bypasses the host page cache (O_DIRECT);\n"
	"                        coalesce=off signals each completion at once instead\n"
	"                        of batching interrupts while the guest keeps queueing\n"
	"      --net tap=NAME|fd=N[,mac=52:54:00:12:34:56]\n"
	"                        a virtio-net NIC on a tap (created if absent) or an\n"
	"                        inherited tap fd (repeatable, up to 4)\n"
	"      --rng             a virtio-rng device (host getrandom)\n"
	"      --balloon[=reporting=off]\n"
	"                        a virtio-balloon device: inflate/deflate through QMP\n"
	"                        'balloon', stats, and free page reporting (freed guest\n"
	"                        memory goes back to the host) unless reporting=off\n"
	"      --pmu MODE        guest PMU: off (default), on (the guest's own perf\n"
	"                        works; needs a host PMU), or allow=EVENT[,EVENT...]\n"
	"                        (on, limited to these events: instructions, cycles,\n"
	"                        ref-cycles, branches, branch-misses, cache-references,\n"
	"                        cache-misses, or raw 0x... KVM filter values)\n"
	"      --dirty-ring MODE on (default where KVM offers it), off, or ENTRIES per\n"
	"                        vCPU (a power of two, 256..65536; default 16384):\n"
	"                        track the guest's writes for migration and\n"
	"                        checkpoints with KVM's dirty ring; off, or where KVM\n"
	"                        lacks it, a dirty bitmap (an error if asked for);\n"
	"                        with --restore and --incoming too\n"
	"      --restore DIR     start from the checkpoint in DIR (qlite snapshot save)\n"
	"                        instead of booting: memory, vCPUs and devices as they\n"
	"                        were; its configuration comes from the checkpoint, so\n"
	"                        --kernel, --mem, --cpus and the like are refused;\n"
	"                        --disk and --net, if given, replace the recorded ones\n"
	"                        (same number)\n"
	"      --restore-mode M  lazy (default: vCPUs run at once, memory is read in\n"
	"                        on demand and in the background) or eager (all of\n"
	"                        memory is read first)\n"
	"      --incoming URI    receive a live migration (qlite migrate) on\n"
	"                        tcp:HOST:PORT, unix:PATH or fd:N (an inherited\n"
	"                        socket, listening or connected), or 'defer' to wait\n"
	"                        for QMP migrate-incoming. The VM's configuration\n"
	"                        comes from the migration stream, so --kernel, --mem,\n"
	"                        --cpus and the like are refused; --disk and --net, if\n"
	"                        given, replace the source's (same number). It runs\n"
	"                        once it has arrived (stays paused with -S, or if it\n"
	"                        was paused on the source); exit status 1 if the\n"
	"                        migration fails\n"
	"  -h, --help            this text\n"
	"\n"
	"Options also take the --opt=value form.\n"
	"\n"
	"Console: when stdin is a terminal it is put in raw mode and restored on\n"
	"exit. Ctrl-A x quits; Ctrl-A Ctrl-A sends a Ctrl-A to the guest.\n"
	"\n"
	"Exit status: 0 when the guest powers off (or reboots with --no-reboot, or\n"
	"Ctrl-A x / SIGTERM); 1 for bad options or a VM that cannot start; 2 when\n"
	"the guest crashes (triple fault, KVM internal error: registers are\n"
	"printed), stops for good (every vCPU halted with interrupts off, as after\n"
	"a kernel that fails to decompress, or 'halt'), or the VMM fails.\n";

enum {
	OPT_RESTORE = 200,
	OPT_RESTORE_MODE,
	OPT_INCOMING,
	OPT_DIRTY_RING,
	OPT_NO_REBOOT = 256,
	OPT_CONSOLE,
	OPT_MEM_BACKEND,
	OPT_QMP,
	OPT_NAME,
	OPT_JSON,
	OPT_RNG,
	OPT_BALLOON,
	OPT_DISK,
	OPT_NET,
	OPT_PMU,
	OPT_DURATION,
	OPT_FREQ,
	OPT_SYMBOLS,
	OPT_USER_SYMBOLS,
	OPT_OUT,
	OPT_TOP,
	OPT_METHOD,
	OPT_KASLR,
	OPT_REFRESH,
};

static const struct option run_longopts[] = {
	{ "kernel", required_argument, NULL, 'k' },
	{ "initrd", required_argument, NULL, 'i' },
	{ "cmdline", required_argument, NULL, 'a' },
	{ "append", required_argument, NULL, 'a' },
	{ "mem", required_argument, NULL, 'm' },
	{ "memory", required_argument, NULL, 'm' },
	{ "cpus", required_argument, NULL, 'c' },
	{ "smp", required_argument, NULL, 'c' },
	{ "no-reboot", no_argument, NULL, OPT_NO_REBOOT },
	{ "console", required_argument, NULL, OPT_CONSOLE },
	{ "mem-backend", required_argument, NULL, OPT_MEM_BACKEND },
	{ "paused", no_argument, NULL, 'S' },
	{ "qmp", required_argument, NULL, OPT_QMP },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "rng", no_argument, NULL, OPT_RNG },
	{ "balloon", optional_argument, NULL, OPT_BALLOON },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "net", required_argument, NULL, OPT_NET },
	{ "pmu", required_argument, NULL, OPT_PMU },
	{ "restore", required_argument, NULL, OPT_RESTORE },
	{ "restore-mode", required_argument, NULL, OPT_RESTORE_MODE },
	{ "incoming", required_argument, NULL, OPT_INCOMING },
	{ "dirty-ring", required_argument, NULL, OPT_DIRTY_RING },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Options a checkpoint records, which --restore therefore refuses. */
static const char *cli_vm_opt_name(int c, const char *arg)
{
	switch (c) {
	case 'k':
		return "--kernel";
	case 'i':
		return "--initrd";
	case 'a':
		return "--cmdline";
	case 'm':
		return "--mem";
	case 'c':
		return "--cpus";
	case OPT_RNG:
		return "--rng";
	case OPT_BALLOON:
		return "--balloon";
	case OPT_PMU:
		return "--pmu";
	case OPT_MEM_BACKEND:
		return "--mem-backend";
	case OPT_CONSOLE:
		return arg && !strcmp(arg, "virtio") ? "--console virtio" : NULL;
	default:
		return NULL;
	}
}

/* --dirty-ring on|off|ENTRIES */
static int cli_parse_dirty_ring(const char *arg, struct run_options *o, struct qerr *e)
{
	uint64_t v;

	o->dirty_ring_entries = 0;
	if (!strcmp(arg, "on")) {
		o->dirty_ring = VM_DIRTY_RING_ON;
		return 0;
	}
	if (!strcmp(arg, "off")) {
		o->dirty_ring = VM_DIRTY_RING_OFF;
		return 0;
	}
	if (parse_uint(arg, 0, UINT32_MAX, &v))
		return qerr_set(e, EINVAL,
				"--dirty-ring %s: expected on, off or a number of entries", arg);
	if (v < VM_DIRTY_RING_MIN_ENTRIES || v > VM_DIRTY_RING_MAX_ENTRIES || (v & (v - 1)))
		return qerr_set(e, EINVAL,
				"--dirty-ring %s: entries must be a power of two from %u to %u",
				arg, VM_DIRTY_RING_MIN_ENTRIES, VM_DIRTY_RING_MAX_ENTRIES);
	o->dirty_ring = VM_DIRTY_RING_ON;
	o->dirty_ring_entries = (unsigned int)v;
	return 0;
}

static int cli_parse_mem(const char *arg, uint64_t host_mem, uint64_t *out, struct qerr *e)
{
	uint64_t v;
	int ret = parse_size(arg, &v);

	if (ret)
		return qerr_set(e, EINVAL, "--mem %s: expected a size such as 512M or 2G", arg);
	if (v == 0)
		return qerr_set(e, EINVAL, "--mem must be greater than 0");
	if (v < CLI_MIN_MEM)
		return qerr_set(e, EINVAL, "--mem %s is too small: at least %lluM is needed", arg,
				CLI_MIN_MEM / MiB);
	if (v % (4 * KiB))
		return qerr_set(e, EINVAL, "--mem %s is not a multiple of 4K", arg);
	if (host_mem && v > host_mem)
		return qerr_set(e, ENOMEM, "--mem %s is more than this host's memory (%lluM)",
				arg, (unsigned long long)(host_mem / MiB));
	*out = v;
	return 0;
}

static int cli_onoff(const char *key, const char *v, bool *out, struct qerr *e)
{
	if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1"))
		*out = true;
	else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0"))
		*out = false;
	else
		return qerr_set(e, EINVAL, "--disk %s=%s: expected on or off", key, v);
	return 0;
}

int cli_parse_disk(char *spec, struct disk_config *dc, struct qerr *e)
{
	char *save = NULL, *item;
	int ret;

	memset(dc, 0, sizeof(*dc));
	for (item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');

		if (!eq) {
			if (dc->path)
				return qerr_set(e, EINVAL, "--disk: '%s' is not KEY=VALUE", item);
			dc->path = item; /* a bare first item is the path */
			continue;
		}
		*eq = '\0';
		if (!strcmp(item, "path") || !strcmp(item, "file")) {
			dc->path = eq + 1;
		} else if (!strcmp(item, "readonly") || !strcmp(item, "ro")) {
			ret = cli_onoff(item, eq + 1, &dc->readonly, e);
			if (ret)
				return ret;
		} else if (!strcmp(item, "direct")) {
			ret = cli_onoff(item, eq + 1, &dc->direct, e);
			if (ret)
				return ret;
		} else if (!strcmp(item, "serial")) {
			dc->serial = eq + 1;
		} else if (!strcmp(item, "coalesce")) {
			bool on;

			ret = cli_onoff(item, eq + 1, &on, e);
			if (ret)
				return ret;
			dc->no_coalesce = !on;
		} else {
			return qerr_set(e, EINVAL,
					"--disk: unknown option '%s' (path, readonly, direct, serial, "
					"coalesce)",
					item);
		}
	}
	if (!dc->path || !*dc->path)
		return qerr_set(e, EINVAL, "--disk needs path=FILE");
	return 0;
}

int cli_parse_net(char *spec, struct net_config *nc, struct qerr *e)
{
	char *save = NULL, *item;
	uint64_t v;

	memset(nc, 0, sizeof(*nc));
	nc->fd = -1;
	for (item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');

		if (!eq)
			return qerr_set(e, EINVAL, "--net: '%s' is not KEY=VALUE", item);
		*eq = '\0';
		if (!strcmp(item, "tap")) {
			if (!eq[1] || strlen(eq + 1) >= 16)
				return qerr_set(e, EINVAL, "--net tap=%s: 1 to 15 characters", eq + 1);
			nc->tap = eq + 1;
		} else if (!strcmp(item, "fd")) {
			if (parse_uint(eq + 1, 0, INT32_MAX, &v))
				return qerr_set(e, EINVAL, "--net fd=%s: expected a number", eq + 1);
			nc->fd = (int)v;
		} else if (!strcmp(item, "mac")) {
			unsigned int b[6], i;
			char end;

			if (sscanf(eq + 1, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
				   &b[4], &b[5], &end) != 6)
				return qerr_set(e, EINVAL, "--net mac=%s: expected 52:54:00:12:34:56",
						eq + 1);
			if (b[0] & 1)
				return qerr_set(e, EINVAL, "--net mac=%s is a multicast address",
						eq + 1);
			for (i = 0; i < 6; i++)
				nc->mac[i] = (uint8_t)b[i];
			nc->has_mac = true;
		} else {
			return qerr_set(e, EINVAL, "--net: unknown option '%s' (tap, fd, mac)", item);
		}
	}
	if (!nc->tap == (nc->fd < 0))
		return qerr_set(e, EINVAL, "--net needs exactly one of tap=NAME or fd=N");
	return 0;
}

/* Keep a copy of a repeatable option's value (its parser splits it in place). */
static int cli_spec_copy(char **specs, unsigned int n, unsigned int max, const char *opt,
			 struct qerr *e)
{
	if (n == max)
		return qerr_set(e, E2BIG, "at most %u %s options", max, opt);
	specs[n] = strdup(optarg);
	return specs[n] ? 0 : qerr_set(e, ENOMEM, "out of memory");
}

void cli_run_options_free(struct run_options *o)
{
	unsigned int i;

	for (i = 0; i < CLI_MAX_DISKS; i++) {
		free(o->disk_specs[i]);
		o->disk_specs[i] = NULL;
	}
	for (i = 0; i < CLI_MAX_NETS; i++) {
		free(o->net_specs[i]);
		o->net_specs[i] = NULL;
	}
}

int cli_parse_run(int argc, char **argv, uint64_t host_mem, unsigned int max_cpus,
		  struct run_options *o, struct qerr *e)
{
	uint64_t v;
	int c, ret;

	memset(o, 0, sizeof(*o));
	o->mem_size = CLI_DEFAULT_MEM;
	o->mem_backend = MEM_BACKEND_ANON;
	o->ncpus = 1;
	o->console = true;
	optind = 0; /* glibc: full re-initialisation, so tests can parse repeatedly */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":k:i:a:m:c:hS", run_longopts, NULL)) != -1) {
		if (!o->vm_opt)
			o->vm_opt = cli_vm_opt_name(c, optarg);
		switch (c) {
		case OPT_RESTORE:
			if (!*optarg)
				return qerr_set(e, EINVAL, "--restore needs a checkpoint directory");
			o->restore = optarg;
			break;
		case OPT_INCOMING:
			if (strcmp(optarg, "defer")) {
				struct mig_uri u;

				ret = mig_uri_parse(optarg, &u, e);
				if (ret)
					return ret;
			}
			o->incoming = optarg;
			break;
		case OPT_DIRTY_RING:
			ret = cli_parse_dirty_ring(optarg, o, e);
			if (ret)
				return ret;
			break;
		case OPT_RESTORE_MODE:
			if (strcmp(optarg, "lazy") && strcmp(optarg, "eager"))
				return qerr_set(e, EINVAL, "--restore-mode %s: expected lazy or eager",
						optarg);
			o->restore_eager = !strcmp(optarg, "eager");
			o->restore_mode_given = true;
			break;
		case 'k':
			o->kernel = optarg;
			break;
		case 'i':
			o->initrd = optarg;
			break;
		case 'a':
			o->cmdline = optarg;
			break;
		case 'm':
			ret = cli_parse_mem(optarg, host_mem, &o->mem_size, e);
			if (ret)
				return ret;
			break;
		case 'c':
			ret = parse_uint(optarg, 0, UINT32_MAX, &v);
			if (ret)
				return qerr_set(e, EINVAL, "--cpus %s: expected a number", optarg);
			if (v == 0)
				return qerr_set(e, EINVAL, "--cpus must be at least 1");
			if (max_cpus && v > max_cpus)
				return qerr_set(e, EINVAL, "--cpus %s: at most %u vCPUs are supported",
						optarg, max_cpus);
			o->ncpus = (unsigned int)v;
			break;
		case OPT_NO_REBOOT:
			o->no_reboot = true;
			break;
		case 'S':
			o->paused = true;
			break;
		case OPT_QMP:
			o->qmp = optarg;
			break;
		case OPT_NAME:
			o->name = optarg;
			break;
		case OPT_RNG:
			o->rng = true;
			break;
		case OPT_DISK:
			ret = cli_spec_copy(o->disk_specs, o->ndisks, CLI_MAX_DISKS, "--disk", e);
			if (ret)
				return ret;
			ret = cli_parse_disk(o->disk_specs[o->ndisks], &o->disks[o->ndisks], e);
			o->ndisks++;
			if (ret)
				return ret;
			break;
		case OPT_NET:
			ret = cli_spec_copy(o->net_specs, o->nnets, CLI_MAX_NETS, "--net", e);
			if (ret)
				return ret;
			ret = cli_parse_net(o->net_specs[o->nnets], &o->nets[o->nnets], e);
			o->nnets++;
			if (ret)
				return ret;
			break;
		case OPT_BALLOON:
			o->balloon = true;
			if (optarg && !strcmp(optarg, "reporting=off"))
				o->balloon_no_reporting = true;
			else if (optarg && strcmp(optarg, "reporting=on"))
				return qerr_set(e, EINVAL,
						"--balloon=%s: expected reporting=on or reporting=off",
						optarg);
			break;
		case OPT_PMU:
			ret = vpmu_parse(optarg, &o->pmu, e);
			if (ret)
				return ret;
			break;
		case OPT_MEM_BACKEND:
			if (mem_backend_parse(optarg, &o->mem_backend))
				return qerr_set(e, EINVAL, "--mem-backend %s: expected anon or memfd",
						optarg);
			break;
		case OPT_CONSOLE:
			if (!strcmp(optarg, "stdio"))
				o->console = true;
			else if (!strcmp(optarg, "none"))
				o->console = false;
			else if (!strcmp(optarg, "virtio"))
				o->console = o->console_virtio = true;
			else
				return qerr_set(e, EINVAL,
						"--console %s: expected stdio, virtio or none", optarg);
			break;
		case 'h':
			o->help = true;
			return 0;
		case ':':
			return qerr_set(e, EINVAL, "option %s needs a value", argv[optind - 1]);
		default:
			/* optopt is a short option's letter, or a long option's value. */
			if (optopt > 0 && optopt < 256 && argv[optind - 1][1] != '-')
				return qerr_set(e, EINVAL, "unknown option -%c", optopt);
			if (optopt)
				return qerr_set(e, EINVAL, "option %s takes no value",
						argv[optind - 1]);
			return qerr_set(e, EINVAL, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return qerr_set(e, EINVAL, "unexpected argument '%s'", argv[optind]);
	if (o->restore && o->vm_opt)
		return qerr_set(e, EINVAL,
				"%s cannot be combined with --restore: the checkpoint records the VM's configuration",
				o->vm_opt);
	if (o->restore_mode_given && !o->restore)
		return qerr_set(e, EINVAL, "--restore-mode needs --restore");
	if (o->incoming && o->restore)
		return qerr_set(e, EINVAL, "--incoming cannot be combined with --restore");
	if (o->incoming && o->vm_opt)
		return qerr_set(e, EINVAL,
				"%s cannot be combined with --incoming: the migration stream carries the VM's configuration",
				o->vm_opt);
	if (o->restore || o->incoming)
		return 0;
	if (!o->kernel)
		return qerr_set(e, EINVAL, "--kernel is required");
	if (!*o->kernel || (o->initrd && !*o->initrd))
		return qerr_set(e, EINVAL, "--%s needs a file name", *o->kernel ? "initrd" : "kernel");
	return 0;
}

const char cli_client_usage[] =
	"Usage: qlite status|pause|resume|powerdown|quit|events --qmp PATH [--json]\n"
	"       qlite qmp --qmp PATH COMMAND ['{\"arg\": value}']\n"
	"\n"
	"Talk to a running qlite over its QMP socket (qlite run --qmp unix:PATH).\n"
	"  status      the VM's run state (running, paused, prelaunch, ...)\n"
	"  pause       pause all vCPUs (QMP stop)\n"
	"  resume      resume them (QMP cont)\n"
	"  powerdown   ACPI power button press (QMP system_powerdown)\n"
	"  quit        end the VM now (QMP quit)\n"
	"  events      print events (STOP, RESUME, SHUTDOWN, ...) as JSON lines until\n"
	"              the VM ends\n"
	"  qmp         send one command with optional JSON arguments; prints the\n"
	"              reply as JSON\n"
	"\n"
	"  --qmp PATH  the socket (unix:PATH also accepted)\n"
	"  --json      print the QMP reply as JSON, for scripts\n"
	"\n"
	"Exit status: 0 on success, 1 on a bad option, an unreachable socket or an\n"
	"error reply (its message is printed).\n";

static const char *const client_commands[] = { "status", "pause",  "resume", "powerdown",
					       "quit",	 "events", "qmp" };

bool cli_is_client_command(const char *name)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(client_commands); i++)
		if (!strcmp(name, client_commands[i]))
			return true;
	return false;
}

static const struct option client_longopts[] = {
	{ "qmp", required_argument, NULL, OPT_QMP },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cli_parse_client(int argc, char **argv, struct client_options *o, struct qerr *e)
{
	int c;

	memset(o, 0, sizeof(*o));
	o->command = argv[0];
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", client_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_QMP:
			o->qmp = optarg;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case 'h':
			o->help = true;
			return 0;
		case ':':
			return qerr_set(e, EINVAL, "option %s needs a value", argv[optind - 1]);
		default:
			return qerr_set(e, EINVAL, "unknown option %s", argv[optind - 1]);
		}
	}
	if (!strcmp(o->command, "qmp")) {
		if (optind >= argc)
			return qerr_set(e, EINVAL, "qmp needs a command name");
		o->execute = argv[optind++];
		if (optind < argc)
			o->arguments = argv[optind++];
	}
	if (optind < argc)
		return qerr_set(e, EINVAL, "unexpected argument '%s'", argv[optind]);
	if (!o->qmp || !*o->qmp)
		return qerr_set(e, EINVAL, "--qmp PATH is required");
	return 0;
}

const char cli_profile_usage[] =
	"Usage: qlite profile --qmp PATH [options]\n"
	"\n"
	"Profile a running guest without an agent in it: qlite samples every vCPU\n"
	"(where it was, kernel or user, which address space, or halted) and counts\n"
	"VM exits and the time qlite spends on them, per reason and per device.\n"
	"A live table shows the hottest functions while it runs; at the end the\n"
	"output directory holds profile.folded (flamegraph.pl input), flamegraph.svg,\n"
	"summary.json (with the exit accounting) and report.txt.\n"
	"\n"
	"  --qmp PATH          the VM's QMP socket (qlite run --qmp unix:PATH)\n"
	"  --duration D        how long: 10s (default), 500ms, 2m, 1h\n"
	"  --freq HZ           samples per second per vCPU, 1..10000 (default 999)\n"
	"  --symbols FILE      guest kernel symbols: System.map, a copy of\n"
	"                      /proc/kallsyms, or vmlinux (ELF); the KASLR offset\n"
	"                      is found from the guest's MSR_LSTAR\n"
	"  --kaslr-offset N    use this KASLR offset (hex 0x... or decimal) instead\n"
	"  --user-symbols FILE symbols for user-space addresses (a non-PIE ELF or a\n"
	"                      map); without it they show as [user cr3=...] 0xADDR\n"
	"  --method M          timer (default: a timer per vCPU thread), kick (a\n"
	"                      sampler thread), or perf (host PMU; needs one)\n"
	"  --out DIR           output directory (default qlite-profile; created)\n"
	"  --top N             rows in the tables (default 15)\n"
	"  --refresh D         live table refresh: 1s (default), 500ms, ...; 0 for\n"
	"                      none (no queries while sampling: least overhead)\n"
	"  -h, --help          this text\n"
	"\n"
	"Halted vCPU time is idle and never attributed to a function. If the VM\n"
	"stops before the duration is up, what was collected is written.\n"
	"Exit status: 0 when the profile was written, 1 on bad options, an\n"
	"unreadable symbol file, an unusable output directory or a VM that cannot\n"
	"be profiled (the VM keeps running in every case).\n";

int cli_parse_duration(const char *s, uint64_t *ns)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = {
		{ "ms", 1000000ULL }, { "s", 1000000000ULL }, { "m", 60 * 1000000000ULL },
		{ "h", 3600 * 1000000000ULL }, { "", 1000000000ULL },
	};
	unsigned long long v;
	unsigned int i;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	for (i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcmp(end, units[i].suffix))
			continue;
		if (v > UINT64_MAX / units[i].mult)
			return -ERANGE;
		*ns = v * units[i].mult;
		return 0;
	}
	return -EINVAL;
}

static const struct option profile_longopts[] = {
	{ "qmp", required_argument, NULL, OPT_QMP },
	{ "duration", required_argument, NULL, OPT_DURATION },
	{ "freq", required_argument, NULL, OPT_FREQ },
	{ "frequency", required_argument, NULL, OPT_FREQ },
	{ "symbols", required_argument, NULL, OPT_SYMBOLS },
	{ "user-symbols", required_argument, NULL, OPT_USER_SYMBOLS },
	{ "out", required_argument, NULL, OPT_OUT },
	{ "top", required_argument, NULL, OPT_TOP },
	{ "method", required_argument, NULL, OPT_METHOD },
	{ "kaslr-offset", required_argument, NULL, OPT_KASLR },
	{ "refresh", required_argument, NULL, OPT_REFRESH },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int cli_parse_kaslr(const char *arg, struct profile_options *o, struct qerr *e)
{
	unsigned long long v;
	char *end;

	if (!strcmp(arg, "auto")) {
		o->kaslr_given = false;
		return 0;
	}
	if (!*arg || *arg == '-' || *arg == '+')
		return qerr_set(e, EINVAL, "--kaslr-offset %s: expected 0x... (hex), decimal or auto",
				arg);
	errno = 0;
	v = strtoull(arg, &end, 0);
	if (errno || *end || v > (unsigned long long)INT64_MAX)
		return qerr_set(e, EINVAL, "--kaslr-offset %s: expected 0x... (hex), decimal or auto",
				arg);
	o->kaslr_given = true;
	o->kaslr_offset = (int64_t)v;
	return 0;
}

int cli_parse_profile(int argc, char **argv, struct profile_options *o, struct qerr *e)
{
	uint64_t v;
	int c, ret;

	memset(o, 0, sizeof(*o));
	o->duration_ns = CLI_PROFILE_DEFAULT_DURATION;
	o->freq = PROFILE_DEFAULT_FREQ;
	o->method = PROFILE_METHOD_TIMER;
	o->out = "qlite-profile";
	o->top = CLI_PROFILE_DEFAULT_TOP;
	o->refresh_ns = CLI_PROFILE_DEFAULT_REFRESH;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", profile_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_QMP:
			o->qmp = optarg;
			break;
		case OPT_DURATION:
			ret = cli_parse_duration(optarg, &o->duration_ns);
			if (ret)
				return qerr_set(e, EINVAL,
						"--duration %s: expected a time such as 10s, 500ms, 2m",
						optarg);
			if (o->duration_ns < CLI_PROFILE_MIN_DURATION ||
			    o->duration_ns > CLI_PROFILE_MAX_DURATION)
				return qerr_set(e, ERANGE, "--duration %s: must be 100ms..24h", optarg);
			break;
		case OPT_FREQ:
			ret = parse_uint(optarg, 0, UINT32_MAX, &v);
			/* All digits but unparsable: too many of them. */
			if (ret == -EINVAL && *optarg && !optarg[strspn(optarg, "0123456789")])
				ret = -ERANGE;
			if (ret == -EINVAL)
				return qerr_set(e, EINVAL, "--freq %s: expected a number of Hz", optarg);
			if (ret || v > PROFILE_MAX_FREQ)
				return qerr_set(e, ERANGE,
						"--freq %s is above the limit of %u Hz (the sampling "
						"itself would dominate)",
						optarg, PROFILE_MAX_FREQ);
			if (v < PROFILE_MIN_FREQ)
				return qerr_set(e, ERANGE, "--freq must be at least %u Hz",
						PROFILE_MIN_FREQ);
			o->freq = (unsigned int)v;
			break;
		case OPT_SYMBOLS:
			o->symbols = optarg;
			break;
		case OPT_USER_SYMBOLS:
			o->user_symbols = optarg;
			break;
		case OPT_OUT:
			o->out = optarg;
			break;
		case OPT_TOP:
			if (parse_uint(optarg, 1, 1000, &v))
				return qerr_set(e, EINVAL, "--top %s: expected 1..1000", optarg);
			o->top = (unsigned int)v;
			break;
		case OPT_METHOD:
			if (profile_method_parse(optarg, &o->method))
				return qerr_set(e, EINVAL, "--method %s: expected timer, kick or perf",
						optarg);
			break;
		case OPT_KASLR:
			ret = cli_parse_kaslr(optarg, o, e);
			if (ret)
				return ret;
			break;
		case OPT_REFRESH:
			if (cli_parse_duration(optarg, &o->refresh_ns) ||
			    (o->refresh_ns && o->refresh_ns < CLI_PROFILE_MIN_DURATION))
				return qerr_set(e, EINVAL,
						"--refresh %s: expected 0 (none) or at least 100ms",
						optarg);
			break;
		case 'h':
			o->help = true;
			return 0;
		case ':':
			return qerr_set(e, EINVAL, "option %s needs a value", argv[optind - 1]);
		default:
			if (optopt)
				return qerr_set(e, EINVAL, "option %s takes no value", argv[optind - 1]);
			return qerr_set(e, EINVAL, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return qerr_set(e, EINVAL, "unexpected argument '%s'", argv[optind]);
	if (!o->qmp || !*o->qmp)
		return qerr_set(e, EINVAL, "--qmp PATH is required");
	if ((o->symbols && !*o->symbols) || (o->user_symbols && !*o->user_symbols) || !*o->out)
		return qerr_set(e, EINVAL, "--%s needs a file name",
				o->symbols && !*o->symbols ? "symbols" :
				o->user_symbols && !*o->user_symbols ? "user-symbols" : "out");
	return 0;
}

const char cli_snapshot_usage[] =
	"Usage: qlite snapshot save --qmp PATH DIR [--stop] [--incremental] [--no-elide] [--json]\n"
	"       qlite snapshot load --qmp PATH DIR [--mode lazy|eager] [--json]\n"
	"\n"
	"save: checkpoint the VM into directory DIR (created if needed): its state\n"
	"in DIR/state.qst, its memory in DIR/memory.img (sparse). The VM pauses\n"
	"while memory is written and then resumes. Progress goes to stderr.\n"
	"  --stop          leave the VM paused afterwards\n"
	"  --incremental   write only what changed since this VM's previous\n"
	"                  checkpoint, which DIR then refers to (keep both)\n"
	"  --no-elide      store pages read from disks as data, not as references\n"
	"                  to the disk blocks they hold\n"
	"  --json          print the result as one JSON object on stdout\n"
	"\n"
	"load: replace the running VM with the one in checkpoint DIR (QMP\n"
	"snapshot-load). To start a new qlite from a checkpoint: qlite run --restore DIR.\n"
	"  --mode M        lazy (default) or eager, as qlite run --restore-mode\n"
	"\n"
	"Exit status: 0 on success; 1 on bad options, or when the checkpoint failed\n"
	"(the VM keeps running, or stays as it was, either way).\n";

enum {
	OPT_SNAP_STOP = 300,
	OPT_SNAP_INCREMENTAL,
	OPT_SNAP_NO_ELIDE,
	OPT_SNAP_JSON,
	OPT_SNAP_MODE,
	OPT_SNAP_QMP,
};

static const struct option snapshot_longopts[] = {
	{ "qmp", required_argument, NULL, OPT_SNAP_QMP },
	{ "stop", no_argument, NULL, OPT_SNAP_STOP },
	{ "incremental", no_argument, NULL, OPT_SNAP_INCREMENTAL },
	{ "no-elide", no_argument, NULL, OPT_SNAP_NO_ELIDE },
	{ "json", no_argument, NULL, OPT_SNAP_JSON },
	{ "mode", required_argument, NULL, OPT_SNAP_MODE },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cli_parse_snapshot(int argc, char **argv, struct snapshot_options *o, struct qerr *e)
{
	int c;

	memset(o, 0, sizeof(*o));
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", snapshot_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SNAP_QMP:
			o->qmp = optarg;
			break;
		case OPT_SNAP_STOP:
			o->stop = true;
			break;
		case OPT_SNAP_INCREMENTAL:
			o->incremental = true;
			break;
		case OPT_SNAP_NO_ELIDE:
			o->no_elide = true;
			break;
		case OPT_SNAP_JSON:
			o->json = true;
			break;
		case OPT_SNAP_MODE:
			if (strcmp(optarg, "lazy") && strcmp(optarg, "eager"))
				return qerr_set(e, EINVAL, "--mode %s: expected lazy or eager", optarg);
			o->eager = !strcmp(optarg, "eager");
			break;
		case 'h':
			o->help = true;
			return 0;
		case ':':
			return qerr_set(e, EINVAL, "option %s needs a value", argv[optind - 1]);
		default:
			return qerr_set(e, EINVAL, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return qerr_set(e, EINVAL, "save or load?");
	o->action = argv[optind++];
	if (strcmp(o->action, "save") && strcmp(o->action, "load"))
		return qerr_set(e, EINVAL, "unknown action '%s': expected save or load", o->action);
	if (optind >= argc || !*argv[optind])
		return qerr_set(e, EINVAL, "no checkpoint directory given");
	o->dir = argv[optind++];
	if (optind < argc)
		return qerr_set(e, EINVAL, "unexpected argument '%s'", argv[optind]);
	if (!o->qmp)
		return qerr_set(e, EINVAL, "--qmp PATH is required");
	if (!strcmp(o->action, "load") && (o->stop || o->incremental || o->no_elide))
		return qerr_set(e, EINVAL, "--stop, --incremental and --no-elide are for save");
	if (!strcmp(o->action, "save") && o->eager)
		return qerr_set(e, EINVAL, "--mode is for load");
	return 0;
}

const char cli_migrate_usage[] =
	"Usage: qlite migrate --qmp PATH URI [--wait] [--json] [--max-bandwidth SIZE]\n"
	"                     [--downtime-limit MS] [--postcopy[=auto]]\n"
	"\n"
	"Live-migrate the VM behind PATH to a qlite started on the destination with\n"
	"'qlite run --incoming URI' (URI: tcp:HOST:PORT, unix:PATH, or fd:N, a\n"
	"connected socket the source qlite inherited). Memory is copied while the\n"
	"guest runs (pre-copy rounds), then the VM pauses for the rest and its device\n"
	"state, and resumes on the destination; the source qlite then exits. Disks\n"
	"are not copied: both sides must see the same disk images (shared storage).\n"
	"\n"
	"  --wait                follow the migration to its end: a progress line on\n"
	"                        stderr, then a summary (without it: start it and exit)\n"
	"  --json                print the outcome as JSON on stdout (query-migrate's\n"
	"                        shape: status, ram {...}, total-time, downtime, ...)\n"
	"  --max-bandwidth SIZE  bytes per second for pre-copy, e.g. 1G (0: unlimited;\n"
	"                        default 128M)\n"
	"  --downtime-limit MS   the longest pause allowed at the switchover (default\n"
	"                        300)\n"
	"  --postcopy[=auto]     switch to post-copy after round 0 (auto: only when\n"
	"                        pre-copy does not converge; needs --wait)\n"
	"\n"
	"Exit status: 0 when the migration completed (or, without --wait, started);\n"
	"1 on bad options or when it failed: the reason is printed, and the VM keeps\n"
	"running on the source.\n";

enum {
	OPT_MIG_QMP = 400,
	OPT_MIG_WAIT,
	OPT_MIG_JSON,
	OPT_MIG_POSTCOPY,
	OPT_MIG_BW,
	OPT_MIG_DOWNTIME,
};

static const struct option migrate_longopts[] = {
	{ "qmp", required_argument, NULL, OPT_MIG_QMP },
	{ "wait", no_argument, NULL, OPT_MIG_WAIT },
	{ "json", no_argument, NULL, OPT_MIG_JSON },
	{ "postcopy", optional_argument, NULL, OPT_MIG_POSTCOPY },
	{ "max-bandwidth", required_argument, NULL, OPT_MIG_BW },
	{ "downtime-limit", required_argument, NULL, OPT_MIG_DOWNTIME },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cli_parse_migrate(int argc, char **argv, struct migrate_options *o, struct qerr *e)
{
	struct mig_uri u;
	uint64_t v;
	int c, ret;

	memset(o, 0, sizeof(*o));
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", migrate_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_MIG_QMP:
			o->qmp = optarg;
			break;
		case OPT_MIG_WAIT:
			o->wait = true;
			break;
		case OPT_MIG_JSON:
			o->json = true;
			break;
		case OPT_MIG_POSTCOPY:
			if (optarg && strcmp(optarg, "auto"))
				return qerr_set(e, EINVAL, "--postcopy=%s: expected --postcopy or --postcopy=auto",
						optarg);
			o->postcopy = optarg ? CLI_POSTCOPY_AUTO : CLI_POSTCOPY_ON;
			break;
		case OPT_MIG_BW:
			if (!strcmp(optarg, "0")) {
				v = 0;
			} else if (parse_size(optarg, &v)) {
				return qerr_set(e, EINVAL,
						"--max-bandwidth %s: expected bytes per second such as 512M or 1G",
						optarg);
			}
			o->max_bandwidth = v;
			o->max_bandwidth_given = true;
			break;
		case OPT_MIG_DOWNTIME:
			if (parse_uint(optarg, 0, MIG_MAX_DOWNTIME_MS, &v))
				return qerr_set(e, EINVAL, "--downtime-limit %s: expected 0..%llu milliseconds",
						optarg, (unsigned long long)MIG_MAX_DOWNTIME_MS);
			o->downtime_ms = v;
			o->downtime_given = true;
			break;
		case 'h':
			o->help = true;
			return 0;
		case ':':
			return qerr_set(e, EINVAL, "option %s needs a value", argv[optind - 1]);
		default:
			if (optopt)
				return qerr_set(e, EINVAL, "option %s takes no value", argv[optind - 1]);
			return qerr_set(e, EINVAL, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return qerr_set(e, EINVAL, "no destination URI given (tcp:HOST:PORT, unix:PATH or fd:N)");
	o->uri = argv[optind++];
	if (optind < argc)
		return qerr_set(e, EINVAL, "unexpected argument '%s'", argv[optind]);
	if (!o->qmp || !*o->qmp)
		return qerr_set(e, EINVAL, "--qmp PATH is required");
	ret = mig_uri_parse(o->uri, &u, e);
	return ret;
}
