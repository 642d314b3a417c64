// SPDX-License-Identifier: MIT
/*
 * Symbol tables: System.map and kallsyms text (aliases, data bounds,
 * modules, hostile input), ELF symbol tables read with libelf (an ELF is
 * written here with libelf, so the reader meets a file it did not make
 * itself), and the KASLR offset from MSR_LSTAR.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qlite/symbols.h"

static const char sysmap[] = "0000000000000000 D __per_cpu_start\n"
			     "00000000000001ea A kexec_control_code_size\n"
			     "ffffffff81000000 T _stext\n"
			     "ffffffff81000000 T _text\n"
			     "ffffffff81000000 t startup_64\n"
			     "ffffffff81000100 T secondary_startup_64\n"
			     "ffffffff81001000 T do_one_initcall\n"
			     "ffffffff81001200 t local_helper\n"
			     "ffffffff81001300 W weak_thing\n"
			     "ffffffff81002000 T clear_user_erms\n"
			     "ffffffff81002040 T entry_SYSCALL_64\n"
			     "ffffffff81003000 T _etext\n"
			     "ffffffff82000000 D some_data\n"
			     "ffffffff82000100 r rodata_thing\n";

static struct symtab parse_ok(const char *text)
{
	struct symtab s;
	struct qerr e = { 0 };

	if (symtab_parse_map(text, strlen(text), "test", &s, &e))
		fail_msg("parse failed: %s", e.msg);
	return s;
}

static const char *name_at(const struct symtab *s, uint64_t addr)
{
	const struct symbol *sym = symtab_lookup(s, addr, NULL);

	return sym ? sym->name : NULL;
}

static void test_map_lookup(void **state)
{
	struct symtab s = parse_ok(sysmap);
	uint64_t off = 0;
	const struct symbol *sym;

	assert_int_equal(s.format, SYMTAB_SYSTEM_MAP);
	/* Aliases at one address: code, global, no leading underscore. */
	assert_string_equal(name_at(&s, 0xffffffff81000000ULL), "startup_64");
	assert_string_equal(name_at(&s, 0xffffffff810000ffULL), "startup_64");
	assert_string_equal(name_at(&s, 0xffffffff81000100ULL), "secondary_startup_64");
	sym = symtab_lookup(&s, 0xffffffff81001234ULL, &off);
	assert_non_null(sym);
	assert_string_equal(sym->name, "local_helper");
	assert_int_equal(off, 0x34);
	assert_string_equal(name_at(&s, 0xffffffff81001300ULL), "weak_thing");
	assert_string_equal(name_at(&s, 0xffffffff8100203fULL), "clear_user_erms");
	assert_string_equal(name_at(&s, 0xffffffff81002fffULL), "entry_SYSCALL_64");
	/* _etext is text but bounded: the next symbol is data. */
	assert_string_equal(name_at(&s, 0xffffffff81003010ULL), "_etext");
	/* Data, below everything, and far past the last symbol: nothing. */
	assert_null(name_at(&s, 0xffffffff82000010ULL));
	assert_null(name_at(&s, 0xffffffff82000200ULL));
	assert_null(name_at(&s, 0x1000));
	assert_null(name_at(&s, 0xffffffffc0001000ULL));
	assert_non_null(symtab_find(&s, "entry_SYSCALL_64"));
	assert_null(symtab_find(&s, "no_such_symbol"));
	symtab_free(&s);
}

static void test_kallsyms_modules(void **state)
{
	static const char text[] = "ffffffff9a000000 T _text\n"
				   "ffffffff9a000010 T startup_64\r\n" /* CRLF tolerated */
				   "ffffffffc0a00000 t virtblk_probe\t[virtio_blk]\n"
				   "ffffffffc0a00400 t virtblk_remove\t[virtio_blk]\n"
				   "ffffffffc0a01000 d virtblk_data\t[virtio_blk]\n";
	struct symtab s = parse_ok(text);

	assert_int_equal(s.format, SYMTAB_KALLSYMS);
	assert_string_equal(name_at(&s, 0xffffffffc0a00010ULL), "virtblk_probe [virtio_blk]");
	assert_string_equal(name_at(&s, 0xffffffffc0a00500ULL), "virtblk_remove [virtio_blk]");
	assert_null(name_at(&s, 0xffffffffc0a01004ULL));
	symtab_free(&s);
}

