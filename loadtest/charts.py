"""PNG charts of a compare.py result (matplotlib, Agg backend):

- cpu-per-packet.png: server CPU µs per handled packet against offered
  packets per second, one line per flood scenario and server;
- calls-under-fire.png: calls succeeded (%) against flood packets per
  second, one line per server, with the 99.9 % line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

STYLE: dict[str, dict[str, Any]] = {
    "sbc": {"color": "tab:blue", "marker": "o", "markersize": 8, "linestyle": "-"},
    "sbc-compiled": {"color": "tab:purple", "marker": "D", "markersize": 6, "linestyle": "-."},
    "kamailio": {"color": "tab:orange", "marker": "s", "markersize": 5, "linestyle": "--"},
    "kamailio-tlsf": {"color": "tab:green", "marker": "^", "markersize": 5, "linestyle": ":"},
}


def cpu_per_packet(doc: dict[str, Any], path: Path) -> Path | None:
    """Per flood scenario and server: (median offered pps, median µs/packet) at each rate."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for case in doc["cases"]:
        if "offered_pps" not in next((case[t]["median"] for t in STYLE if t in case), {}):
            continue
        for target in STYLE:
            med = case.get(target, {}).get("median", {})
            if med.get("offered_pps") and med.get("cpu_us_per_packet") is not None:
                series.setdefault((case["scenario"], target), []).append(
                    (med["offered_pps"], med["cpu_us_per_packet"])
                )
    if not series:
        return None
    scenarios = list(dict.fromkeys(s for s, _ in series))
    cols = min(2, len(scenarios))
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), dpi=110, squeeze=False)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        for target, style in STYLE.items():
            points = sorted(series.get((scenario, target), []))
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=target, **style)
        ax.set_title(scenario, fontsize=10)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("offered packets per second")
        ax.set_ylabel("CPU µs per handled packet")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(scenarios) :]:
        ax.set_visible(False)
    fig.suptitle("Flood cost: server CPU per packet against offered rate (medians)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def calls_under_fire(doc: dict[str, Any], path: Path) -> Path | None:
    """Per server: median call success (%) at each flood step."""
    case = next((c for c in doc["cases"] if c["scenario"] == "calls-under-fire"), None)
    if case is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for target, style in STYLE.items():
        steps = case.get(target, {}).get("steps")
        if not steps:
            continue
        ok = case[target]["median"].get("max_flood_pps_ok")
        ax.plot(
            [s["flood_pps"] for s in steps],
            [s["success_pct"] for s in steps],
            label=f"{target} (calls >= 99.9 % ok up to {ok or 0:,.0f} pps)",
            **style,
        )
    ax.axhline(99.9, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("flood packets per second (offered)")
    ax.set_ylabel("legitimate calls succeeded, %")
    ax.set_title("Calls under fire (medians over the repeats)")
    ax.set_ylim(top=100.5)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_charts(doc: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = [
        cpu_per_packet(doc, directory / "cpu-per-packet.png"),
        calls_under_fire(doc, directory / "calls-under-fire.png"),
    ]
    return [p for p in written if p is not None]
