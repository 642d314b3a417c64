// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the destination's incoming message parser. The input
 * is a mode byte and a byte stream of migration messages (u32 type, u32
 * length, payload), fed through the header check and the state machine
 * (mig_check_hdr, mig_rx_msg) until the first refusal, as the destination
 * does. Mode bit 0 prepends a valid HELLO and CONFIG, so mutations reach
 * pre-copy, STATE (a state stream: ckpt_state_read) and the hand-over;
 * bit 1 makes it a post-copy destination (DISCARD, POSTCOPY_RUN, the push).
 * The hooks abort on any page range the state machine should have refused.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../src/migration/mig_internal.h"
#include "qlite/sbuf.h"
#include "qlite/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The configuration the prologue announces (corpus seeds use the same bytes). */
#define FUZZ_CONFIG "{\"mem-size\": 16777216, \"cpus\": 1, \"mem-backend\": \"anon\"}"

struct fuzz_vm {
	uint64_t npages;
	uint64_t sum; /* touch page bytes, so ASan sees any over-read */
};

static int fz_config(void *opaque, const struct vm_config *cfg, struct qerr *e)
{
	struct fuzz_vm *v = opaque;

	if (!cfg->mem_size || cfg->mem_size % 4096 || !cfg->ncpus)
		abort(); /* the codec promised a usable configuration */
	v->npages = cfg->mem_size / 4096;
	return 0;
}

static int fz_pages(void *opaque, uint64_t first, uint64_t n, const uint8_t *data,
		    struct qerr *e)
{
	struct fuzz_vm *v = opaque;

	if (!n || first >= v->npages || n > v->npages - first || (data && n > MIG_RUN_MAX))
		abort();
	if (data)
		for (uint64_t i = 0; i < n * 4096; i += 512)
			v->sum += data[i] + data[n * 4096 - 1];
	return 0;
}

static int fz_discard(void *opaque, uint64_t first, uint64_t n, struct qerr *e)
{
	struct fuzz_vm *v = opaque;

	if (!n || first >= v->npages || n > v->npages - first)
		abort();
	return 0;
}

static const struct mig_rx_ops fz_ops = { fz_config, fz_pages, fz_discard };

static size_t prologue(uint8_t *out, size_t cap)
{
	struct mig_hello h = { .vmin = 1, .vmax = 1, .page_size = 4096, .ram_pages = 4096 };
	static int fd = -1;
	struct stream_writer w;
	struct qerr e = { 0 };
	struct sbuf b;
	size_t n = 0;
	ssize_t len;

	if (fd < 0 && (fd = memfd_create("fuzz-migrate", MFD_CLOEXEC)) < 0)
		abort();
	sbuf_init(&b);
	mig_hello_encode(&h, &b);
	memcpy(out, "\x01\0\0\0", 4);
	out[4] = (uint8_t)b.len;
	memset(out + 5, 0, 3);
	memcpy(out + 8, b.data, b.len);
	n = 8 + b.len;
	sbuf_free(&b);
	if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET))
		abort();
	stream_writer_init(&w, fd);
	if (stream_begin(&w, &e) ||
	    stream_put(&w, STREAM_VM, "vm", 0, CKPT_VM_VERSION, FUZZ_CONFIG, strlen(FUZZ_CONFIG),
		       &e) ||
	    stream_finish(&w, &e))
		abort();
	len = pread(fd, out + n + 8, cap - n - 8, 0);
	if (len <= 0)
		abort();
	memcpy(out + n, "\x03\0\0\0", 4);
	for (int i = 0; i < 4; i++)
		out[n + 4 + i] = (uint8_t)((uint64_t)len >> (8 * i));
	return n + 8 + (size_t)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_vm vm = { 0 };
	struct mig_rx rx;
	uint8_t pro[1024];
	uint8_t *buf;
	size_t len, off = 0, plen = 0;

	if (!size)
		return 0;
	if (data[0] & 1)
		plen = prologue(pro, sizeof(pro));
	len = plen + size - 1;
	buf = malloc(len ? len : 1);
	if (!buf)
		abort();
	memcpy(buf, pro, plen);
	memcpy(buf + plen, data + 1, size - 1);
	mig_rx_init(&rx, &fz_ops, &vm);
	/* Bit 1: a post-copy destination (its messages count if HELLO offers it). */
	if (data[0] & 2)
		rx.supported = MIG_F_POSTCOPY;
	while (len - off >= MIG_HDR_LEN) {
		struct qerr e = { 0 };
		uint32_t type, mlen;
		uint8_t *p;
		int ret;

		memcpy(&type, buf + off, 4);
		memcpy(&mlen, buf + off + 4, 4);
		off += MIG_HDR_LEN;
		if (mig_check_hdr(type, mlen, true, &e))
			break;
		if (mlen > len - off)
			break; /* truncated: the destination would say so */
		/* An exact copy: ASan sees any read past the payload. */
		p = malloc(mlen ? mlen : 1);
		if (!p)
			abort();
		memcpy(p, buf + off, mlen);
		off += mlen;
		ret = mig_rx_msg(&rx, type, p, mlen, &e);
		free(p);
		if (ret) {
			if (ret > 0 || !e.msg[0])
				abort(); /* every refusal is -errno and explains itself */
			break;
		}
		if (rx.phase == MIG_RX_DONE)
			break;
	}
	mig_rx_free(&rx);
	free(buf);
	return 0;
}
