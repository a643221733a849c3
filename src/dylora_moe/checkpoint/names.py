"""Names that come from a store (versions, aliases, collections, file paths in a manifest) before they become paths.

Why one module: a store's index, a W&B server and a downloaded manifest are untrusted. A version named
`v0/../../victim` or `/home/me/work` would make the download cache path point outside the cache, and the
atomic publish of the download would then replace that directory. Every such name passes through
`safe_name` / `safe_relpath` / `safe_version` here before it is joined to a local or remote path.
"""

from __future__ import annotations

import re

VERSION_RE = re.compile(r"^v(\d+)$")
_MAX_COMPONENT_BYTES = 255  # the usual filesystem limit of one path component
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _shown(name: object) -> str:
    """repr (so control characters stay visible on one line), shortened for very long names."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def _component_problem(part: str) -> str | None:
    """Why `part` cannot be one path component, or None."""
    if part == "":
        return "empty"
    if part in (".", ".."):
        return f"{part!r} is not a name"
    if "\x00" in part:
        return "contains NUL"
    if "/" in part or "\\" in part:
        return "contains a path separator"
    if _CONTROL_RE.search(part):
        return "contains a control character"
    if len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES:
        return f"longer than {_MAX_COMPONENT_BYTES} bytes"
    return None


def _refuse(name: object, what: str, where: str, problem: str) -> Exception:
    from dylora_moe.checkpoint.manifest import CheckpointError  # manifest.py imports this module

    return CheckpointError(f"{where}: unsafe {what} {_shown(name)} ({problem}); refused before it is used as a "
                           "path — the store or checkpoint is damaged or not trustworthy")


def safe_name(name: object, what: str, where: str) -> str:
    """`name` if it is one plain path component (an alias, a collection name); else one CheckpointError line."""
    if not isinstance(name, str):
        raise _refuse(name, what, where, f"not a string: {type(name).__name__}")
    problem = _component_problem(name)
    if problem is not None:
        raise _refuse(name, what, where, problem)
    return name


def safe_version(name: object, where: str) -> str:
    """`name` if it is a version label `vN` (the only version names any store writes)."""
    safe_name(name, "version name", where)
    if not VERSION_RE.match(name):
        raise _refuse(name, "version name", where, "expected v0, v1, …")
    return name


def safe_relpath(rel: object, what: str, where: str) -> str:
    """`rel` if it is a relative POSIX path of plain components (a file of a checkpoint); else one error line."""
    if not isinstance(rel, str):
        raise _refuse(rel, what, where, f"not a string: {type(rel).__name__}")
    if rel.startswith("/"):
        raise _refuse(rel, what, where, "absolute")
    if "\\" in rel:
        raise _refuse(rel, what, where, "contains a backslash")
    for part in rel.split("/"):
        problem = _component_problem(part)
        if problem is not None:
            component = "" if part == rel else f"component {part!r} "
            raise _refuse(rel, what, where, component + problem)
    return rel
