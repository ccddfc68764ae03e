"""A minimal linker: one BPF relocatable object (``clang -target bpfel -c``) -> a Solana SBPFv0 program.

Solana loads programs as ELF shared objects (``ET_DYN``, ``EM_BPF``) and resolves two kinds of relocations
at load time (solana-sbpf's lenient loader): ``R_BPF_64_32`` on ``call -1`` instructions (the symbol's name
is hashed: a syscall such as ``sol_invoke_signed_c``), and ``R_BPF_64_RELATIVE`` on ``lddw`` instructions
(an address in the read-only data, which the loader moves into the program's memory region). Solana's own
toolchain (platform-tools: a patched LLVM with ``ld.lld`` for SBF) is not on this machine and cannot be
installed from a package registry; Debian's clang compiles C to BPF objects, and this module does the
linking: it lays ``.text`` and one merged ``.rodata`` out at ``sh_addr == sh_offset`` (the loader wants
that), writes ``.dynamic``/``.dynsym``/``.dynstr``/``.rel.dyn`` for the calls to syscalls and the
addresses of read-only data, and resolves calls between functions of the object itself.

Limits (the program in this folder stays inside them): a single object, no writable data (``.data``,
``.bss``); pointers inside read-only data may point only into read-only data.

    python -m testbed.svm_upto.sbf_link program.o program.so
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

EM_BPF = 247
ET_REL, ET_DYN = 1, 3
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_DYNAMIC, SHT_REL, SHT_DYNSYM = 1, 2, 3, 6, 9, 11
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_RELATIVE, R_BPF_64_32 = 1, 2, 8, 10
DT_NULL, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT, DT_REL, DT_RELSZ, DT_RELENT = 0, 5, 6, 10, 11, 17, 18, 19
PT_LOAD, PT_DYNAMIC = 1, 2
CALL_IMM = 0x85
LDDW = 0x18


class LinkError(Exception):
    pass


@dataclass
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int
    data: bytes


def _sections(obj: bytes) -> list[Section]:
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise LinkError("not a 64-bit little-endian ELF object")
    e_type, e_machine = struct.unpack_from("<HH", obj, 16)
    if e_type != ET_REL or e_machine != EM_BPF:
        raise LinkError(f"not a BPF relocatable object (type {e_type}, machine {e_machine})")
    e_shoff, = struct.unpack_from("<Q", obj, 40)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", obj, 58)
    raw = []
    for i in range(e_shnum):
        raw.append(struct.unpack_from("<IIQQQQIIQQ", obj, e_shoff + i * e_shentsize))
    names = raw[e_shstrndx]
    out = []
    for i, (name, typ, flags, _addr, off, size, link, info, align, ent) in enumerate(raw):
        start = names[4] + name
        label = obj[start:obj.index(b"\0", start)].decode()
        data = b"" if typ == 8 else obj[off:off + size]  # SHT_NOBITS has no bytes
        out.append(Section(i, label, typ, flags, off, size, link, info, align, ent, data))
    return out


def _symbols(obj_sections: list[Section]) -> list[dict]:
    symtab = next((s for s in obj_sections if s.type == SHT_SYMTAB), None)
    if symtab is None:
        return []
    strtab = obj_sections[symtab.link].data
    syms = []
    for i in range(len(symtab.data) // 24):
        name, info, other, shndx, value, size = struct.unpack_from("<IBBHQQ", symtab.data, i * 24)
        label = strtab[name:strtab.index(b"\0", name)].decode()
        syms.append({"name": label, "info": info, "shndx": shndx, "value": value, "size": size})
    return syms


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def link(obj: bytes) -> bytes:
    """The SBPFv0 shared object for the BPF object ``obj`` (entry point: the global ``entrypoint``)."""
    secs = _sections(obj)
    syms = _symbols(secs)
    for s in secs:
        if s.flags & SHF_ALLOC and s.flags & SHF_WRITE and s.size:
            raise LinkError(f"writable section {s.name} is not supported (use the heap or the stack)")
    text = [s for s in secs if s.name == ".text"]
    if len(text) != 1:
        raise LinkError("need exactly one .text section (do not use -ffunction-sections)")
    text = text[0]
    others_exec = [s for s in secs if s.flags & SHF_EXECINSTR and s is not text and s.size]
    if others_exec:
        raise LinkError(f"code outside .text: {[s.name for s in others_exec]}")
    rodata = [s for s in secs if s.flags & SHF_ALLOC and not s.flags & SHF_EXECINSTR and s.type == SHT_PROGBITS
              and s.size]

    # layout: header | .text | .rodata (merged) | .dynamic | .dynsym | .dynstr | .rel.dyn | .shstrtab | shdrs
    out = bytearray(64 + 56 * 2)  # the ELF header and two program headers (PT_LOAD, PT_DYNAMIC)
    text_off = _align(len(out), 8)
    out += bytes(text_off - len(out))
    code = bytearray(text.data)
    out += code
    ro_base: dict[int, int] = {}  # object section index -> file offset (== vaddr)
    ro_start = len(out)
    for s in rodata:
        at = _align(len(out), max(s.align, 1))
        out += bytes(at - len(out))
        ro_base[s.index] = at
        out += s.data
    ro_end = len(out)

    # relocations of .text
    dyn_names: list[str] = []
    dyn_rel: list[tuple[int, int, int]] = []  # (offset, type, symbol index in .dynsym)
    rel = next((s for s in secs if s.type == SHT_REL and s.info == text.index), None)
    entries = [struct.unpack_from("<QQ", rel.data, i * 16) for i in range(len(rel.data) // 16)] if rel else []
    for r_offset, r_info in entries:
        kind, sym = r_info & 0xFFFFFFFF, syms[r_info >> 32]
        insn = r_offset // 8
        if kind == R_BPF_64_32:
            if code[r_offset] != CALL_IMM:
                raise LinkError(f"R_BPF_64_32 on a non-call instruction at {r_offset:#x}")
            if sym["shndx"] == 0:  # undefined: a syscall, hashed by the loader
                if sym["name"] not in dyn_names:
                    dyn_names.append(sym["name"])
                struct.pack_into("<i", code, r_offset + 4, -1)
                dyn_rel.append((text_off + r_offset, R_BPF_64_32, 1 + dyn_names.index(sym["name"])))
            elif sym["shndx"] == text.index:  # a call within the object: pc-relative
                target = sym["value"] // 8
                struct.pack_into("<i", code, r_offset + 4, target - insn - 1)
            else:
                raise LinkError(f"call to {sym['name']} in section {sym['shndx']}")
        elif kind == R_BPF_64_64:
            if code[r_offset] != LDDW:
                raise LinkError(f"R_BPF_64_64 on a non-lddw instruction at {r_offset:#x}")
            if sym["shndx"] not in ro_base:
                raise LinkError(f"lddw of {sym['name']!r}: not in read-only data")
            addend = struct.unpack_from("<I", code, r_offset + 4)[0]
            addr = ro_base[sym["shndx"]] + sym["value"] + addend
            struct.pack_into("<I", code, r_offset + 4, addr & 0xFFFFFFFF)
            struct.pack_into("<I", code, r_offset + 12, addr >> 32)
            dyn_rel.append((text_off + r_offset, R_BPF_64_RELATIVE, 0))
        else:
            raise LinkError(f"unsupported relocation type {kind} against {sym['name']}")
    out[text_off:text_off + len(code)] = code
    for s in secs:  # pointers inside read-only data (e.g. a constant struct holding a string's address)
        if s.type != SHT_REL or s.info == text.index or not secs[s.info].flags & SHF_ALLOC or not s.size:
            continue
        if s.info not in ro_base:
            raise LinkError(f"relocations in {secs[s.info].name} are not supported")
        for i in range(len(s.data) // 16):
            r_offset, r_info = struct.unpack_from("<QQ", s.data, i * 16)
            kind, sym = r_info & 0xFFFFFFFF, syms[r_info >> 32]
            if kind != R_BPF_64_ABS64 or sym["shndx"] not in ro_base:
                raise LinkError(f"unsupported data relocation {kind} against {sym['name']}")
            at = ro_base[s.info] + r_offset
            addr = ro_base[sym["shndx"]] + sym["value"] + struct.unpack_from("<Q", out, at)[0]
            # the loader reads a data relocation's address from the upper half (an old toolchain's format)
            # and writes back the full 64-bit address in the program's memory region
            struct.pack_into("<II", out, at, 0, addr)
            dyn_rel.append((at, R_BPF_64_RELATIVE, 0))

    entry = next((s for s in syms if s["name"] == "entrypoint" and s["shndx"] == text.index), None)
    if entry is None:
        raise LinkError("no global function named entrypoint")

    # .dynstr, .dynsym, .rel.dyn, .dynamic
    dynstr = bytearray(b"\0")
    name_at = {}
    for n in dyn_names:
        name_at[n] = len(dynstr)
        dynstr += n.encode() + b"\0"
    dynsym = bytearray(24)
    for n in dyn_names:  # global, no type, undefined
        dynsym += struct.pack("<IBBHQQ", name_at[n], 0x10, 0, 0, 0, 0)
    reldyn = b"".join(struct.pack("<QQ", off, (sym << 32) | kind) for off, kind, sym in dyn_rel)

    dynamic_off = _align(len(out), 8)
    n_dyn = 8
    dynsym_off = _align(dynamic_off + 16 * n_dyn, 8)
    dynstr_off = dynsym_off + len(dynsym)
    reldyn_off = _align(dynstr_off + len(dynstr), 8)
    dyn_entries = [(DT_SYMTAB, dynsym_off), (DT_SYMENT, 24), (DT_STRTAB, dynstr_off), (DT_STRSZ, len(dynstr))]
    if reldyn:
        dyn_entries += [(DT_REL, reldyn_off), (DT_RELSZ, len(reldyn)), (DT_RELENT, 16)]
    dyn_entries += [(DT_NULL, 0)] * (n_dyn - len(dyn_entries))
    dynamic = b"".join(struct.pack("<qQ", t, v) for t, v in dyn_entries)
    out += bytes(dynamic_off - len(out))
    out += dynamic
    out += bytes(dynsym_off - len(out))
    out += dynsym
    out += dynstr
    out += bytes(reldyn_off - len(out))
    out += reldyn

    names = [("", 0), (".text", 0), (".rodata", 0), (".dynamic", 0), (".dynsym", 0), (".dynstr", 0),
             (".rel.dyn", 0), (".shstrtab", 0)]
    shstrtab = bytearray(b"\0")
    for i, (n, _) in enumerate(names):
        if n:
            names[i] = (n, len(shstrtab))
            shstrtab += n.encode() + b"\0"
    shstrtab_off = len(out)
    out += shstrtab
    shoff = _align(len(out), 8)
    out += bytes(shoff - len(out))
    AX, A = SHF_ALLOC | SHF_EXECINSTR, SHF_ALLOC
    headers = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (names[1][1], SHT_PROGBITS, AX, text_off, text_off, len(code), 0, 0, 8, 0),
        (names[2][1], SHT_PROGBITS, A, ro_start, ro_start, ro_end - ro_start, 0, 0, 8, 0),
        (names[3][1], SHT_DYNAMIC, A | SHF_WRITE * 0, dynamic_off, dynamic_off, len(dynamic), 5, 0, 8, 16),
        (names[4][1], SHT_DYNSYM, A, dynsym_off, dynsym_off, len(dynsym), 5, 1, 8, 24),
        (names[5][1], SHT_STRTAB, A, dynstr_off, dynstr_off, len(dynstr), 0, 0, 1, 0),
        (names[6][1], SHT_REL, A, reldyn_off, reldyn_off, len(reldyn), 4, 0, 8, 16),
        (names[7][1], SHT_STRTAB, 0, 0, shstrtab_off, len(shstrtab), 0, 0, 1, 0),
    ]
    for h in headers:
        out += struct.pack("<IIQQQQIIQQ", *h)

    # program headers: the code and read-only data, then the dynamic table
    load_end = ro_end if ro_end > ro_start else text_off + len(code)
    struct.pack_into("<IIQQQQQQ", out, 64, PT_LOAD, 5, text_off, text_off, text_off, load_end - text_off,
                     load_end - text_off, 8)
    struct.pack_into("<IIQQQQQQ", out, 64 + 56, PT_DYNAMIC, 6, dynamic_off, dynamic_off, dynamic_off,
                     len(dynamic), len(dynamic), 8)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", ET_DYN, EM_BPF, 1, text_off + entry["value"], 64, shoff, 0,
                                 64, 56, 2, 64, len(headers), len(headers) - 1)
    out[:64] = header
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    Path(args[1]).write_bytes(link(Path(args[0]).read_bytes()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
