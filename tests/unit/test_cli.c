// SPDX-License-Identifier: MIT
/* `qlite run` option parsing: every error must say what was wrong. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/cli.h"

#define HOST_MEM (8 * GiB)
#define MAX_CPUS 64
#define MAX_ARGS 32

/* getopt permutes argv, so each parse gets its own mutable pointer array. */
static int parse_with(uint64_t host_mem, unsigned int max_cpus, struct run_options *o,
		      struct qerr *e, const char *const *args)
{
	char *argv[MAX_ARGS + 1];
	int argc = 0;

	while (args[argc]) {
		assert_true(argc < MAX_ARGS);
		argv[argc] = (char *)args[argc];
		argc++;
	}
	argv[argc] = NULL;
	memset(e, 0, sizeof(*e));
	return cli_parse_run(argc, argv, host_mem, max_cpus, o, e);
}

#define PARSE(o, e, ...) \
	parse_with(HOST_MEM, MAX_CPUS, o, e, (const char *const[]){ "run", __VA_ARGS__, NULL })

/* Expect failure @err with a message that mentions @needle. */
#define EXPECT_ERR(err, needle, ...)                                                       \
	do {                                                                               \
		struct run_options o_;                                                     \
		struct qerr e_;                                                            \
		int r_ = PARSE(&o_, &e_, __VA_ARGS__);                                     \
		if (r_ != (err))                                                           \
			fail_msg("%s: got %d, want %d (msg: %s)", #__VA_ARGS__, r_, (err), \
				 e_.msg);                                                  \
		check_msg(&e_, err, needle);                                               \
		cli_run_options_free(&o_); /* specs copied before the failure */           \
	} while (0)

static void check_msg(const struct qerr *e, int err, const char *needle)
{
	assert_int_equal(e->errnum, -err);
	if (!strstr(e->msg, needle))
		fail_msg("message \"%s\" does not mention \"%s\"", e->msg, needle);
	/* One line, as the header promises. */
	assert_null(strchr(e->msg, '\n'));
}

static void test_full_long(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--initrd", "rd.img", "--cmdline",
			       "console=ttyS0 quiet", "--mem", "256M", "--cpus", "4", "--no-reboot",
			       "--console", "none"),
			 0);
	assert_string_equal(o.kernel, "bz");
	assert_string_equal(o.initrd, "rd.img");
	assert_string_equal(o.cmdline, "console=ttyS0 quiet");
	assert_true(o.mem_size == 256 * MiB);
	assert_int_equal(o.ncpus, 4);
	assert_true(o.no_reboot);
	assert_false(o.console);
	assert_false(o.help);
	assert_int_equal(e.errnum, 0);
}

static void test_full_equals(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "--kernel=bz", "--initrd=rd", "--cmdline=root=/dev/vda",
			       "--mem=256M", "--cpus=2", "--console=stdio"),
			 0);
	assert_string_equal(o.kernel, "bz");
	assert_string_equal(o.initrd, "rd");
	assert_string_equal(o.cmdline, "root=/dev/vda"); /* only the first '=' splits */
	assert_true(o.mem_size == 256 * MiB);
	assert_int_equal(o.ncpus, 2);
	assert_true(o.console);
}

static void test_short(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "-k", "bz", "-i", "rd", "-a", "x", "-m", "1G", "-c", "8"),
			 0);
	assert_string_equal(o.kernel, "bz");
	assert_string_equal(o.initrd, "rd");
	assert_string_equal(o.cmdline, "x");
	assert_true(o.mem_size == GiB);
	assert_int_equal(o.ncpus, 8);

	/* Values glued to the letter. */
	assert_int_equal(PARSE(&o, &e, "-kbz", "-m2G", "-c3"), 0);
	assert_string_equal(o.kernel, "bz");
	assert_true(o.mem_size == 2 * GiB);
	assert_int_equal(o.ncpus, 3);
}

