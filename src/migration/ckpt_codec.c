// SPDX-License-Identifier: MIT
/*
 * Checkpoint payload codecs: the RAM page map, disk identities and the VM
 * configuration (JSON). Decoders treat their input as hostile.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"
#include "qlite/mem.h"
#include "qlite/virtio.h"
#include "qlite/vm.h"
#include "qlite/vpmu.h"

/* 64 TiB of guest RAM: far beyond anything a map of ours describes. */
#define RAM_MAX_PAGES (1ULL << 34)

int ram_map_alloc(struct ram_map *m, uint64_t npages)
{
	memset(m, 0, sizeof(*m));
	if (!npages || npages > RAM_MAX_PAGES)
		return -EINVAL;
	m->npages = npages;
	m->kind = calloc(npages, 1);
	m->ref = calloc(npages, sizeof(*m->ref));
	if (!m->kind || !m->ref) {
		ram_map_free(m);
		return -ENOMEM;
	}
	return 0;
}

void ram_map_free(struct ram_map *m)
{
	free(m->kind);
	free(m->ref);
	m->kind = NULL;
	m->ref = NULL;
}

/*
 * u32 page size, u64 pages, id, u8 has_parent [parent id, parent dir],
 * then runs until every page is covered: u8 kind, u32 count, and for disk
 * runs count x (u8 disk, u64 block, u64 hash).
 */
void ram_map_encode(const struct ram_map *m, struct sbuf *b)
{
	uint64_t p = 0;

	sbuf_put_u32(b, 4096);
	sbuf_put_u64(b, m->npages);
	sbuf_put(b, m->id, CKPT_ID_LEN);
	sbuf_put_u8(b, m->has_parent);
	if (m->has_parent) {
		sbuf_put(b, m->parent_id, CKPT_ID_LEN);
		sbuf_put_str(b, m->parent_dir);
	}
	while (p < m->npages) {
		uint8_t k = m->kind[p];
		uint64_t n = 1;

		while (p + n < m->npages && m->kind[p + n] == k && n < UINT32_MAX)
			n++;
		sbuf_put_u8(b, k);
		sbuf_put_u32(b, (uint32_t)n);
		if (k == CKPT_PAGE_DISK) {
			uint64_t i;

			for (i = p; i < p + n; i++) {
				sbuf_put_u8(b, (uint8_t)((m->ref[i].key >> 48) - 1));
				sbuf_put_u64(b, m->ref[i].key & ((1ULL << 48) - 1));
				sbuf_put_u64(b, m->ref[i].hash);
			}
		}
		p += n;
	}
}

int ram_map_decode(struct ram_map *m, const uint8_t *buf, size_t len, struct qerr *e)
{
	struct scur c;
	uint64_t npages, p = 0;
	uint32_t psize;
	int ret;

	scur_init(&c, buf, len);
	psize = scur_u32(&c);
	npages = scur_u64(&c);
	if (!scur_ok(&c))
		return qerr_set(e, EINVAL, "ram: truncated header");
	if (psize != 4096)
		return qerr_set(e, EINVAL, "ram: page size %u, this qlite uses 4096", psize);
	ret = ram_map_alloc(m, npages);
	if (ret)
		return qerr_set(e, -ret, "ram: cannot hold a map of %llu pages",
				(unsigned long long)npages);
	scur_get(&c, m->id, CKPT_ID_LEN);
	{
		uint8_t hp = scur_u8(&c);

		if (hp > 1)
			goto bad;
		m->has_parent = hp;
	}
	if (m->has_parent) {
		scur_get(&c, m->parent_id, CKPT_ID_LEN);
		if (!scur_str(&c, m->parent_dir, sizeof(m->parent_dir)) || !m->parent_dir[0])
			goto bad;
	}
	while (p < npages) {
		uint8_t k = scur_u8(&c);
		uint32_t n = scur_u32(&c);

		if (!scur_ok(&c))
			goto bad;
		if (k >= CKPT_PAGE_KINDS || n == 0 || n > npages - p) {
			ram_map_free(m);
			return qerr_set(e, EINVAL, "ram: bad run at page %llu (kind %u, %u pages)",
					(unsigned long long)p, k, n);
		}
		if (k == CKPT_PAGE_PARENT && !m->has_parent) {
			ram_map_free(m);
			return qerr_set(e, EINVAL, "ram: page %llu refers to a parent it does not name",
					(unsigned long long)p);
		}
		memset(m->kind + p, k, n);
		if (k == CKPT_PAGE_DISK) {
			uint32_t i;

			for (i = 0; i < n; i++) {
				uint8_t disk = scur_u8(&c);
				uint64_t block = scur_u64(&c);

				m->ref[p + i].hash = scur_u64(&c);
				if (!scur_ok(&c))
					goto bad;
				if (disk >= ELIDE_MAX_DISKS || block >= (1ULL << 48)) {
					ram_map_free(m);
					return qerr_set(e, EINVAL, "ram: page %llu: bad disk reference",
							(unsigned long long)(p + i));
				}
				m->ref[p + i].key = ((uint64_t)(disk + 1) << 48) | block;
			}
		}
		p += n;
	}
	if (!scur_done(&c))
		goto bad;
	return 0;
bad:
	ram_map_free(m);
	return qerr_set(e, EINVAL, "ram: page map truncated or malformed");
}