static void expect_bad(const char *text, const char *needle)
{
	struct symtab s;
	struct qerr e = { 0 };

	assert_int_not_equal(symtab_parse_map(text, strlen(text), "bad.map", &s, &e), 0);
	if (!strstr(e.msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle);
	assert_null(strchr(e.msg, '\n'));
	assert_null(s.syms);
}

static void test_map_bad(void **state)
{
	expect_bad("", "not a System.map");
	expect_bad("\n\n\n", "not a System.map");
	expect_bad("hello world\nthis is not a map\n", "not a System.map");
	expect_bad("#!/bin/sh\necho hi\n", "not a System.map");
	/* 17 hex digits: not an address. */
	expect_bad("fffffffff81000000 T x\n", "not a System.map");
	/* kallsyms as seen without CAP_SYSLOG. */
	expect_bad("0000000000000000 T _text\n0000000000000000 T startup_64\n", "zero addresses");
	/* Binary junk. */
	{
		char junk[512];
		unsigned int i;

		for (i = 0; i < sizeof(junk) - 1; i++)
			junk[i] = (char)(1 + (i * 37) % 255);
		junk[sizeof(junk) - 1] = '\0';
		expect_bad(junk, "not a System.map");
	}
}

static void test_map_mostly_good(void **state)
{
	/* A few odd lines among many good ones are skipped, not fatal. */
	struct symtab s = parse_ok("ffffffff81000000 T a\n"
				   "garbage\n"
				   "ffffffff81000010 T b\n"
				   "ffffffff81000020 T c\n");

	assert_int_equal(s.n, 3);
	assert_string_equal(name_at(&s, 0xffffffff81000015ULL), "b");
	symtab_free(&s);
}

static void test_load_files(void **state)
{
	char path[] = "/tmp/qlite-test-symbols-XXXXXX";
	struct symtab s;
	struct qerr e = { 0 };
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, sysmap, strlen(sysmap)), (ssize_t)strlen(sysmap));
	close(fd);
	assert_int_equal(symtab_load(path, &s, &e), 0);
	assert_string_equal(name_at(&s, 0xffffffff81002001ULL), "clear_user_erms");
	symtab_free(&s);

	/* Empty, missing, a directory: one clear message each. */
	assert_int_equal(truncate(path, 0), 0);
	memset(&e, 0, sizeof(e));
	assert_int_not_equal(symtab_load(path, &s, &e), 0);
	assert_non_null(strstr(e.msg, "empty"));
	unlink(path);
	memset(&e, 0, sizeof(e));
	assert_int_equal(symtab_load(path, &s, &e), -ENOENT);
	assert_non_null(strstr(e.msg, "cannot open symbol file"));
	memset(&e, 0, sizeof(e));
	assert_int_not_equal(symtab_load("/tmp", &s, &e), 0);
	assert_non_null(strstr(e.msg, "not a regular file"));
}

/* ---- ELF ---------------------------------------------------------------- */

struct elf_sym_spec {
	const char *name;
	uint64_t value, size;
	int type, bind;
	int shndx; /* 1: .text, 2: .data */
};

