// SPDX-License-Identifier: MIT
/*
 * Tap backend. The process first moves into a fresh network namespace
 * (unshare(CLONE_NEWNET), like `unshare -n`), so creating taps and giving
 * them addresses never touches the host's networking. Needs CAP_NET_ADMIN
 * and CAP_SYS_ADMIN (root); without them every test skips with the reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qlite/tap.h"

struct env {
	char skip_reason[160];
};

static int group_setup(void **state)
{
	struct env *env = test_calloc(1, sizeof(*env));

	if (!env)
		return -1;
	if (unshare(CLONE_NEWNET) < 0)
		snprintf(env->skip_reason, sizeof(env->skip_reason),
			 "cannot enter a new network namespace: %s", strerror(errno));
	else if (access("/dev/net/tun", R_OK | W_OK) < 0)
		snprintf(env->skip_reason, sizeof(env->skip_reason), "/dev/net/tun: %s",
			 strerror(errno));
	*state = env;
	return 0;
}

static int group_teardown(void **state)
{
	test_free(*state);
	return 0;
}

static void need_netns(void **state)
{
	struct env *env = *state;

	if (env->skip_reason[0]) {
		print_message("SKIP: %s\n", env->skip_reason);
		skip();
	}
}

/* A raw tap fd with @flags, optionally persistent (outlives its fd). */
static int raw_tap(const char *name, short flags, bool persist)
{
	struct ifreq ifr = { .ifr_flags = flags };
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	assert_int_equal(ioctl(fd, TUNSETIFF, &ifr), 0);
	if (persist)
		assert_int_equal(ioctl(fd, TUNSETPERSIST, 1), 0);
	return fd;
}

static void unpersist(const char *name)
{
	int fd = raw_tap(name, IFF_TAP | IFF_NO_PI, false);

	assert_int_equal(ioctl(fd, TUNSETPERSIST, 0), 0);
	close(fd);
}

