"""Parameter counts from independent PyTorch modules, printed as JSON.

- vit_b16_clip_backbone: timm's VisionTransformer with the CLIP ViT-B/16 shape (pre_norm, no head).
- mnist_cnn: DomainBed's MNIST_CNN written out from its definition (networks.py), one input
  channel, without the classifier.
"""
import json

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer


class MnistCnn(nn.Module):
    def __init__(self, in_chans):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.bn0 = nn.GroupNorm(8, 64)
        self.bn1 = nn.GroupNorm(8, 128)
        self.bn2 = nn.GroupNorm(8, 128)
        self.bn3 = nn.GroupNorm(8, 128)


def count(m):
    return sum(p.numel() for p in m.parameters())


vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                        mlp_ratio=4.0, pre_norm=True, num_classes=0)
print(json.dumps({"vit_b16_clip_backbone": count(vit), "mnist_cnn": count(MnistCnn(1))}))
