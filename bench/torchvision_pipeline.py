"""torchvision's input pipeline as the reference uses it, timed: ImageFolder over one environment
folder per domain, the training transform (RandomResizedCrop(224, scale 0.7-1), flip,
ColorJitter(0.3 x 4), RandomGrayscale(0.1), ToTensor, CLIP Normalize), one DataLoader per
domain with `workers` worker processes, batches zipped as DomainBed's InfiniteDataLoader does.
Prints one line: images per second (after the first batch of each loader, to leave start-up
out).

usage: torchvision_pipeline.py ROOT WORKERS_PER_DOMAIN BATCH_PER_DOMAIN STEPS
"""
import os
import sys
import time

import torch
from torchvision import datasets, transforms

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def main():
    root, workers, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    train = transforms.Compose([
        transforms.RandomResizedCrop(224, scale=(0.7, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.3, 0.3, 0.3, 0.3),
        transforms.RandomGrayscale(p=0.1),
        transforms.ToTensor(),
        transforms.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    loaders = []
    for env in sorted(os.listdir(root)):
        data = datasets.ImageFolder(os.path.join(root, env), transform=train)
        sampler = torch.utils.data.RandomSampler(data, replacement=True, num_samples=10**9)
        loaders.append(iter(torch.utils.data.DataLoader(
            data, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)))
    for loader in loaders:
        next(loader)
    start = time.perf_counter()
    images = 0
    for _ in range(steps):
        for loader in loaders:
            x, _ = next(loader)
            images += x.shape[0]
    print(images / (time.perf_counter() - start))


if __name__ == "__main__":
    main()
