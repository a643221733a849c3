"""A seccomp filter (classic BPF, built by hand) that forbids creating processes; threads stay allowed.

Why: inside the sandbox's user namespace the program maps to the harness's user, and for root the kernel
ignores RLIMIT_NPROC, so a fork bomb would be bounded only by the wall-clock timeout. With no `fork`,
`vfork`, or `clone` without CLONE_THREAD, a program cannot start a second process at all: no fork bomb,
no detached `setsid` child, no `system()` (ctypes included: the kernel says no, not Python).
`clone3` answers ENOSYS (its flags sit behind a pointer the filter cannot read), so the C library falls back
to `clone`, whose flags it can. bubblewrap loads the filter (`--seccomp FD`) just before it execs the program.
"""

from __future__ import annotations

import platform
import struct

# classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
_LD_ABS_W, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000
# offsets in struct seccomp_data: nr, arch, then args[0] (its low 32 bits first, little-endian)
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

# audit arch and syscall numbers: (arch, clone, clone3, fork/vfork or ())
_ARCHES = {
    "x86_64": (0xC000003E, 56, 435, (57, 58)),
    "aarch64": (0xC00000B7, 220, 435, ()),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _assemble(program: list[tuple]) -> bytes:
    """(opcode, k, true-label, false-label) with labels resolved to forward skips; ("label", name) marks."""
    where, pc = {}, 0
    for item in program:
        if item[0] == "label":
            where[item[1]] = pc
        else:
            pc += 1
    out, pc = [], 0
    for item in program:
        if item[0] == "label":
            continue
        code, k, *targets = item
        jt, jf = (where[t] - pc - 1 if t else 0 for t in (targets + [None, None])[:2])
        out.append(_insn(code, k, jt, jf))
        pc += 1
    return b"".join(out)


def no_new_processes_filter(machine: str | None = None) -> bytes | None:
    """The filter as bytes for `bwrap --seccomp`, or None on an architecture it does not know."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, clone, clone3, forks = arch
    program: list[tuple] = [
        (_LD_ABS_W, _ARCH), (_JEQ, audit_arch, None, "kill"),  # another ABI (i386 int 0x80): kill
        (_LD_ABS_W, _NR), (_JGE, _X32_BIT, "kill", None),
        (_JEQ, clone3, "enosys", None),
        *[(_JEQ, nr, "eperm", None) for nr in forks],
        (_JEQ, clone, "clone", None),
        (_RET, _ALLOW),
        ("label", "clone"), (_LD_ABS_W, _ARG0_LOW), (_JSET, _CLONE_THREAD, "thread", None),
        ("label", "eperm"), (_RET, _ERRNO | _EPERM),
        ("label", "thread"), (_RET, _ALLOW),
        ("label", "enosys"), (_RET, _ERRNO | _ENOSYS),
        ("label", "kill"), (_RET, _KILL_PROCESS),
    ]
    return _assemble(program)
