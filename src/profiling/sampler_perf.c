// SPDX-License-Identifier: MIT
/*
 * Sampling method "perf": the host PMU samples each vCPU thread (cycles,
 * guest mode only: exclude_host) and KVM's perf callbacks report the guest
 * RIP and mode. Needs a host PMU and perf_event_open permission; on hosts
 * without either (the project's own machines) profile-start says why.
 * CR3 is not available this way, so user samples carry cr3 0, and a halted
 * vCPU spends no cycles, so idle time is not seen (reported as 0).
 */
#include <errno.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "profile_internal.h"
#include "qlite/perf_ring.h"
#include "qlite/vcpu.h"

#define PERF_RING_PAGES 64 /* data pages per vCPU (power of two) */
#define PERF_DRAIN_NS (20 * 1000000ULL)

int perf_ring_parse(const uint8_t *data, uint64_t size, uint64_t tail, uint64_t head,
		    void (*fn)(void *opaque, const struct perf_ring_sample *s), void *opaque)
{
	int n = 0;

	if (!size || (size & (size - 1)) || head - tail > size)
		return -EINVAL;
	while (tail < head) {
		struct perf_event_header h;
		uint8_t rec[256];
		uint64_t i;

		if (head - tail < sizeof(h))
			return -EINVAL;
		for (i = 0; i < sizeof(h); i++)
			((uint8_t *)&h)[i] = data[(tail + i) & (size - 1)];
		if (h.size < sizeof(h) || h.size > head - tail)
			return -EINVAL;
		if (h.type == PERF_RECORD_SAMPLE && h.size >= sizeof(h) + 16 && h.size <= sizeof(rec)) {
			struct perf_ring_sample s;

			/* Records wrap around the ring's end: copy out first. */
			for (i = 0; i < h.size; i++)
				rec[i] = data[(tail + i) & (size - 1)];
			memcpy(&s.ip, rec + sizeof(h), 8);
			memcpy(&s.pid, rec + sizeof(h) + 8, 4);
			memcpy(&s.tid, rec + sizeof(h) + 12, 4);
			s.misc = h.misc;
			fn(opaque, &s);
			n++;
		}
		tail += h.size;
	}
	return n;
}

static void perf_record(void *opaque, const struct perf_ring_sample *s)
{
	struct profile_vcpu *pv = opaque;

	switch (s->misc & PERF_RECORD_MISC_CPUMODE_MASK) {
	case PERF_RECORD_MISC_GUEST_KERNEL:
		profile_record(pv, s->ip, 0, 0);
		break;
	case PERF_RECORD_MISC_GUEST_USER:
		profile_record(pv, s->ip, 0, 3);
		break;
	default:
		break; /* host-side samples: excluded by the event, ignore */
	}
}

static void perf_drain(struct profile_vcpu *pv)
{
	struct perf_event_mmap_page *meta = pv->perf_ring;
	uint64_t head, tail;

	if (!meta)
		return;
	head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
	tail = meta->data_tail;
	if (perf_ring_parse((const uint8_t *)meta + meta->data_offset, meta->data_size, tail, head,
			    perf_record, pv) < 0)
		stat_add(&pv->dropped, 1);
	__atomic_store_n(&meta->data_tail, head, __ATOMIC_RELEASE);
}

static void *perf_thread(void *arg)
{
	struct profile *p = arg;
	unsigned int i;

	while (profile_thread_sleep(p, time_now_ns() + PERF_DRAIN_NS))
		for (i = 0; i < p->nvcpus; i++)
			perf_drain(p->pv[i]);
	return NULL;
}

static void perf_close(struct profile_vcpu *pv)
{
	if (pv->perf_ring)
		munmap(pv->perf_ring, pv->perf_ring_len);
	if (pv->perf_fd >= 0)
		close(pv->perf_fd);
	pv->perf_ring = NULL;
	pv->perf_fd = -1;
}

static int perf_open(struct profile *p, struct profile_vcpu *pv, struct qerr *e)
{
	struct perf_event_attr a;
	long psz = sysconf(_SC_PAGESIZE);
	int fd, err;

	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.type = PERF_TYPE_HARDWARE;
	a.config = PERF_COUNT_HW_CPU_CYCLES;
	a.freq = 1;
	a.sample_freq = p->params.freq;
	a.sample_type = PERF_SAMPLE_IP | PERF_SAMPLE_TID;
	a.exclude_host = 1; /* guest mode only: the IP is the guest's */
	a.exclude_hv = 1;
	a.wakeup_events = 0;
	fd = (int)syscall(SYS_perf_event_open, &a, pv->v->tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
	if (fd < 0) {
		err = errno;
		if (err == ENOENT || err == EOPNOTSUPP || err == ENODEV)
			return qerr_set(e, ENOTSUP,
					"host perf sampling needs a host PMU: perf_event_open(cycles) "
					"failed: %s (use method timer or kick)",
					strerror(err));
		if (err == EACCES || err == EPERM)
			return qerr_set(e, err,
					"perf_event_open(cycles) not permitted: %s "
					"(kernel.perf_event_paranoid, or run as root)",
					strerror(err));
		return qerr_set(e, err, "perf_event_open(cycles) for vCPU %u: %s", pv->id,
				strerror(err));
	}
	pv->perf_fd = fd;
	pv->perf_ring_len = (size_t)psz * (PERF_RING_PAGES + 1);
	pv->perf_ring = mmap(NULL, pv->perf_ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (pv->perf_ring == MAP_FAILED) {
		err = errno;
		pv->perf_ring = NULL;
		perf_close(pv);
		return qerr_set(e, err, "cannot map the perf ring buffer: %s", strerror(err));
	}
	return 0;
}

static int perf_attach(struct profile *p, struct qerr *e)
{
	unsigned int i;
	int ret;

	for (i = 0; i < p->nvcpus; i++) {
		if (!p->pv[i]->v->tid) {
			ret = qerr_set(e, EAGAIN, "the vCPU threads have not started yet");
			goto err;
		}
		ret = perf_open(p, p->pv[i], e);
		if (ret)
			goto err;
	}
	ret = profile_thread_start(p, perf_thread, "prof-perf");
	if (!ret)
		return 0;
	qerr_set(e, -ret, "cannot start the perf reader thread");
err:
	for (i = 0; i < p->nvcpus; i++)
		perf_close(p->pv[i]);
	return ret;
}

static void perf_detach(struct profile *p)
{
	unsigned int i;

	profile_thread_stop(p);
	for (i = 0; i < p->nvcpus; i++) {
		if (p->pv[i]->perf_fd >= 0)
			ioctl(p->pv[i]->perf_fd, PERF_EVENT_IOC_DISABLE, 0);
		perf_drain(p->pv[i]);
		perf_close(p->pv[i]);
	}
}

const struct profiler_ops profiler_perf_ops = {
	.name = "perf",
	.attach = perf_attach,
	.detach = perf_detach,
};
