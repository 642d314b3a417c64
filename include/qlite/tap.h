/* SPDX-License-Identifier: MIT */
/*
 * Tap backend for virtio-net: a tap interface opened by name (created if
 * absent, which needs CAP_NET_ADMIN) or inherited as an fd. Every packet
 * read or written carries a virtio-net header in front (IFF_VNET_HDR), so
 * checksum and segmentation offloads pass between guest and host untouched.
 */
#ifndef QLITE_TAP_H
#define QLITE_TAP_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "qlite/util.h"

/*
 * struct virtio_net_hdr_mrg_rxbuf: virtio 1.x always has num_buffers, so
 * this is the header size for every modern device, mergeable buffers or not.
 */
#define TAP_VNET_HDR_LEN 12

/*
 * Offloads, as TUNSETOFFLOAD's TUN_F_* bits: what the tap may hand us
 * (host -> guest): partial checksums, TSO/USO super-packets. They mirror
 * the guest's VIRTIO_NET_F_GUEST_* features, so set them only to what the
 * guest acked. Packets from the guest with offloads are always accepted.
 */
#define TAP_OFFLOAD_CSUM 0x01 /* TUN_F_CSUM */
#define TAP_OFFLOAD_TSO4 0x02 /* TUN_F_TSO4 */
#define TAP_OFFLOAD_TSO6 0x04 /* TUN_F_TSO6 */
#define TAP_OFFLOAD_TSO_ECN 0x08 /* TUN_F_TSO_ECN */
#define TAP_OFFLOAD_UFO 0x10 /* TUN_F_UFO */
#define TAP_OFFLOAD_USO4 0x20 /* TUN_F_USO4 (Linux 6.2+) */
#define TAP_OFFLOAD_USO6 0x40 /* TUN_F_USO6 (Linux 6.2+) */

struct tap {
	int fd; /* nonblocking */
	char ifname[IFNAMSIZ];
	bool created; /* we created the interface: it goes away when closed */
	int vnet_hdr_len;
	unsigned int offloads_supported; /* TAP_OFFLOAD_* the kernel accepted (probed) */
	unsigned int offloads; /* currently set */
};

/*
 * Attach to tap @ifname, creating it if absent, with IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR and a TAP_VNET_HDR_LEN header; offloads probed, all off.
 */
int tap_open(struct tap *t, const char *ifname, struct qerr *e);
/*
 * Take over an inherited tap fd (e.g. from libvirt). It must have been set
 * up with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR; it is made nonblocking and
 * close-on-exec. On success @t owns it (tap_close closes it); on failure it
 * stays the caller's.
 */
int tap_open_fd(struct tap *t, int fd, struct qerr *e);
void tap_close(struct tap *t);

/* Virtio-net header size on the tap: 10 (legacy without MRG_RXBUF) or 12. */
int tap_set_vnet_hdr_len(struct tap *t, int len);
/* Set exactly @offloads (TAP_OFFLOAD_*); -EOPNOTSUPP if not all supported. */
int tap_set_offloads(struct tap *t, unsigned int offloads);
/* "csum tso4 tso6 ..." for messages and reports; returns @buf. */
const char *tap_offloads_str(unsigned int offloads, char *buf, size_t len);

/*
 * One packet (virtio-net header first) per call. Bytes moved or -errno;
 * -EAGAIN when nothing is queued (read) or the tap is full (write).
 */
ssize_t tap_read(struct tap *t, const struct iovec *iov, int iovcnt);
ssize_t tap_write(struct tap *t, const struct iovec *iov, int iovcnt);

#endif