static void test_aliases_and_repeats(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(
		PARSE(&o, &e, "--kernel", "bz", "--append", "a", "--memory", "64M", "--smp", "2"),
		0);
	assert_string_equal(o.cmdline, "a");
	assert_true(o.mem_size == 64 * MiB);
	assert_int_equal(o.ncpus, 2);

	/* The last occurrence wins. */
	assert_int_equal(
		PARSE(&o, &e, "--kernel", "a", "--mem", "256M", "--kernel", "b", "-m", "1G"), 0);
	assert_string_equal(o.kernel, "b");
	assert_true(o.mem_size == GiB);
}

static void test_defaults(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "--kernel", "bz"), 0);
	assert_true(o.mem_size == 512 * MiB);
	assert_true(o.mem_size == CLI_DEFAULT_MEM);
	assert_int_equal(o.ncpus, 1);
	assert_true(o.console);
	assert_false(o.no_reboot);
	assert_false(o.help);
	assert_null(o.initrd);
	assert_null(o.cmdline);
	assert_int_equal(o.mem_backend, MEM_BACKEND_ANON);
}

static void test_mem_backend(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--mem-backend", "memfd"), 0);
	assert_int_equal(o.mem_backend, MEM_BACKEND_MEMFD);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--mem-backend=anon"), 0);
	assert_int_equal(o.mem_backend, MEM_BACKEND_ANON);
	EXPECT_ERR(-EINVAL, "--mem-backend shm", "--kernel", "bz", "--mem-backend", "shm");
}

static void test_limits(void **state)
{
	struct run_options o;
	struct qerr e;

	/* Boundaries are inclusive. */
	assert_int_equal(PARSE(&o, &e, "-k", "bz", "--mem", "16M", "--cpus", "64"), 0);
	assert_true(o.mem_size == CLI_MIN_MEM);
	assert_int_equal(o.ncpus, MAX_CPUS);
	assert_int_equal(PARSE(&o, &e, "-k", "bz", "--mem", "8G"), 0);
	assert_true(o.mem_size == HOST_MEM);
	assert_int_equal(PARSE(&o, &e, "-k", "bz", "--mem", "16781312"), 0); /* 16M + 4K */

	/* 0: the caller could not tell, so nothing is checked. */
	assert_int_equal(parse_with(0, 0, &o, &e,
				    (const char *const[]){ "run", "-k", "bz", "--mem", "1T",
							   "--cpus", "1000", NULL }),
			 0);
	assert_true(o.mem_size == 1024 * GiB);
	assert_int_equal(o.ncpus, 1000);
}

static void test_mem_errors(void **state)
{
	EXPECT_ERR(-EINVAL, "--mem", "--kernel", "bz", "--mem", "0");
	EXPECT_ERR(-EINVAL, "12X", "--kernel", "bz", "--mem", "12X");
	EXPECT_ERR(-EINVAL, "8M", "--kernel", "bz", "--mem", "8M");
	EXPECT_ERR(-EINVAL, "16M", "--kernel", "bz", "--mem", "16777215");
	EXPECT_ERR(-EINVAL, "4K", "--kernel", "bz", "--mem", "16777217");
	EXPECT_ERR(-EINVAL, "--mem", "--kernel", "bz", "--mem", "");
	EXPECT_ERR(-EINVAL, "--mem", "--kernel", "bz", "--mem", "-1G");
	EXPECT_ERR(-EINVAL, "99999999999T", "--kernel", "bz", "--mem", "99999999999T");
	EXPECT_ERR(-ENOMEM, "9G", "--kernel", "bz", "--mem", "9G");
	EXPECT_ERR(-ENOMEM, "8196M", "--kernel", "bz", "-m", "8196M");
}

