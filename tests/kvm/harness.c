// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "harness.h"
#include "qlite/boot.h"
#include "qlite/vcpu.h"

static void ucall_write(void *opaque, uint64_t off, const uint8_t *data, unsigned int len)
{
	struct ktest *t = opaque;
	uint32_t v = 0;
	char name[16] = "";
	unsigned int i;

	memcpy(&v, data, MIN(len, 4u));
	pthread_mutex_lock(&t->lock);
	if (off == GUEST_UCALL_ARG_PORT - GUEST_UCALL_PORT) {
		t->ucall_arg = v;
		pthread_mutex_unlock(&t->lock);
		return;
	}
	/* Which thread runs this vCPU: must be named vcpuN. */
	prctl(PR_GET_NAME, name);
	for (i = 0; i < t->nthread_names; i++)
		if (!strcmp(t->thread_names[i], name))
			break;
	if (i == t->nthread_names && i < VM_MAX_VCPUS)
		memcpy(t->thread_names[t->nthread_names++], name, sizeof(name));
	switch (v) {
	case UC_VALUE:
		if (t->nvalues < 256)
			t->values[t->nvalues++] = t->ucall_arg;
		if (t->nvalues == 1 && t->echo_input &&
		    write(t->in_pipe[1], t->echo_input, strlen(t->echo_input)) < 0)
			t->fails++;
		break;
	case UC_DONE:
		t->dones++;
		break;
	default:
		if (t->fails < 16)
			t->fail_lines[t->fails] = t->ucall_arg;
		t->fails++;
		fprintf(stderr, "guest check failed at guest.c:%u\n", t->ucall_arg);
		break;
	}
	pthread_mutex_unlock(&t->lock);
}

static const struct bus_ops ucall_ops = { .write = ucall_write };

/* Test device: remembers what is written, per byte. */
static void regs_read(uint8_t *regs, uint64_t off, uint8_t *data, unsigned int len)
{
	memcpy(data, regs + off, len);
}

static void pio_read(void *o, uint64_t off, uint8_t *data, unsigned int len)
{
	regs_read(((struct ktest *)o)->pio_regs, off, data, len);
}

static void pio_write(void *o, uint64_t off, const uint8_t *data, unsigned int len)
{
	memcpy(((struct ktest *)o)->pio_regs + off, data, len);
}

static void mmio_read(void *o, uint64_t off, uint8_t *data, unsigned int len)
{
	regs_read(((struct ktest *)o)->mmio_regs, off, data, len);
}

static void mmio_write(void *o, uint64_t off, const uint8_t *data, unsigned int len)
{
	memcpy(((struct ktest *)o)->mmio_regs + off, data, len);
}

static const struct bus_ops pio_ops = { .read = pio_read, .write = pio_write };
static const struct bus_ops mmio_ops = { .read = mmio_read, .write = mmio_write };

bool ktest_dirty_ring_default(void)
{
	int fd, n;

	/* qlite gives kvm-pvm the bitmap by default (src/dirty.c). */
	if (access("/sys/module/kvm_pvm", F_OK) == 0)
		return false;
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
	if (n <= 0)
		n = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
	close(fd);
	return n >= 4096;
}

int ktest_create(struct ktest *t, unsigned int ncpus, uint64_t mem)
{
	memset(t, 0, sizeof(*t));
	if (access("/dev/kvm", R_OK | W_OK) < 0) {
		fprintf(stderr, "SKIP: /dev/kvm not usable: %s\n", strerror(errno));
		return KTEST_SKIP;
	}
	pthread_mutex_init(&t->lock, NULL);
	if (pipe2(t->in_pipe, O_CLOEXEC | O_NONBLOCK) || pipe2(t->out_pipe, O_CLOEXEC | O_NONBLOCK))
		return -errno;
	t->ncpus = ncpus;
	t->mem = mem;
	return 0;
}

uint64_t *ktest_shared(struct ktest *t)
{
	return mem_gpa_to_hva(&t->vm->mem, GUEST_SHARED_ADDR, 4096);
}

