#!/usr/bin/env python3
"""Turns bench/fleet/results/raw.tsv into markdown tables (stdout) and a plot (PNG).

usage: summarize.py [RAW_TSV] [--png FILE]

A tool's first run is one `chom reconcile` for chom (it detects and applies in one pass),
and facts + script (two invocations) for Ansible and pyinfra; the steady state likewise.
`chom plan` (check mode on every host) is shown beside chom's steady state. Every cell is
the median over iterations of the per-iteration figure, with [min–max]; runs whose check
failed are left out and counted.
"""
import argparse
import collections
import csv
import os
import statistics

TOOLS = ["chom", "chom-tuned", "pyinfra", "ansible-tuned", "ansible-default"]
LABEL = {
    "chom": "chom (defaults)",
    "chom-tuned": "chom (--max-handshakes 100 --handshake-rate 0)",
    "pyinfra": "pyinfra (--parallel N)",
    "ansible-tuned": "Ansible tuned (forks N, pipelining, ControlPersist)",
    "ansible-default": "Ansible default (forks N)",
}
# run -> the phases summed into it, per tool family
RUNS = {
    "chom": {"facts": ["facts"], "first": ["first"], "steady": ["steady"], "steady-check": ["steady-check"]},
    "other": {"facts": ["facts"], "first": ["facts", "script"], "steady": ["steady-facts", "steady-script"]},
}


def family(tool):
    return "chom" if tool.startswith("chom") else "other"


def load(path):
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    # (tool, n, rtt, iter) -> phase -> row
    runs = collections.defaultdict(dict)
    for r in rows:
        runs[(r["tool"], int(r["n"]), int(r["rtt_ms"]), int(r["iter"]))][r["phase"]] = r
    # (tool, run, n, rtt) -> list of dicts with wall, cpu, rss, hosts_cpu
    out = collections.defaultdict(list)
    failed = collections.Counter()
    for (tool, n, rtt, it), phases in runs.items():
        for run, parts in RUNS[family(tool)].items():
            if not all(p in phases for p in parts):
                continue
            rs = [phases[p] for p in parts]
            if any(r["verdict"] != "ok" for r in rs):
                failed[(tool, run, n, rtt)] += 1
                continue
            out[(tool, run, n, rtt)].append({
                "wall": sum(float(r["wall_s"]) for r in rs),
                "cpu": sum(float(r["cpu_s"]) for r in rs),
                "rss": max(float(r["tree_rss_mib"]) for r in rs),
                "hosts": sum(float(r["hosts_cpu_s"]) for r in rs),
            })
    return out, failed


def med(vals):
    return statistics.median(vals)


def cell(samples, key, fmt="{:.2f}"):
    if not samples:
        return "–"
    v = [s[key] for s in samples]
    if len(v) == 1:
        return fmt.format(v[0]) + " (1 run)"
    return f"{fmt.format(med(v))} [{fmt.format(min(v))}–{fmt.format(max(v))}]"


def table(out, failed, run, key, title, ns, rtts, fmt="{:.2f}", per_server=False):
    lines = [f"#### {title}", ""]
    for rtt in rtts:
        lines += [f"Added RTT {rtt} ms", "", "| tool | " + " | ".join(f"N={n}" for n in ns) + " |",
                  "|---|" + "---|" * len(ns)]
        for tool in TOOLS:
            cells = []
            for n in ns:
                s = out.get((tool, run, n, rtt), [])
                if per_server and s:
                    s = [dict(x, **{key: x[key] * 1000 / n}) for x in s]
                c = cell(s, key, fmt)
                if failed.get((tool, run, n, rtt)):
                    c += f" ({failed[(tool, run, n, rtt)]} failed)"
                cells.append(c)
            if any(c != "–" for c in cells):
                lines.append(f"| {LABEL[tool]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def ratios(out, ns, rtts):
    lines = ["#### How many times faster chom (defaults) is, by median wall time", "",
             "| RTT | N | first run vs Ansible tuned | first run vs pyinfra | steady state vs pyinfra |",
             "|---|---|---|---|---|"]
    for rtt in rtts:
        for n in ns:
            def m(tool, run):
                s = out.get((tool, run, n, rtt))
                return med([x["wall"] for x in s]) if s else None
            c1, cs = m("chom", "first"), m("chom", "steady")
            if c1 is None:
                continue
            at, p1, ps = m("ansible-tuned", "first"), m("pyinfra", "first"), m("pyinfra", "steady")
            f = lambda a, b: f"{a / b:.1f}×" if a and b else "–"
            lines.append(f"| {rtt} ms | {n} | {f(at, c1)} | {f(p1, c1)} | {f(ps, cs)} |")
    return lines + [""]


def plot(out, ns, rtts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(rtts), figsize=(6 * len(rtts), 4.5), squeeze=False)
    for ax, rtt in zip(axes[0], rtts):
        for tool in ["chom", "pyinfra", "ansible-tuned", "ansible-default"]:
            xs, ys = [], []
            for n in ns:
                s = out.get((tool, "first", n, rtt))
                if s:
                    xs.append(n)
                    ys.append(med([x["wall"] for x in s]))
            if xs:
                ax.plot(xs, ys, marker="o", label=LABEL[tool])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("servers (N)")
        ax.set_ylabel("first run wall time, s (median)")
        ax.set_title(f"facts + one component script, added RTT {rtt} ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("raw", nargs="?", default=os.path.join(here, "results", "raw.tsv"))
    ap.add_argument("--png", default=os.path.join(here, "results", "fleet.png"))
    a = ap.parse_args()
    out, failed = load(a.raw)
    ns = sorted({k[2] for k in out})
    rtts = sorted({k[3] for k in out})
    lines = []
    lines += table(out, failed, "first", "wall", "First run (facts + script), wall time in seconds", ns, rtts)
    lines += table(out, failed, "steady", "wall", "Steady state (the same again, nothing changes), wall time in seconds",
                   ns, rtts)
    lines += table(out, failed, "steady-check", "wall", "chom plan (check mode on every host), wall time in seconds",
                   ns, rtts)
    lines += table(out, failed, "facts", "wall", "Facts alone, wall time in seconds", ns, rtts)
    lines += ratios(out, ns, rtts)
    lines += table(out, failed, "first", "cpu", "First run, control-host CPU per server in ms (every process the tool "
                   "started)", ns, rtts, "{:.1f}", per_server=True)
    lines += table(out, failed, "first", "rss", "First run, peak RSS of the tool's processes together, MiB", ns, rtts,
                   "{:.0f}")
    lines += table(out, failed, "first", "hosts", "First run, the test hosts' sshd CPU, seconds", ns, rtts)
    print("\n".join(lines))
    plot(out, ns, rtts, a.png)


if __name__ == "__main__":
    main()
