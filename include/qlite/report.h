/* SPDX-License-Identifier: MIT */
/*
 * Turning a profile (struct profile_data) into something to read: samples
 * symbolized and folded into stacks, then written as flamegraph.pl input
 * (folded), a self-contained SVG flame graph, a JSON summary with the exit
 * accounting, and a top-N table. Pure: no VM, no sockets.
 *
 * Stacks (there is no guest stack walking): "[kernel];function",
 * "[user cr3=0x...];0xADDRESS" (or the function, with user symbols).
 * Idle (halted) samples are counted, never attributed to a function.
 */
#ifndef QLITE_REPORT_H
#define QLITE_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "qlite/profile.h"
#include "qlite/symbols.h"

struct report_options {
	const struct symtab *kernel; /* NULL: kernel addresses stay addresses */
	const struct symtab *user; /* applied to every address space; NULL: addresses */
	bool kaslr_given;
	int64_t kaslr_offset; /* with kaslr_given; else found from MSR_LSTAR */
};

struct report_entry {
	char *stack; /* folded: frames joined by ';' */
	const char *symbol; /* the leaf frame (points into stack) */
	uint64_t count;
	bool user;
};

struct report {
	struct report_entry *e; /* sorted: most samples first */
	size_t n;
	uint64_t total, idle, steal, kernel, user, dropped;
	uint64_t unresolved; /* kernel samples no symbol covers */
	unsigned int address_spaces; /* distinct user CR3s */
	bool kaslr_known;
	int64_t kaslr_offset;
	char kaslr_how[96];
};

int report_build(const struct profile_data *d, const struct report_options *o, struct report *r,
		 struct qerr *e);
void report_free(struct report *r);
/* Percent of non-idle samples whose leaf frame is @symbol. */
double report_share(const struct report *r, const char *symbol);

int report_write_folded(const struct report *r, FILE *f);
/* A flame graph as one SVG file, no external resources. */
int report_write_svg(const struct report *r, const char *title, FILE *f);
/* The JSON summary: totals, top functions, exit accounting, KVM stats. */
int report_write_summary(const struct report *r, const struct profile_data *d,
			 const char *symbols_path, FILE *f);
/* Totals, then "%busy samples function" for the @n hottest; returns lines printed. */
unsigned int report_print_top(const struct report *r, unsigned int n, FILE *f);
/* Per vCPU: exits by reason and by device, with time in the VMM. */
void report_print_exits(const struct profile_data *d, FILE *f);

#endif