static void test_cpus_errors(void **state)
{
	EXPECT_ERR(-EINVAL, "--cpus", "--kernel", "bz", "--cpus", "0");
	EXPECT_ERR(-EINVAL, "abc", "--kernel", "bz", "--cpus", "abc");
	EXPECT_ERR(-EINVAL, "65", "--kernel", "bz", "--cpus", "65");
	EXPECT_ERR(-EINVAL, "64", "--kernel", "bz", "--cpus", "65"); /* says the limit */
	EXPECT_ERR(-EINVAL, "-1", "--kernel", "bz", "-c", "-1");
	EXPECT_ERR(-EINVAL, "4x", "--kernel", "bz", "--cpus", "4x");
	EXPECT_ERR(-EINVAL, "--cpus", "--kernel", "bz", "--cpus", "");
	EXPECT_ERR(-EINVAL, "4294967296", "--kernel", "bz", "--cpus", "4294967296");
	EXPECT_ERR(-EINVAL, "99999999999999999999", "--kernel", "bz", "--cpus",
		   "99999999999999999999");
}

static void test_unknown_option(void **state)
{
	EXPECT_ERR(-EINVAL, "--frobnicate", "--kernel", "bz", "--frobnicate");
	EXPECT_ERR(-EINVAL, "-x", "--kernel", "bz", "-x");
	EXPECT_ERR(-EINVAL, "--frob", "--frob=1", "--kernel", "bz");
	/* Ambiguous prefix of --cmdline/--cpus/--console. */
	EXPECT_ERR(-EINVAL, "--c", "--kernel", "bz", "--c", "1");
}

/*
 * A flag given a value (--no-reboot=1): getopt reports '?' with optopt set
 * to the option's val (OPT_NO_REBOOT = 256, or 'h'), and the message must
 * still name the option the user typed.
 */
static void test_flag_with_value(void **state)
{
	EXPECT_ERR(-EINVAL, "--no-reboot", "--kernel", "bz", "--no-reboot=1");
	EXPECT_ERR(-EINVAL, "--help", "--kernel", "bz", "--help=yes");
}

static void test_missing_value(void **state)
{
	EXPECT_ERR(-EINVAL, "--kernel", "--kernel");
	EXPECT_ERR(-EINVAL, "--mem", "--kernel", "bz", "--mem");
	EXPECT_ERR(-EINVAL, "--cpus", "--kernel", "bz", "--cpus");
	EXPECT_ERR(-EINVAL, "--console", "--kernel", "bz", "--console");
	EXPECT_ERR(-EINVAL, "-m", "--kernel", "bz", "-m");
	EXPECT_ERR(-EINVAL, "-k", "-k");
}

static void test_missing_kernel(void **state)
{
	EXPECT_ERR(-EINVAL, "--kernel", "--mem", "256M");
	EXPECT_ERR(-EINVAL, "--kernel", "--no-reboot", "--cpus", "2");

	{
		struct run_options o;
		struct qerr e;

		/* argv is just "run". */
		assert_int_equal(parse_with(HOST_MEM, MAX_CPUS, &o, &e,
					    (const char *const[]){ "run", NULL }),
				 -EINVAL);
		assert_non_null(strstr(e.msg, "--kernel"));
	}
}

static void test_stray_argument(void **state)
{
	EXPECT_ERR(-EINVAL, "extra", "--kernel", "bz", "extra");
	/* getopt permutes: a positional before the options is still caught. */
	EXPECT_ERR(-EINVAL, "vmlinuz", "vmlinuz", "--kernel", "bz");
	/* After "--" everything is positional. */
	EXPECT_ERR(-EINVAL, "--mem", "--kernel", "bz", "--", "--mem");
}

static void test_console_bad(void **state)
{
	EXPECT_ERR(-EINVAL, "bad", "--kernel", "bz", "--console", "bad");
	EXPECT_ERR(-EINVAL, "--console", "--kernel", "bz", "--console=");
	EXPECT_ERR(-EINVAL, "STDIO", "--kernel", "bz", "--console", "STDIO");
}

static void test_help(void **state)
{
	struct run_options o;
	struct qerr e;

	/* Help needs no --kernel and stops parsing. */
	assert_int_equal(PARSE(&o, &e, "--help"), 0);
	assert_true(o.help);
	assert_int_equal(PARSE(&o, &e, "-h"), 0);
	assert_true(o.help);
	assert_int_equal(PARSE(&o, &e, "--mem", "256M", "--help", "--bogus"), 0);
	assert_true(o.help);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz"), 0);
	assert_false(o.help);
	assert_non_null(strstr(cli_run_usage, "--kernel"));
}

