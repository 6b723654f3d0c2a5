"""PIL and torchvision as the independent reference for moa's image decoding and transforms.

Reads a JSON list of jobs and writes one uint8 (H x W x 3) or float32 (3 x H x W) tensor per job
to a safetensors file. Each job names an input image file and what to do with it:

  {"name": N, "path": P, "op": "decode"}                      Image.open(P).convert("RGB")
  {"name": N, "path": P, "op": "resized_crop", "top", "left", "height", "width", "size"}
  {"name": N, "path": P, "op": "resize", "size"}               F.resize(img, [size, size])
  {"name": N, "path": P, "op": "hflip"}
  {"name": N, "path": P, "op": "brightness" | "contrast" | "saturation" | "hue", "factor"}
  {"name": N, "path": P, "op": "grayscale"}                    F.rgb_to_grayscale(img, 3)
  {"name": N, "path": P, "op": "resize_grey", "size"}          F.resize(img, [size, size]), as "L"
  {"name": N, "path": P, "op": "train", "top", "left", "height", "width", "size", "flip",
   "order", "brightness", "contrast", "saturation", "hue", "grayscale"}
      the reference's training transform with these parameters fixed, through ToTensor and
      Normalize with OpenAI-CLIP's mean and std (float32 output)
  {"name": N, "path": P, "op": "eval", "size"}                 Resize, ToTensor, Normalize

usage: pil_reference.py JOBS.json OUT.safetensors
"""
import json
import sys

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_uint8(img):
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8).copy())


def normalise(img):
    return F.normalize(F.to_tensor(img), CLIP_MEAN, CLIP_STD)


def jitter(img, job):
    # ColorJitter.forward with fn_idx and the factors fixed.
    for fn_id in job["order"]:
        if fn_id == 0:
            img = F.adjust_brightness(img, job["brightness"])
        elif fn_id == 1:
            img = F.adjust_contrast(img, job["contrast"])
        elif fn_id == 2:
            img = F.adjust_saturation(img, job["saturation"])
        else:
            img = F.adjust_hue(img, job["hue"])
    return img


def run(job):
    img = Image.open(job["path"])
    img = img.convert("RGB")
    op = job["op"]
    if op == "decode":
        return as_uint8(img)
    if op == "resized_crop":
        return as_uint8(F.resized_crop(img, job["top"], job["left"], job["height"], job["width"],
                                       [job["size"], job["size"]], InterpolationMode.BILINEAR))
    if op == "resize":
        return as_uint8(F.resize(img, [job["size"], job["size"]], InterpolationMode.BILINEAR))
    if op == "hflip":
        return as_uint8(F.hflip(img))
    if op == "brightness":
        return as_uint8(F.adjust_brightness(img, job["factor"]))
    if op == "contrast":
        return as_uint8(F.adjust_contrast(img, job["factor"]))
    if op == "saturation":
        return as_uint8(F.adjust_saturation(img, job["factor"]))
    if op == "hue":
        return as_uint8(F.adjust_hue(img, job["factor"]))
    if op == "grayscale":
        return as_uint8(F.rgb_to_grayscale(img, num_output_channels=3))
    if op == "resize_grey":
        size = [job["size"], job["size"]]
        return as_uint8(F.resize(img, size, InterpolationMode.BILINEAR).convert("L"))
    if op == "train":
        img = F.resized_crop(img, job["top"], job["left"], job["height"], job["width"],
                             [job["size"], job["size"]], InterpolationMode.BILINEAR)
        if job["flip"]:
            img = F.hflip(img)
        img = jitter(img, job)
        if job["grayscale"]:
            img = F.rgb_to_grayscale(img, num_output_channels=3)
        return normalise(img).contiguous()
    if op == "eval":
        return normalise(F.resize(img, [job["size"], job["size"]],
                                  InterpolationMode.BILINEAR)).contiguous()
    raise ValueError("unknown op " + op)


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    save_file({job["name"]: run(job) for job in jobs}, sys.argv[2])


if __name__ == "__main__":
    main()
