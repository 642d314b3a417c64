/* SPDX-License-Identifier: MIT */
/*
 * Guest symbol tables for the profiler: a System.map, a copy of the guest's
 * /proc/kallsyms, or an ELF file with a symbol table (vmlinux, a static
 * binary) read with libelf. Addresses are link-time (or, for kallsyms,
 * already relocated); the KASLR offset is applied by the caller.
 */
#ifndef QLITE_SYMBOLS_H
#define QLITE_SYMBOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qlite/util.h"

/* Refuse symbol files above this size (a vmlinux with debug info is ~500 MB). */
#define SYMTAB_MAX_FILE (2048ULL * MiB)

struct symbol {
	uint64_t addr;
	uint64_t size; /* 0: extends to the next symbol */
	const char *name; /* in the table's name pool; "func [module]" for module symbols */
	bool text; /* code: samples may be attributed to it */
};

enum symtab_format {
	SYMTAB_SYSTEM_MAP,
	SYMTAB_KALLSYMS, /* System.map format with [module] suffixes */
	SYMTAB_ELF,
};

struct symtab {
	struct symbol *syms; /* sorted by address, one per address */
	size_t n;
	char *pool;
	enum symtab_format format;
};

/* Load a System.map/kallsyms text file or an ELF file (detected by content). */
int symtab_load(const char *path, struct symtab *s, struct qerr *e);
/* Parse System.map/kallsyms text held in memory; @what names it in errors. */
int symtab_parse_map(const char *buf, size_t len, const char *what, struct symtab *s,
		     struct qerr *e);
void symtab_free(struct symtab *s);
/*
 * The text symbol containing @addr, or NULL (data, a gap, past the end).
 * *@off (if non-NULL) receives addr - symbol address.
 */
const struct symbol *symtab_lookup(const struct symtab *s, uint64_t addr, uint64_t *off);
/* A symbol by exact name (linear; for a handful of look-ups). */
const struct symbol *symtab_find(const struct symtab *s, const char *name);
const char *symtab_format_name(enum symtab_format f);

/*
 * KASLR: the kernel's runtime text offset. MSR_LSTAR holds the runtime
 * address of entry_SYSCALL_64 once Linux has set up SYSCALL; the symbol
 * file has its link-time address. Returns 0 and the offset, or -ENOENT
 * (@why says what was missing) when it cannot be derived.
 */
int kaslr_offset_from_lstar(const struct symtab *s, uint64_t lstar, int64_t *offset,
			    const char **why);

#endif
