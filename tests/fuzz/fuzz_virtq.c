// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the split-virtqueue walker. The input becomes the first
 * 64 KiB of a 1 MiB guest RAM: descriptor table at 0, available ring at
 * 0x4000, anything else (indirect tables, buffers) wherever the bytes point.
 * The first byte picks the negotiated features and the queue size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/virtio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM (1 * MiB)

static struct guest_mem *fuzz_mem(void)
{
	static struct guest_mem m; /* one mapping for all inputs: this is test code */
	static int ready;

	if (!ready) {
		if (mem_init(&m, RAM, MEM_BACKEND_ANON, NULL))
			abort();
		ready = 1;
	}
	return &m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct guest_mem *m = fuzz_mem();
	static struct virtq_elem e;
	struct virtq_state s = { 0 };
	struct virtq vq;
	const char *why;
	int i;

	if (size < 1)
		return 0;
	memset(m->base, 0, 0x10000 + 0x1000);
	memcpy(m->base, data + 1, MIN(size - 1, (size_t)0x10000));
	s.size = 1u << (data[0] % 11); /* 1 .. 1024 */
	s.desc_gpa = 0;
	s.avail_gpa = 0x4000;
	s.used_gpa = 0x10000;
	if (vq_enable(&vq, &s, m, data[0] & 0x80, data[0] & 0x40))
		return 0;
	for (i = 0; i < 64; i++) {
		int ret = vq_pop(&vq, &e, &why);

		if (ret <= 0)
			break;
		vq_mark_dirty(&vq, &e, (uint32_t)e.in_len);
		vq_push(&vq, &e, (uint32_t)e.in_len);
		vq_should_notify(&vq);
	}
	return 0;
}
