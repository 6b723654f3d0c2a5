"""PyTorch eager twin of bench/vit_step_bench: one training step of a ViT as a PEFT user writes it
(timm's VisionTransformer with fused SDPA attention, the backbone frozen with requires_grad_(False),
the adapters written in PyTorch, autocast to bfloat16 when asked, Adam with fused=True), or of
DomainBed's ERM with its MNIST_CNN (--method erm: every parameter trained, Adam), on the same torch
as moa. Prints one JSON line: ms per step, images/s and peak memory.

usage: torch_vit_step.py --method lora|moa|full|erm --device cpu|cuda --precision fp32|bf16
       --batch N --steps N --warmup N --threads N [--img 224 --patch 16 --in-chans 3 --dim 768
       --depth 12 --heads 12 --mlp-ratio 4 --rank 2 --targets qkv --blocks all|every_other
       --ranks 1,2,4,8 --proj-dim 256 --classes 7 --lr 5e-5 --trace PATH]
--trace PATH: after the measurement, two more steps under torch.profiler (CPU and CUDA activities)
written as a Chrome trace to PATH (bench/trace_kernels.py sums its GPU kernels by kind).
"""
import argparse
import json
import math
import resource
import sys
import time
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F
from timm.models.vision_transformer import VisionTransformer


class LoraLinear(nn.Module):
    """y = W0 x + B A x, B zero at the start (PEFT's LoRA with scale 1)."""

    def __init__(self, base, rank):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(rank))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.A), self.B)


class MoaLinear(nn.Module):
    """W0 x plus LoRA experts of several ranks; a cosine router sends each token to its top-1
    expert (noisy softmax gate in training) and a load-balancing loss keeps all in use."""

    def __init__(self, base, ranks, proj_dim=256, aux_weight=0.01):
        super().__init__()
        self.base = base
        d_in, d_out = base.in_features, base.out_features
        self.A = nn.ParameterList([nn.Parameter(torch.randn(r, d_in) / math.sqrt(r)) for r in ranks])
        self.B = nn.ParameterList([nn.Parameter(torch.zeros(d_out, r)) for r in ranks])
        self.proj = nn.Linear(d_in, proj_dim)
        self.sim = nn.Parameter(torch.randn(proj_dim, len(ranks)) * 0.01)
        self.temperature = nn.Parameter(torch.full((1,), math.log(2.0)))
        self.aux_weight = aux_weight
        self.aux_loss = None

    def forward(self, x):
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        n = len(self.A)
        scale = torch.exp(torch.clamp(self.temperature, max=math.log(100.0)))
        logits = scale * (F.normalize(self.proj(tokens), dim=1) @ F.normalize(self.sim, dim=0))
        if self.training:
            logits = logits + torch.randn_like(logits) / n
        probs = logits.float().softmax(1)
        gate, expert = probs.max(1)
        importance = probs.sum(0)
        load = torch.bincount(expert, minlength=n).to(probs.dtype)
        cv2 = lambda v: v.var() / (v.mean() ** 2 + 1e-10)
        self.aux_loss = self.aux_weight * (cv2(importance) + cv2(load)) / 2
        order = torch.argsort(expert)
        counts = torch.bincount(expert, minlength=n).tolist()
        sorted_tokens = tokens.index_select(0, order)
        outputs = []
        for e, chunk in enumerate(sorted_tokens.split(counts)):
            if chunk.shape[0] > 0:
                outputs.append(F.linear(F.linear(chunk, self.A[e]), self.B[e]))
        delta = torch.cat(outputs) * gate.index_select(0, order).unsqueeze(1).to(outputs[0].dtype)
        update = torch.zeros(tokens.shape[0], delta.shape[1], dtype=delta.dtype, device=x.device)
        update = update.index_add(0, order, delta)
        return self.base(x) + update.reshape(*shape[:-1], -1)


class MnistCnn(nn.Module):
    """DomainBed's MNIST_CNN featurizer (four 3x3 convolutions, ReLU, GroupNorm(8), global average
    pooling) with its linear classifier, as DomainBed's ERM trains it."""

    def __init__(self, in_chans, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.bn0 = nn.GroupNorm(8, 64)
        self.bn1 = nn.GroupNorm(8, 128)
        self.bn2 = nn.GroupNorm(8, 128)
        self.bn3 = nn.GroupNorm(8, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(128, classes)

    def forward(self, x):
        x = self.bn0(F.relu(self.conv1(x)))
        x = self.bn1(F.relu(self.conv2(x)))
        x = self.bn2(F.relu(self.conv3(x)))
        x = self.bn3(F.relu(self.conv4(x)))
        return self.classifier(self.avgpool(x).flatten(1))


def build(args):
    if args.method == "erm":
        return MnistCnn(args.in_chans, args.classes)
    model = VisionTransformer(img_size=args.img, patch_size=args.patch, in_chans=args.in_chans,
                              num_classes=args.classes, embed_dim=args.dim, depth=args.depth,
                              num_heads=args.heads, mlp_ratio=args.mlp_ratio, pre_norm=True,
                              norm_layer=partial(nn.LayerNorm, eps=1e-5))
    if args.method != "full":
        model.requires_grad_(False)
        blocks = range(0, args.depth, 2) if args.blocks == "every_other" else range(args.depth)
        for b in blocks:
            block = model.blocks[b]
            for name in args.targets.split(","):
                owner = block.attn if name in ("qkv", "proj") else block.mlp
                base = getattr(owner, name)
                if args.method == "lora":
                    setattr(owner, name, LoraLinear(base, args.rank))
                else:
                    ranks = [int(r) for r in args.ranks.split(",")]
                    setattr(owner, name, MoaLinear(base, ranks, proj_dim=args.proj_dim))
        model.head.requires_grad_(True)
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--method", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--targets", default="qkv")
    p.add_argument("--blocks", default="all")
    p.add_argument("--ranks", default="1,2,4,8")
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--trace", default="")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = args.precision != "fp32"
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args).to(device)
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.lr, fused=True)
    x = torch.rand(args.batch, args.in_chans, args.img, args.img, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    moa_layers = [m for m in model.modules() if isinstance(m, MoaLinear)]
    model.train()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        for m in moa_layers:
            loss = loss + m.aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.trace:
        # A trace that fails (out of memory, an unwritable file) is a warning: the measurement
        # above still counts.
        try:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as profile:
                step()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            profile.export_chrome_trace(args.trace)
        except (RuntimeError, OSError) as error:
            print(f"torch_vit_step: no trace {args.trace}: {error}", file=sys.stderr)
    print(json.dumps({"ms": seconds * 1000, "images_per_s": args.batch / seconds,
                      "peak_mem_gb": peak / 2**30}))


if __name__ == "__main__":
    try:
        main()
    except torch.OutOfMemoryError:
        # The parent reads the last line: at this batch PyTorch eager does not fit.
        print(json.dumps({"oom": True}), flush=True)
