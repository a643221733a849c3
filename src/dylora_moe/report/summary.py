"""A short run summary in Markdown and in a small HTML page that shows the PNGs.

Why: the figures answer "how did it go", the summary answers "where did it end, when was it
resumed, what matured when". The content is built once as plain blocks and rendered twice, so the
Markdown and the HTML never disagree.
"""

from __future__ import annotations

import html
from pathlib import Path

from dylora_moe.report.history import USAGE_PREFIX, ResumeEvent, RunHistory

# A block is ("h", text) | ("p", text) | ("table", headers, rows) | ("img", alt, file name)
Block = tuple

_TITLES = {
    "losses": "Losses",
    "learning_rate": "Learning rate",
    "expert_usage": "Expert usage",
    "routing_entropy": "Routing entropy",
    "skills": "Skills per expert",
}
_FINAL_METRICS = [
    ("train", "loss", "train loss"),
    ("train", "lm_loss", "train LM loss"),
    ("train", "balance_loss", "train balance loss"),
    ("eval", "eval_loss", "eval loss"),
    ("eval", "eval_lm_loss", "eval LM loss"),
    ("eval", "eval_balance_loss", "eval balance loss"),
    ("train", "learning_rate", "learning rate"),
    ("train", "routing_entropy", "routing entropy"),
]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _overview(history: RunHistory, source: str, state_file: str) -> list[Block]:
    epoch = f", epoch {history.epoch:.3g}" if history.epoch is not None else ""
    lines = [f"Source: {source}. State file: {state_file}."]
    if history.global_step is not None:
        lines.append(f"Reached step {history.global_step}{epoch}.")
    if history.num_experts:
        lines.append(f"{history.num_experts} experts.")
    if history.resumes:
        steps = ", ".join(str(s) for s in history.resume_steps)
        lines.append(f"Resumed {len(history.resumes)} time(s), at step {steps}.")
    else:
        lines.append("Never resumed.")
    return [("p", " ".join(lines))]


def _final_values(history: RunHistory) -> list[Block]:
    rows = []
    for table, key, label in _FINAL_METRICS:
        series = getattr(history, table).get(key)
        if series is not None:
            step, value = series.last()
            rows.append([label, _fmt(value), str(step)])
    eval_loss = history.eval.get("eval_loss")
    if eval_loss is not None:
        best = min(range(len(eval_loss.values)), key=eval_loss.values.__getitem__)
        rows.append(["best eval loss", _fmt(eval_loss.values[best]), str(eval_loss.steps[best])])
    for i in range(history.num_experts):
        series = history.train.get(f"{USAGE_PREFIX}{i}")
        if series is not None:
            rows.append([f"expert {i} usage", _fmt(series.values[-1]), str(series.steps[-1])])
    blocks: list[Block] = [("h", "Last values")]
    blocks.append(("table", ["metric", "value", "step"], rows) if rows else ("p", "No metrics were logged."))
    if history.dropped_nonfinite:
        dropped = ", ".join(f"{k} ({n})" for k, n in sorted(history.dropped_nonfinite.items()))
        blocks.append(("p", f"Non-finite values left out of the curves: {dropped}."))
    return blocks


def _continuity(resume: ResumeEvent) -> str:
    """The continuity probe's two losses and their difference; 'not checked' for a checkpoint without a probe."""
    if resume.probe_loss_saved is None or resume.probe_loss_here is None:
        return "not checked"
    before, here = resume.probe_loss_saved, resume.probe_loss_here
    return f"{before:.5f} -> {here:.5f} (Δ {here - before:.3g})"


def _events(history: RunHistory) -> list[Block]:
    blocks: list[Block] = []
    if history.resumes:
        rows = [[str(r.step), r.resumed_from, {True: "yes", False: "no", None: "?"}[r.exact], _continuity(r)]
                for r in history.resumes]
        blocks += [("h", "Resume points"), ("table", ["step", "resumed from", "exact", "probe loss at save -> here"],
                                            rows)]
    if history.maturity_changes:
        rows = [
            [str(c.step), ", ".join(str(i) for i in c.newly_mature) or "-",
             " ".join("M" if m else "." for m in c.maturity)]
            for c in history.maturity_changes
        ]
        blocks += [("h", "Maturity changes"), ("table", ["step", "newly mature", "experts (M = mature)"], rows)]
    if history.skills:
        rows = [
            [str(s.step), s.skill, "?" if s.expert is None else str(s.expert),
             {True: "new expert", False: "reused", None: "?"}[s.novel]]
            for s in history.skills
        ]
        blocks += [("h", "Skills (continual learning)"), ("table", ["step", "skill", "expert", "placement"], rows)]
    if history.dataset_changes:
        steps = ", ".join(str(s) for s in history.dataset_changes)
        blocks += [("h", "Dataset changes"), ("p", f"The training data changed at step {steps}.")]
    return blocks


def summary_blocks(history: RunHistory, figures: dict[str, Path], source: str, state_file: str) -> list[Block]:
    """Everything the summary says, in order."""
    blocks: list[Block] = [("title", "Run report")]
    blocks += _overview(history, source, state_file)
    blocks += _final_values(history)
    blocks += _events(history)
    if figures:
        blocks.append(("h", "Figures"))
        blocks.append(("p", "Dashed red: resume; wide green band: maturity change; dash-dot grey: dataset change."))
        blocks += [("img", _TITLES.get(name, name), path.name) for name, path in figures.items()]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "title":
            out.append(f"# {block[1]}")
        elif kind == "h":
            out.append(f"## {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[1]}]({block[2]})")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block]) -> str:
    esc = html.escape
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "title":
            body.append(f"<h1>{esc(block[1])}</h1>")
        elif kind == "h":
            body.append(f"<h2>{esc(block[1])}</h2>")
        elif kind == "p":
            body.append(f"<p>{esc(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            body.append(f'<figure><img src="{esc(block[2])}" alt="{esc(block[1])}"><figcaption>{esc(block[1])}'
                        "</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
             "img{max-width:100%}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Run report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_summary(blocks: list[Block], out_dir: Path) -> tuple[Path, Path]:
    """summary.md and summary.html in out_dir, next to the PNGs they reference."""
    md, page = out_dir / "summary.md", out_dir / "summary.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks), encoding="utf-8")
    return md, page
