// SPDX-License-Identifier: MIT
/* Symbol tables from System.map, kallsyms or ELF (libelf), see symbols.h. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qlite/symbols.h"

/* A sample this far past the last symbol is not attributed to it. */
#define SYMTAB_LAST_SPAN (64 * KiB)

struct sym_builder {
	struct symbol *syms;
	char *types; /* nm-style type letter per symbol: ranks aliases */
	size_t *name_off; /* names as pool offsets until the pool stops moving */
	size_t n, cap;
	char *pool;
	size_t pool_len, pool_cap;
};

static int sb_grow(struct sym_builder *b)
{
	size_t cap = b->cap ? b->cap * 2 : 4096;
	struct symbol *s = realloc(b->syms, cap * sizeof(*s));
	char *t;
	size_t *o;

	if (!s)
		return -ENOMEM;
	b->syms = s;
	t = realloc(b->types, cap);
	if (!t)
		return -ENOMEM;
	b->types = t;
	o = realloc(b->name_off, cap * sizeof(*o));
	if (!o)
		return -ENOMEM;
	b->name_off = o;
	b->cap = cap;
	return 0;
}

static int sb_add(struct sym_builder *b, uint64_t addr, uint64_t size, char type, bool text,
		  const char *name, size_t name_len, const char *module, size_t mod_len)
{
	size_t need = name_len + (mod_len ? mod_len + 3 : 0) + 1;

	if (b->n == b->cap && sb_grow(b))
		return -ENOMEM;
	if (b->pool_len + need > b->pool_cap) {
		size_t cap = MAX(b->pool_cap * 2, b->pool_len + need + 65536);
		char *p = realloc(b->pool, cap);

		if (!p)
			return -ENOMEM;
		b->pool = p;
		b->pool_cap = cap;
	}
	b->name_off[b->n] = b->pool_len;
	memcpy(b->pool + b->pool_len, name, name_len);
	b->pool_len += name_len;
	if (mod_len) {
		b->pool[b->pool_len++] = ' ';
		b->pool[b->pool_len++] = '[';
		memcpy(b->pool + b->pool_len, module, mod_len);
		b->pool_len += mod_len;
		b->pool[b->pool_len++] = ']';
	}
	b->pool[b->pool_len++] = '\0';
	b->types[b->n] = type;
	b->syms[b->n++] = (struct symbol){ .addr = addr, .size = size, .text = text };
	return 0;
}

static void sb_free(struct sym_builder *b)
{
	free(b->syms);
	free(b->types);
	free(b->name_off);
	free(b->pool);
	memset(b, 0, sizeof(*b));
}

/*
 * Of several symbols at one address, keep the one a reader expects: code
 * over data, then names without a leading underscore (startup_64 rather
 * than _text, memset rather than __memset), then global over local, then
 * the shorter name.
 */
static int sym_rank(const struct symbol *s, char type)
{
	int r = 0;

	if (s->text)
		r += 8;
	if (s->name[0] != '_')
		r += 4;
	if (isupper((unsigned char)type))
		r += 2;
	return r;
}

static bool sym_better(const struct symbol *a, char ta, const struct symbol *b, char tb)
{
	int ra = sym_rank(a, ta), rb = sym_rank(b, tb);

	if (ra != rb)
		return ra > rb;
	if (strlen(a->name) != strlen(b->name))
		return strlen(a->name) < strlen(b->name);
	return strcmp(a->name, b->name) < 0; /* deterministic */
}

struct sym_sort {
	uint64_t addr;
	size_t idx;
};

