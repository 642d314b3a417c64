// SPDX-License-Identifier: MIT
/* Growable state buffers and bounded cursors (see sbuf.h). */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/sbuf.h"

void sbuf_init(struct sbuf *b)
{
	memset(b, 0, sizeof(*b));
}

void sbuf_free(struct sbuf *b)
{
	free(b->data);
	sbuf_init(b);
}

void sbuf_reset(struct sbuf *b)
{
	b->len = 0;
	b->oom = false;
}

uint8_t *sbuf_reserve(struct sbuf *b, size_t n)
{
	uint8_t *p;

	if (b->oom)
		return NULL;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2) {
				b->oom = true;
				return NULL;
			}
			cap *= 2;
		}
		p = realloc(b->data, cap);
		if (!p) {
			b->oom = true;
			return NULL;
		}
		b->data = p;
		b->cap = cap;
	}
	p = b->data + b->len;
	b->len += n;
	return p;
}

void sbuf_put(struct sbuf *b, const void *p, size_t n)
{
	uint8_t *d = sbuf_reserve(b, n);

	if (d && n)
		memcpy(d, p, n);
}

void sbuf_put_u8(struct sbuf *b, uint8_t v)
{
	sbuf_put(b, &v, 1);
}

void sbuf_put_u16(struct sbuf *b, uint16_t v)
{
	v = htole16(v);
	sbuf_put(b, &v, 2);
}

void sbuf_put_u32(struct sbuf *b, uint32_t v)
{
	v = htole32(v);
	sbuf_put(b, &v, 4);
}

void sbuf_put_u64(struct sbuf *b, uint64_t v)
{
	v = htole64(v);
	sbuf_put(b, &v, 8);
}

void sbuf_put_str(struct sbuf *b, const char *s)
{
	size_t n = strlen(s);

	if (n > UINT16_MAX) {
		b->oom = true;
		return;
	}
	sbuf_put_u16(b, (uint16_t)n);
	sbuf_put(b, s, n);
}

int sbuf_status(const struct sbuf *b)
{
	return b->oom ? -ENOMEM : 0;
}

void scur_init(struct scur *c, const void *p, size_t len)
{
	c->p = p;
	c->left = len;
	c->bad = false;
}

const uint8_t *scur_take(struct scur *c, size_t n)
{
	const uint8_t *p;

	if (c->bad || n > c->left) {
		c->bad = true;
		return NULL;
	}
	p = c->p;
	c->p += n;
	c->left -= n;
	return p;
}

bool scur_get(struct scur *c, void *out, size_t n)
{
	const uint8_t *p = scur_take(c, n);

	if (!p) {
		memset(out, 0, n);
		return false;
	}
	memcpy(out, p, n);
	return true;
}

uint8_t scur_u8(struct scur *c)
{
	uint8_t v;

	scur_get(c, &v, 1);
	return v;
}

uint16_t scur_u16(struct scur *c)
{
	uint16_t v;

	scur_get(c, &v, 2);
	return le16toh(v);
}

uint32_t scur_u32(struct scur *c)
{
	uint32_t v;

	scur_get(c, &v, 4);
	return le32toh(v);
}

uint64_t scur_u64(struct scur *c)
{
	uint64_t v;

	scur_get(c, &v, 8);
	return le64toh(v);
}

bool scur_str(struct scur *c, char *out, size_t outlen)
{
	uint16_t n = scur_u16(c);
	const uint8_t *p;

	if (c->bad || !outlen || n > outlen - 1) {
		c->bad = true;
		if (outlen)
			out[0] = 0;
		return false;
	}
	p = scur_take(c, n);
	if (!p) {
		out[0] = 0;
		return false;
	}
	memcpy(out, p, n);
	out[n] = 0;
	return true;
}
