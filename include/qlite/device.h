/* SPDX-License-Identifier: MIT */
/*
 * The device model every device plugs into. A class either points at a
 * versioned state description or says it is stateless; there is no silent
 * default, so save/migration can refuse a device that declared neither.
 */
#ifndef QLITE_DEVICE_H
#define QLITE_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qerr;

/* One flat field of device state: bytes at @offset in the device struct. */
struct state_field {
	const char *name;
	size_t offset;
	size_t size;
};

#define STATE_FIELD(type, member) \
	{ #member, offsetof(type, member), sizeof(((type *)0)->member) }

struct state_desc {
	const char *name;
	uint32_t version;
	const struct state_field *fields;
	unsigned int nr_fields;
	/* Called after fields are loaded; rejects inconsistent state. */
	int (*post_load)(void *dev);
};

struct device_class {
	const char *name;
	/* Exactly one of these: a state description, or stateless = true. */
	const struct state_desc *state;
	bool stateless;
	void (*reset)(void *dev);
	/* Stop touching guest memory / backends; resume undoes it. */
	int (*quiesce)(void *dev);
	void (*resume)(void *dev);
	void (*unrealize)(void *dev);
};

struct device {
	const struct device_class *cls;
	void *opaque;
	struct device *next; /* creation order; save walks it reversed (leaves first) */
};

/* 0 if @cls declares its state (or statelessness), -EINVAL otherwise. */
int device_class_check(const struct device_class *cls);

/*
 * A device's state as bytes: u32 version, u32 field count, then per field
 * u16 name length, name, u32 size, the bytes. The device must be quiesced.
 * Save: -ENOSPC if @len is too small (*@used then says how much is needed).
 * Load treats @buf as hostile: every length is checked, names and sizes
 * must match the description, post_load validates; on any failure the
 * device keeps its previous state and @e names the field.
 */
int device_state_save(const struct device *d, uint8_t *buf, size_t len, size_t *used);
int device_state_load(struct device *d, const uint8_t *buf, size_t len, struct qerr *e);

#endif
