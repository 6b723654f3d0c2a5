"""Converts a PyTorch checkpoint (a pickled state dict, or a dict holding one under 'state_dict'
or 'model') into safetensors, for checkpoints LibTorch cannot read directly.

usage: bash scripts/python.sh scripts/convert_to_safetensors.py IN.bin|IN.pt OUT.safetensors
(scripts/python.sh runs the Python environment of scripts/setup.sh, which has torch and safetensors)
"""
import os
import sys

from safetensors.torch import save_file
import torch


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1:3]
    obj = torch.load(src, map_location="cpu")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        sys.exit(f"{src}: not a state dict")
    tensors = {k: v.contiguous() for k, v in obj.items() if isinstance(v, torch.Tensor)}
    skipped = len(obj) - len(tensors)
    tmp = dst + ".tmp"
    save_file(tensors, tmp, metadata={"format": "pt", "converted_from": os.path.basename(src)})
    os.replace(tmp, dst)
    print(f"{dst}: {len(tensors)} tensors" + (f", {skipped} non-tensor entries skipped" if skipped else ""))


if __name__ == "__main__":
    main()
