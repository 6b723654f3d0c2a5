"""Where a GPU training step's time goes, from Chrome traces of Kineto (vit_step_bench --trace DIR
writes one per side and measurement: moa's through LibTorch's profiler, PyTorch eager's through
torch.profiler). Sums the GPU kernels (and memcpy / memset) of each trace by kind - matrix
products, convolutions, attention, layer norm, GELU, dtype casts and copies, other elementwise,
reductions, loss, optimizer - in ms per step, side by side, with each trace's GPU busy time
against the span from its first kernel to its last; then each trace's heaviest kernels.

usage: trace_kernels.py [--steps 2] [--top 12] TRACE.json[.gz] ...
"""
import argparse
import collections
import gzip
import json
import os
import re

# First match wins: attention before convolutions (cuDNN's SDPA kernels are named fprop / bprop,
# its helpers convert_dq and dot_do_o), both before the matrix products their kernels resemble,
# GELU and casts before the generic elementwise templates that carry them.
KINDS = [
    ("attention", r"flash|fmha|attention|sdpa|convert_dq|dot_do_o"),
    ("conv", r"conv|fprop|dgrad|wgrad|implicit|im2col|col2im|nchwToNhwc|nhwcToNchw"),
    ("GEMM", r"gemm|nvjet|cutlass|xmma|cublas|sm90_|sm80_|splitK"),
    ("layer norm", r"layer_norm|LayerNorm|GammaBeta"),
    ("GELU", r"[Gg]elu"),
    ("loss/softmax", r"softmax|nll_loss|cross_entropy|log_softmax"),
    ("optimizer", r"[Aa]dam|multi_tensor|_foreach"),
    ("casts/copies", r"copy|Memcpy|Memset|memcpy|memset|fill|CatArray|cat_|index|gather|scatter"),
    ("reductions", r"reduce|Reduce|sum_|norm_kernel"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise"),
]


def kind_of(name):
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events
            if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("traces", nargs="+")
    p.add_argument("--steps", type=int, default=2, help="training steps each trace holds")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    names = [os.path.basename(t).split(".json")[0] for t in args.traces]
    by_kind, by_kernel, busy, span = [], [], [], []
    for path in args.traces:
        kernels = load(path)
        kinds = collections.defaultdict(float)
        per_name = collections.defaultdict(lambda: [0.0, 0])
        for e in kernels:
            ms = e["dur"] / 1000 / args.steps  # trace times are microseconds
            kinds[kind_of(e["name"])] += ms
            per_name[e["name"]][0] += ms
            per_name[e["name"]][1] += 1
        by_kind.append(kinds)
        by_kernel.append(per_name)
        busy.append(sum(kinds.values()))
        if kernels:
            first = min(e["ts"] for e in kernels)
            last = max(e["ts"] + e["dur"] for e in kernels)
            span.append((last - first) / 1000 / args.steps)
        else:
            span.append(0.0)
    if not any(busy):
        print("(no GPU kernels in these traces: they come from runs on the CPU)")
    else:
        for name, b in zip(names, busy):
            if not b:
                print(f"warning: {name} holds no GPU kernels (a CPU run, or a profiler without "
                      "CUDA activity): its column reads 0")
    width = max(14, *(len(n) for n in names))
    print("GPU kernel time, ms per step, by kind")
    print(f"{'kind':<14}" + "".join(f" {n:>{width}}" for n in names))
    all_kinds = [k for k, _ in KINDS] + ["other"]
    for kind in all_kinds:
        if not any(kind in k for k in by_kind):
            continue
        print(f"{kind:<14}" + "".join(f" {k.get(kind, 0.0):>{width}.2f}" for k in by_kind))
    print(f"{'GPU busy':<14}" + "".join(f" {b:>{width}.2f}" for b in busy))
    print(f"{'span':<14}" + "".join(f" {s:>{width}.2f}" for s in span))
    for name, per_name in zip(names, by_kernel):
        if args.top <= 0:
            break
        print(f"\n{name}: the {args.top} heaviest kernels (ms per step, launches per step, kind)")
        heaviest = sorted(per_name.items(), key=lambda item: -item[1][0])[: args.top]
        for kernel, (ms, count) in heaviest:
            print(f"{ms:8.2f} {count / args.steps:6.0f}  {kind_of(kernel):<13} {kernel[:110]}")


if __name__ == "__main__":
    main()