static int sym_sort_cmp(const void *a, const void *b)
{
	const struct sym_sort *x = a, *y = b;

	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Sort by address and keep one symbol per address (the best-ranked alias). */
static int sb_finish(struct sym_builder *b, enum symtab_format fmt, struct symtab *out)
{
	struct sym_sort *order;
	struct symbol *syms;
	char *best_type = NULL;
	size_t i, j = 0;

	order = malloc((b->n ? b->n : 1) * sizeof(*order));
	syms = malloc((b->n ? b->n : 1) * sizeof(*syms));
	best_type = malloc(b->n ? b->n : 1);
	if (!order || !syms || !best_type) {
		free(order);
		free(syms);
		free(best_type);
		return -ENOMEM;
	}
	for (i = 0; i < b->n; i++) {
		b->syms[i].name = b->pool + b->name_off[i];
		order[i] = (struct sym_sort){ b->syms[i].addr, i };
	}
	qsort(order, b->n, sizeof(*order), sym_sort_cmp);
	for (i = 0; i < b->n; i++) {
		const struct symbol *s = &b->syms[order[i].idx];
		char t = b->types[order[i].idx];

		if (j && syms[j - 1].addr == s->addr) {
			if (sym_better(s, t, &syms[j - 1], best_type[j - 1])) {
				syms[j - 1] = *s;
				best_type[j - 1] = t;
			}
			continue;
		}
		syms[j] = *s;
		best_type[j] = t;
		j++;
	}
	free(order);
	free(best_type);
	out->syms = syms;
	out->n = j;
	out->pool = b->pool;
	out->format = fmt;
	b->pool = NULL; /* now owned by @out */
	sb_free(b);
	return 0;
}

static bool map_type_is_text(char t)
{
	return t == 'T' || t == 't' || t == 'W' || t == 'w';
}

int symtab_parse_map(const char *buf, size_t len, const char *what, struct symtab *s,
		     struct qerr *e)
{
	struct sym_builder b = { 0 };
	size_t off = 0, bad = 0, lines = 0, nonzero = 0;
	bool modules = false;
	int ret;

	memset(s, 0, sizeof(*s));
	while (off < len) {
		const char *line = buf + off, *end = memchr(line, '\n', len - off);
		const char *p, *name, *mod = NULL;
		size_t llen = end ? (size_t)(end - line) : len - off, nlen, mlen = 0;
		uint64_t addr = 0;
		unsigned int digits = 0;
		char type;

		off += llen + (end ? 1 : 0);
		if (llen && line[llen - 1] == '\r')
			llen--;
		if (!llen)
			continue;
		lines++;
		/* "ffffffff81000000 T _text" or "... t name\t[module]" */
		for (p = line; p < line + llen && isxdigit((unsigned char)*p); p++, digits++) {
			int v = isdigit((unsigned char)*p) ? *p - '0' : (tolower(*p) - 'a' + 10);

			addr = (addr << 4) | (uint64_t)v;
		}
		if (!digits || digits > 16 || p + 3 > line + llen || *p != ' ' || p[2] != ' ' ||
		    !isalpha((unsigned char)p[1])) {
			bad++;
			continue;
		}
		type = p[1];
		name = p + 3;
		for (p = name; p < line + llen && !isspace((unsigned char)*p); p++)
			;
		nlen = p - name;
		while (p < line + llen && isspace((unsigned char)*p))
			p++;
		if (p < line + llen && *p == '[') {
			const char *close = memchr(p, ']', line + llen - p);

			if (close) {
				mod = p + 1;
				mlen = close - mod;
				modules = true;
			}
		}
		if (!nlen) {
			bad++;
			continue;
		}
		if (addr)
			nonzero++;
		ret = sb_add(&b, addr, 0, type, map_type_is_text(type), name, nlen, mod, mlen);
		if (ret) {
			ret = qerr_set(e, ENOMEM, "out of memory reading %s", what);
			goto err;
		}
	}
	if (!b.n || bad * 2 > lines) {
		ret = qerr_set(e, EINVAL,
			       "%s is not a System.map, kallsyms or ELF symbol file "
			       "(%zu of %zu lines unreadable)",
			       what, bad, lines);
		goto err;
	}
	if (!nonzero) {
		/* /proc/kallsyms read without CAP_SYSLOG shows zeros. */
		ret = qerr_set(e, EINVAL,
			       "%s has only zero addresses (kallsyms read as non-root? "
			       "copy /proc/kallsyms as root)",
			       what);
		goto err;
	}
	ret = sb_finish(&b, modules ? SYMTAB_KALLSYMS : SYMTAB_SYSTEM_MAP, s);
	if (ret)
		ret = qerr_set(e, ENOMEM, "out of memory reading %s", what);
err:
	sb_free(&b);
	return ret;
}

static int symtab_load_elf(const char *path, int fd, struct symtab *s, struct qerr *e)
{
	struct sym_builder b = { 0 };
	Elf_Scn *scn = NULL, *symscn = NULL;
	GElf_Shdr sh, symsh = { 0 };
	Elf_Data *data;
	Elf *elf;
	size_t nsec, i, count;
	bool *exec = NULL;
	int ret = 0;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return qerr_set(e, EIO, "libelf: %s", elf_errmsg(-1));
	elf = elf_begin(fd, ELF_C_READ, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF) {
		ret = qerr_set(e, ENOEXEC, "%s: not a readable ELF file: %s", path, elf_errmsg(-1));
		goto out;
	}
	if (elf_getshdrnum(elf, &nsec)) {
		ret = qerr_set(e, ENOEXEC, "%s: cannot read ELF section headers", path);
		goto out;
	}
	exec = calloc(nsec ? nsec : 1, sizeof(*exec));
	if (!exec) {
		ret = qerr_set(e, ENOMEM, "out of memory");
		goto out;
	}
	/* Prefer the full .symtab; fall back to .dynsym. */
	while ((scn = elf_nextscn(elf, scn))) {
		size_t idx = elf_ndxscn(scn);

		if (!gelf_getshdr(scn, &sh))
			continue;
		if (idx < nsec)
			exec[idx] = (sh.sh_flags & SHF_EXECINSTR) != 0;
		if (sh.sh_type == SHT_SYMTAB || (sh.sh_type == SHT_DYNSYM && !symscn)) {
			symscn = scn;
			symsh = sh;
		}
	}
	if (!symscn || !symsh.sh_entsize) {
		ret = qerr_set(e, ENOEXEC, "%s: ELF file has no symbol table (stripped?)", path);
		goto out;
	}
	data = elf_getdata(symscn, NULL);
	if (!data) {
		ret = qerr_set(e, ENOEXEC, "%s: cannot read the ELF symbol table", path);
		goto out;
	}
	count = symsh.sh_size / symsh.sh_entsize;
	for (i = 1; i < count; i++) {
		GElf_Sym sym;
		const char *name;
		int type;
		bool text, bind_global;

		if (!gelf_getsym(data, (int)i, &sym))
			break;
		type = GELF_ST_TYPE(sym.st_info);
		if (type == STT_SECTION || type == STT_FILE || sym.st_shndx == SHN_UNDEF ||
		    sym.st_shndx >= SHN_LORESERVE || !sym.st_value)
			continue;
		name = elf_strptr(elf, symsh.sh_link, sym.st_name);
		if (!name || !*name)
			continue;
		/* Code: functions, and untyped labels in executable sections (asm entry points). */
		text = sym.st_shndx < nsec && exec[sym.st_shndx] &&
		       (type == STT_FUNC || type == STT_NOTYPE || type == STT_GNU_IFUNC);
		bind_global = GELF_ST_BIND(sym.st_info) != STB_LOCAL;
		if (sb_add(&b, sym.st_value, sym.st_size,
			   text ? (bind_global ? 'T' : 't') : (bind_global ? 'D' : 'd'), text, name,
			   strlen(name), NULL, 0)) {
			ret = qerr_set(e, ENOMEM, "out of memory reading %s", path);
			goto out;
		}
	}
	if (!b.n) {
		ret = qerr_set(e, ENOEXEC, "%s: ELF symbol table holds no usable symbols", path);
		goto out;
	}
	if (sb_finish(&b, SYMTAB_ELF, s))
		ret = qerr_set(e, ENOMEM, "out of memory reading %s", path);
out:
	free(exec);
	sb_free(&b);
	if (elf)
		elf_end(elf);
	return ret;
}

int symtab_load(const char *path, struct symtab *s, struct qerr *e)
{
	unsigned char magic[4] = { 0 };
	uint8_t *buf;
	size_t len;
	struct stat st;
	int fd, ret;

	memset(s, 0, sizeof(*s));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qerr_set(e, errno, "cannot open symbol file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return qerr_set(e, EINVAL, "symbol file %s is not a regular file", path);
	}
	if (st.st_size == 0) {
		close(fd);
		return qerr_set(e, EINVAL, "symbol file %s is empty", path);
	}
	if (pread(fd, magic, sizeof(magic), 0) == sizeof(magic) && !memcmp(magic, ELFMAG, SELFMAG)) {
		ret = symtab_load_elf(path, fd, s, e);
		close(fd);
		return ret;
	}
	close(fd);
	ret = file_read_all(path, SYMTAB_MAX_FILE, &buf, &len, e);
	if (ret)
		return ret;
	ret = symtab_parse_map((const char *)buf, len, path, s, e);
	free(buf);
	return ret;
}

void symtab_free(struct symtab *s)
{
	if (!s)
		return;
	free(s->syms);
	free(s->pool);
	memset(s, 0, sizeof(*s));
}

const struct symbol *symtab_lookup(const struct symtab *s, uint64_t addr, uint64_t *off)
{
	size_t lo = 0, hi, i;
	const struct symbol *sym;

	if (!s || !s->n || addr < s->syms[0].addr)
		return NULL;
	hi = s->n;
	/* Last symbol with address <= addr. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->syms[mid].addr <= addr)
			lo = mid;
		else
			hi = mid;
	}
	i = lo;
	sym = &s->syms[i];
	if (!sym->text)
		return NULL;
	if (sym->size && addr - sym->addr >= sym->size)
		return NULL; /* a gap after a sized function */
	if (!sym->size && i + 1 == s->n && addr - sym->addr >= SYMTAB_LAST_SPAN)
		return NULL;
	if (off)
		*off = addr - sym->addr;
	return sym;
}

const struct symbol *symtab_find(const struct symtab *s, const char *name)
{
	size_t i;

	for (i = 0; s && i < s->n; i++)
		if (!strcmp(s->syms[i].name, name))
			return &s->syms[i];
	return NULL;
}

const char *symtab_format_name(enum symtab_format f)
{
	switch (f) {
	case SYMTAB_SYSTEM_MAP:
		return "System.map";
	case SYMTAB_KALLSYMS:
		return "kallsyms";
	case SYMTAB_ELF:
		return "ELF";
	}
	return "?";
}

int kaslr_offset_from_lstar(const struct symtab *s, uint64_t lstar, int64_t *offset,
			    const char **why)
{
	const struct symbol *sym;

	if (!lstar) {
		*why = "the guest has not set MSR_LSTAR (not a Linux kernel, or not booted yet)";
		return -ENOENT;
	}
	sym = symtab_find(s, "entry_SYSCALL_64");
	if (!sym) {
		*why = "the symbol file has no entry_SYSCALL_64";
		return -ENOENT;
	}
	*offset = (int64_t)(lstar - sym->addr);
	*why = "MSR_LSTAR - entry_SYSCALL_64";
	return 0;
}