/* getopt keeps state between calls; every parse must start afresh. */
static void test_repeated_parsing(void **state)
{
	struct run_options o;
	struct qerr e;
	unsigned int i;

	for (i = 0; i < 3; i++) {
		/* Stop in the middle of a short-option cluster... */
		assert_int_equal(PARSE(&o, &e, "-hm", "1G"), 0);
		assert_true(o.help);
		/* ...and after an error part-way through argv. */
		EXPECT_ERR(-EINVAL, "-x", "-k", "a", "-x", "-m", "2G");
		EXPECT_ERR(-EINVAL, "--kernel", "--kernel");
		EXPECT_ERR(-EINVAL, "stray", "-k", "a", "stray");

		assert_int_equal(PARSE(&o, &e, "-k", "bz", "--no-reboot"), 0);
		assert_string_equal(o.kernel, "bz");
		assert_true(o.no_reboot);
		assert_true(o.mem_size == CLI_DEFAULT_MEM);
		assert_false(o.help);

		/* Nothing leaks from the previous parse. */
		assert_int_equal(PARSE(&o, &e, "--kernel", "other", "-c", "2"), 0);
		assert_string_equal(o.kernel, "other");
		assert_false(o.no_reboot);
		assert_int_equal(o.ncpus, 2);
	}
}

static void test_pmu(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "--kernel", "bz"), 0);
	assert_int_equal(o.pmu.mode, VPMU_OFF);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--pmu", "on"), 0);
	assert_int_equal(o.pmu.mode, VPMU_ON);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--pmu=allow=cycles,0x01c2"), 0);
	assert_int_equal(o.pmu.mode, VPMU_ALLOW);
	assert_int_equal(o.pmu.nevents, 2);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--pmu", "on", "--pmu", "off"), 0);
	assert_int_equal(o.pmu.mode, VPMU_OFF);
	EXPECT_ERR(-EINVAL, "--pmu maybe", "--kernel", "bz", "--pmu", "maybe");
	EXPECT_ERR(-EINVAL, "unknown event 'frob'", "--kernel", "bz", "--pmu", "allow=frob");
	EXPECT_ERR(-EINVAL, "--pmu", "--kernel", "bz", "--pmu");
}

static void test_dirty_ring(void **state)
{
	struct run_options o;
	struct qerr e;

	(void)state;
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz"), 0);
	assert_int_equal(o.dirty_ring, VM_DIRTY_RING_AUTO);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--dirty-ring=on"), 0);
	assert_int_equal(o.dirty_ring, VM_DIRTY_RING_ON);
	assert_int_equal(o.dirty_ring_entries, 0);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--dirty-ring", "off"), 0);
	assert_int_equal(o.dirty_ring, VM_DIRTY_RING_OFF);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--dirty-ring=256"), 0);
	assert_int_equal(o.dirty_ring, VM_DIRTY_RING_ON);
	assert_int_equal(o.dirty_ring_entries, 256);
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--dirty-ring=65536"), 0);
	assert_int_equal(o.dirty_ring_entries, 65536);
	/* The last one given wins, entries included. */
	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--dirty-ring=1024", "--dirty-ring=on"),
			 0);
	assert_int_equal(o.dirty_ring_entries, 0);
	/* Host-local: allowed where the VM's configuration comes from elsewhere. */
	assert_int_equal(PARSE(&o, &e, "--restore", "/ck", "--dirty-ring=off"), 0);
	assert_int_equal(o.dirty_ring, VM_DIRTY_RING_OFF);
	assert_int_equal(PARSE(&o, &e, "--incoming", "defer", "--dirty-ring=512"), 0);
	assert_int_equal(o.dirty_ring_entries, 512);
	EXPECT_ERR(-EINVAL, "--dirty-ring maybe: expected on, off or a number", "--kernel", "bz",
		   "--dirty-ring=maybe");
	EXPECT_ERR(-EINVAL, "--dirty-ring 1000: entries must be a power of two", "--kernel", "bz",
		   "--dirty-ring=1000");
	EXPECT_ERR(-EINVAL, "from 256 to 65536", "--kernel", "bz", "--dirty-ring=128");
	EXPECT_ERR(-EINVAL, "from 256 to 65536", "--kernel", "bz", "--dirty-ring=131072");
	EXPECT_ERR(-EINVAL, "--dirty-ring 0:", "--kernel", "bz", "--dirty-ring=0");
	EXPECT_ERR(-EINVAL, "--dirty-ring -1", "--kernel", "bz", "--dirty-ring=-1");
	EXPECT_ERR(-EINVAL, "--dirty-ring 99999999999", "--kernel", "bz",
		   "--dirty-ring=99999999999");
	EXPECT_ERR(-EINVAL, "--dirty-ring", "--kernel", "bz", "--dirty-ring");
}

