/* SPDX-License-Identifier: MIT */
/*
 * Virtio core: split virtqueues (transport-agnostic, unit-testable against a
 * plain guest_mem) and the device interface the PCI transport drives.
 *
 * Every descriptor walk is bounded and checked: at most queue-size hops (an
 * indirect table: at most its own entries), no indirect inside indirect, each
 * buffer translated as a whole, device-readable before device-writable, no
 * device-writable buffer overlapping another, at most VIRTQ_MAX_IOV buffers.
 * A violation returns an error; the device then goes to NEEDS_RESET.
 */
#ifndef QLITE_VIRTIO_H
#define QLITE_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "qlite/device.h"
#include "qlite/mem.h"
#include "qlite/msix.h"
#include "qlite/pci.h"
#include "qlite/util.h"

#define VIRTQ_MAX_SIZE 1024
#define VIRTQ_MAX_IOV 1024
#define VIRTIO_MAX_QUEUES 16

/* Feature bits (virtio 1.x). */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_ACCESS_PLATFORM 33

/* Device status. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* Queue configuration the driver programs: plain data, saved and restored. */
struct virtq_state {
	uint16_t size;
	uint16_t enabled;
	uint16_t msix_vector;
	uint16_t last_avail_idx;
	uint16_t used_idx;
	uint16_t pad[3];
	uint64_t desc_gpa, avail_gpa, used_gpa;
};

struct virtq {
	struct virtq_state *s;
	struct guest_mem *mem;
	bool event_idx;
	bool indirect;
	/* Host views of the rings, valid while enabled. */
	struct vring_desc *desc;
	volatile uint16_t *avail; /* flags, idx, ring[size], used_event */
	volatile uint32_t *used; /* flags|idx in word 0, then {id, len} pairs */
	uint16_t signalled_used;
	bool signalled_used_valid;
	bool kicks_off; /* the driver was told not to kick (we poll) */
};

/* One request: device-readable buffers first (out), then device-writable (in). */
struct virtq_elem {
	uint16_t head;
	unsigned int out_num, in_num;
	uint64_t out_len, in_len;
	struct iovec iov[VIRTQ_MAX_IOV];
};

/* Map the rings of a queue the driver enabled; -EINVAL if outside RAM/bad size. */
int vq_enable(struct virtq *vq, struct virtq_state *s, struct guest_mem *mem, bool event_idx,
	      bool indirect);
void vq_disable(struct virtq *vq);
/*
 * Next request: 1 with @e filled, 0 if none, -EINVAL (with a reason in @why)
 * if the driver broke the rules.
 */
int vq_pop(struct virtq *vq, struct virtq_elem *e, const char **why);
/* Hand a request back (@len bytes written into its in-buffers). */
void vq_push(struct virtq *vq, const struct virtq_elem *e, uint32_t len);
/*
 * Ask the driver not to kick (while the device will look at the ring anyway,
 * e.g. with requests in flight) or to kick again. After re-enabling, check
 * vq_has_work(): a request may have arrived in between.
 */
void vq_set_kicks(struct virtq *vq, bool enable);
bool vq_has_work(struct virtq *vq);
/* Whether the driver wants an interrupt for what was pushed since the last one. */
bool vq_should_notify(struct virtq *vq);
/* Pages the device wrote must be marked dirty; helper over a request's in-iovs. */
void vq_mark_dirty(struct virtq *vq, const struct virtq_elem *e, uint32_t len);

struct virtio_dev;

struct virtio_dev_ops {
	const char *name;
	uint16_t device_id;
	uint32_t class_code;
	unsigned int nqueues;
	uint16_t queue_size;
	uint64_t features; /* device-specific; the transport adds the generic ones */
	/*
	 * The device model's own state (over priv) or its statelessness,
	 * registered right after the transport. Lifecycle hooks stay NULL:
	 * the transport drives the model through these ops and frees priv.
	 */
	const struct device_class *cls;
	unsigned int config_size;
	void (*config_read)(struct virtio_dev *d, unsigned int off, uint8_t *data,
			    unsigned int len);
	void (*config_write)(struct virtio_dev *d, unsigned int off, const uint8_t *data,
			     unsigned int len);
	/* The driver kicked queue @q (main thread, device lock held). */
	void (*queue_notify)(struct virtio_dev *d, unsigned int q);
	/* Driver status reached DRIVER_OK / device reset (main thread, lock held). */
	int (*activate)(struct virtio_dev *d);
	void (*reset)(struct virtio_dev *d);
	/*
	 * Pause: stop submitting and drain (main thread, lock not held). On
	 * return no request may stay popped: complete it, or give it back to
	 * the ring (saved state never holds one). Queue work is already off.
	 */
	int (*quiesce)(struct virtio_dev *d);
	void (*resume)(struct virtio_dev *d);
	void (*unrealize)(struct virtio_dev *d);
};

