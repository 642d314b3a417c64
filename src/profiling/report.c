// SPDX-License-Identifier: MIT
/* Symbolization, folding and the text/JSON outputs (see report.h). */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/report.h"

static int entry_cmp_stack(const void *a, const void *b)
{
	const struct report_entry *x = a, *y = b;

	return strcmp(x->stack, y->stack);
}

static int entry_cmp_count(const void *a, const void *b)
{
	const struct report_entry *x = a, *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return strcmp(x->stack, y->stack);
}

static void resolve_kaslr(const struct profile_data *d, const struct report_options *o,
			  struct report *r)
{
	uint64_t lstar = profile_data_lstar(d);
	const char *why;

	if (o->kaslr_given) {
		r->kaslr_known = true;
		r->kaslr_offset = o->kaslr_offset;
		snprintf(r->kaslr_how, sizeof(r->kaslr_how), "given");
		return;
	}
	if (!o->kernel) {
		snprintf(r->kaslr_how, sizeof(r->kaslr_how), "no kernel symbols");
		return;
	}
	if (!kaslr_offset_from_lstar(o->kernel, lstar, &r->kaslr_offset, &why)) {
		r->kaslr_known = true;
		snprintf(r->kaslr_how, sizeof(r->kaslr_how), "auto: %s", why);
	} else {
		/* Not Linux (or no SYSCALL yet): the symbols' addresses as they are. */
		r->kaslr_offset = 0;
		snprintf(r->kaslr_how, sizeof(r->kaslr_how), "none (%s)", why);
	}
}

static char *frame_for(const struct prof_sample *s, const struct report_options *o,
		       const struct report *r, bool *resolved)
{
	const struct symbol *sym;
	char *out = NULL;
	int n;

	*resolved = true;
	if (s->cpl == 3) {
		sym = o->user ? symtab_lookup(o->user, s->rip, NULL) : NULL;
		if (sym)
			n = asprintf(&out, "[user cr3=0x%" PRIx64 "];%s", s->cr3, sym->name);
		else
			n = asprintf(&out, "[user cr3=0x%" PRIx64 "];0x%" PRIx64, s->cr3, s->rip);
	} else {
		sym = o->kernel ? symtab_lookup(o->kernel, s->rip - (uint64_t)r->kaslr_offset, NULL) :
				  NULL;
		if (sym) {
			n = asprintf(&out, "[kernel];%s", sym->name);
		} else {
			*resolved = false;
			n = asprintf(&out, "[kernel];0x%" PRIx64, s->rip);
		}
	}
	return n < 0 ? NULL : out;
}

int report_build(const struct profile_data *d, const struct report_options *o, struct report *r,
		 struct qerr *e)
{
	uint64_t *cr3s = NULL;
	size_t i, j, ncr3 = 0;
	unsigned int k;

	memset(r, 0, sizeof(*r));
	resolve_kaslr(d, o, r);
	r->dropped = d->omitted; /* listed nowhere: like samples the table could not keep */
	for (k = 0; k < d->nvcpus; k++) {
		r->total += d->vcpus[k].samples;
		r->idle += d->vcpus[k].idle;
		r->steal += d->vcpus[k].steal;
		r->dropped += d->vcpus[k].dropped;
	}
	r->e = calloc(d->nsamples ? d->nsamples : 1, sizeof(*r->e));
	cr3s = calloc(d->nsamples ? d->nsamples : 1, sizeof(*cr3s));
	if (!r->e || !cr3s)
		goto nomem;
	for (i = 0; i < d->nsamples; i++) {
		const struct prof_sample *s = &d->samples[i];
		bool resolved;

		r->e[i].stack = frame_for(s, o, r, &resolved);
		if (!r->e[i].stack)
			goto nomem;
		r->n = i + 1;
		r->e[i].count = s->count;
		r->e[i].user = s->cpl == 3;
		if (s->cpl == 3) {
			r->user += s->count;
			cr3s[ncr3++] = s->cr3;
		} else {
			r->kernel += s->count;
			if (!resolved)
				r->unresolved += s->count;
		}
	}
	/* Distinct address spaces. */
	for (i = 0; i < ncr3; i++) {
		for (j = 0; j < i && cr3s[j] != cr3s[i]; j++)
			;
		if (j == i)
			r->address_spaces++;
	}
	free(cr3s);
	cr3s = NULL;
	/* Fold equal stacks (many addresses in one function). */
	qsort(r->e, r->n, sizeof(*r->e), entry_cmp_stack);
	for (i = 0, j = 0; i < r->n; i++) {
		if (j && !strcmp(r->e[j - 1].stack, r->e[i].stack)) {
			r->e[j - 1].count += r->e[i].count;
			free(r->e[i].stack);
		} else {
			r->e[j++] = r->e[i];
		}
	}
	r->n = j;
	qsort(r->e, r->n, sizeof(*r->e), entry_cmp_count);
	for (i = 0; i < r->n; i++) {
		const char *semi = strrchr(r->e[i].stack, ';');

		r->e[i].symbol = semi ? semi + 1 : r->e[i].stack;
	}
	return 0;
nomem:
	free(cr3s);
	report_free(r);
	return qerr_set(e, ENOMEM, "out of memory");
}

