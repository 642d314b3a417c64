// SPDX-License-Identifier: MIT
/*
 * struct profile_data <-> JSON (the query-profile reply). The reader is a
 * client parsing a server's reply: it checks types and bounds and fails
 * with a message rather than trusting the shape.
 */
#include <errno.h>
#include <json-c/json.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/profile.h"
#include "qlite/vcpu.h"


/* One table of names, the vCPU layer's. */
const char *profile_exit_name(unsigned int reason)
{
	return reason < PROFILE_NR_REASONS ? vcpu_exit_name(reason) : NULL;
}

int profile_exit_reason(const char *name)
{
	unsigned int i;
	int v;
	char *end;

	for (i = 0; i < PROFILE_NR_REASONS; i++)
		if (vcpu_exit_name(i) && !strcmp(vcpu_exit_name(i), name))
			return (int)i;
	/* Unnamed reasons travel as "EXIT_<n>". */
	if (!strncmp(name, "EXIT_", 5)) {
		v = (int)strtol(name + 5, &end, 10);
		if (end != name + 5 && !*end && v >= 0 && v < PROFILE_NR_REASONS)
			return v;
	}
	return -1;
}

static const char *const method_names[] = {
	[PROFILE_METHOD_TIMER] = "timer",
	[PROFILE_METHOD_KICK] = "kick",
	[PROFILE_METHOD_PERF] = "perf",
};

const char *profile_method_name(enum profile_method m)
{
	return (unsigned int)m < ARRAY_SIZE(method_names) ? method_names[m] : "?";
}

int profile_method_parse(const char *s, enum profile_method *m)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(method_names); i++)
		if (!strcmp(s, method_names[i])) {
			*m = (enum profile_method)i;
			return 0;
		}
	return -EINVAL;
}

void profile_data_free(struct profile_data *d)
{
	unsigned int k;

	if (!d)
		return;
	for (k = 0; d->vcpus && k < d->nvcpus; k++)
		free(d->vcpus[k].stats);
	free(d->vcpus);
	free(d->samples);
	free(d->vm_stats);
	memset(d, 0, sizeof(*d));
}

uint64_t profile_data_lstar(const struct profile_data *d)
{
	unsigned int k;

	for (k = 0; k < d->nvcpus; k++)
		if (d->vcpus[k].lstar)
			return d->vcpus[k].lstar;
	return 0;
}

/* ---- to JSON ---------------------------------------------------------- */

static void add_u64(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

static struct json_object *stats_to_json(const struct prof_stat *s, unsigned int n)
{
	struct json_object *o = json_object_new_object();
	unsigned int i;

	for (i = 0; i < n; i++)
		add_u64(o, s[i].name, s[i].value);
	return o;
}

static struct json_object *count_to_json(const char *key, const char *name,
					 const struct prof_count *c)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, key, json_object_new_string(name));
	add_u64(o, "count", c->count);
	add_u64(o, "vmm-ns", c->ns);
	return o;
}

struct json_object *profile_data_to_json(const struct profile_data *d)
{
	struct json_object *o = json_object_new_object(), *vcpus, *samples;
	uint64_t omitted;
	unsigned int k, r;
	size_t i;