static int ktest_boot(struct vm *vm, void *opaque, struct qerr *e)
{
	struct ktest *t = opaque;
	const char *elf = getenv("QLITE_TEST_GUEST");
	uint64_t entry, *shared;
	unsigned int i;
	int ret;

	if (!elf)
		return qerr_set(e, EINVAL, "QLITE_TEST_GUEST is not set (run through meson test)");
	ret = bus_register(&vm->pio, GUEST_UCALL_PORT, 8, &ucall_ops, t, "ucall");
	if (!ret)
		ret = bus_register(&vm->pio, GUEST_TESTDEV_PORT, sizeof(t->pio_regs), &pio_ops, t,
				   "testdev-pio");
	if (!ret)
		ret = bus_register(&vm->mmio, GUEST_TESTDEV_MMIO, sizeof(t->mmio_regs), &mmio_ops,
				   t, "testdev-mmio");
	if (ret)
		return qerr_set(e, -ret, "cannot register test devices");
	ret = elf_load(&vm->mem, elf, &entry, e);
	if (ret)
		return ret;
	ret = boot_setup_gdt_pagetables(vm);
	if (ret)
		return qerr_set(e, -ret, "page tables");
	shared = mem_gpa_to_hva(&vm->mem, GUEST_SHARED_ADDR, 4096);
	shared[1] = vm->ncpus;
	for (i = 0; i < vm->ncpus; i++) {
		struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
		/* ABI: rsp % 16 == 8 at function entry, as after a call. */
		uint64_t rsp = GUEST_STACK_TOP - i * GUEST_STACK_SIZE - 8;

		ret = boot_setup_vcpu_long_mode(vm->vcpus[i], entry, i, t->test, rsp);
		if (ret)
			return qerr_set(e, -ret, "vCPU %u set-up", i);
		/* APs would wait for INIT/SIPI; start them directly. */
		if (ioctl(vm->vcpus[i]->fd, KVM_SET_MP_STATE, &mp) < 0)
			return qerr_set(e, errno, "KVM_SET_MP_STATE");
	}
	return 0;
}

int ktest_start(struct ktest *t, enum guest_test test)
{
	struct ctl_config cfg = { 0 };
	struct qerr e = { 0 };
	int ret;

	t->test = test;
	cfg.vm = t->devices;
	cfg.vm.mem_size = t->mem;
	cfg.vm.ncpus = t->ncpus;
	cfg.vm.console_in = t->in_pipe[0];
	cfg.vm.console_out = t->out_pipe[1];
	cfg.vm.no_reboot = true;
	cfg.boot = ktest_boot;
	cfg.boot_opaque = t;
	cfg.qmp = t->qmp;
	cfg.start_paused = t->paused;
	ret = ctl_create(&cfg, &t->ctl, &e);
	if (ret) {
		fprintf(stderr, "ctl_create: %s\n", e.msg);
		return ret;
	}
	t->vm = t->ctl->vm;
	return 0;
}

struct watchdog {
	struct vm *vm;
	unsigned int seconds;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void *watchdog_thread(void *arg)
{
	struct watchdog *w = arg;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += w->seconds;
	pthread_mutex_lock(&w->lock);
	while (!w->done)
		if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) == ETIMEDOUT)
			break;
	if (!w->done) {
		fprintf(stderr, "watchdog: guest still running after %u s, stopping it\n",
			w->seconds);
		vm_request_stop(w->vm, VM_STOP_ERROR);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

enum vm_stop_reason ktest_run(struct ktest *t, unsigned int watchdog_s)
{
	struct watchdog w = { .seconds = watchdog_s };
	enum vm_stop_reason why;
	pthread_t th;

	if (!t->ctl)
		return VM_STOP_ERROR; /* ktest_start failed: nothing to run */
	w.vm = t->ctl->vm;
	/* A hang guard, not a timing assertion. */
	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	pthread_create(&th, NULL, watchdog_thread, &w);
	why = ctl_run(t->ctl);
	pthread_mutex_lock(&w.lock);
	w.done = true;
	pthread_cond_signal(&w.cond);
	pthread_mutex_unlock(&w.lock);
	pthread_join(th, NULL);
	return why;
}

char *ktest_console(struct ktest *t)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap + 1);
	ssize_t n;

	if (!buf)
		return NULL;
	while (len < cap && (n = read(t->out_pipe[0], buf + len, cap - len)) > 0)
		len += n;
	buf[len] = '\0';
	return buf;
}

void ktest_destroy(struct ktest *t)
{
	ctl_destroy(t->ctl);
	close(t->in_pipe[0]);
	close(t->in_pipe[1]);
	close(t->out_pipe[0]);
	close(t->out_pipe[1]);
	pthread_mutex_destroy(&t->lock);
}

uint64_t ktest_runqueue_wait_ns(pid_t tid)
{
	char path[64];
	unsigned long long run = 0, wait = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &run, &wait) != 2)
		wait = 0;
	fclose(f);
	return wait;
}
