"""timm's VisionTransformer as the independent reference for moa's ViT.

Builds timm.models.vision_transformer.VisionTransformer with the given shape and random weights
(LayerNorm affine parameters randomised too, so that every tensor matters; matrices drawn with
standard deviation fan_in^-1/2 rather than timm's 0.02, so that attention scores and GELU inputs
are of order one, where a wrong softmax scale or GELU variant shows), runs it in eval mode on a
random batch and writes the state dict, the input and the logits to a safetensors file.

usage: vit_reference.py OUT.safetensors IMG PATCH IN_CHANS DIM DEPTH HEADS MLP_RATIO NORM_PRE EPS CLASSES
"""
import sys
from functools import partial

import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer


def randomise(model):
    """LayerNorms around (1, 0) with spread, small biases, matrices with std fan_in^-1/2."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.05)
            elif p.dim() >= 2:
                p.copy_(torch.randn_like(p) * p[0].numel() ** -0.5)


def main():
    out = sys.argv[1]
    img, patch, in_chans, dim, depth, heads = (int(v) for v in sys.argv[2:8])
    mlp_ratio = float(sys.argv[8])
    norm_pre = sys.argv[9] == "1"
    eps = float(sys.argv[10])
    classes = int(sys.argv[11])
    torch.manual_seed(1234)
    model = VisionTransformer(img_size=img, patch_size=patch, in_chans=in_chans, num_classes=classes,
                              embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
                              qkv_bias=True, pre_norm=norm_pre, global_pool="token",
                              norm_layer=partial(torch.nn.LayerNorm, eps=eps))
    randomise(model)
    model.eval()
    x = torch.randn(3, in_chans, img, img)
    with torch.no_grad():
        logits = model(x)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["__input__"] = x
    tensors["__logits__"] = logits
    tensors["__num_params__"] = torch.tensor([sum(p.numel() for p in model.parameters())])
    save_file(tensors, out)


if __name__ == "__main__":
    main()
