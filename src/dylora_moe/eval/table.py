"""A plain-text pass@k table for the terminal."""

from __future__ import annotations


def format_table(results: dict) -> str:
    """One row per benchmark: problems, samples per problem, then one column per pass@k (in percent)."""
    benchmarks = results["benchmarks"]
    ks = [key for key in next(iter(benchmarks.values()))["pass@k"]] if benchmarks else []
    header = ["benchmark", "problems", "n", *ks]
    rows = [header]
    for name, bench in benchmarks.items():
        rows.append([name, str(bench["num_problems"]), str(bench["n"]),
                     *(f"{100 * bench['pass@k'][k]:.2f}%" for k in ks)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