void report_free(struct report *r)
{
	size_t i;

	for (i = 0; r->e && i < r->n; i++)
		free(r->e[i].stack);
	free(r->e);
	memset(r, 0, sizeof(*r));
}

double report_share(const struct report *r, const char *symbol)
{
	uint64_t n = 0, all = r->kernel + r->user;
	size_t i;

	for (i = 0; i < r->n; i++)
		if (!strcmp(r->e[i].symbol, symbol))
			n += r->e[i].count;
	return all ? 100.0 * (double)n / (double)all : 0.0;
}

int report_write_folded(const struct report *r, FILE *f)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		fprintf(f, "%s %" PRIu64 "\n", r->e[i].stack, r->e[i].count);
	return ferror(f) ? -EIO : 0;
}

static double pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

unsigned int report_print_top(const struct report *r, unsigned int n, FILE *f)
{
	uint64_t busy = r->kernel + r->user;
	size_t i;

	fprintf(f,
		"%llu samples: idle %.1f%%, kernel %.1f%%, user %.1f%% (%u address space%s), "
		"host steal %.1f%%\n",
		(unsigned long long)r->total, pct(r->idle, r->total), pct(r->kernel, r->total),
		pct(r->user, r->total), r->address_spaces, r->address_spaces == 1 ? "" : "s",
		pct(r->steal, r->total));
	if (!busy) {
		fprintf(f, "  (no non-idle samples)\n");
		return 2;
	}
	fprintf(f, "  %%busy  samples  function\n");
	for (i = 0; i < r->n && i < n; i++) {
		const struct report_entry *x = &r->e[i];
		const char *mode = x->user ? "" : "[kernel] ";

		fprintf(f, " %6.2f %8llu  %s%s\n", pct(x->count, busy), (unsigned long long)x->count,
			mode, x->user ? x->stack : x->symbol);
	}
	return 2 + (unsigned int)i;
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

void report_print_exits(const struct profile_data *d, FILE *f)
{
	unsigned int k, i;

	for (k = 0; k < d->nvcpus; k++) {
		const struct prof_vcpu_data *v = &d->vcpus[k];
		bool any = false;

		fprintf(f, "vCPU %u exits handled in qlite (count, time in the VMM):", v->id);
		for (i = 0; i < PROFILE_NR_REASONS; i++) {
			char name[16];

			if (!v->exits[i].count)
				continue;
			snprintf(name, sizeof(name), "%s", profile_exit_name(i) ?: "EXIT_");
			if (!profile_exit_name(i))
				snprintf(name, sizeof(name), "EXIT_%u", i);
			fprintf(f, "%s %s %llu (%.2f ms)", any ? "," : "", name,
				(unsigned long long)v->exits[i].count, ms(v->exits[i].ns));
			any = true;
		}
		fprintf(f, "%s\n", any ? "" : " none");
		for (i = 0; i < v->ndevices; i++)
			fprintf(f, "  device %-16s %-4s %10llu exits %10.2f ms\n", v->devices[i].name,
				v->devices[i].bus, (unsigned long long)v->devices[i].c.count,
				ms(v->devices[i].c.ns));
		if (v->samples)
			fprintf(f, "  sampling: %llu samples, %.1f us each on the vCPU thread\n",
				(unsigned long long)v->samples,
				(double)v->sample_ns / 1e3 / (double)v->samples);
	}
}

/* ---- JSON summary ------------------------------------------------------ */

static struct json_object *stats_obj(const struct prof_stat *s, unsigned int n)
{
	struct json_object *o = json_object_new_object();
	unsigned int i;

	for (i = 0; i < n; i++)
		json_object_object_add(o, s[i].name, json_object_new_uint64(s[i].value));
	return o;
}

static struct json_object *count_obj(const struct prof_count *c)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "count", json_object_new_uint64(c->count));
	json_object_object_add(o, "vmm_ns", json_object_new_uint64(c->ns));
	return o;
}

static struct json_object *hex(uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
	return json_object_new_string(buf);
}