	json_object_object_add(o, "method", json_object_new_string(d->method));
	json_object_object_add(o, "frequency", json_object_new_int((int)d->freq));
	json_object_object_add(o, "running", json_object_new_boolean(d->running));
	json_object_object_add(o, "stop-reason", json_object_new_string(d->stop_reason));
	add_u64(o, "elapsed-ns", d->elapsed_ns);
	vcpus = json_object_new_array();
	for (k = 0; k < d->nvcpus; k++) {
		const struct prof_vcpu_data *v = &d->vcpus[k];
		struct json_object *vo = json_object_new_object(), *ex, *dev;

		json_object_object_add(vo, "cpu-index", json_object_new_int((int)v->id));
		add_u64(vo, "samples", v->samples);
		add_u64(vo, "idle", v->idle);
		add_u64(vo, "steal", v->steal);
		add_u64(vo, "kernel", v->kernel);
		add_u64(vo, "user", v->user);
		add_u64(vo, "dropped", v->dropped);
		add_u64(vo, "sample-ns", v->sample_ns);
		add_u64(vo, "lstar", v->lstar);
		ex = json_object_new_array();
		for (r = 0; r < PROFILE_NR_REASONS; r++) {
			char name[16];
			const char *n = profile_exit_name(r);

			if (!v->exits[r].count)
				continue;
			if (!n) {
				snprintf(name, sizeof(name), "EXIT_%u", r);
				n = name;
			}
			json_object_array_add(ex, count_to_json("reason", n, &v->exits[r]));
		}
		json_object_object_add(vo, "exits", ex);
		dev = json_object_new_array();
		for (r = 0; r < v->ndevices; r++) {
			struct json_object *dd =
				count_to_json("name", v->devices[r].name, &v->devices[r].c);

			json_object_object_add(dd, "bus", json_object_new_string(v->devices[r].bus));
			json_object_array_add(dev, dd);
		}
		json_object_object_add(vo, "devices", dev);
		json_object_object_add(vo, "kvm-stats", stats_to_json(v->stats, v->nstats));
		json_object_array_add(vcpus, vo);
	}
	json_object_object_add(o, "vcpus", vcpus);
	json_object_object_add(o, "vm-kvm-stats", stats_to_json(d->vm_stats, d->nvm_stats));
	/* Compact: [rip, cr3, cpl, count] per distinct address, the most frequent. */
	samples = json_object_new_array_ext((int)MIN(d->nsamples, (size_t)PROFILE_MAX_REPLY_SAMPLES));
	omitted = d->omitted;
	for (i = PROFILE_MAX_REPLY_SAMPLES; i < d->nsamples; i++)
		omitted += d->samples[i].count;
	add_u64(o, "samples-omitted", omitted);
	for (i = 0; i < d->nsamples && i < PROFILE_MAX_REPLY_SAMPLES; i++) {
		const struct prof_sample *s = &d->samples[i];
		struct json_object *a = json_object_new_array_ext(4);

		json_object_array_add(a, json_object_new_uint64(s->rip));
		json_object_array_add(a, json_object_new_uint64(s->cr3));
		json_object_array_add(a, json_object_new_int(s->cpl));
		json_object_array_add(a, json_object_new_uint64(s->count));
		json_object_array_add(samples, a);
	}
	json_object_object_add(o, "samples", samples);
	return o;
}

/* ---- from JSON -------------------------------------------------------- */

static bool get_typed(struct json_object *o, const char *k, enum json_type t,
		      struct json_object **v)
{
	return json_object_object_get_ex(o, k, v) && json_object_is_type(*v, t);
}

static int get_u64(struct json_object *o, const char *k, uint64_t *out, struct qerr *e)
{
	struct json_object *v;

	if (!get_typed(o, k, json_type_int, &v))
		return qerr_set(e, EPROTO, "profile data: '%s' missing or not an integer", k);
	*out = json_object_get_uint64(v);
	return 0;
}

static int stats_from_json(struct json_object *o, struct prof_stat **out, unsigned int *n,
			   struct qerr *e)
{
	struct prof_stat *s;
	unsigned int i = 0;
	int len;

	*out = NULL;
	*n = 0;
	if (!o)
		return 0;
	if (!json_object_is_type(o, json_type_object))
		return qerr_set(e, EPROTO, "profile data: kvm stats are not an object");
	len = json_object_object_length(o);
	s = calloc(len ? len : 1, sizeof(*s));
	if (!s)
		return qerr_set(e, ENOMEM, "out of memory");
	json_object_object_foreach(o, key, val)
	{
		if (!json_object_is_type(val, json_type_int) || i >= (unsigned int)len)
			continue;
		snprintf(s[i].name, sizeof(s[i].name), "%s", key);
		s[i].value = json_object_get_uint64(val);
		i++;
	}
	*out = s;
	*n = i;
	return 0;
}

static int count_from_json(struct json_object *o, const char *key, const char **name,
			   struct prof_count *c, struct qerr *e)
{
	struct json_object *v;

	if (!json_object_is_type(o, json_type_object) || !get_typed(o, key, json_type_string, &v))
		return qerr_set(e, EPROTO, "profile data: bad exit or device entry");
	*name = json_object_get_string(v);
	return get_u64(o, "count", &c->count, e) ?: get_u64(o, "vmm-ns", &c->ns, e);
}

