#!/usr/bin/env python3
"""Plots for the lb benchmark report: reads DIR/samples.json, writes
DIR/per_packet.png, DIR/scale.png and DIR/lab.png (medians with min-max bars)."""
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def stats(series, name):
    v = series.get(name, {}).get("values", [])
    if not v:
        return None
    return statistics.median(v), min(v), max(v)


def bars(ax, series, names, labels, unit, title):
    xs, meds, lo, hi, used = [], [], [], [], []
    for i, (n, label) in enumerate(zip(names, labels)):
        s = stats(series, n)
        if s is None:
            continue
        xs.append(len(xs))
        meds.append(s[0])
        lo.append(s[0] - s[1])
        hi.append(s[2] - s[0])
        used.append(label)
    ax.bar(xs, meds, yerr=[lo, hi], capsize=4, color="#4878a8")
    ax.set_xticks(xs, used, rotation=20, ha="right")
    ax.set_ylabel(unit)
    ax.set_title(title)
    for x, m in zip(xs, meds):
        ax.annotate(f"{m:.3g}", (x, m), ha="center", va="bottom", fontsize=8)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench")
    series = json.loads((out / "samples.json").read_text())["series"]

    fig, ax = plt.subplots(figsize=(8, 4))
    paths = ["ns_floor_xdp_tx", "ns_pass", "ns_established", "ns_reply", "ns_new_session_hit", "ns_new_session_miss"]
    bars(ax, series, paths, ["XDP_TX floor", "pass", "established", "reply", "new, session hit", "new, session miss"],
         "ns per packet", "Per-packet cost (BPF_PROG_TEST_RUN)")
    fig.tight_layout()
    fig.savefig(out / "per_packet.png", dpi=110)

    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [(1e3, "1k"), (1e4, "10k"), (1e5, "100k"), (1e6, "1m")]
    pts = [(n, stats(series, f"ns_established_{k}"), stats(series, f"floor_at_{k}")) for n, k in sizes]
    pts = [p for p in pts if p[1] is not None]
    if pts:
        ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts],
                    yerr=[[p[1][0] - p[1][1] for p in pts], [p[1][2] - p[1][0] for p in pts]],
                    marker="o", capsize=4, label="established")
        ax.plot([p[0] for p in pts if p[2]], [p[2][0] for p in pts if p[2]], marker="s", label="XDP_TX floor")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("entries in the connection and persistence tables")
        ax.set_ylabel("ns per packet")
        ax.set_title("Established-path cost against table size")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    bars(axes[0], series, ["pps_xdp", "pps_nftables", "pps_route"], ["lb (XDP)", "nftables DNAT", "routing only"],
         "packets/s delivered", "UDP packet rate")
    bars(axes[1], series, ["cps_direct", "cps_xdp", "cps_nftables", "cps_haproxy"],
         ["direct", "lb (XDP)", "nftables", "HAProxy"], "connections/s", "New connection per request")
    bars(axes[2], series, ["p99_ms_close_direct", "p99_ms_close_xdp", "p99_ms_close_nftables", "p99_ms_close_haproxy"],
         ["direct", "lb (XDP)", "nftables", "HAProxy"], "ms", "p99 latency, new connection per request")
    fig.tight_layout()
    fig.savefig(out / "lab.png", dpi=110)


if __name__ == "__main__":
    main()
