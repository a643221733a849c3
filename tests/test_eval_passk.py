"""pass@k against values worked out by hand from 1 - C(n-c, k) / C(n, k)."""

from __future__ import annotations

import pytest

from dylora_moe.eval.passk import mean_pass_at_k, pass_at_k, pass_at_ks


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (5, 2, 1, 0.4),  # c / n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (5, 2, 4, 1.0),  # only 3 wrong samples: any 4 contain a correct one
        (10, 0, 5, 0.0),
        (10, 10, 10, 1.0),
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_twenty_samples() -> None:
    # 1 - C(17,10)/C(20,10) = 1 - 19448/184756
    assert pass_at_k(20, 3, 10) == pytest.approx(1 - 19448 / 184756, abs=1e-12)


def test_large_n_stays_exact() -> None:
    # float binomials would overflow; the estimator must still give c/n for k=1
    assert pass_at_k(5000, 1234, 1) == pytest.approx(1234 / 5000, abs=1e-12)


def test_mean_over_problems() -> None:
    counts = [(5, 2), (5, 0), (5, 5)]
    assert mean_pass_at_k(counts, 1) == pytest.approx((0.4 + 0.0 + 1.0) / 3)
    assert pass_at_ks(counts, [1, 2]) == pytest.approx({"pass@1": (0.4 + 1.0) / 3, "pass@2": (0.7 + 1.0) / 3})
    assert mean_pass_at_k([], 1) == 0.0


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_invalid_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
