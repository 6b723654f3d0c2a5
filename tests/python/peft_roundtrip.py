"""Hugging Face PEFT on a timm ViT as the outside reader of `moa export --format peft`.

backbone mode: writes a random timm VisionTransformer of the given shape (weights drawn with
standard deviation fan_in^-1/2, LayerNorms randomised, as in vit_reference.py) to a safetensors
file for `moa train --model.backbone`.

logits mode: builds the same timm model with CLASSES outputs, loads that backbone, applies the
exported folder with `PeftModel.from_pretrained` (LoRA layers and the head through
modules_to_save), and writes the logits of each listed image (PIL, torchvision's Resize to
IMG x IMG, ToTensor, OpenAI-CLIP's normalisation: moa's evaluation transform) as JSON
{path: [logit, ...]}.

usage: peft_roundtrip.py backbone OUT.safetensors IMG PATCH DIM DEPTH HEADS MLP_RATIO NORM_PRE EPS
       peft_roundtrip.py logits BACKBONE PEFT_DIR IMAGES.txt OUT.json IMG PATCH DIM DEPTH HEADS
                         MLP_RATIO NORM_PRE EPS CLASSES
"""
import json
import sys
from functools import partial

import torch
import torchvision.transforms.functional as F
from peft import PeftModel
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from torchvision.transforms import InterpolationMode

from vit_reference import randomise

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build(shape, classes):
    img, patch, dim, depth, heads = (int(v) for v in shape[:5])
    return VisionTransformer(img_size=img, patch_size=patch, in_chans=3, num_classes=classes,
                             embed_dim=dim, depth=depth, num_heads=heads,
                             mlp_ratio=float(shape[5]), qkv_bias=True, pre_norm=shape[6] == "1",
                             global_pool="token",
                             norm_layer=partial(torch.nn.LayerNorm, eps=float(shape[7])))


def write_backbone(out, shape):
    torch.manual_seed(4321)
    model = build(shape, 0)
    randomise(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)


def write_logits(backbone, peft_dir, images, out, shape, classes):
    model = build(shape, classes)
    missing, unexpected = model.load_state_dict(load_file(backbone), strict=False)
    assert not unexpected and set(missing) == {"head.weight", "head.bias"}, (missing, unexpected)
    model = PeftModel.from_pretrained(model, peft_dir)
    model.eval()
    with open(images) as f:
        paths = [line.strip() for line in f if line.strip()]
    size = int(shape[0])
    batch = torch.stack([
        F.normalize(F.to_tensor(F.resize(Image.open(p).convert("RGB"), [size, size],
                                         InterpolationMode.BILINEAR)), CLIP_MEAN, CLIP_STD)
        for p in paths])
    with torch.no_grad():
        logits = model(batch)
    with open(out, "w") as f:
        json.dump({p: row.tolist() for p, row in zip(paths, logits)}, f)


def main():
    if sys.argv[1] == "backbone":
        write_backbone(sys.argv[2], sys.argv[3:11])
    elif sys.argv[1] == "logits":
        write_logits(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:14],
                     int(sys.argv[14]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