/* Write a relocatable-looking x86-64 ELF with .text, .data and a symtab. */
static void write_elf(const char *path, const struct elf_sym_spec *syms, size_t n,
		      bool with_symtab)
{
	char strtab[1024] = "";
	size_t stroff = 1, i;
	Elf64_Sym *tab = calloc(n + 1, sizeof(*tab));
	static uint8_t text[0x400], data[0x100];
	char shstr[] = "\0.text\0.data\0.symtab\0.strtab\0.shstrtab";
	Elf_Scn *scn;
	Elf_Data *d;
	Elf64_Ehdr *eh;
	Elf64_Shdr *sh;
	Elf *elf;
	int fd;

	assert_non_null(tab);
	for (i = 0; i < n; i++) {
		size_t len = strlen(syms[i].name) + 1;

		memcpy(strtab + stroff, syms[i].name, len);
		tab[i + 1].st_name = (uint32_t)stroff;
		tab[i + 1].st_value = syms[i].value;
		tab[i + 1].st_size = syms[i].size;
		tab[i + 1].st_info = ELF64_ST_INFO(syms[i].bind, syms[i].type);
		tab[i + 1].st_shndx = (uint16_t)syms[i].shndx;
		stroff += len;
	}
	assert_int_not_equal(elf_version(EV_CURRENT), EV_NONE);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	elf = elf_begin(fd, ELF_C_WRITE, NULL);
	assert_non_null(elf);
	eh = elf64_newehdr(elf);
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_machine = EM_X86_64;
	eh->e_type = ET_EXEC;
	eh->e_version = EV_CURRENT;
	/* 1: .text */
	scn = elf_newscn(elf);
	d = elf_newdata(scn);
	d->d_buf = text;
	d->d_size = sizeof(text);
	d->d_type = ELF_T_BYTE;
	sh = elf64_getshdr(scn);
	sh->sh_name = 1;
	sh->sh_type = SHT_PROGBITS;
	sh->sh_flags = SHF_ALLOC | SHF_EXECINSTR;
	sh->sh_addr = 0x100000;
	/* 2: .data */
	scn = elf_newscn(elf);
	d = elf_newdata(scn);
	d->d_buf = data;
	d->d_size = sizeof(data);
	d->d_type = ELF_T_BYTE;
	sh = elf64_getshdr(scn);
	sh->sh_name = 7;
	sh->sh_type = SHT_PROGBITS;
	sh->sh_flags = SHF_ALLOC | SHF_WRITE;
	sh->sh_addr = 0x200000;
	if (with_symtab) {
		/* 3: .symtab, linked to 4: .strtab */
		scn = elf_newscn(elf);
		d = elf_newdata(scn);
		d->d_buf = tab;
		d->d_size = (n + 1) * sizeof(*tab);
		d->d_type = ELF_T_SYM;
		sh = elf64_getshdr(scn);
		sh->sh_name = 13;
		sh->sh_type = SHT_SYMTAB;
		sh->sh_entsize = sizeof(Elf64_Sym);
		sh->sh_link = 4;
		sh->sh_info = 1;
		scn = elf_newscn(elf);
		d = elf_newdata(scn);
		d->d_buf = strtab;
		d->d_size = stroff;
		d->d_type = ELF_T_BYTE;
		sh = elf64_getshdr(scn);
		sh->sh_name = 21;
		sh->sh_type = SHT_STRTAB;
	}
	scn = elf_newscn(elf);
	d = elf_newdata(scn);
	d->d_buf = shstr;
	d->d_size = sizeof(shstr);
	d->d_type = ELF_T_BYTE;
	sh = elf64_getshdr(scn);
	sh->sh_name = 29;
	sh->sh_type = SHT_STRTAB;
	eh->e_shstrndx = (uint16_t)elf_ndxscn(scn);
	assert_true(elf_update(elf, ELF_C_WRITE) > 0);
	elf_end(elf);
	close(fd);
	free(tab);
}

