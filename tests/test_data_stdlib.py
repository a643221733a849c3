"""The embedded stdlib dataset: size, compilable code, skills, determinism and the per-version cache."""

from __future__ import annotations

import collections
import json
import textwrap

import pytest
from helpers_tokenizer import make_test_tokenizer

from dylora_moe.data import stdlib_mining
from dylora_moe.data.config import DataConfig
from dylora_moe.data.pipeline import build_datasets
from dylora_moe.data.stdlib_mining import STDLIB_SKILLS, mine_source, mine_stdlib, skill_of
from dylora_moe.errors import UserError


@pytest.fixture(scope="module")
def rows():
    return mine_stdlib()


def test_thousands_of_pairs_with_instruction_and_compiling_code(rows):
    assert len(rows) > 1000
    for row in rows:
        assert set(row) == {"instruction", "input", "output", "skill", "source"}
        assert row["instruction"].startswith("Write the Python function `") and len(row["instruction"]) > 40
        compile(row["output"], row["source"], "exec")
        assert row["output"].lstrip().startswith(("def ", "async def "))
    assert len({(r["source"], r["output"]) for r in rows}) == len(rows)  # property getter/setter share a name


def test_every_skill_has_data_and_selection_works(rows):
    counts = collections.Counter(r["skill"] for r in rows)
    assert set(counts) == set(STDLIB_SKILLS) and min(counts.values()) >= 100
    text = mine_stdlib("text")
    assert len(text) == counts["text"] and {r["skill"] for r in text} == {"text"}
    with pytest.raises(UserError, match=r"^unknown stdlib skill 'poetry'; expected one of text, math, files"):
        mine_stdlib("poetry")


def test_skill_of_module_families():
    assert [skill_of(m) for m in ("textwrap", "fractions", "pathlib", "collections.abc", "email.utils",
                                  "asyncio.tasks", "unittest.case", "platform")] == [
        "text", "math", "files", "data", "net", "concurrency", "devtools", "system"]


SOURCE = textwrap.dedent('''
    def add(a, b: int = 1) -> int:
        """Return the sum of a and b."""
        # comments survive
        return a + b

    def _private(x):
        """Private helpers are not mined."""
        return x

    def short(x):
        """Too short."""
        return x

    def only_doc():
        """A docstring but no code at all."""

    class Box:
        @property
        def size(self):
            """The number of items in the box."""
            return len(self.items)
''')


def test_mining_rules_exact():
    assert mine_source(SOURCE, "fractions") == [
        {"instruction": "Write the Python function `def add(a, b: int=1) -> int` (module `fractions`).\n\n"
                        "Return the sum of a and b.",
         "input": "", "output": "def add(a, b: int = 1) -> int:\n    # comments survive\n    return a + b",
         "skill": "math", "source": "fractions.add"},
        {"instruction": "Write the Python function `def size(self)` of class `Box` (module `fractions`).\n\n"
                        "The number of items in the box.",
         "input": "", "output": "def size(self):\n    return len(self.items)", "skill": "math",
         "source": "fractions.Box.size"},
    ]


def test_walk_is_sorted_and_skips_tests(tmp_path):
    (tmp_path / "zlib_like.py").write_text(SOURCE)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "__init__.py").write_text(SOURCE)
    (tmp_path / "json" / "tests").mkdir()
    (tmp_path / "json" / "tests" / "t.py").write_text(SOURCE)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "a.py").write_text(SOURCE)
    rows = stdlib_mining.mine_uncached(tmp_path)
    assert [r["source"] for r in rows] == ["json.add", "json.Box.size", "zlib_like.add", "zlib_like.Box.size"]
    assert [r["skill"] for r in rows] == ["data", "data", "system", "system"]
    assert stdlib_mining.mine_uncached(tmp_path) == rows


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    calls = []
    fake = [{"instruction": "i", "input": "", "output": "def f():\n    pass", "skill": "text", "source": "m.f"}]
    monkeypatch.setenv("DYLORA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(stdlib_mining, "mine_uncached", lambda: calls.append(1) or fake)
    monkeypatch.setattr(stdlib_mining, "_MEMO", {})
    assert mine_stdlib() == fake and calls == [1]
    (cache,) = tmp_path.glob("stdlib-py*.json")
    assert json.loads(cache.read_text()) == fake
    monkeypatch.setattr(stdlib_mining, "_MEMO", {})
    assert mine_stdlib("text") == fake and calls == [1]  # read back from disk, not mined again
    cache.write_text("{broken")
    monkeypatch.setattr(stdlib_mining, "_MEMO", {})
    assert mine_stdlib() == fake and calls == [1, 1]  # a damaged cache is rebuilt


def test_stdlib_skills_as_datasets(rows):
    cfg = DataConfig(datasets="stdlib:text,stdlib:math", max_seq_length=384, max_examples_per_dataset=40,
                     mixing="interleave", mix_weights="stdlib:text=0.5,stdlib:math=0.5")
    data = build_datasets(cfg, make_test_tokenizer())
    s = data.stats["sources"]
    assert data.sources == ["stdlib:text", "stdlib:math"]
    assert s["stdlib:text"]["train"] == s["stdlib:math"]["train"] == 38 and s["stdlib:text"]["eval"] == 2
    ident = data.stats["fingerprint_inputs"]["sources"][0]
    assert ident["kind"] == "stdlib" and ident["skill"] == "text" and ident["miner"] == stdlib_mining.MINER_VERSION