/* ---- qlite profile ---------------------------------------------------- */

static int parse_profile(struct profile_options *o, struct qerr *e, const char *const *args)
{
	char *argv[MAX_ARGS + 1];
	int argc = 0;

	while (args[argc]) {
		assert_true(argc < MAX_ARGS);
		argv[argc] = (char *)args[argc];
		argc++;
	}
	argv[argc] = NULL;
	memset(e, 0, sizeof(*e));
	return cli_parse_profile(argc, argv, o, e);
}

#define PPARSE(o, e, ...) parse_profile(o, e, (const char *const[]){ "profile", __VA_ARGS__, NULL })

#define EXPECT_PERR(err, needle, ...)                                                      \
	do {                                                                               \
		struct profile_options o_;                                                 \
		struct qerr e_;                                                            \
		int r_ = PPARSE(&o_, &e_, __VA_ARGS__);                                    \
		if (r_ != (err))                                                           \
			fail_msg("%s: got %d, want %d (msg: %s)", #__VA_ARGS__, r_, (err), \
				 e_.msg);                                                  \
		check_msg(&e_, err, needle);                                               \
	} while (0)

static void test_profile_defaults(void **state)
{
	struct profile_options o;
	struct qerr e;

	assert_int_equal(PPARSE(&o, &e, "--qmp", "/run/vm.sock"), 0);
	assert_string_equal(o.qmp, "/run/vm.sock");
	assert_true(o.duration_ns == 10ULL * 1000000000ULL);
	assert_int_equal(o.freq, 999);
	assert_int_equal(o.method, PROFILE_METHOD_TIMER);
	assert_string_equal(o.out, "qlite-profile");
	assert_int_equal(o.top, 15);
	assert_null(o.symbols);
	assert_null(o.user_symbols);
	assert_false(o.kaslr_given);
	assert_false(o.help);
	assert_true(o.refresh_ns == 1000000000ULL);
	assert_int_equal(PPARSE(&o, &e, "--qmp", "s", "--refresh", "0"), 0);
	assert_true(o.refresh_ns == 0);
	assert_int_equal(PPARSE(&o, &e, "--qmp", "s", "--refresh", "250ms"), 0);
	assert_true(o.refresh_ns == 250000000ULL);
}