static const struct elf_sym_spec elf_syms[] = {
	{ "prof_hot_a", 0x100020, 0x10, STT_FUNC, STB_GLOBAL, 1 },
	{ "prof_hot_b", 0x100030, 0x10, STT_FUNC, STB_GLOBAL, 1 },
	/* An asm entry point: untyped, no size, in an executable section. */
	{ "entry_SYSCALL_64", 0x100100, 0, STT_NOTYPE, STB_GLOBAL, 1 },
	{ "static_fn", 0x100200, 0x20, STT_FUNC, STB_LOCAL, 1 },
	{ "counter", 0x200000, 8, STT_OBJECT, STB_GLOBAL, 2 },
	{ "label_in_data", 0x200010, 0, STT_NOTYPE, STB_LOCAL, 2 },
	{ "guest.c", 0, 0, STT_FILE, STB_LOCAL, SHN_ABS },
};

static void test_elf(void **state)
{
	char path[] = "/tmp/qlite-test-elf-XXXXXX";
	int fd = mkstemp(path);
	struct symtab s;
	struct qerr e = { 0 };

	assert_true(fd >= 0);
	close(fd);
	write_elf(path, elf_syms, ARRAY_SIZE(elf_syms), true);
	assert_int_equal(symtab_load(path, &s, &e), 0);
	assert_int_equal(s.format, SYMTAB_ELF);
	assert_string_equal(name_at(&s, 0x100020), "prof_hot_a");
	assert_string_equal(name_at(&s, 0x10002f), "prof_hot_a");
	assert_string_equal(name_at(&s, 0x100030), "prof_hot_b");
	/* Past a sized function: padding, not the function. */
	assert_null(name_at(&s, 0x100040));
	assert_string_equal(name_at(&s, 0x1001ff), "entry_SYSCALL_64");
	assert_string_equal(name_at(&s, 0x100210), "static_fn");
	assert_null(name_at(&s, 0x100220));
	/* Objects and labels in data are not code. */
	assert_null(name_at(&s, 0x200004));
	assert_null(name_at(&s, 0x200014));
	assert_null(symtab_find(&s, "guest.c"));
	symtab_free(&s);

	/* Stripped: a clear message. */
	write_elf(path, elf_syms, ARRAY_SIZE(elf_syms), false);
	memset(&e, 0, sizeof(e));
	assert_int_not_equal(symtab_load(path, &s, &e), 0);
	assert_non_null(strstr(e.msg, "no symbol table"));

	/* Truncated after the ELF magic: refused, not a crash. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "\177ELF\2\1\1\0\0\0\0\0\0\0\0\0\2\0", 18), 18);
	close(fd);
	memset(&e, 0, sizeof(e));
	assert_int_not_equal(symtab_load(path, &s, &e), 0);
	assert_non_null(strstr(e.msg, path));
	unlink(path);
}

static void test_kaslr(void **state)
{
	struct symtab s = parse_ok(sysmap);
	const char *why = NULL;
	int64_t off = 0;

	/* LSTAR = entry_SYSCALL_64 + 0x2a000000 (a KASLR slide). */
	assert_int_equal(kaslr_offset_from_lstar(&s, 0xffffffff81002040ULL + 0x2a000000ULL, &off,
						 &why),
			 0);
	assert_int_equal(off, 0x2a000000);
	assert_int_equal(kaslr_offset_from_lstar(&s, 0xffffffff81002040ULL, &off, &why), 0);
	assert_int_equal(off, 0);
	assert_int_equal(kaslr_offset_from_lstar(&s, 0, &off, &why), -ENOENT);
	assert_non_null(strstr(why, "MSR_LSTAR"));
	symtab_free(&s);
	s = parse_ok("ffffffff81000000 T _text\n");
	assert_int_equal(kaslr_offset_from_lstar(&s, 0xffffffff81002040ULL, &off, &why), -ENOENT);
	assert_non_null(strstr(why, "entry_SYSCALL_64"));
	symtab_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_map_lookup), cmocka_unit_test(test_kallsyms_modules),
		cmocka_unit_test(test_map_bad),	   cmocka_unit_test(test_map_mostly_good),
		cmocka_unit_test(test_load_files), cmocka_unit_test(test_elf),
		cmocka_unit_test(test_kaslr),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
