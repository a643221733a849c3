"""The embedded `stdlib` dataset: instruction/response pairs mined with `ast` from the running Python's stdlib.

Why: a default that needs no download, yet is real code, and falls into distinct *skills* (module families)
so continual-learning runs have separate tasks to learn one after another. The instruction is a function's
docstring plus its signature; the response is the function's source without the docstring. Results depend
only on the interpreter's stdlib files, so they are cached per Python version under ~/.cache/dylora-moe/.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import sysconfig
import textwrap
from pathlib import Path

from dylora_moe.cache_dirs import cache_root
from dylora_moe.errors import UserError
from dylora_moe.files import atomic_write_text

MINER_VERSION = 1  # bump when the mining rules change: it is part of the cache key and of the fingerprint

STDLIB_SKILLS: tuple[str, ...] = ("text", "math", "files", "data", "net", "concurrency", "devtools", "system")

# top-level stdlib module or package -> skill; anything else is "system"
_SKILL_OF_MODULE: dict[str, str] = {}
for _skill, _modules in {
    "text": "string re sre_compile sre_parse sre_constants textwrap difflib unicodedata stringprep codecs "
    "encodings locale gettext shlex fnmatch html _markupbase tokenize token keyword reprlib pprint "
    "quopri uu base64 binascii calendar _strptime optparse argparse getopt cmd",
    "math": "math cmath decimal _pydecimal fractions numbers random statistics colorsys secrets hashlib hmac "
    "graphlib operator",
    "files": "os posixpath ntpath genericpath pathlib shutil glob tempfile filecmp fileinput io _pyio zipfile "
    "tarfile gzip bz2 lzma _compression zipapp zipimport stat shelve dbm mailbox chunk wave aifc sunau "
    "imghdr sndhdr mimetypes netrc tomllib",
    "data": "collections _collections_abc heapq bisect itertools functools copy copyreg enum dataclasses json "
    "csv pickle _compat_pickle pickletools configparser plistlib xml sqlite3 array struct types typing "
    "weakref _weakrefset abc _py_abc datetime zoneinfo uuid ipaddress xdrlib contextlib",
    "net": "urllib http email smtplib smtpd ftplib poplib imaplib nntplib telnetlib socket socketserver ssl "
    "xmlrpc wsgiref cgi cgitb webbrowser mailcap nturl2path",
    "concurrency": "asyncio asynchat asyncore concurrent multiprocessing threading _threading_local queue "
    "sched selectors subprocess signal contextvars",
    "devtools": "unittest doctest pdb bdb inspect ast dis opcode pydoc pydoc_data trace traceback tracemalloc "
    "profile cProfile pstats timeit idlelib lib2to3 importlib pkgutil modulefinder pyclbr py_compile "
    "compileall tabnanny symtable code codeop linecache warnings logging runpy rlcompleter",
}.items():
    for _module in _modules.split():
        _SKILL_OF_MODULE[_module] = _skill

# never mined: tests, GUIs, installers and bundled third-party code
_SKIP_TOP = {"test", "tests", "site-packages", "dist-packages", "tkinter", "turtledemo", "turtle", "ensurepip",
             "distutils", "venv", "idlelib", "lib2to3", "antigravity", "this", "__phello__", "__hello__"}
_MIN_DOC_CHARS = 12
_MAX_CODE_LINES = 120


def skill_of(module: str) -> str:
    """The skill of a dotted stdlib module name (by its top-level package)."""
    return _SKILL_OF_MODULE.get(module.split(".")[0], "system")


def mine_stdlib(skill: str | None = None) -> list[dict]:
    """All mined rows (or one skill's), each {"instruction","input","output","skill","source"}; cached."""
    if skill is not None and skill not in STDLIB_SKILLS:
        raise UserError(
            f"unknown stdlib skill '{skill}'; expected one of {', '.join(STDLIB_SKILLS)}; "
            f"use e.g. --datasets stdlib:{STDLIB_SKILLS[0]}"
        )
    rows = _cached_rows()
    return [r for r in rows if r["skill"] == skill] if skill else list(rows)


def stdlib_identity() -> dict:
    """What the mined rows depend on (for fingerprints and the cache key)."""
    return {"python": sys.version.split()[0], "implementation": sys.implementation.name, "miner": MINER_VERSION}


_MEMO: dict[str, list[dict]] = {}


def _cache_path() -> Path:
    base = cache_root()
    ident = {**stdlib_identity(), "stdlib": _stdlib_dir().as_posix()}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return base / f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}-{key}.json"


def _cached_rows() -> list[dict]:
    path = _cache_path()
    if str(path) in _MEMO:
        return _MEMO[str(path)]
    rows: list[dict] | None = None
    if path.is_file():
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rows = None  # a damaged cache is rebuilt, never trusted
    if rows is None:
        rows = mine_uncached()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(rows))
        except OSError:
            pass  # a read-only home only costs re-mining
    _MEMO[str(path)] = rows
    return rows


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def mine_uncached(root: Path | None = None) -> list[dict]:
    """Walk the stdlib sources in sorted order and mine every documented function (no cache)."""
    root = root or _stdlib_dir()
    rows: list[dict] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in _SKIP_TOP or "test" in rel.parts or "tests" in rel.parts or "__pycache__" in rel.parts:
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        rows.extend(mine_source(path.read_text(encoding="utf-8", errors="replace"), module))
    return rows


def mine_source(source: str, module: str) -> list[dict]:
    """Rows for the documented functions (and methods) of one module's source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    rows: list[dict] = []
    for qualname, node in _functions(tree):
        row = _row(node, qualname, lines, module)
        if row is not None:
            rows.append(row)
    return rows


def _functions(tree: ast.Module):
    """(qualname, node) for public top-level functions and public methods of top-level classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def _row(node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, lines: list[str], module: str) -> dict | None:
    doc = ast.get_docstring(node)
    if not doc or len(doc.strip()) < _MIN_DOC_CHARS or len(node.body) < 2:
        return None
    first, doc_node = node.body[1], node.body[0]
    start, end = node.lineno, node.end_lineno or node.lineno
    if end - start + 1 > _MAX_CODE_LINES or doc_node.lineno <= start or first.lineno <= doc_node.end_lineno:
        return None  # one-liners and odd layouts: the docstring cannot be cut out cleanly
    kept = lines[start - 1:doc_node.lineno - 1] + lines[doc_node.end_lineno:end]
    code = textwrap.dedent("\n".join(kept)).strip("\n")
    try:
        compile(code, f"<{module}.{qualname}>", "exec", dont_inherit=True)
    except SyntaxError:
        return None
    signature = _signature(node)
    owner = f" of class `{qualname.split('.')[0]}`" if "." in qualname else ""
    instruction = (f"Write the Python function `{signature}`{owner} (module `{module}`).\n\n"
                   f"{doc.strip()}")
    return {"instruction": instruction, "input": "", "output": code, "skill": skill_of(module),
            "source": f"{module}.{qualname}"}


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}"
