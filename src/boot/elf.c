// SPDX-License-Identifier: MIT
/* Load the PT_LOAD segments of a static x86-64 ELF into guest memory (libelf). */
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <string.h>
#include <unistd.h>

#include "qlite/boot.h"
#include "qlite/mem.h"

int elf_load(const struct guest_mem *m, const char *path, uint64_t *entry, struct qerr *e)
{
	size_t nphdr, i, raw_len;
	GElf_Ehdr eh;
	Elf *elf = NULL;
	char *raw;
	int fd, ret = 0;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return qerr_set(e, EIO, "libelf: %s", elf_errmsg(-1));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return qerr_set(e, errno, "cannot open %s: %s", path, strerror(errno));
	elf = elf_begin(fd, ELF_C_READ, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF || !gelf_getehdr(elf, &eh)) {
		ret = qerr_set(e, ENOEXEC, "%s is not an ELF file", path);
		goto out;
	}
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64) {
		ret = qerr_set(e, ENOEXEC, "%s is not an x86-64 ELF", path);
		goto out;
	}
	raw = elf_rawfile(elf, &raw_len);
	if (!raw || elf_getphdrnum(elf, &nphdr)) {
		ret = qerr_set(e, ENOEXEC, "%s: cannot read program headers", path);
		goto out;
	}
	for (i = 0; i < nphdr; i++) {
		GElf_Phdr ph;
		uint8_t *dst;

		if (!gelf_getphdr(elf, (int)i, &ph)) {
			ret = qerr_set(e, ENOEXEC, "%s: bad program header %zu", path, i);
			goto out;
		}
		if (ph.p_type != PT_LOAD)
			continue;
		/* File bytes must be in the file, memory bytes in guest RAM. */
		if (ph.p_filesz > ph.p_memsz || ph.p_offset > raw_len ||
		    ph.p_filesz > raw_len - ph.p_offset) {
			ret = qerr_set(e, ENOEXEC, "%s: segment %zu is truncated or corrupt", path,
				       i);
			goto out;
		}
		dst = mem_gpa_to_hva(m, ph.p_paddr, ph.p_memsz);
		if (!dst) {
			ret = qerr_set(e, ERANGE,
				       "%s: segment %zu at 0x%llx (+0x%llx) is outside guest RAM", path,
				       i, (unsigned long long)ph.p_paddr,
				       (unsigned long long)ph.p_memsz);
			goto out;
		}
		memcpy(dst, raw + ph.p_offset, ph.p_filesz);
		memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
	}
	*entry = eh.e_entry;
out:
	if (elf)
		elf_end(elf);
	close(fd);
	return ret;
}