void ckpt_disk_encode(const struct ckpt_disk *d, struct sbuf *b)
{
	sbuf_put_str(b, d->path);
	sbuf_put_u64(b, d->size);
	sbuf_put_u64(b, d->dev);
	sbuf_put_u64(b, d->ino);
	sbuf_put_u64(b, (uint64_t)d->mtime_sec);
	sbuf_put_u64(b, (uint64_t)d->mtime_nsec);
}

int ckpt_disk_decode(struct ckpt_disk *d, const uint8_t *buf, size_t len, struct qerr *e)
{
	struct scur c;

	scur_init(&c, buf, len);
	scur_str(&c, d->path, sizeof(d->path));
	d->size = scur_u64(&c);
	d->dev = scur_u64(&c);
	d->ino = scur_u64(&c);
	d->mtime_sec = (int64_t)scur_u64(&c);
	d->mtime_nsec = (int64_t)scur_u64(&c);
	if (!scur_done(&c))
		return qerr_set(e, EINVAL, "disk: record truncated or malformed");
	return 0;
}

/* ---- VM configuration --------------------------------------------------- */

static void add_str(struct json_object *o, const char *k, const char *v)
{
	if (v)
		json_object_object_add(o, k, json_object_new_string(v));
}

static char *pmu_spec(const struct vpmu_config *p)
{
	char *s;
	size_t len = 16;
	unsigned int i;

	if (!p || p->mode == VPMU_OFF)
		return strdup("off");
	if (p->mode == VPMU_ON)
		return strdup("on");
	for (i = 0; i < p->nevents; i++)
		len += strlen(p->events[i].name) + 1;
	s = malloc(len);
	if (!s)
		return NULL;
	strcpy(s, "allow=");
	for (i = 0; i < p->nevents; i++) {
		if (i)
			strcat(s, ",");
		strcat(s, p->events[i].name);
	}
	return s;
}

char *ckpt_config_to_json(const struct vm_config *cfg)
{
	struct json_object *o = json_object_new_object(), *disks, *nets;
	char *pmu = pmu_spec(cfg->pmu), *out;
	unsigned int i;

	json_object_object_add(o, "mem-size", json_object_new_int64((int64_t)cfg->mem_size));
	add_str(o, "mem-backend", cfg->mem_backend == MEM_BACKEND_MEMFD ? "memfd" : "anon");
	json_object_object_add(o, "cpus", json_object_new_int((int)cfg->ncpus));
	add_str(o, "kernel", cfg->kernel);
	add_str(o, "initrd", cfg->initrd);
	add_str(o, "cmdline", cfg->cmdline);
	json_object_object_add(o, "no-reboot", json_object_new_boolean(cfg->no_reboot));
	json_object_object_add(o, "rng", json_object_new_boolean(cfg->rng));
	json_object_object_add(o, "balloon", json_object_new_boolean(cfg->balloon));
	json_object_object_add(o, "balloon-reporting",
			       json_object_new_boolean(!cfg->balloon_no_reporting));
	add_str(o, "console", cfg->console_virtio ? "virtio" : "serial");
	add_str(o, "pmu", pmu ? pmu : "off");
	free(pmu);
	disks = json_object_new_array();
	for (i = 0; i < cfg->ndisks; i++) {
		struct json_object *d = json_object_new_object();

		add_str(d, "path", cfg->disks[i].path);
		json_object_object_add(d, "readonly", json_object_new_boolean(cfg->disks[i].readonly));
		json_object_object_add(d, "direct", json_object_new_boolean(cfg->disks[i].direct));
		json_object_object_add(d, "coalesce",
				       json_object_new_boolean(!cfg->disks[i].no_coalesce));
		add_str(d, "serial", cfg->disks[i].serial);
		json_object_array_add(disks, d);
	}
	json_object_object_add(o, "disks", disks);
	nets = json_object_new_array();
	for (i = 0; i < cfg->nnets; i++) {
		struct json_object *n = json_object_new_object();
		char mac[18];

		if (cfg->nets[i].tap)
			add_str(n, "tap", cfg->nets[i].tap);
		else
			json_object_object_add(n, "fd", json_object_new_boolean(true));
		if (cfg->nets[i].has_mac) {
			const uint8_t *m = cfg->nets[i].mac;

			snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2],
				 m[3], m[4], m[5]);
			add_str(n, "mac", mac);
		}
		json_object_array_add(nets, n);
	}
	json_object_object_add(o, "nets", nets);
	out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return out;
}

/* Arrays the parsed configuration points into, owned by the JSON object. */
struct config_store {
	struct disk_config disks[ELIDE_MAX_DISKS];
	struct net_config nets[16];
	struct vpmu_config pmu;
};

static const char *get_str(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool get_bool(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_boolean) &&
	       json_object_get_boolean(v);
}

