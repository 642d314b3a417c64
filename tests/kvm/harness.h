/* SPDX-License-Identifier: MIT */
#ifndef QLITE_TEST_HARNESS_H
#define QLITE_TEST_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "guest.h"
#include "qlite/ctl.h"
#include "qlite/vm.h"

#define KTEST_SKIP 77

struct ktest {
	struct ctl *ctl;
	struct vm *vm; /* the controller's VM, once started */
	unsigned int ncpus;
	uint64_t mem;
	enum guest_test test;
	const char *qmp; /* optional QMP socket spec */
	struct vm_config devices; /* extra devices: rng, balloon, disks, nets, ... */
	bool paused; /* -S */
	int in_pipe[2]; /* test -> guest console */
	int out_pipe[2]; /* guest console -> test */
	const char *echo_input; /* written to the console at the guest's first UC_VALUE */

	pthread_mutex_t lock;
	uint32_t ucall_arg;
	uint32_t values[256];
	unsigned int nvalues;
	unsigned int dones;
	unsigned int fails;
	uint32_t fail_lines[16];
	char thread_names[VM_MAX_VCPUS][16];
	unsigned int nthread_names;

	uint8_t pio_regs[16];
	uint8_t mmio_regs[4096];
};

/* 0, KTEST_SKIP without /dev/kvm, or -errno. */
/* Does qlite pick the dirty ring by default here (KVM has one, not kvm-pvm)? */
bool ktest_dirty_ring_default(void);
int ktest_create(struct ktest *t, unsigned int ncpus, uint64_t mem);
/*
 * Build the VM through the controller (as `qlite run` does): the boot hook
 * loads the guest ELF and points every vCPU at guest_entry(test, cpu).
 */
int ktest_start(struct ktest *t, enum guest_test test);
/* Start the vCPUs and serve until the guest stops (or the watchdog fires). */
enum vm_stop_reason ktest_run(struct ktest *t, unsigned int watchdog_s);
/* Console output so far (NUL-terminated, malloc()ed). */
char *ktest_console(struct ktest *t);
void ktest_destroy(struct ktest *t);
uint64_t *ktest_shared(struct ktest *t);
/*
 * How long thread @tid waited for a CPU (schedstat field 2): time the guest
 * clock counts but in which the vCPU ran nowhere, on a loaded host.
 */
uint64_t ktest_runqueue_wait_ns(pid_t tid);

#define CHECK(c)                                                                       \
	do {                                                                           \
		if (!(c)) {                                                            \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);   \
			failures++;                                                    \
		}                                                                      \
	} while (0)

#endif
