"""PNG figures of a run: losses, learning rate, expert usage, routing entropy, skill placement.

Why: people would rather look at a run than read its log. Figures are drawn on bare `Figure`
objects with the Agg canvas, so nothing depends on a display or on pyplot's global state (safe in
a training process and on headless machines). Every time axis carries the same markers — resume
points, maturity changes, dataset changes — so a jump in a curve can be matched to its cause.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dylora_moe.report.history import USAGE_PREFIX, RunHistory

_SIZE = (9.0, 4.2)
_DPI = 100


def _mark_events(ax: Axes, history: RunHistory) -> None:
    """Vertical lines for resumes, maturity changes and dataset changes (one legend entry each).

    Maturity changes are wide translucent bands drawn underneath, so a resume at the same step (common:
    maturity is often reached at a save step) stays visible on top of it.
    """
    marks = [
        ([c.step for c in history.maturity_changes],
         dict(color="tab:green", linestyle="-", linewidth=4, alpha=0.35, zorder=4), "maturity change"),
        (history.dataset_changes, dict(color="tab:gray", linestyle="-.", linewidth=1.2, zorder=5), "dataset changed"),
        (history.resume_steps, dict(color="tab:red", linestyle="--", linewidth=1.4, zorder=6), "resume"),
    ]
    for steps, style, label in marks:
        for i, step in enumerate(sorted(set(steps))):
            ax.axvline(step, label=label if i == 0 else None, **style)


def _new_figure(rows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(_SIZE[0], _SIZE[1] * (0.75 if rows > 1 else 1.0) * rows), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _finish(fig: Figure, axes: list[Axes], history: RunHistory, title: str, path: Path) -> Path:
    for ax in axes:
        _mark_events(ax, history)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[-1].set_xlabel("optimizer step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _plot(ax: Axes, history: RunHistory, table: str, key: str, label: str, **style) -> bool:
    series = getattr(history, table).get(key)
    if series is None:
        return False
    ax.plot(series.steps, series.values, label=label, **style)
    return True


def losses_figure(history: RunHistory, path: Path) -> Path | None:
    """Total and LM loss (train and eval) on top, balance loss below: their scales differ."""
    if not any(k in history.train or f"eval_{k}" in history.eval for k in ("loss", "lm_loss", "balance_loss")):
        return None
    fig, (top, bottom) = _new_figure(2)
    _plot(top, history, "train", "loss", "train loss", color="tab:blue")
    _plot(top, history, "train", "lm_loss", "train LM loss", color="tab:orange")
    _plot(top, history, "eval", "eval_loss", "eval loss", color="tab:purple", marker="o", markersize=4)
    _plot(top, history, "eval", "eval_lm_loss", "eval LM loss", color="tab:brown", marker="s", markersize=4)
    _plot(bottom, history, "train", "balance_loss", "train balance loss", color="tab:cyan")
    _plot(bottom, history, "eval", "eval_balance_loss", "eval balance loss", color="tab:olive", marker="o",
          markersize=4)
    top.set_ylabel("loss")
    bottom.set_ylabel("balance loss")
    return _finish(fig, [top, bottom], history, "Losses", path)


def learning_rate_figure(history: RunHistory, path: Path) -> Path | None:
    """Learning rate, with the gradient norm below when it was logged."""
    if "learning_rate" not in history.train:
        return None
    has_grad = "grad_norm" in history.train
    fig, axes = _new_figure(2 if has_grad else 1)
    _plot(axes[0], history, "train", "learning_rate", "learning rate", color="tab:blue")
    axes[0].set_ylabel("learning rate")
    axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if has_grad:
        _plot(axes[1], history, "train", "grad_norm", "gradient norm", color="tab:gray")
        axes[1].set_ylabel("grad norm")
    return _finish(fig, axes, history, "Learning rate", path)


def expert_usage_figure(history: RunHistory, path: Path) -> Path | None:
    """Mean router weight per expert, stacked: the bands show how the tokens are shared out."""
    experts = history.num_experts
    keys = [f"{USAGE_PREFIX}{i}" for i in range(experts)]
    present = [history.train.get(k) for k in keys]
    if not any(present):
        return None
    steps = sorted({s for series in present if series for s in series.steps})
    rows = []
    for series in present:
        lookup = dict(zip(series.steps, series.values)) if series else {}
        rows.append([lookup.get(s, 0.0) for s in steps])
    fig, axes = _new_figure(1)
    palette = colormaps["tab10" if experts <= 10 else "tab20"]
    axes[0].stackplot(steps, *rows, labels=[f"expert {i}" for i in range(experts)], alpha=0.85,
                      colors=[palette(i % palette.N) for i in range(experts)])
    axes[0].set_ylabel("mean router weight")
    axes[0].set_ylim(0, max(1.0, max(sum(col) for col in zip(*rows))))
    return _finish(fig, axes, history, "Expert usage (stacked)", path)


def routing_entropy_figure(history: RunHistory, path: Path) -> Path | None:
    if "routing_entropy" not in history.train:
        return None
    fig, axes = _new_figure(1)
    _plot(axes[0], history, "train", "routing_entropy", "routing entropy", color="tab:green")
    axes[0].set_ylabel("routing entropy")
    return _finish(fig, axes, history, "Routing entropy", path)


def skills_figure(history: RunHistory, path: Path) -> Path | None:
    """Continual runs: one row per skill, a dot at the expert it went to (filled = a new expert)."""
    placed = [s for s in history.skills if s.expert is not None]
    if not placed:
        return None
    names = list(dict.fromkeys(s.skill for s in placed))
    experts = max(history.num_experts, max(s.expert for s in placed) + 1)
    fig = Figure(figsize=(_SIZE[0], max(2.5, 0.45 * len(names) + 1.5)), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for skill in placed:
        y = names.index(skill.skill)
        face = "tab:blue" if skill.novel else "white"
        ax.scatter([skill.expert], [y], s=140, facecolors=face, edgecolors="tab:blue", linewidths=1.5, zorder=3)
        ax.annotate(f"step {skill.step}", (skill.expert, y), textcoords="offset points", xytext=(10, -3), fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(experts), [f"expert {i}" for i in range(experts)])
    ax.set_xlim(-0.5, experts - 0.5 + 0.6)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(True, alpha=0.3)
    ax.set_title("Which expert each skill went to (filled = new expert, hollow = reused)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


FIGURES: dict[str, Callable[[RunHistory, Path], Path | None]] = {
    "losses": losses_figure,
    "learning_rate": learning_rate_figure,
    "expert_usage": expert_usage_figure,
    "routing_entropy": routing_entropy_figure,
    "skills": skills_figure,
}


def draw_all(history: RunHistory, out_dir: Path) -> dict[str, Path]:
    """Every figure the history has data for, as `<out_dir>/<name>.png`; name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for name, draw in FIGURES.items():
        target = out_dir / f"{name}.png"
        target.unlink(missing_ok=True)  # a figure from an earlier report must not outlive its data
        path = draw(history, target)
        if path is not None:
            drawn[name] = path
    return drawn