static int vcpu_from_json(struct json_object *vo, struct prof_vcpu_data *v, struct qerr *e)
{
	struct json_object *x, *arr;
	uint64_t id;
	size_t i;
	int ret;

	if (!json_object_is_type(vo, json_type_object))
		return qerr_set(e, EPROTO, "profile data: a vCPU entry is not an object");
	ret = get_u64(vo, "cpu-index", &id, e) ?: get_u64(vo, "samples", &v->samples, e) ?:
	      get_u64(vo, "idle", &v->idle, e) ?: get_u64(vo, "steal", &v->steal, e) ?:
	      get_u64(vo, "kernel", &v->kernel, e) ?:
	      get_u64(vo, "user", &v->user, e) ?: get_u64(vo, "dropped", &v->dropped, e) ?:
	      get_u64(vo, "sample-ns", &v->sample_ns, e) ?: get_u64(vo, "lstar", &v->lstar, e);
	if (ret)
		return ret;
	v->id = (unsigned int)id;
	if (!get_typed(vo, "exits", json_type_array, &arr) ||
	    !get_typed(vo, "devices", json_type_array, &x))
		return qerr_set(e, EPROTO, "profile data: vCPU without exits/devices");
	for (i = 0; i < json_object_array_length(arr); i++) {
		struct prof_count c;
		const char *name;
		int r;

		ret = count_from_json(json_object_array_get_idx(arr, i), "reason", &name, &c, e);
		if (ret)
			return ret;
		r = profile_exit_reason(name);
		if (r >= 0)
			v->exits[r] = c;
	}
	for (i = 0; i < json_object_array_length(x) && v->ndevices < PROFILE_MAX_DEVICES; i++) {
		struct json_object *d = json_object_array_get_idx(x, i), *bus;
		struct prof_device *pd = &v->devices[v->ndevices];
		const char *name;

		ret = count_from_json(d, "name", &name, &pd->c, e);
		if (ret)
			return ret;
		snprintf(pd->name, sizeof(pd->name), "%s", name);
		snprintf(pd->bus, sizeof(pd->bus), "%s",
			 get_typed(d, "bus", json_type_string, &bus) ? json_object_get_string(bus) :
								       "?");
		v->ndevices++;
	}
	if (!json_object_object_get_ex(vo, "kvm-stats", &x))
		x = NULL;
	return stats_from_json(x, &v->stats, &v->nstats, e);
}

int profile_data_from_json(struct json_object *o, struct profile_data *d, struct qerr *e)
{
	struct json_object *v, *arr;
	uint64_t freq;
	size_t i, n;
	int ret;

	memset(d, 0, sizeof(*d));
	if (!o || !json_object_is_type(o, json_type_object))
		return qerr_set(e, EPROTO, "profile data is not a JSON object");
	if (get_typed(o, "method", json_type_string, &v))
		snprintf(d->method, sizeof(d->method), "%s", json_object_get_string(v));
	if (get_typed(o, "stop-reason", json_type_string, &v))
		snprintf(d->stop_reason, sizeof(d->stop_reason), "%s", json_object_get_string(v));
	d->running = get_typed(o, "running", json_type_boolean, &v) && json_object_get_boolean(v);
	if (get_typed(o, "samples-omitted", json_type_int, &v))
		d->omitted = json_object_get_uint64(v);
	ret = get_u64(o, "frequency", &freq, e) ?: get_u64(o, "elapsed-ns", &d->elapsed_ns, e);
	if (ret)
		return ret;
	d->freq = (unsigned int)MIN(freq, (uint64_t)UINT32_MAX);
	if (!get_typed(o, "vcpus", json_type_array, &arr))
		return qerr_set(e, EPROTO, "profile data has no 'vcpus' array");
	n = json_object_array_length(arr);
	if (n > 4096)
		return qerr_set(e, EPROTO, "profile data: %zu vCPUs is implausible", n);
	d->vcpus = calloc(n ? n : 1, sizeof(*d->vcpus));
	if (!d->vcpus)
		return qerr_set(e, ENOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		d->nvcpus = (unsigned int)i + 1;
		ret = vcpu_from_json(json_object_array_get_idx(arr, i), &d->vcpus[i], e);
		if (ret)
			goto err;
	}
	if (!json_object_object_get_ex(o, "vm-kvm-stats", &v))
		v = NULL;
	ret = stats_from_json(v, &d->vm_stats, &d->nvm_stats, e);
	if (ret)
		goto err;
	if (!get_typed(o, "samples", json_type_array, &arr)) {
		ret = qerr_set(e, EPROTO, "profile data has no 'samples' array");
		goto err;
	}
	n = json_object_array_length(arr);
	d->samples = calloc(n ? n : 1, sizeof(*d->samples));
	if (!d->samples) {
		ret = qerr_set(e, ENOMEM, "out of memory");
		goto err;
	}
	for (i = 0; i < n; i++) {
		struct json_object *a = json_object_array_get_idx(arr, i);
		struct prof_sample *s = &d->samples[d->nsamples];
		unsigned int j;

		if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) != 4) {
			ret = qerr_set(e, EPROTO, "profile data: sample %zu is not [rip, cr3, cpl, count]",
				       i);
			goto err;
		}
		for (j = 0; j < 4; j++)
			if (!json_object_is_type(json_object_array_get_idx(a, j), json_type_int)) {
				ret = qerr_set(e, EPROTO, "profile data: sample %zu has a non-integer",
					       i);
				goto err;
			}
		s->rip = json_object_get_uint64(json_object_array_get_idx(a, 0));
		s->cr3 = json_object_get_uint64(json_object_array_get_idx(a, 1));
		s->cpl = (uint8_t)json_object_get_uint64(json_object_array_get_idx(a, 2)) & 3;
		s->count = json_object_get_uint64(json_object_array_get_idx(a, 3));
		d->nsamples++;
	}
	return 0;
err:
	profile_data_free(d);
	return ret;
}