/* Transport state the driver programs: plain data, saved and restored. */
struct virtio_state {
	uint64_t driver_features;
	uint32_t device_feature_select, driver_feature_select;
	uint16_t msix_config, queue_select;
	uint8_t status, config_generation, isr, pad;
	struct virtq_state q[VIRTIO_MAX_QUEUES];
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	void *priv;
	struct vm *vm;
	uint64_t device_features;
	struct virtio_state st;
	struct virtq vq[VIRTIO_MAX_QUEUES];
	pthread_mutex_t lock; /* transport registers (vCPUs) vs queue work (main) */
	bool broken;
	bool reset_pending; /* status 0 written; the main thread finishes it */
	bool quiesced; /* paused: no queue work until resume (which re-kicks) */
	int reset_efd;
	struct ratelimit rl;

	struct pci_dev pci;
	struct msix msix;
	unsigned int pci_cfg_cap; /* offset of VIRTIO_PCI_CAP_PCI_CFG */
	uint8_t cfg_old[PCI_CFG_SIZE]; /* config as laid out before INTx/PCI_CFG */
	int kick_efd[VIRTIO_MAX_QUEUES];
	bool kick_assigned[VIRTIO_MAX_QUEUES];
	uint64_t kick_addr[VIRTIO_MAX_QUEUES];
};

/* Create a virtio-pci device on the VM's PCI bus. */
int virtio_pci_create(struct vm *vm, const struct virtio_dev_ops *ops, void *priv,
		      struct virtio_dev **out);
/* Interrupt the driver for queue @q if it asked for one. */
void virtio_notify(struct virtio_dev *d, unsigned int q);
void virtio_config_changed(struct virtio_dev *d);
/*
 * The driver broke the protocol: NEEDS_RESET, stop serving queues, tell the
 * driver (config interrupt), log (rate-limited). The VMM carries on.
 */
void virtio_dev_set_broken(struct virtio_dev *d, const char *why);
bool virtio_has_feature(const struct virtio_dev *d, unsigned int bit);

int virtio_rng_create(struct vm *vm);

struct virtio_console;
/* hvc0 writing to @out_fd; input arrives through virtio_console_push_input. */
int virtio_console_create(struct vm *vm, int out_fd);
size_t virtio_console_space(struct virtio_console *c);
size_t virtio_console_push_input(struct virtio_console *c, const uint8_t *buf, size_t len);

/* Guest memory statistics, tags as in the virtio spec (5.5.6.3). */
enum {
	BALLOON_STAT_SWAP_IN,
	BALLOON_STAT_SWAP_OUT,
	BALLOON_STAT_MAJFLT,
	BALLOON_STAT_MINFLT,
	BALLOON_STAT_MEMFREE,
	BALLOON_STAT_MEMTOT,
	BALLOON_STAT_AVAIL,
	BALLOON_STAT_CACHES,
	BALLOON_STAT_HTLB_PGALLOC,
	BALLOON_STAT_HTLB_PGFAIL,
	BALLOON_STAT_MAX,
};

struct balloon_stats {
	uint64_t val[BALLOON_STAT_MAX];
	uint32_t valid; /* bit per tag the driver reported */
};

/* Block devices (virtio-blk on the io_uring backend). */
struct disk_config {
	const char *path;
	bool readonly;
	bool direct;
	bool no_coalesce; /* coalesce=off: signal every completion at once */
	const char *serial;
};

struct blk_disk_stats {
	uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops, flush_ops, failed_ops;
	/* Completion coalescing: windows opened, requests started inside one. */
	uint64_t coalesce_windows, coalesced_reqs, coalesce_tick_ns;
	bool coalesce;
};

struct blk_disk_info {
	const char *name, *path;
	unsigned int index; /* --disk order */
	bool readonly;
	uint64_t size;
	struct blk_disk_stats stats;
};

struct vblk;
int virtio_blk_create(struct vm *vm, const struct disk_config *dc, unsigned int index,
		      struct qerr *e);
/* Walk the VM's disks: NULL starts, returns NULL at the end. */
struct vblk *virtio_blk_next(struct vm *vm, struct vblk *prev, struct blk_disk_info *info);
/*
 * Live migration's hand-over of the image locks: the source drops them
 * (@lock false, never fails) once its paused VM's requests are drained, the
 * destination takes them before it starts the VM, and a source that resumes
 * after a failed migration takes them back. Taking: every disk is tried, the
 * first failure is returned (-EBUSY: another process holds one).
 */
int virtio_blk_lock_all(struct vm *vm, bool lock, struct qerr *e);

/* Network devices (virtio-net on a tap). */
struct net_config {
	const char *tap; /* interface name, created if absent; or */
	int fd; /* an inherited tap fd (when tap is NULL) */
	bool has_mac;
	uint8_t mac[6];
};

int virtio_net_create(struct vm *vm, const struct net_config *nc, unsigned int index,
		      struct qerr *e);

/* @reporting: offer free page reporting (VIRTIO_BALLOON_F_REPORTING). */
int virtio_balloon_create(struct vm *vm, bool reporting);
/* Ask the guest to keep @guest_bytes of RAM (the rest goes in the balloon). */
int virtio_balloon_set_target(struct vm *vm, uint64_t guest_bytes);
/* RAM the guest has now; the last stats (and ask the driver for new ones). */
int virtio_balloon_query(struct vm *vm, uint64_t *actual_bytes, struct balloon_stats *stats);

#endif
