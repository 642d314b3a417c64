// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

int device_state_save(const struct device *d, uint8_t *buf, size_t len, size_t *used)
{
	const struct state_desc *sd = d->cls->state;
	size_t need = 8, off = 0;
	unsigned int i;
	uint32_t v32;
	uint16_t v16;

	if (!sd) {
		*used = 0;
		return 0; /* stateless: nothing to save */
	}
	for (i = 0; i < sd->nr_fields; i++)
		need += 2 + strlen(sd->fields[i].name) + 4 + sd->fields[i].size;
	*used = need;
	if (len < need)
		return -ENOSPC;
	v32 = sd->version;
	memcpy(buf + off, &v32, 4);
	v32 = sd->nr_fields;
	memcpy(buf + off + 4, &v32, 4);
	off = 8;
	for (i = 0; i < sd->nr_fields; i++) {
		const struct state_field *f = &sd->fields[i];

		v16 = (uint16_t)strlen(f->name);
		memcpy(buf + off, &v16, 2);
		memcpy(buf + off + 2, f->name, v16);
		off += 2 + v16;
		v32 = (uint32_t)f->size;
		memcpy(buf + off, &v32, 4);
		memcpy(buf + off + 4, (const uint8_t *)d->opaque + f->offset, f->size);
		off += 4 + f->size;
	}
	return 0;
}

int device_state_load(struct device *d, const uint8_t *buf, size_t len, struct qerr *e)
{
	const struct state_desc *sd = d->cls->state;
	const char *dev = d->cls->name;
	uint8_t *backup;
	size_t off = 8, total = 0;
	unsigned int i;
	uint32_t v32;
	int ret;

	if (!sd)
		return len ? qerr_set(e, EINVAL, "%s: stateless, but state was given", dev) : 0;
	if (len < 8)
		return qerr_set(e, EINVAL, "%s: state truncated (header)", dev);
	memcpy(&v32, buf, 4);
	if (v32 != sd->version)
		return qerr_set(e, EPROTO, "%s: state version %u, this qlite reads version %u", dev,
				v32, sd->version);
	memcpy(&v32, buf + 4, 4);
	if (v32 != sd->nr_fields)
		return qerr_set(e, EINVAL, "%s: %u state fields, expected %u", dev, v32,
				sd->nr_fields);
	/* Check the whole framing before touching the device. */
	for (i = 0; i < sd->nr_fields; i++) {
		const struct state_field *f = &sd->fields[i];
		uint16_t nlen;

		if (len - off < 2)
			return qerr_set(e, EINVAL, "%s: state truncated at field %u", dev, i);
		memcpy(&nlen, buf + off, 2);
		if (len - off - 2 < (size_t)nlen + 4)
			return qerr_set(e, EINVAL, "%s: state truncated at field %u", dev, i);
		if (nlen != strlen(f->name) || memcmp(buf + off + 2, f->name, nlen))
			return qerr_set(e, EINVAL, "%s: field %u is not '%s'", dev, i, f->name);
		memcpy(&v32, buf + off + 2 + nlen, 4);
		if (v32 != f->size)
			return qerr_set(e, EINVAL, "%s.%s: %u bytes, expected %zu", dev, f->name, v32,
					f->size);
		off += 2 + nlen + 4;
		if (len - off < f->size)
			return qerr_set(e, EINVAL, "%s.%s: state truncated", dev, f->name);
		off += f->size;
		total += f->size;
	}
	if (off != len)
		return qerr_set(e, EINVAL, "%s: %zu bytes after the last field", dev, len - off);
	/* Apply, keeping a copy to roll back to if the device rejects it. */
	backup = malloc(total ? total : 1);
	if (!backup)
		return qerr_set(e, ENOMEM, "out of memory");
	for (i = 0, off = 8, total = 0; i < sd->nr_fields; i++) {
		const struct state_field *f = &sd->fields[i];
		uint8_t *dst = (uint8_t *)d->opaque + f->offset;

		memcpy(backup + total, dst, f->size);
		off += 2 + strlen(f->name) + 4;
		memcpy(dst, buf + off, f->size);
		off += f->size;
		total += f->size;
	}
	ret = sd->post_load ? sd->post_load(d->opaque) : 0;
	if (ret) {
		for (i = 0, total = 0; i < sd->nr_fields; i++) {
			const struct state_field *f = &sd->fields[i];

			memcpy((uint8_t *)d->opaque + f->offset, backup + total, f->size);
			total += f->size;
		}
		if (sd->post_load)
			sd->post_load(d->opaque); /* re-apply the old state's runtime side */
		ret = qerr_set(e, -ret, "%s: the state is inconsistent (rejected on load)", dev);
	}
	free(backup);
	return ret;
}
