"""PyTorch eager baseline for bench/train_step_bench: the same ViT shape (timm's
VisionTransformer), LoRA on the same Linears with the same rank, frozen backbone, Adam over the
trainable parameters, the same batch size and thread count. Prints the mean step time in ms.

usage: torch_train_step.py THREADS BATCH IMG PATCH DIM DEPTH HEADS MLP_RATIO RANK TARGETS STEPS IN_CHANS
"""
import sys
import time
from functools import partial

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer


class LoraLinear(nn.Module):
    def __init__(self, base, rank):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / rank)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + nn.functional.linear(nn.functional.linear(x, self.A), self.B)


def main():
    threads, batch, img, patch, dim, depth, heads = (int(v) for v in sys.argv[1:8])
    mlp_ratio = float(sys.argv[8])
    rank = int(sys.argv[9])
    targets = sys.argv[10].split(",")
    steps = int(sys.argv[11])
    in_chans = int(sys.argv[12])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = VisionTransformer(img_size=img, patch_size=patch, in_chans=in_chans, num_classes=10,
                              embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
                              pre_norm=True, norm_layer=partial(nn.LayerNorm, eps=1e-5))
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.blocks:
        for name in targets:
            owner = block.attn if name in ("qkv", "proj") else block.mlp
            setattr(owner, name, LoraLinear(getattr(owner, name), rank))
    for p in model.head.parameters():
        p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    x = torch.rand(batch, in_chans, img, img)
    y = torch.randint(0, 10, (batch,))
    model.train()

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(f"{(time.perf_counter() - start) / steps * 1000:.3f}")


if __name__ == "__main__":
    main()