static void test_create(void **state)
{
	struct tap t;
	struct qerr e = { 0 };
	struct ifreq ifr = { 0 };
	int hdr = 0;

	need_netns(state);
	assert_int_equal(if_nametoindex("qlt0"), 0);
	assert_int_equal(tap_open(&t, "qlt0", &e), 0);
	assert_string_equal(t.ifname, "qlt0");
	assert_true(t.created);
	assert_true(if_nametoindex("qlt0") > 0);
	assert_int_equal(t.vnet_hdr_len, TAP_VNET_HDR_LEN);
	assert_int_equal(ioctl(t.fd, TUNGETVNETHDRSZ, &hdr), 0);
	assert_int_equal(hdr, TAP_VNET_HDR_LEN);
	assert_int_equal(ioctl(t.fd, TUNGETIFF, &ifr), 0);
	assert_int_equal(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
			 IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	assert_true(fcntl(t.fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(t.fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(t.offloads, 0);
	tap_close(&t);
	assert_int_equal(t.fd, -1);
	/* Created by us, not persistent: gone with the fd. */
	assert_int_equal(if_nametoindex("qlt0"), 0);
}

static void test_existing(void **state)
{
	struct tap t;
	struct qerr e = { 0 };

	need_netns(state);
	close(raw_tap("qlt1", IFF_TAP | IFF_NO_PI, true));
	assert_int_equal(tap_open(&t, "qlt1", &e), 0);
	assert_false(t.created);
	assert_int_equal(t.vnet_hdr_len, TAP_VNET_HDR_LEN);
	tap_close(&t);
	assert_true(if_nametoindex("qlt1") > 0);
	unpersist("qlt1");
	assert_int_equal(if_nametoindex("qlt1"), 0);
}

static void expect_error(int ret, const struct qerr *e, int err, const char *needle)
{
	assert_int_equal(ret, -err);
	if (!strstr(e->msg, needle))
		fail_msg("message '%s' lacks '%s'", e->msg, needle);
}

static void test_open_errors(void **state)
{
	struct tap t;
	struct qerr e = { 0 };
	int fd;

	need_netns(state);
	expect_error(tap_open(&t, "", &e), &e, EINVAL, "is invalid");
	memset(&e, 0, sizeof(e));
	expect_error(tap_open(&t, "a-name-longer-than-15", &e), &e, EINVAL, "1 to 15 characters");
	memset(&e, 0, sizeof(e));
	expect_error(tap_open(&t, "a/b", &e), &e, EINVAL, "is invalid");
	assert_int_equal(t.fd, -1);

	/* A tun (layer 3) interface of that name exists. */
	fd = raw_tap("qltun", IFF_TUN | IFF_NO_PI, false);
	memset(&e, 0, sizeof(e));
	expect_error(tap_open(&t, "qltun", &e), &e, EINVAL, "not a single-queue tap");
	close(fd);
	/* Held by another fd (single queue). */
	fd = raw_tap("qlbusy", IFF_TAP | IFF_NO_PI, false);
	memset(&e, 0, sizeof(e));
	expect_error(tap_open(&t, "qlbusy", &e), &e, EBUSY, "in use");
	close(fd);
	/* "lo" exists and is no tap at all. */
	memset(&e, 0, sizeof(e));
	assert_true(tap_open(&t, "lo", &e) < 0);
	assert_non_null(strstr(e.msg, "lo"));
}

static void test_inherited_fd(void **state)
{
	struct tap t;
	struct qerr e = { 0 };
	struct ifreq ifr;
	int fd, file;

	need_netns(state);
	fd = raw_tap("qlfd0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, false);
	assert_int_equal(tap_open_fd(&t, fd, &e), 0);
	assert_string_equal(t.ifname, "qlfd0");
	assert_false(t.created);
	assert_int_equal(t.vnet_hdr_len, TAP_VNET_HDR_LEN);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	tap_close(&t);
	assert_true(fcntl(fd, F_GETFD) < 0); /* closed: it was ours */

	/* Refused, and left open for the caller. */
	fd = raw_tap("qlfd1", IFF_TAP | IFF_NO_PI, false);
	memset(&e, 0, sizeof(e));
	expect_error(tap_open_fd(&t, fd, &e), &e, EINVAL, "without IFF_VNET_HDR");
	assert_true(fcntl(fd, F_GETFD) >= 0);
	close(fd);
	/* Some kernels (seen on 6.18) report IFF_NO_PI on every tap. */
	fd = raw_tap("qlfd2", IFF_TAP | IFF_VNET_HDR, false);
	memset(&ifr, 0, sizeof(ifr));
	assert_int_equal(ioctl(fd, TUNGETIFF, &ifr), 0);
	memset(&e, 0, sizeof(e));
	if (!(ifr.ifr_flags & IFF_NO_PI))
		expect_error(tap_open_fd(&t, fd, &e), &e, EINVAL, "without IFF_NO_PI");
	else
		print_message("note: this kernel sets IFF_NO_PI on taps by itself\n");
	close(fd);
	fd = raw_tap("qlfd3", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, false);
	memset(&e, 0, sizeof(e));
	expect_error(tap_open_fd(&t, fd, &e), &e, EINVAL, "tun (layer 3)");
	close(fd);
	/* /dev/net/tun opened but never attached, a regular file, nothing. */
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	memset(&e, 0, sizeof(e));
	expect_error(tap_open_fd(&t, fd, &e), &e, EINVAL, "not an attached tap");
	close(fd);
	file = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	memset(&e, 0, sizeof(e));
	expect_error(tap_open_fd(&t, file, &e), &e, EINVAL, "not an attached tap");
	close(file);
	memset(&e, 0, sizeof(e));
	expect_error(tap_open_fd(&t, 1000, &e), &e, EBADF, "not an open file descriptor");
	memset(&e, 0, sizeof(e));
	expect_error(tap_open_fd(&t, -1, &e), &e, EBADF, "not an open file descriptor");
}

static void test_offloads(void **state)
{
	struct tap t;
	struct qerr e = { 0 };
	char s[128];
	unsigned int want = TAP_OFFLOAD_CSUM | TAP_OFFLOAD_TSO4 | TAP_OFFLOAD_TSO6;

	need_netns(state);
	assert_int_equal(tap_open(&t, "qlt2", &e), 0);
	print_message("tap offloads supported here: %s\n",
		      tap_offloads_str(t.offloads_supported, s, sizeof(s)));
	/* Every Linux with IFF_VNET_HDR has had these. */
	assert_int_equal(t.offloads_supported & want, want);
	assert_true(t.offloads_supported & TAP_OFFLOAD_TSO_ECN);
	assert_int_equal(tap_set_offloads(&t, want | TAP_OFFLOAD_TSO_ECN), 0);
	assert_int_equal(t.offloads, want | TAP_OFFLOAD_TSO_ECN);
	assert_int_equal(tap_set_offloads(&t, 0x80), -EOPNOTSUPP);
	assert_int_equal(t.offloads, want | TAP_OFFLOAD_TSO_ECN);
	assert_int_equal(tap_set_offloads(&t, 0), 0);
	assert_int_equal(tap_set_vnet_hdr_len(&t, 10), 0);
	assert_int_equal(tap_set_vnet_hdr_len(&t, 11), -EINVAL);
	assert_int_equal(t.vnet_hdr_len, 10);
	tap_close(&t);

	assert_string_equal(tap_offloads_str(0, s, sizeof(s)), "none");
	assert_string_equal(tap_offloads_str(TAP_OFFLOAD_CSUM | TAP_OFFLOAD_USO6, s, sizeof(s)),
			    "csum uso6");
	/* Truncated, still terminated. */
	assert_int_equal(strlen(tap_offloads_str(0x7f, s, 8)), 7);
}

static void if_up_with_addr(const char *name, const char *addr)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;

	assert_true(s >= 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	sin->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
	assert_int_equal(ioctl(s, SIOCSIFADDR, &ifr), 0);
	assert_int_equal(inet_pton(AF_INET, "255.255.255.0", &sin->sin_addr), 1);
	assert_int_equal(ioctl(s, SIOCSIFNETMASK, &ifr), 0);
	assert_int_equal(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	assert_int_equal(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
	close(s);
}

/*
 * Guest -> host -> guest: write an ARP request for the tap's address as the
 * guest would (virtio-net header first); the host's reply comes back out of
 * the tap with a header in front.
 */
static void test_arp_roundtrip(void **state)
{
	static const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
	struct tap t;
	struct qerr e = { 0 };
	uint8_t hdr[TAP_VNET_HDR_LEN] = { 0 }, frame[42], in[2048];
	uint8_t host_ip[4] = { 10, 9, 8, 1 }, guest_ip[4] = { 10, 9, 8, 2 };
	struct iovec out[2] = { { hdr, sizeof(hdr) }, { frame, sizeof(frame) } };
	struct iovec rx = { in, sizeof(in) };
	struct pollfd pfd;
	int tries, found = 0;
	ssize_t n;

	need_netns(state);
	assert_int_equal(tap_open(&t, "qlt3", &e), 0);
	assert_int_equal(tap_read(&t, &rx, 1), -EAGAIN); /* nothing queued yet */
	if_up_with_addr("qlt3", "10.9.8.1");

	memset(frame, 0xff, 6); /* broadcast */
	memcpy(frame + 6, guest_mac, 6);
	frame[12] = 0x08;
	frame[13] = 0x06; /* ARP */
	memcpy(frame + 14, "\x00\x01\x08\x00\x06\x04\x00\x01", 8); /* Ethernet/IPv4 request */
	memcpy(frame + 22, guest_mac, 6);
	memcpy(frame + 28, guest_ip, 4);
	memset(frame + 32, 0, 6);
	memcpy(frame + 38, host_ip, 4);
	assert_int_equal(tap_write(&t, out, 2), (ssize_t)(sizeof(hdr) + sizeof(frame)));

	/* The interface may also send IPv6 noise; look for the ARP reply. */
	for (tries = 0; tries < 50 && !found; tries++) {
		pfd = (struct pollfd){ .fd = t.fd, .events = POLLIN };
		assert_true(poll(&pfd, 1, 10000) >= 0); /* a hang guard, nothing is timed */
		n = tap_read(&t, &rx, 1);
		if (n == -EAGAIN)
			continue;
		assert_true(n > TAP_VNET_HDR_LEN);
		if (n < TAP_VNET_HDR_LEN + 42 || in[TAP_VNET_HDR_LEN + 12] != 0x08 ||
		    in[TAP_VNET_HDR_LEN + 13] != 0x06)
			continue;
		found = 1;
	}
	assert_true(found);
	/* Header: no offload flags or GSO on an ARP reply. */
	assert_int_equal(in[0], 0); /* flags */
	assert_int_equal(in[1], 0); /* gso_type */
	{
		const uint8_t *f = in + TAP_VNET_HDR_LEN;

		assert_memory_equal(f, guest_mac, 6); /* to the guest */
		assert_int_equal(f[20], 0);
		assert_int_equal(f[21], 2); /* reply */
		assert_memory_equal(f + 28, host_ip, 4); /* sender: the host */
		assert_memory_equal(f + 32, guest_mac, 6);
		assert_memory_equal(f + 38, guest_ip, 4);
	}
	tap_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_existing),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_inherited_fd),
		cmocka_unit_test(test_offloads),
		cmocka_unit_test(test_arp_roundtrip),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