static void test_profile_full(void **state)
{
	struct profile_options o;
	struct qerr e;

	assert_int_equal(PPARSE(&o, &e, "--qmp", "s", "--duration", "500ms", "--freq", "10000",
				"--symbols", "/guest/System.map", "--user-symbols", "a.out", "--out",
				"dir", "--top", "5", "--method", "kick", "--kaslr-offset",
				"0x2a000000"),
			 0);
	assert_true(o.duration_ns == 500000000ULL);
	assert_int_equal(o.freq, 10000);
	assert_string_equal(o.symbols, "/guest/System.map");
	assert_string_equal(o.user_symbols, "a.out");
	assert_string_equal(o.out, "dir");
	assert_int_equal(o.top, 5);
	assert_int_equal(o.method, PROFILE_METHOD_KICK);
	assert_true(o.kaslr_given && o.kaslr_offset == 0x2a000000);
	assert_int_equal(PPARSE(&o, &e, "--qmp=s", "--duration=2m", "--freq=1", "--method=perf",
				"--kaslr-offset=0", "--frequency", "250"),
			 0);
	assert_true(o.duration_ns == 120ULL * 1000000000ULL);
	assert_int_equal(o.freq, 250);
	assert_int_equal(o.method, PROFILE_METHOD_PERF);
	assert_true(o.kaslr_given && o.kaslr_offset == 0);
	assert_int_equal(PPARSE(&o, &e, "--qmp", "s", "--kaslr-offset", "12", "--kaslr-offset",
				"auto"),
			 0);
	assert_false(o.kaslr_given);
	assert_int_equal(PPARSE(&o, &e, "--help"), 0);
	assert_true(o.help);
	assert_non_null(strstr(cli_profile_usage, "--symbols"));
}

static void test_profile_errors(void **state)
{
	EXPECT_PERR(-ERANGE, "at least 1", "--qmp", "s", "--freq", "0");
	EXPECT_PERR(-ERANGE, "above the limit of 10000 Hz", "--qmp", "s", "--freq", "10001");
	EXPECT_PERR(-ERANGE, "above the limit", "--qmp", "s", "--freq", "99999999999999999999");
	EXPECT_PERR(-EINVAL, "expected a number", "--qmp", "s", "--freq", "fast");
	EXPECT_PERR(-EINVAL, "expected a number", "--qmp", "s", "--freq", "-5");
	EXPECT_PERR(-ERANGE, "100ms..24h", "--qmp", "s", "--duration", "0");
	EXPECT_PERR(-ERANGE, "100ms..24h", "--qmp", "s", "--duration", "99ms");
	EXPECT_PERR(-ERANGE, "100ms..24h", "--qmp", "s", "--duration", "25h");
	EXPECT_PERR(-EINVAL, "expected a time", "--qmp", "s", "--duration", "5x");
	EXPECT_PERR(-EINVAL, "expected a time", "--qmp", "s", "--duration", "s");
	EXPECT_PERR(-EINVAL, "expected a time", "--qmp", "s", "--duration", "1.5s");
	EXPECT_PERR(-EINVAL, "expected timer, kick or perf", "--qmp", "s", "--method", "pmu");
	EXPECT_PERR(-EINVAL, "--top", "--qmp", "s", "--top", "0");
	EXPECT_PERR(-EINVAL, "--refresh 10ms", "--qmp", "s", "--refresh", "10ms");
	EXPECT_PERR(-EINVAL, "--refresh x", "--qmp", "s", "--refresh", "x");
	EXPECT_PERR(-EINVAL, "--qmp PATH is required", "--duration", "1s");
	EXPECT_PERR(-EINVAL, "--symbols needs a file name", "--qmp", "s", "--symbols", "");
	EXPECT_PERR(-EINVAL, "--out needs a file name", "--qmp", "s", "--out", "");
	EXPECT_PERR(-EINVAL, "--kaslr-offset -5", "--qmp", "s", "--kaslr-offset", "-5");
	EXPECT_PERR(-EINVAL, "--kaslr-offset zz", "--qmp", "s", "--kaslr-offset", "zz");
	EXPECT_PERR(-EINVAL, "unknown option --frob", "--qmp", "s", "--frob");
	EXPECT_PERR(-EINVAL, "needs a value", "--qmp", "s", "--freq");
	EXPECT_PERR(-EINVAL, "takes no value", "--qmp", "s", "--help=1");
	EXPECT_PERR(-EINVAL, "unexpected argument 'extra'", "--qmp", "s", "extra");
}

static int mparse(struct migrate_options *o, struct qerr *e, const char *const *args)
{
	char *argv[MAX_ARGS + 1];
	int argc = 0;

	while (args[argc]) {
		argv[argc] = (char *)args[argc];
		argc++;
	}
	argv[argc] = NULL;
	memset(e, 0, sizeof(*e));
	return cli_parse_migrate(argc, argv, o, e);
}

