// SPDX-License-Identifier: MIT
/*
 * ACPI fixed hardware in port I/O: the PM1a event block (status, enable),
 * the PM1a control block (SCI_EN, sleep type/enable) and the FADT reset
 * register. S5 powers the VM off; the reset register resets it. There is no
 * SMI command port: the platform is always in ACPI mode (SCI_EN reads 1).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/devices.h"
#include "qlite/vm.h"

#define PM1_STS_PWRBTN (1u << 8)
#define PM1_STS_WAK (1u << 15)
#define PM1_EN_PWRBTN (1u << 8)
#define PM1_CNT_SCI_EN (1u << 0)
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_TYP_MASK (7u << PM1_CNT_SLP_TYP_SHIFT)
#define PM1_CNT_SLP_EN (1u << 13)

struct acpi_pm {
	uint16_t sts, en, cnt;
	uint8_t sci_level;

	struct vm *vm;
	pthread_mutex_t lock;
};

static const struct state_field acpi_pm_fields[] = {
	STATE_FIELD(struct acpi_pm, sts),
	STATE_FIELD(struct acpi_pm, en),
	STATE_FIELD(struct acpi_pm, cnt),
	STATE_FIELD(struct acpi_pm, sci_level),
};

static int acpi_pm_post_load(void *opaque)
{
	struct acpi_pm *pm = opaque;

	if (pm->sci_level > 1)
		return -EINVAL;
	vm_set_irq(pm->vm, ACPI_SCI_IRQ, pm->sci_level);
	return 0;
}

static const struct state_desc acpi_pm_state = {
	.name = "acpi-pm",
	.version = 1,
	.fields = acpi_pm_fields,
	.nr_fields = ARRAY_SIZE(acpi_pm_fields),
	.post_load = acpi_pm_post_load,
};

static void acpi_pm_update_sci(struct acpi_pm *pm)
{
	uint8_t level = !!(pm->sts & pm->en & PM1_EN_PWRBTN);

	if (level != pm->sci_level) {
		pm->sci_level = level;
		vm_set_irq(pm->vm, ACPI_SCI_IRQ, level);
	}
}

static uint16_t acpi_pm_reg_read(struct acpi_pm *pm, uint64_t off)
{
	switch (off) {
	case ACPI_PM1_EVT - ACPI_PM_BASE:
		return pm->sts;
	case ACPI_PM1_EVT + 2 - ACPI_PM_BASE:
		return pm->en;
	case ACPI_PM1_CNT - ACPI_PM_BASE:
		return pm->cnt | PM1_CNT_SCI_EN;
	default:
		return 0;
	}
}

static void acpi_pm_read(void *opaque, uint64_t off, uint8_t *data, unsigned int len)
{
	struct acpi_pm *pm = opaque;
	uint16_t v;

	memset(data, 0, len);
	pthread_mutex_lock(&pm->lock);
	/* Registers are 16 bits; byte accesses pick the right half. */
	v = acpi_pm_reg_read(pm, off & ~1ull);
	pthread_mutex_unlock(&pm->lock);
	if (off & 1)
		v >>= 8;
	memcpy(data, &v, MIN(len, 2u));
}

static void acpi_pm_write(void *opaque, uint64_t off, const uint8_t *data, unsigned int len)
{
	struct acpi_pm *pm = opaque;
	enum vm_stop_reason stop = VM_STOP_NONE;
	uint16_t v = 0;

	memcpy(&v, data, MIN(len, 2u));
	pthread_mutex_lock(&pm->lock);
	switch (off) {
	case ACPI_PM1_EVT - ACPI_PM_BASE:
		pm->sts &= ~v; /* write 1 to clear */
		break;
	case ACPI_PM1_EVT + 2 - ACPI_PM_BASE:
		pm->en = v;
		break;
	case ACPI_PM1_CNT - ACPI_PM_BASE:
		pm->cnt = v & ~(PM1_CNT_SLP_EN | PM1_CNT_SCI_EN);
		if ((v & PM1_CNT_SLP_EN) &&
		    ((v & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT) == ACPI_S5_TYP)
			stop = VM_STOP_POWEROFF;
		break;
	case ACPI_RESET_PORT - ACPI_PM_BASE:
		if ((v & 0xff) == ACPI_RESET_VALUE)
			stop = VM_STOP_RESET;
		break;
	default:
		break;
	}
	acpi_pm_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
	if (stop != VM_STOP_NONE)
		vm_request_stop(pm->vm, stop);
}

static const struct bus_ops acpi_pm_ops = {
	.read = acpi_pm_read,
	.write = acpi_pm_write,
};

void acpi_pm_power_button(struct vm *vm)
{
	struct acpi_pm *pm = vm->acpi_pm;

	pthread_mutex_lock(&pm->lock);
	pm->sts |= PM1_STS_PWRBTN;
	acpi_pm_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

static void acpi_pm_reset(void *opaque)
{
	struct acpi_pm *pm = opaque;

	pthread_mutex_lock(&pm->lock);
	pm->sts = pm->en = pm->cnt = 0;
	acpi_pm_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

static void acpi_pm_unrealize(void *opaque)
{
	struct acpi_pm *pm = opaque;

	pthread_mutex_destroy(&pm->lock);
	free(pm);
}

static const struct device_class acpi_pm_class = {
	.name = "acpi-pm",
	.state = &acpi_pm_state,
	.reset = acpi_pm_reset,
	.unrealize = acpi_pm_unrealize,
};

int acpi_pm_create(struct vm *vm)
{
	struct acpi_pm *pm = calloc(1, sizeof(*pm));
	int ret;

	if (!pm)
		return -ENOMEM;
	pm->vm = vm;
	pthread_mutex_init(&pm->lock, NULL);
	ret = vm_add_device(vm, &acpi_pm_class, pm);
	if (ret) {
		acpi_pm_unrealize(pm);
		return ret;
	}
	vm->acpi_pm = pm;
	return bus_register(&vm->pio, ACPI_PM_BASE, ACPI_PM_LEN, &acpi_pm_ops, pm, "acpi-pm");
}
