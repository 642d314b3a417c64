// SPDX-License-Identifier: MIT
#include <errno.h>

#include "qlite/device.h"
#include "qlite/util.h"

int device_class_check(const struct device_class *cls)
{
	if (!cls || !cls->name)
		return -EINVAL;
	/* Exactly one: a state description or an explicit "stateless". */
	if (!!cls->state == cls->stateless) {
		log_msg("device class %s must declare its state or say it is stateless",
			cls->name);
		return -EINVAL;
	}
	if (cls->state && (!cls->state->fields || !cls->state->nr_fields)) {
		log_msg("device class %s has an empty state description", cls->name);
		return -EINVAL;
	}
	return 0;
}
