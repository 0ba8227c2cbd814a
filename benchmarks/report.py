"""benchmarks/RESULTS.md and its chart, from benchmarks/results.json.

Only the part between the two markers is rewritten; what is written around it by hand (how the
figures were measured, what profiling found) stays.

    .venv/bin/python benchmarks/report.py      # rewrite from results.json without running anything
"""

from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent
START, END = "<!-- results:start (written by benchmarks/report.py) -->", "<!-- results:end -->"
CHART = "stage_times.png"
STAGES = ("extract", "staging", "identity", "privacy", "marts", "exports", "reports", "orchestration")
COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#bab0ac")

# The targets at 1,000,000 people on a 2-core, 24 GB machine:
# (label, key in a run, limit, higher is better, format of limit and value)
TARGETS = (
    ("whole nightly pipeline", "total_seconds", 600, False, "{:,.0f} s"),
    ("peak RSS", "peak_rss_mb", 6 * 1024, False, "{:,.0f} MB"),
    ("identity vs bare Splink", "identity_vs_bare_splink_ratio", 1.3, False, "{:.2f}x"),
    ("extract vs plain scan", "extract_vs_scan_ratio", 1.5, False, "{:.2f}x"),
    ("pairwise F1", "pairwise_f1", 0.98, True, "{:.4f}"),
)


def results_section(runs: list[dict]) -> str:
    lines = [START, "", "## Runs", ""]
    head = (
        "| # | date | people | DuckDB memory limit | total s | peak RSS MB | " + " | ".join(STAGES)
        + " | identity / bare Splink | extract / scan | pairwise F1 | comparisons | clusters |"
    )
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for n, r in enumerate(runs, start=1):
        s = r["stage_seconds"]
        lines.append(
            f"| {n} | {r['date']} | {r['people']:,} | {r.get('duckdb_memory_limit', 'default')}"
            f" | {r['total_seconds']:,.1f} | {r['peak_rss_mb']:,} | "
            + " | ".join(f"{s[k]:,.1f}" if k in s else "–" for k in STAGES)
            + f" | {r['identity_vs_bare_splink_ratio']:.2f} ({s['identity']:.1f} / {r['bare_splink_seconds']:.1f} s)"
            + f" | {r['extract_vs_scan_ratio']:.2f} ({s['extract']:.1f} / {r['plain_scan_seconds']:.1f} s)"
            + f" | {r['pairwise_f1']:.4f} | {r['comparisons']:,} | {r['clusters']:,} |"
        )
    machines = sorted({r["machine"] for r in runs})
    lines += ["", f"Machine: {'; '.join(machines)}. Stage seconds are step wall times from the"
              " Dagster event log; `orchestration` is the rest of `cdm run`'s wall time (process"
              " start-up, step hand-over, the run summary).", ""]
    latest = next((r for r in reversed(runs) if r["people"] >= 1_000_000), None)
    if latest:
        lines += [f"## Targets at 1,000,000 people (run #{runs.index(latest) + 1}, {latest['date']})", "",
                  "| target | limit | measured | |", "| --- | --- | --- | --- |"]
        for label, key, limit, higher, fmt in TARGETS:
            value = latest[key]
            met = value >= limit if higher else value <= limit
            sign = "≥" if higher else "≤"
            lines.append(
                f"| {label} | {sign} {fmt.format(limit)} | {fmt.format(value)} | {'met' if met else 'MISSED'} |"
            )
        lines.append("")
    lines += [f"![Stage times per run]({CHART})", "", END]
    return "\n".join(lines)


def chart_labels(runs: list[dict]) -> list[str]:
    """One label per run, numbered as in results.json: two runs of one size on one day differ."""
    return [
        f"#{n} {r['people']:,} people, {r['date']}\nDuckDB memory: {r.get('duckdb_memory_limit', 'default')}"
        for n, r in enumerate(runs, start=1)
    ]


def write_chart(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display, no network: a file only
    import matplotlib.pyplot as plt

    # Bars at numeric positions: matplotlib draws equal category labels on one row.
    rows = list(range(len(runs)))
    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.7 * len(runs)), dpi=110)
    left = [0.0] * len(runs)
    for stage, colour in zip(STAGES, COLOURS, strict=True):
        widths = [r["stage_seconds"].get(stage, 0.0) for r in runs]
        ax.barh(rows, widths, left=left, color=colour, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(rows, chart_labels(runs))
    ax.set_xlabel("seconds (wall time of cdm run)")
    ax.set_title("Nightly pipeline: where the time goes")
    ax.invert_yaxis()
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / len(runs)),
              frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replace_section(target: Path, start: str, end: str, section: str) -> Path:
    """Put ``section`` (which begins with ``start`` and ends with ``end``) in place of the part of
    the page ``target`` between those marks, appended when missing; the rest is left alone.

    Each benchmark writes its own section of RESULTS.md this way (report.py, incremental.py,
    engines.py), and none touches another's or the hand-written text between them."""
    text = target.read_text(encoding="utf-8") if target.exists() else "# Benchmark results\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
    else:
        before, after = text.rstrip("\n") + "\n\n", "\n"
    target.write_text(before + section + after, encoding="utf-8")
    return target


def write_report(runs: list[dict], folder: Path = BENCH) -> Path:
    target = replace_section(folder / "RESULTS.md", START, END, results_section(runs))
    write_chart(runs, folder / CHART)
    return target


if __name__ == "__main__":
    print(write_report(json.loads((BENCH / "results.json").read_text())))
