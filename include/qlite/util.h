/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every module: logging, error messages, parsing. */
#ifndef QLITE_UTIL_H
#define QLITE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a)-1))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)

/*
 * A human-readable error travelling up the control plane next to the -errno.
 * Functions that can fail for user-visible reasons take a struct qerr * (may
 * be NULL) and fill it once, at the place that knows what went wrong.
 */
struct qerr {
	int errnum;
	char msg[512];
};

/* Fill @e (if non-NULL and still empty) and return -@errnum. */
int qerr_set(struct qerr *e, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define log_err(...) log_msg(__VA_ARGS__)

/*
 * Rate-limited log for guest-triggered conditions: a hostile guest must not
 * be able to flood the host log. Each call site keeps its own budget.
 */
struct ratelimit {
	uint64_t window_start_ns;
	unsigned int count;
	unsigned int suppressed;
};
void log_ratelimited(struct ratelimit *rl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

uint64_t time_now_ns(void);

/* "512M", "2G", "1048576", "64K": binary units, optional trailing 'B'/'iB'. */
int parse_size(const char *s, uint64_t *out);
/* Decimal unsigned in [min, max]. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Read a whole file into a malloc()ed buffer, refusing files above @max. */
int file_read_all(const char *path, size_t max, uint8_t **buf, size_t *len, struct qerr *e);
/* pread() all @len bytes at @off (EINTR retried); -ENODATA if the file ends first. */
int file_pread_all(int fd, void *buf, size_t len, off_t off);

#endif
