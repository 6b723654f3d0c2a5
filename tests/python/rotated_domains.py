"""DomainBed's RotatedMNIST construction and in/out splits, as the independent reference.

Written from DomainBed's datasets.py (MultipleEnvironmentMNIST, RotatedMNIST) and
lib/misc.py (seed_hash, split_dataset): torch.manual_seed(seed) then randperm over the
concatenated images, domain i takes every n-th image from i, each rotated by torchvision on the
PIL image (bilinear, fill 0). Writes the first `count` images of each domain, their labels and
each domain's out indices (numpy legacy shuffle seeded by md5) to a safetensors file.

usage: rotated_domains.py IDX_DIR SOURCE SEED TRIAL_SEED COUNT OUT.safetensors
"""
import gzip
import hashlib
import os
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from safetensors.torch import save_file
from torchvision import transforms

ANGLES = [0, 15, 30, 45, 60, 75]


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()).reshape(dims)


def find(idx_dir, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(idx_dir, name)):
            return os.path.join(idx_dir, name)
    raise FileNotFoundError(stem)


def seed_hash(*args):
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2 ** 31)


def main():
    idx_dir, source, seed, trial_seed, count, out_path = sys.argv[1:7]
    seed, trial_seed, count = int(seed), int(trial_seed), int(count)
    images, labels = [], []
    if source in ("all", "train"):
        images.append(read_idx(find(idx_dir, "train-images-idx3-ubyte")))
        labels.append(read_idx(find(idx_dir, "train-labels-idx1-ubyte")).long())
    if source in ("all", "test"):
        images.append(read_idx(find(idx_dir, "t10k-images-idx3-ubyte")))
        labels.append(read_idx(find(idx_dir, "t10k-labels-idx1-ubyte")).long())
    original_images = torch.cat(images)
    original_labels = torch.cat(labels)
    torch.manual_seed(seed)
    shuffle = torch.randperm(len(original_images))
    original_images = original_images[shuffle]
    original_labels = original_labels[shuffle]
    tensors = {}
    for i, angle in enumerate(ANGLES):
        env_images = original_images[i::len(ANGLES)]
        env_labels = original_labels[i::len(ANGLES)]
        rotation = transforms.Compose([
            transforms.ToPILImage(),
            transforms.Lambda(lambda x, a=angle: TF.rotate(
                x, a, fill=(0,), interpolation=transforms.InterpolationMode.BILINEAR)),
            transforms.ToTensor()])
        x = torch.zeros(count, 1, 28, 28)
        for j in range(count):
            x[j] = rotation(env_images[j])
        tensors[f"env{i}_images"] = x
        tensors[f"env{i}_labels"] = env_labels[:count].clone()
        tensors[f"env{i}_size"] = torch.tensor([len(env_images)])
        keys = list(range(len(env_images)))
        np.random.RandomState(seed_hash(trial_seed, i)).shuffle(keys)
        n_out = int(len(env_images) * 0.2)
        tensors[f"env{i}_out"] = torch.tensor(keys[:n_out], dtype=torch.int64)
        tensors[f"env{i}_seed_hash"] = torch.tensor([seed_hash(trial_seed, i)], dtype=torch.int64)
    save_file(tensors, out_path)


if __name__ == "__main__":
    main()
