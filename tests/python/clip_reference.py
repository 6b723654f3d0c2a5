"""Random-weight CLIP ViT-B/16 checkpoints written by the real libraries, with reference features.

timm: timm.create_model('vit_base_patch16_clip_224', pretrained=False) (timm names, a 512-wide
CLIP head). open_clip: open_clip.create_model('ViT-B-16') (visual.* names, text tower included).
Writes the state dict with the safetensors package (optionally as a PyTorch pickle too), a batch
of two images, and the 768-d features of the final LayerNorm's class token.

usage: clip_reference.py timm|open_clip OUT_PREFIX
"""
import sys

import torch
from safetensors.torch import save_file


def main():
    scheme, prefix = sys.argv[1:3]
    torch.manual_seed(0)
    if scheme == "timm":
        import timm
        model = timm.create_model("vit_base_patch16_clip_224", pretrained=False)
        model.eval()
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
    else:
        import open_clip
        model = open_clip.create_model("ViT-B-16", pretrained=None)
        model.eval()
        x = torch.randn(2, 3, 224, 224)
        visual = model.visual
        proj = visual.proj
        visual.proj = None  # the features before CLIP's projection
        with torch.no_grad():
            feats = visual(x)
        visual.proj = proj
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, prefix + ".safetensors")
    torch.save(state, prefix + ".pt")
    save_file({"input": x, "features": feats.contiguous()}, prefix + "_io.safetensors")


if __name__ == "__main__":
    main()
