"""Field mapping of every registered dataset, MBPP's task-id split, and the --datasets parser."""

from __future__ import annotations

import pytest

from dylora_moe.data.formats import detect_format
from dylora_moe.data.mbpp import mbpp_split
from dylora_moe.data.prompting import format_prompt
from dylora_moe.data.registry import REGISTRY, DatasetSpec, parse_datasets
from dylora_moe.errors import UserError

MBPP_ROW = {"text": "Write a function to add two numbers.", "code": "def add(a, b):\r\n  return a + b",
            "task_id": 700, "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
            "test_setup_code": "", "challenge_test_list": []}

# one synthetic row per hub layout, and the (instruction, input, response) it must map to
CASES = {
    "code_alpaca": ({"instruction": "Sum a list.", "input": "[1, 2]", "output": "sum(xs)"},
                    ("Sum a list.", "[1, 2]", "sum(xs)")),
    "evol_instruct": ({"instruction": "Reverse a string.", "output": "s[::-1]"}, ("Reverse a string.", "", "s[::-1]")),
    "code_feedback": ({"query": "Sort a list.", "answer": "sorted(xs)", "resource": "x", "lang": "python"},
                      ("Sort a list.", "", "sorted(xs)")),
    "python_code_instructions_18k": (
        {"instruction": "Square x.", "input": "x = 3", "output": "x * x", "prompt": "Below is ..."},
        ("Square x.", "x = 3", "x * x")),
    "python_codes_25k": ({"instruction": "Print hi.", "input": "", "output": "print('hi')", "text": "..."},
                         ("Print hi.", "", "print('hi')")),
    "python_code_23k_sharegpt": (
        {"id": "1", "conversations": [{"from": "system", "value": "Be brief."},
                                      {"from": "human", "value": "Max of a list?"},
                                      {"from": "gpt", "value": "max(xs)"},
                                      {"from": "human", "value": "And min?"}, {"from": "gpt", "value": "min(xs)"}]},
        ("Max of a list?", "", "max(xs)")),
    "mbpp": (MBPP_ROW, ("Write a function to add two numbers.",
                        "Your code should pass these tests:\nassert add(1, 2) == 3\nassert add(0, 0) == 0",
                        "def add(a, b):\n  return a + b")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_field_mapping_per_registered_dataset(name):
    row, expected = CASES[name]
    assert REGISTRY[name].row_format.to_example(row) == expected


def test_registry_hub_ids():
    assert {n: e.hub_id for n, e in REGISTRY.items()} == {
        "code_alpaca": "sahil2801/CodeAlpaca-20k",
        "mbpp": "google-research-datasets/mbpp",
        "evol_instruct": "nickrosh/Evol-Instruct-Code-80k-v1",
        "code_feedback": "m-a-p/CodeFeedback-Filtered-Instruction",
        "python_code_instructions_18k": "iamtarun/python_code_instructions_18k_alpaca",
        "python_codes_25k": "flytech/python-codes-25k",
        "python_code_23k_sharegpt": "ajibawa-2023/Python-Code-23k-ShareGPT",
        "stdlib": None,
    }
    assert REGISTRY["mbpp"].hub_config == "full"


@pytest.mark.parametrize("task_id,split", [(1, "prompt"), (10, "prompt"), (11, "test"), (510, "test"),
                                           (511, "validation"), (600, "validation"), (601, "train"), (974, "train")])
def test_mbpp_split_by_task_id(task_id, split):
    assert mbpp_split(task_id) == split


@pytest.mark.parametrize("task_id", [5, 11, 300, 510, 511, 600])
def test_mbpp_non_train_tasks_are_never_mapped(task_id):
    assert REGISTRY["mbpp"].row_format.to_example({**MBPP_ROW, "task_id": task_id}) is None


def test_mbpp_setup_code_is_shown():
    _, inp, _ = REGISTRY["mbpp"].row_format.to_example({**MBPP_ROW, "test_setup_code": "import math"})
    assert inp.startswith("Test setup:\nimport math\n\nYour code should pass these tests:\n")


def test_detect_format_for_custom_names():
    assert detect_format({"instruction", "input", "output"}).name == "alpaca"
    assert detect_format({"query", "answer"}).name == "query_answer"
    assert detect_format({"conversations", "id"}).name == "sharegpt"
    assert detect_format(set(MBPP_ROW)).name == "mbpp"
    assert detect_format({"prompt", "completion"}) is None


def test_format_prompt_exact_text():
    assert format_prompt("Add numbers.") == "### Instruction:\nAdd numbers.\n\n### Response:\n"
    assert format_prompt(" Add. ", "x = 1\n") == "### Instruction:\nAdd.\n\n### Input:\nx = 1\n\n### Response:\n"
    assert format_prompt("Add.", "  ") == format_prompt("Add.")


def test_parse_datasets_forms():
    assert parse_datasets(" code_alpaca , mbpp=/x/mbpp.jsonl,stdlib:text,mine=a=b.json") == [
        DatasetSpec("code_alpaca", "code_alpaca"),
        DatasetSpec("mbpp", "mbpp", path="/x/mbpp.jsonl"),
        DatasetSpec("stdlib:text", "stdlib", skill="text"),
        DatasetSpec("mine", "mine", path="a=b.json"),
    ]


def test_unknown_name_lists_known_ones():
    with pytest.raises(UserError) as err:
        parse_datasets("code_alpaca,alpaca_gpt4")
    assert str(err.value) == (
        "unknown dataset 'alpaca_gpt4'; known: code_alpaca, mbpp, evol_instruct, code_feedback, "
        "python_code_instructions_18k, python_codes_25k, python_code_23k_sharegpt, stdlib, stdlib:text, "
        "stdlib:math, stdlib:files, stdlib:data, stdlib:net, stdlib:concurrency, stdlib:devtools, stdlib:system; "
        "or bind any name to a local file: --datasets \"alpaca_gpt4=path/to/file.jsonl\""
    )


@pytest.mark.parametrize("text,message", [
    ("mbpp,mbpp", "dataset 'mbpp' is listed twice in --datasets; list each dataset once"),
    ("stdlib:poetry", "unknown dataset 'stdlib:poetry'; only stdlib has skills: stdlib:text, stdlib:math, "
                      "stdlib:files, stdlib:data, stdlib:net, stdlib:concurrency, stdlib:devtools, stdlib:system"),
    ("mbpp=", "bad --datasets item 'mbpp='; expected NAME or NAME=PATH, e.g. code_alpaca=data.json"),
    (" , ", "--datasets is empty; expected e.g. --datasets stdlib or --datasets code_alpaca,mbpp"),
])
def test_parse_datasets_errors(text, message):
    with pytest.raises(UserError) as err:
        parse_datasets(text)
    assert str(err.value) == message
