// SPDX-License-Identifier: MIT
/*
 * i8042 keyboard controller, reduced to what a guest without PS/2 devices
 * uses: command 0xfe pulses the CPU reset line (Linux "reboot=k", and its
 * fallback when the ACPI reset register fails). The FADT tells Linux there
 * is no 8042, so it never probes for a keyboard.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/devices.h"
#include "qlite/vm.h"

#define I8042_DATA 0x60
#define I8042_CMD 0x64
#define I8042_CMD_RESET 0xfe

struct i8042 {
	struct vm *vm;
};

static void i8042_read(void *opaque, uint64_t off, uint8_t *data, unsigned int len)
{
	(void)opaque;
	(void)off;
	/* Status: output buffer empty, input buffer empty; data: nothing. */
	memset(data, 0, len);
}

static void i8042_write(void *opaque, uint64_t off, const uint8_t *data, unsigned int len)
{
	struct i8042 *k = opaque;

	(void)len;
	if (off == I8042_CMD - I8042_DATA && data[0] == I8042_CMD_RESET)
		vm_request_stop(k->vm, VM_STOP_RESET);
}

static const struct bus_ops i8042_ops = {
	.read = i8042_read,
	.write = i8042_write,
};

static void i8042_unrealize(void *opaque)
{
	free(opaque);
}

/* No registers are kept: reads are constant and the reset line is an event. */
static const struct device_class i8042_class = {
	.name = "i8042",
	.stateless = true,
	.unrealize = i8042_unrealize,
};

int i8042_create(struct vm *vm)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	int ret;

	if (!k)
		return -ENOMEM;
	k->vm = vm;
	ret = vm_add_device(vm, &i8042_class, k);
	if (ret) {
		free(k);
		return ret;
	}
	/* 0x60..0x64 as one range; 0x61-0x63 (PC speaker/NMI status) read as 0. */
	return bus_register(&vm->pio, I8042_DATA, 5, &i8042_ops, k, "i8042");
}
