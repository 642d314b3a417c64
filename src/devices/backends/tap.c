// SPDX-License-Identifier: MIT
/* Tap backend (see include/qlite/tap.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "qlite/tap.h"

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

#define TAP_FLAGS (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)

static const struct {
	unsigned int bit;
	const char *name;
} tap_offload_names[] = {
	{ TAP_OFFLOAD_CSUM, "csum" }, { TAP_OFFLOAD_TSO4, "tso4" }, { TAP_OFFLOAD_TSO6, "tso6" },
	{ TAP_OFFLOAD_TSO_ECN, "tso_ecn" }, { TAP_OFFLOAD_UFO, "ufo" },
	{ TAP_OFFLOAD_USO4, "uso4" }, { TAP_OFFLOAD_USO6, "uso6" },
};

const char *tap_offloads_str(unsigned int offloads, char *buf, size_t len)
{
	size_t i, n = 0;

	if (!len)
		return buf;
	buf[0] = '\0';
	for (i = 0; i < ARRAY_SIZE(tap_offload_names); i++) {
		if (!(offloads & tap_offload_names[i].bit))
			continue;
		n += snprintf(buf + n, n < len ? len - n : 0, "%s%s", n ? " " : "",
			      tap_offload_names[i].name);
		if (n >= len)
			break;
	}
	if (!n)
		snprintf(buf, len, "none");
	return buf;
}

/*
 * Which offloads the kernel accepts: TUNSETOFFLOAD refuses bits it does not
 * know (EINVAL), and everything beyond csum needs csum (TSO-ECN also TSO).
 * Probing sets offloads; tap_setup() clears them again.
 */
static unsigned int tap_probe_offloads(int fd)
{
	static const unsigned int extra[][2] = {
		{ TAP_OFFLOAD_TSO4, 0 },
		{ TAP_OFFLOAD_TSO6, 0 },
		{ TAP_OFFLOAD_TSO_ECN, TAP_OFFLOAD_TSO4 },
		{ TAP_OFFLOAD_UFO, 0 },
		/* Linux takes USO only for both families at once. */
		{ TAP_OFFLOAD_USO4 | TAP_OFFLOAD_USO6, 0 },
	};
	unsigned int ok, i;

	if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM) < 0)
		return 0;
	ok = TAP_OFFLOAD_CSUM;
	for (i = 0; i < ARRAY_SIZE(extra); i++)
		if (!ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | extra[i][0] | extra[i][1]))
			ok |= extra[i][0];
	return ok;
}

/* Common set-up once @t->fd is a tap with TAP_FLAGS. */
static int tap_setup(struct tap *t, struct qerr *e)
{
	int fl = fcntl(t->fd, F_GETFL);

	if (fl < 0 || fcntl(t->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return qerr_set(e, errno, "tap %s: fcntl: %s", t->ifname, strerror(errno));
	if (tap_set_vnet_hdr_len(t, TAP_VNET_HDR_LEN))
		return qerr_set(e, errno, "tap %s: cannot set the virtio-net header size: %s",
				t->ifname, strerror(errno));
	t->offloads_supported = tap_probe_offloads(t->fd);
	/* Nothing the guest has not acked: it may not take GSO packets. */
	if (tap_set_offloads(t, 0))
		return qerr_set(e, errno, "tap %s: cannot clear offloads: %s", t->ifname,
				strerror(errno));
	return 0;
}

int tap_open(struct tap *t, const char *ifname, struct qerr *e)
{
	struct ifreq ifr = { 0 };
	bool existed;
	int err;

	memset(t, 0, sizeof(*t));
	t->fd = -1;
	if (!ifname || !ifname[0] || strlen(ifname) >= IFNAMSIZ || strchr(ifname, '/'))
		return qerr_set(e, EINVAL, "tap name '%s' is invalid (1 to %d characters, no '/')",
				ifname ? ifname : "", IFNAMSIZ - 1);
	t->fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (t->fd < 0) {
		err = errno;
		return qerr_set(e, err, "cannot open /dev/net/tun: %s%s", strerror(err),
				err == ENOENT ? " (is the tun module loaded?)" : "");
	}
	existed = if_nametoindex(ifname) != 0;
	ifr.ifr_flags = TAP_FLAGS;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(t->fd, TUNSETIFF, &ifr) < 0) {
		err = errno;
		close(t->fd);
		t->fd = -1;
		switch (err) {
		case EPERM:
			if (existed)
				return qerr_set(e, err,
						"cannot attach to tap %s: not permitted (owned by "
						"another user?)",
						ifname);
			return qerr_set(e, err,
					"cannot create tap %s: needs CAP_NET_ADMIN (or create it "
					"first: ip tuntap add %s mode tap user $USER)",
					ifname, ifname);
		case EBUSY:
			return qerr_set(e, err, "tap %s is in use by another process", ifname);
		case EINVAL:
			if (existed)
				return qerr_set(e, err,
						"%s exists and is not a single-queue tap device",
						ifname);
			break;
		}
		return qerr_set(e, err, "cannot open tap %s: %s", ifname, strerror(err));
	}
	snprintf(t->ifname, sizeof(t->ifname), "%s", ifr.ifr_name);
	t->created = !existed;
	err = tap_setup(t, e);
	if (err)
		tap_close(t);
	return err;
}

int tap_open_fd(struct tap *t, int fd, struct qerr *e)
{
	struct ifreq ifr = { 0 };
	int err;

	memset(t, 0, sizeof(*t));
	t->fd = -1;
	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return qerr_set(e, EBADF, "tap fd %d is not an open file descriptor", fd);
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return qerr_set(e, EINVAL, "fd %d is not an attached tap device (TUNGETIFF: %s)",
				fd, strerror(errno));
	if (!(ifr.ifr_flags & IFF_TAP))
		return qerr_set(e, EINVAL, "fd %d is a tun (layer 3) device, not a tap", fd);
	if (!(ifr.ifr_flags & IFF_NO_PI))
		return qerr_set(e, EINVAL, "tap fd %d was set up without IFF_NO_PI", fd);
	if (!(ifr.ifr_flags & IFF_VNET_HDR))
		return qerr_set(e, EINVAL, "tap fd %d was set up without IFF_VNET_HDR", fd);
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return qerr_set(e, errno, "tap fd %d: fcntl: %s", fd, strerror(errno));
	t->fd = fd;
	snprintf(t->ifname, sizeof(t->ifname), "%s", ifr.ifr_name);
	err = tap_setup(t, e);
	if (err)
		t->fd = -1; /* still the caller's */
	return err;
}

void tap_close(struct tap *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

int tap_set_vnet_hdr_len(struct tap *t, int len)
{
	if (len != 10 && len != TAP_VNET_HDR_LEN)
		return -EINVAL;
	if (ioctl(t->fd, TUNSETVNETHDRSZ, &len) < 0)
		return -errno;
	t->vnet_hdr_len = len;
	return 0;
}

int tap_set_offloads(struct tap *t, unsigned int offloads)
{
	if (offloads & ~t->offloads_supported)
		return -EOPNOTSUPP;
	if (ioctl(t->fd, TUNSETOFFLOAD, offloads) < 0)
		return -errno;
	t->offloads = offloads;
	return 0;
}

ssize_t tap_read(struct tap *t, const struct iovec *iov, int iovcnt)
{
	ssize_t n = readv(t->fd, iov, iovcnt);

	return n < 0 ? -errno : n;
}

ssize_t tap_write(struct tap *t, const struct iovec *iov, int iovcnt)
{
	ssize_t n = writev(t->fd, iov, iovcnt);

	return n < 0 ? -errno : n;
}
