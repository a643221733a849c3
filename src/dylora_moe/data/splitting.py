"""Seeded subsets, the shuffled train/eval split and the two ways of mixing several datasets.

Why everything takes its own named RNG: changing one knob (say the training subset) must not move the
eval split, so each step draws from a generator seeded by (seed, step name) only.
"""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

from dylora_moe.errors import UserError

T = TypeVar("T")


def rng_for(seed: int, *tags: str) -> random.Random:
    """A generator that depends only on the seed and the step's name (string seeding is stable across runs)."""
    return random.Random(":".join([str(seed), *tags]))


def check_percent(value: float, flag: str) -> float:
    if not 0.0 < float(value) <= 100.0:
        raise UserError(f"{flag} must be a percentage in (0, 100], got {value}; e.g. {flag} 10 keeps a random 10%")
    return float(value)


def random_subset(items: Sequence[T], percent: float, rng: random.Random) -> list[T]:
    """A seeded random `percent`% of items, in their original order (at least one item if any)."""
    if percent >= 100.0 or not items:
        return list(items)
    k = max(1, round(len(items) * percent / 100.0))
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]


def cap(items: Sequence[T], limit: int | None, rng: random.Random) -> list[T]:
    """At most `limit` items, a seeded random choice kept in order."""
    if limit is None or len(items) <= limit:
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), limit))]


def shuffled_split(items: Sequence[T], eval_fraction: float, rng: random.Random) -> tuple[list[T], list[T]]:
    """Shuffle, then hold out round(n * eval_fraction) items (at least 1 when the fraction is > 0 and n > 1);
    `eval_fraction` in [0, 1) (DataConfig.check)."""
    pool = list(items)
    rng.shuffle(pool)
    n_eval = round(len(pool) * eval_fraction)
    if eval_fraction > 0 and len(pool) > 1:
        n_eval = min(max(1, n_eval), len(pool) - 1)
    return pool[n_eval:], pool[:n_eval]


def parse_weights(text: str | None, names: list[str]) -> dict[str, float]:
    """`a=0.7,b=0.3` -> normalised weights; every dataset needs one, and only listed datasets may have one."""
    if not text:
        return {n: 1.0 / len(names) for n in names}
    weights: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = item.rpartition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or weights.get(name.strip(), 0) <= 0:
            raise UserError(f"bad --mix_weights item '{item}'; expected NAME=POSITIVE_NUMBER, e.g. mbpp=0.3")
    unknown = sorted(set(weights) - set(names))
    missing = [n for n in names if n not in weights]
    if unknown or missing:
        raise UserError(f"--mix_weights must give one weight per dataset ({', '.join(names)}); "
                        f"unknown: {', '.join(unknown) or '-'}; missing: {', '.join(missing) or '-'}")
    total = sum(weights.values())
    return {n: weights[n] / total for n in names}


def interleave(groups: dict[str, list[T]], weights: dict[str, float], rng: random.Random) -> list[T]:
    """Mix groups in exact proportions, as many items as possible without repeating any (no oversampling).

    The order is a seeded random draw, so each stretch of the result holds roughly the given proportions.
    """
    scale = min((len(groups[n]) / w for n, w in weights.items() if w > 0), default=0.0)
    counts = {n: min(len(groups[n]), int(round(weights[n] * scale))) for n in groups}
    slots = [n for n in groups for _ in range(counts[n])]
    rng.shuffle(slots)
    cursors = {n: iter(groups[n]) for n in groups}
    return [next(cursors[n]) for n in slots]
