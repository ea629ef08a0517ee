"""Where a state-space block's CPU time goes: the selective scan beside the cross-scan/merge, the projections, the
convolutions and the rest, each against a ceiling measured in the same run.

    python benchmarks/block_profile.py [--threads N] [--quick]

writes benchmarks/results/block-profile-cpu.json and block-profile-cpu.png. For each case, the entry's first
state-space block (VM-UNet's and MHS-VM's VSS block, MambaIR's RSSB) at the input it receives when the network runs
its paper preset on its reference input, captured in a forward pass that stops there. The block's forward (no grad)
and forward+backward are profiled (torch.profiler, self CPU time per operator, averaged over the repeats) and each
operator is put in one category. FLOPs per category come from FlopCounterMode (the scan's own formula included),
so each category's achieved rate can be set against the same run's ceilings: a large float32 matmul (what the
projections and convolutions could reach) and the scan's exp-only floor (torch.exp over the scan's dim x N x L
exponentials, which no scan avoids).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import medmamba
from medmamba.evaluation.efficiency import interleaved_ms, machine_description
from medmamba.io_utils import atomic_file
from medmamba.networks.blocks.rss import RSSBlock
from medmamba.networks.blocks.ssnd import VSSBlock

RESULTS = Path(__file__).resolve().parent / "results"
CASES = (("vm_unet", 2), ("mhs_vm_unet", 2), ("mambair", 2), ("vm_unet", 3), ("mhs_vm_unet", 3), ("mambair", 3))
BLOCK_TYPES = (VSSBlock, RSSBlock)
# operator name (self time) -> category: the first category with a fragment in the name, anything else "other".
# A custom operator's forward under autograd is profiled as "GeneratedBackwardFor_medmamba_<op>...", its backward
# as "medmamba::<op>_backward": both hold the op's name.
CATEGORIES = (
    ("selective scan", ("selective_scan",)),
    ("cross-scan/merge", ("route_pass",)),
    ("projections", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")),
    ("convolution", ("conv",)),
    ("normalization", ("layer_norm",)),
    ("copies", ("aten::copy_",)),
)
# FLOP-counted operator (overload packet name) -> category
FLOP_CATEGORIES = {"selective_scan": "selective scan", "mm": "projections", "bmm": "projections",
                   "addmm": "projections", "baddbmm": "projections", "convolution": "convolution",
                   "convolution_backward": "convolution"}


class _Captured(Exception):
    pass


def first_block_input(name: str, dims: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The entry's first state-space block (paper preset) and the input it gets from the reference input."""
    entry = medmamba.model_entry(name)
    shape = entry.reference_input[dims]
    model = medmamba.create_model(name, spatial_dims=dims, in_channels=shape[0], preset="paper").eval()
    block = next(m for m in model.modules() if isinstance(m, BLOCK_TYPES))
    captured = {}

    def grab(module, args):
        captured["x"] = args[0].detach().clone()
        raise _Captured

    handle = block.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            model(torch.randn(1, *shape))
    except _Captured:
        pass
    finally:
        handle.remove()
    return block, captured["x"]


def _category(op: str) -> str:
    return next((cat for cat, fragments in CATEGORIES if any(f in op for f in fragments)), "other")


def _profile(step, repeats: int) -> dict[str, float]:
    """Self CPU milliseconds per category, per call of ``step`` (after one warm-up call)."""
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    ms = defaultdict(float)
    for event in prof.key_averages():
        ms[_category(event.key)] += event.self_cpu_time_total / 1e3 / repeats
    return dict(ms)


def _flops(step) -> dict[str, int]:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = defaultdict(int)
    for op, count in counter.get_flop_counts().get("Global", {}).items():
        flops[FLOP_CATEGORIES.get(op.__name__, "other")] += int(count)
    return dict(flops)