int report_write_summary(const struct report *r, const struct profile_data *d,
			 const char *symbols_path, FILE *f)
{
	struct json_object *o = json_object_new_object(), *top, *vcpus;
	uint64_t busy = r->kernel + r->user;
	unsigned int k, i;
	size_t n;

	json_object_object_add(o, "format", json_object_new_string("qlite-profile-summary/1"));
	json_object_object_add(o, "method", json_object_new_string(d->method));
	json_object_object_add(o, "frequency_hz", json_object_new_int((int)d->freq));
	json_object_object_add(o, "duration_s",
			       json_object_new_double((double)(d->elapsed_ns / 1000000) / 1e3));
	json_object_object_add(o, "stop_reason", json_object_new_string(d->stop_reason));
	json_object_object_add(o, "vcpus", json_object_new_int((int)d->nvcpus));
	json_object_object_add(o, "samples", json_object_new_uint64(r->total));
	json_object_object_add(o, "idle_samples", json_object_new_uint64(r->idle));
	json_object_object_add(o, "steal_samples", json_object_new_uint64(r->steal));
	json_object_object_add(o, "kernel_samples", json_object_new_uint64(r->kernel));
	json_object_object_add(o, "user_samples", json_object_new_uint64(r->user));
	json_object_object_add(o, "dropped_samples", json_object_new_uint64(r->dropped));
	json_object_object_add(o, "unresolved_kernel_samples", json_object_new_uint64(r->unresolved));
	json_object_object_add(o, "idle_percent", json_object_new_double(pct(r->idle, r->total)));
	json_object_object_add(o, "user_address_spaces", json_object_new_int((int)r->address_spaces));
	json_object_object_add(o, "symbols",
			       symbols_path ? json_object_new_string(symbols_path) : NULL);
	json_object_object_add(o, "kaslr_offset",
			       r->kaslr_known ? hex((uint64_t)r->kaslr_offset) : NULL);
	json_object_object_add(o, "kaslr_source", json_object_new_string(r->kaslr_how));
	json_object_object_add(o, "guest_lstar", hex(profile_data_lstar(d)));
	top = json_object_new_array();
	for (n = 0; n < r->n && n < 50; n++) {
		struct json_object *t = json_object_new_object();

		json_object_object_add(t, "stack", json_object_new_string(r->e[n].stack));
		json_object_object_add(t, "function", json_object_new_string(r->e[n].symbol));
		json_object_object_add(t, "mode", json_object_new_string(r->e[n].user ? "user" :
											 "kernel"));
		json_object_object_add(t, "samples", json_object_new_uint64(r->e[n].count));
		json_object_object_add(t, "percent_busy",
				       json_object_new_double(pct(r->e[n].count, busy)));
		json_object_array_add(top, t);
	}
	json_object_object_add(o, "top", top);
	vcpus = json_object_new_array();
	for (k = 0; k < d->nvcpus; k++) {
		const struct prof_vcpu_data *v = &d->vcpus[k];
		struct json_object *vo = json_object_new_object(), *ex = json_object_new_object();
		struct json_object *dev = json_object_new_array();

		json_object_object_add(vo, "cpu_index", json_object_new_int((int)v->id));
		json_object_object_add(vo, "samples", json_object_new_uint64(v->samples));
		json_object_object_add(vo, "idle", json_object_new_uint64(v->idle));
		json_object_object_add(vo, "steal", json_object_new_uint64(v->steal));
		json_object_object_add(vo, "kernel", json_object_new_uint64(v->kernel));
		json_object_object_add(vo, "user", json_object_new_uint64(v->user));
		json_object_object_add(vo, "sample_ns_total", json_object_new_uint64(v->sample_ns));
		for (i = 0; i < PROFILE_NR_REASONS; i++) {
			char name[16];
			const char *nm = profile_exit_name(i);

			if (!v->exits[i].count)
				continue;
			if (!nm) {
				snprintf(name, sizeof(name), "EXIT_%u", i);
				nm = name;
			}
			json_object_object_add(ex, nm, count_obj(&v->exits[i]));
		}
		json_object_object_add(vo, "exits", ex);
		for (i = 0; i < v->ndevices; i++) {
			struct json_object *dd = count_obj(&v->devices[i].c);

			json_object_object_add(dd, "device", json_object_new_string(v->devices[i].name));
			json_object_object_add(dd, "bus", json_object_new_string(v->devices[i].bus));
			json_object_array_add(dev, dd);
		}
		json_object_object_add(vo, "devices", dev);
		json_object_object_add(vo, "kvm_stats", stats_obj(v->stats, v->nstats));
		json_object_array_add(vcpus, vo);
	}
	json_object_object_add(o, "per_vcpu", vcpus);
	json_object_object_add(o, "vm_kvm_stats", stats_obj(d->vm_stats, d->nvm_stats));
	fprintf(f, "%s\n",
		json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
							  JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return ferror(f) ? -EIO : 0;
}
