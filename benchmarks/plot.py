"""``python -m benchmarks plot RESULTS.json``: a PNG bar chart of Mpps per tool and fixture.

One horizontal bar per timed case (median Mpps, whiskers from the slowest to
the fastest round) on a logarithmic axis, since the tools span four orders
of magnitude; cases that failed their count check are listed as FAIL.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

FAMILY_COLOURS = {
    "pt-engine": "#d95f02",
    "c": "#1b9e77",
    "system": "#7570b3",
    "python": "#666666",
}


def _family(tool: str) -> str:
    if tool.startswith("pt-engine"):
        return "pt-engine"
    if tool.startswith("c-"):
        return "c"
    if tool in ("tcpdump", "tshark"):
        return "system"
    return "python"


def render(results: Path, out: Path | None = None) -> Path:
    """Draw the chart for a results file; returns the PNG path (default: RESULTS with .png).

    Raises FileNotFoundError / ValueError for a missing or unreadable results file.
    """
    result = json.loads(Path(results).read_text())
    cases = result["cases"]
    out = Path(out) if out else Path(results).with_suffix(".png")
    n = len(cases)
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.42 * n))
    names = [f"{c['tool']}   {c['fixture']}" for c in cases]
    y = list(range(n))[::-1]
    top = max((c.get("mpps_max", 0) for c in cases), default=1) or 1
    for yi, c in zip(y, cases):
        if "mpps_median" not in c:
            ax.text(1e-3, yi, "FAIL" if c.get("failure") else "not run", va="center",
                    color="#b00000", fontweight="bold")
            continue
        med = c["mpps_median"]
        ax.barh(yi, med, color=FAMILY_COLOURS[_family(c["tool"])], height=0.7)
        ax.errorbar(med, yi, xerr=[[med - c["mpps_min"]], [c["mpps_max"] - med]], fmt="none",
                    ecolor="black", capsize=3, lw=1)
        r = c.get("ratio_c_empty")
        ratio = "" if r is None else f"   x{r:.2f} of C empty" if r >= 0.1 else \
            f"   x{r:.2g} of C empty"
        ax.text(c["mpps_max"] * 1.12, yi, f"{med:.3g} Mpps{ratio}", va="center", fontsize=9)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=10)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, top * 60)
    ax.set_xlabel("million packets per second (median of the rounds; whiskers: min-max)")
    ax.grid(axis="x", which="major", alpha=0.3)
    m = result.get("machine", {})
    rounds = result.get("options", {}).get("rounds")
    ax.set_title(f"pt-engine and peers reading pcap files from the page cache ({rounds} rounds)\n"
                 f"{m.get('cpu_model', '?')}, {m.get('nproc', '?')} CPUs, Linux {m.get('kernel', '?')}"
                 f", {m.get('libpcap', '')}  -  {result.get('started', '')}", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=col) for col in FAMILY_COLOURS.values()]
    ax.legend(handles, ["pt-engine", "C through libpcap", "tcpdump / tshark", "Python libraries"],
              loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
