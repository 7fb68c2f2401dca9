#!/usr/bin/env python3
"""Chart of `cargo xtask bench xdp` results (docs/xdp-bench.png).

Usage: plot_xdp_bench.py <results.json> <out.png>

Left: highest rate with <= 0.1 % loss per relay (hatched: the generator was the limit, the
relay's own maximum is higher; a dot marks the projection max / relay-CPU-busy fraction).
Right: relay CPU time per packet at the common fixed rate.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    "xdp_drop": "XDP_DROP\n(veth ceiling)",
    "kernel_udp_relay": "kernel UDP\nsocket relay",
    "socket_plain": "relayd socket\nplain",
    "socket_srtp": "relayd socket\nSRTP->RTP",
    "socket_rtp_to_srtp": "relayd socket\nRTP->SRTP",
    "xdp_forward": "relayd XDP\nplain forward",
    "xdp_null_redirect": "XDP null\nredirect (floor)",
    "afxdp_srtp": "relayd AF_XDP\nSRTP->RTP",
    "afxdp_rtp_to_srtp": "relayd AF_XDP\nRTP->SRTP",
    "afxdp_null_forward": "AF_XDP null\nforwarder (floor)",
    "rtpengine_plain": "rtpengine\nplain",
    "rtpengine_srtp": "rtpengine\nSRTP->RTP",
    "rtpengine_rtp_to_srtp": "rtpengine\nRTP->SRTP",
}


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    results = data["results"]
    names = [LABELS.get(r["scenario"], r["scenario"]) for r in results]
    mpps = [r["max_clean_pps"] / 1e6 for r in results]
    projected = [r["projected_pps"] / 1e6 for r in results]
    limited = [r["generator_limited"] for r in results]
    cpu = [r["cpu_ns_per_packet"] for r in results]

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    bars = left.bar(range(len(names)), mpps, color="#4c72b0")
    for bar, lim in zip(bars, limited):
        if lim:
            bar.set_hatch("//")
            bar.set_facecolor("#8fa9d6")
    left.scatter(range(len(names)), projected, color="#c44e52", zorder=3,
                 label="projected: max / relay CPU busy")
    for i, r in enumerate(results):
        if r.get("live_frames_pps"):
            left.scatter([i], [r["live_frames_pps"] / 1e6], marker="^", color="#55a868",
                         zorder=3, label="in-kernel generator (live frames)")
    left.set_xticks(range(len(names)), names, fontsize=8)
    left.set_ylabel("Mpps, one direction, <= 0.1 % loss")
    left.set_yscale("log")
    left.set_title("Highest clean rate (hatched: generator-limited)")
    left.legend(fontsize=8, loc="upper right")
    left.grid(axis="y", which="both", alpha=0.3)

    right.bar(range(len(names)), cpu, color="#dd8452")
    right.set_xticks(range(len(names)), names, fontsize=8)
    rate = results[0]["cpu_rate"] if results else 0
    right.set_ylabel("relay CPU ns per packet")
    right.set_title(f"CPU per packet at a fixed rate (about {rate / 1e3:.0f} kpps)")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"veth topology, {data['streams']} streams, relay on CPU {data['relay_cpu']}, "
        f"generator on CPU {data['generator_cpu']}, threaded NAPI",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
