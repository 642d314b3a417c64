/* SPDX-License-Identifier: MIT */
/*
 * Byte buffers for state: sbuf grows as state is written (little-endian
 * fixed-width fields), scur reads it back treating every byte as hostile:
 * each get checks the remaining length, and the first failure sticks, so a
 * decoder can read a whole record and check scur_ok() once.
 */
#ifndef QLITE_SBUF_H
#define QLITE_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sbuf {
	uint8_t *data;
	size_t len, cap;
	bool oom; /* an allocation failed; the contents are incomplete */
};

void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_reset(struct sbuf *b); /* len = 0, keeps the allocation */
/* Room for @n more bytes; returns where they go (NULL and oom on failure). */
uint8_t *sbuf_reserve(struct sbuf *b, size_t n);
void sbuf_put(struct sbuf *b, const void *p, size_t n);
void sbuf_put_u8(struct sbuf *b, uint8_t v);
void sbuf_put_u16(struct sbuf *b, uint16_t v);
void sbuf_put_u32(struct sbuf *b, uint32_t v);
void sbuf_put_u64(struct sbuf *b, uint64_t v);
/* u16 length, then the bytes (no NUL). Strings over 65535 bytes set oom. */
void sbuf_put_str(struct sbuf *b, const char *s);
/* -ENOMEM if any put failed, else 0. */
int sbuf_status(const struct sbuf *b);

struct scur {
	const uint8_t *p;
	size_t left;
	bool bad; /* a read ran past the end (or a value was out of range) */
};

void scur_init(struct scur *c, const void *p, size_t len);
bool scur_get(struct scur *c, void *out, size_t n);
uint8_t scur_u8(struct scur *c);
uint16_t scur_u16(struct scur *c);
uint32_t scur_u32(struct scur *c);
uint64_t scur_u64(struct scur *c);
/* A pointer to the next @n bytes (NULL, and bad, if fewer are left). */
const uint8_t *scur_take(struct scur *c, size_t n);
/* A u16-length string copied into @out (NUL-terminated); bad if > outlen-1. */
bool scur_str(struct scur *c, char *out, size_t outlen);
static inline bool scur_ok(const struct scur *c)
{
	return !c->bad;
}
/* All bytes consumed and no error. */
static inline bool scur_done(const struct scur *c)
{
	return !c->bad && c->left == 0;
}

#endif
