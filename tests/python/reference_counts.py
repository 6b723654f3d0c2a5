"""Parameter counts from independent PyTorch modules, printed as JSON.

- vit_b16_clip_backbone: timm's VisionTransformer with the CLIP ViT-B/16 shape (pre_norm, no head).
- mnist_cnn: DomainBed's MNIST_CNN written out from its definition (networks.py; the benchmark's
  PyTorch twin in bench/torch_vit_step.py), one input channel, without the classifier.
"""
import json
import os
import sys

from timm.models.vision_transformer import VisionTransformer

# DomainBed's MNIST_CNN, as the benchmark's PyTorch twin writes it (with its classifier).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from torch_vit_step import MnistCnn  # noqa: E402


def count(m):
    return sum(p.numel() for p in m.parameters())


vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                        mlp_ratio=4.0, pre_norm=True, num_classes=0)
cnn = MnistCnn(1, 10)
print(json.dumps({"vit_b16_clip_backbone": count(vit),
                  "mnist_cnn": count(cnn) - count(cnn.classifier)}))