#define MPARSE(o, e, ...) mparse(o, e, (const char *const[]){ "migrate", __VA_ARGS__, NULL })
#define EXPECT_MERR(err, needle, ...)                                                      \
	do {                                                                               \
		struct migrate_options o_;                                                 \
		struct qerr e_;                                                            \
		int r_ = MPARSE(&o_, &e_, __VA_ARGS__);                                    \
		if (r_ != (err))                                                           \
			fail_msg("%s: got %d, want %d (msg: %s)", #__VA_ARGS__, r_, (err), \
				 e_.msg);                                                  \
		check_msg(&e_, err, needle);                                               \
	} while (0)

static void test_migrate(void **state)
{
	struct migrate_options o;
	struct qerr e;

	assert_int_equal(MPARSE(&o, &e, "--qmp", "/run/q", "tcp:h:4444"), 0);
	assert_string_equal(o.qmp, "/run/q");
	assert_string_equal(o.uri, "tcp:h:4444");
	assert_false(o.wait || o.json || o.max_bandwidth_given || o.downtime_given);
	assert_int_equal(o.postcopy, CLI_POSTCOPY_OFF);
	assert_int_equal(MPARSE(&o, &e, "unix:/m", "--qmp=q", "--wait", "--json", "--max-bandwidth",
				"1G", "--downtime-limit", "20", "--postcopy=auto"),
			 0);
	assert_true(o.wait && o.json && o.max_bandwidth_given && o.downtime_given);
	assert_int_equal(o.max_bandwidth, GiB);
	assert_int_equal(o.downtime_ms, 20);
	assert_int_equal(o.postcopy, CLI_POSTCOPY_AUTO);
	assert_int_equal(MPARSE(&o, &e, "--qmp", "q", "fd:3", "--postcopy", "--max-bandwidth", "0"),
			 0);
	assert_int_equal(o.postcopy, CLI_POSTCOPY_ON);
	assert_true(o.max_bandwidth_given && o.max_bandwidth == 0);
	assert_int_equal(MPARSE(&o, &e, "--help"), 0);
	assert_true(o.help);
	assert_non_null(strstr(cli_migrate_usage, "--incoming"));

	EXPECT_MERR(-EINVAL, "--qmp PATH is required", "tcp:h:1");
	EXPECT_MERR(-EINVAL, "no destination URI", "--qmp", "q");
	EXPECT_MERR(-EINVAL, "expected tcp:HOST:PORT, unix:PATH or fd:N", "--qmp", "q", "ftp:x");
	EXPECT_MERR(-EINVAL, "the port must be 1..65535", "--qmp", "q", "tcp:h:0");
	EXPECT_MERR(-EINVAL, "unexpected argument 'more'", "--qmp", "q", "tcp:h:1", "more");
	EXPECT_MERR(-EINVAL, "--postcopy=always", "--qmp", "q", "tcp:h:1", "--postcopy=always");
	EXPECT_MERR(-EINVAL, "--max-bandwidth fast", "--qmp", "q", "tcp:h:1", "--max-bandwidth",
		    "fast");
	EXPECT_MERR(-EINVAL, "--downtime-limit -1", "--qmp", "q", "tcp:h:1", "--downtime-limit",
		    "-1");
	EXPECT_MERR(-EINVAL, "0..2000000", "--qmp", "q", "tcp:h:1", "--downtime-limit", "2000001");
	EXPECT_MERR(-EINVAL, "takes no value", "--qmp", "q", "tcp:h:1", "--wait=yes");
	EXPECT_MERR(-EINVAL, "unknown option --live", "--qmp", "q", "tcp:h:1", "--live");
}