def _wall_ms(step, repeats: int) -> float:
    """Minimum milliseconds over ``repeats`` calls after a warm-up call."""
    return interleaved_ms({"step": step}, repeats)["step"]


def _summary(ms: dict[str, float], flops: dict[str, int], wall_ms: float) -> dict:
    total = sum(ms.values())
    categories = {}
    for cat in [c for c, _ in CATEGORIES] + ["other"]:
        record = {"ms": round(ms.get(cat, 0.0), 2), "share": round(ms.get(cat, 0.0) / total, 4)}
        if flops.get(cat) and ms.get(cat):
            record["flops"] = flops[cat]
            record["gflop_per_s"] = round(flops[cat] / 1e6 / ms[cat], 1)
        categories[cat] = record
    return {"wall_ms": round(wall_ms, 1), "profiled_ms": round(total, 1), "categories": categories}


def profile_block(block: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Forward (no grad) and forward+backward of ``block`` on ``x``: wall time and time and FLOPs by category."""
    grad = torch.randn_like(x)
    x_grad = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            block(x)

    def forward_backward():
        block(x_grad).backward(grad)
        x_grad.grad = None
        block.zero_grad(set_to_none=True)

    return {label: _summary(_profile(step, repeats), _flops(step), _wall_ms(step, repeats))
            for label, step in (("forward", forward), ("forward_backward", forward_backward))}


def profile_case(name: str, dims: int, repeats: int) -> dict:
    """``profile_block`` of ``name``'s first block in ``dims`` D, at the input it gets in the network."""
    block, x = first_block_input(name, dims)
    return {"entry": name, "dims": dims, "block": type(block).__name__, "input_shape": list(x.shape),
            **profile_block(block, x, repeats)}


def ceilings(threads: int) -> dict[str, float]:
    """Same-run ceilings: float32 GEMM GFLOP/s (2048^3 matmul) and torch.exp's Gexp/s."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm_ms = _wall_ms(lambda: torch.mm(a, b), 5)
    x = torch.randn(16 * 2**20)
    exp_ms = _wall_ms(lambda: torch.exp(x), 5)
    return {"threads": threads, "gemm_gflop_per_s": round(2 * 2048**3 / gemm_ms / 1e6, 1),
            "exp_gexp_per_s": round(x.numel() / exp_ms / 1e6, 2)}


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [c for c, _ in CATEGORIES] + ["other"]
    rows = [(f"{c['entry']} {c['dims']}D {label}", c[key]) for c in result["cases"]
            for label, key in (("fwd", "forward"), ("fwd+bwd", "forward_backward"))]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    colors = plt.get_cmap("tab10").colors
    for i, (_, record) in enumerate(rows):
        left = 0.0
        for j, cat in enumerate(cats):
            share = 100 * record["categories"][cat]["share"]
            ax.barh(i, share, left=left, color=colors[j], label=cat if i == 0 else None)
            left += share
        ax.text(101, i, f"{record['wall_ms']:.0f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xlabel("% of the block's self CPU time")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title(f"first state-space block per entry, paper preset, reference input; {result['machine']}, "
                 f"{result['ceilings']['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="one repeat, 2D cases only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in CASES if c[1] == 2] if args.quick else list(CASES)
    result = {"machine": machine_description("cpu"), "ceilings": ceilings(torch.get_num_threads()), "cases": []}
    for name, dims in cases:
        print(f"{name} {dims}D ...", flush=True)
        result["cases"].append(profile_case(name, dims, repeats=1 if args.quick else 3))
    with atomic_file(RESULTS / "block-profile-cpu.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_file(RESULTS / "block-profile-cpu.png", suffix=".png") as tmp:
        _plot(result, str(tmp))
    for case in result["cases"]:
        shares = {k: v["share"] for k, v in case["forward"]["categories"].items()}
        print(case["entry"], case["dims"], case["forward"]["wall_ms"], case["forward_backward"]["wall_ms"], shares)


if __name__ == "__main__":
    main()