static void store_free(struct json_object *o, void *p)
{
	(void)o;
	free(p);
}

int ckpt_config_from_json(const char *text, size_t len, struct vm_config *cfg,
			  struct json_object **store, struct qerr *e)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o, *v, *arr;
	struct config_store *cs;
	const char *s;
	int64_t mem, cpus;
	unsigned int i;

	if (!tok)
		return qerr_set(e, ENOMEM, "out of memory");
	o = json_tokener_parse_ex(tok, text, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len || !json_object_is_type(o, json_type_object)) {
		json_tokener_free(tok);
		json_object_put(o);
		return qerr_set(e, EINVAL, "vm: the configuration is not a JSON object");
	}
	json_tokener_free(tok);
	cs = calloc(1, sizeof(*cs));
	if (!cs) {
		json_object_put(o);
		return qerr_set(e, ENOMEM, "out of memory");
	}
	json_object_set_userdata(o, cs, store_free);
	memset(cfg, 0, sizeof(*cfg));
	if (!json_object_object_get_ex(o, "mem-size", &v) || !json_object_is_type(v, json_type_int) ||
	    (mem = json_object_get_int64(v)) < (int64_t)(16 * MiB) || mem % 4096 ||
	    (uint64_t)mem > 16 * 1024 * GiB) {
		json_object_put(o);
		return qerr_set(e, EINVAL, "vm: bad or missing mem-size");
	}
	if (!json_object_object_get_ex(o, "cpus", &v) || !json_object_is_type(v, json_type_int) ||
	    (cpus = json_object_get_int64(v)) < 1 || cpus > VM_MAX_VCPUS) {
		json_object_put(o);
		return qerr_set(e, EINVAL, "vm: bad or missing cpus");
	}
	cfg->mem_size = (uint64_t)mem;
	cfg->ncpus = (unsigned int)cpus;
	s = get_str(o, "mem-backend");
	if (!s || mem_backend_parse(s, &cfg->mem_backend)) {
		json_object_put(o);
		return qerr_set(e, EINVAL, "vm: bad or missing mem-backend");
	}
	cfg->kernel = get_str(o, "kernel");
	cfg->initrd = get_str(o, "initrd");
	cfg->cmdline = get_str(o, "cmdline");
	cfg->no_reboot = get_bool(o, "no-reboot");
	cfg->rng = get_bool(o, "rng");
	cfg->balloon = get_bool(o, "balloon");
	cfg->balloon_no_reporting = !get_bool(o, "balloon-reporting");
	s = get_str(o, "console");
	cfg->console_virtio = s && !strcmp(s, "virtio");
	s = get_str(o, "pmu");
	if (s && vpmu_parse(s, &cs->pmu, e)) {
		json_object_put(o);
		return -EINVAL;
	}
	cfg->pmu = &cs->pmu;
	if (json_object_object_get_ex(o, "disks", &arr) && json_object_is_type(arr, json_type_array)) {
		if (json_object_array_length(arr) > ARRAY_SIZE(cs->disks)) {
			json_object_put(o);
			return qerr_set(e, EINVAL, "vm: too many disks");
		}
		for (i = 0; i < json_object_array_length(arr); i++) {
			struct json_object *d = json_object_array_get_idx(arr, i);

			cs->disks[i].path = get_str(d, "path");
			if (!cs->disks[i].path) {
				json_object_put(o);
				return qerr_set(e, EINVAL, "vm: disk %u has no path", i);
			}
			cs->disks[i].readonly = get_bool(d, "readonly");
			cs->disks[i].direct = get_bool(d, "direct");
			/* Absent (older checkpoints): on, the default. */
			cs->disks[i].no_coalesce = json_object_object_get_ex(d, "coalesce", NULL) &&
						   !get_bool(d, "coalesce");
			cs->disks[i].serial = get_str(d, "serial");
		}
		cfg->disks = cs->disks;
		cfg->ndisks = i;
	}
	if (json_object_object_get_ex(o, "nets", &arr) && json_object_is_type(arr, json_type_array)) {
		if (json_object_array_length(arr) > ARRAY_SIZE(cs->nets)) {
			json_object_put(o);
			return qerr_set(e, EINVAL, "vm: too many network devices");
		}
		for (i = 0; i < json_object_array_length(arr); i++) {
			struct json_object *n = json_object_array_get_idx(arr, i);
			unsigned int m[6];

			cs->nets[i].tap = get_str(n, "tap");
			cs->nets[i].fd = -1; /* an inherited fd must be given again (--net) */
			s = get_str(n, "mac");
			if (s && sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x", &m[0], &m[1], &m[2], &m[3],
					&m[4], &m[5]) == 6) {
				unsigned int k;

				for (k = 0; k < 6; k++)
					cs->nets[i].mac[k] = (uint8_t)m[k];
				cs->nets[i].has_mac = true;
			}
		}
		cfg->nets = cs->nets;
		cfg->nnets = i;
	}
	*store = o;
	return 0;
}

void ckpt_config_free(struct json_object *store)
{
	json_object_put(store);
}