static void test_incoming(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "--incoming", "defer"), 0);
	assert_string_equal(o.incoming, "defer");
	assert_null(o.kernel);
	assert_int_equal(PARSE(&o, &e, "--incoming", "tcp:0.0.0.0:4444", "--disk", "path=/d.img",
			       "--qmp", "unix:/q", "-S"),
			 0);
	assert_int_equal(o.ndisks, 1);
	assert_true(o.paused);
	cli_run_options_free(&o);
	EXPECT_ERR(-EINVAL, "--mem cannot be combined with --incoming", "--incoming", "defer",
		   "--mem", "64M");
	EXPECT_ERR(-EINVAL, "--kernel cannot be combined with --incoming", "--kernel", "k",
		   "--incoming", "defer");
	EXPECT_ERR(-EINVAL, "--incoming cannot be combined with --restore", "--incoming", "defer",
		   "--restore", "/ck");
	EXPECT_ERR(-EINVAL, "expected tcp:HOST:PORT", "--incoming", "later");
	EXPECT_ERR(-EINVAL, "tcp:[::1]:PORT", "--incoming", "tcp:::1:80");
}

static void test_disk_coalesce(void **state)
{
	struct run_options o;
	struct qerr e;

	assert_int_equal(PARSE(&o, &e, "--kernel", "bz", "--disk", "path=/a.img", "--disk",
			       "path=/b.img,coalesce=off,direct=on"),
			 0);
	assert_int_equal(o.ndisks, 2);
	assert_false(o.disks[0].no_coalesce);
	assert_true(o.disks[1].no_coalesce);
	assert_true(o.disks[1].direct);
	cli_run_options_free(&o);
	EXPECT_ERR(-EINVAL, "coalesce", "--kernel", "bz", "--disk", "path=/a.img,coalesce=maybe");
	EXPECT_ERR(-EINVAL, "unknown option 'coalesc'", "--kernel", "bz", "--disk",
		   "path=/a.img,coalesc=on");
}

static void test_duration(void **state)
{
	uint64_t ns;

	assert_int_equal(cli_parse_duration("10", &ns), 0);
	assert_true(ns == 10000000000ULL);
	assert_int_equal(cli_parse_duration("10s", &ns), 0);
	assert_true(ns == 10000000000ULL);
	assert_int_equal(cli_parse_duration("250ms", &ns), 0);
	assert_true(ns == 250000000ULL);
	assert_int_equal(cli_parse_duration("3m", &ns), 0);
	assert_true(ns == 180000000000ULL);
	assert_int_equal(cli_parse_duration("1h", &ns), 0);
	assert_true(ns == 3600000000000ULL);
	assert_int_equal(cli_parse_duration("", &ns), -EINVAL);
	assert_int_equal(cli_parse_duration("ms", &ns), -EINVAL);
	assert_int_equal(cli_parse_duration("5 s", &ns), -EINVAL);
	assert_int_equal(cli_parse_duration("5sec", &ns), -EINVAL);
	assert_int_equal(cli_parse_duration("99999999999999999999", &ns), -ERANGE);
	assert_int_equal(cli_parse_duration("9999999999999h", &ns), -ERANGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_long),      cmocka_unit_test(test_full_equals),
		cmocka_unit_test(test_short),	       cmocka_unit_test(test_aliases_and_repeats),
		cmocka_unit_test(test_defaults), cmocka_unit_test(test_mem_backend),       cmocka_unit_test(test_limits),
		cmocka_unit_test(test_mem_errors),     cmocka_unit_test(test_cpus_errors),
		cmocka_unit_test(test_unknown_option), cmocka_unit_test(test_flag_with_value),
		cmocka_unit_test(test_missing_value),  cmocka_unit_test(test_missing_kernel),
		cmocka_unit_test(test_stray_argument), cmocka_unit_test(test_console_bad),
		cmocka_unit_test(test_help),	       cmocka_unit_test(test_repeated_parsing),
		cmocka_unit_test(test_pmu), cmocka_unit_test(test_dirty_ring),	       cmocka_unit_test(test_profile_defaults),
		cmocka_unit_test(test_profile_full),   cmocka_unit_test(test_profile_errors),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_migrate),
		cmocka_unit_test(test_incoming),
		cmocka_unit_test(test_disk_coalesce),
	};

	/* Permutation (positional arguments anywhere) is what users expect. */
	unsetenv("POSIXLY_CORRECT");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
