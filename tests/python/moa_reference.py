"""Independent references for the Mixture-of-Adapters numerics, in python3-torch.

mode aux IN OUT: IN holds clean_logits (T x E), noisy_probs (T x E), experts (T x k). Writes the
  reference's importance/load loss (Tutel-style cv^2, unbiased variance, normal CDF with sigma =
  1/E, threshold = k-th largest noisy probability, weight 0.01) and the Switch loss.
mode kron IN OUT: IN holds L (n x p x r), R (n x r x q), left (n x n x 1), right (n x 1 x n).
  Writes H = sum_s torch.kron(left_s right_s, L_s R_s).
"""
import sys

import torch
from safetensors.torch import load_file, save_file


def cv_squared(v):
    return v.var(unbiased=True) / (v.mean() ** 2 + 1e-10)


def aux(tensors):
    clean = torch.softmax(tensors["clean_logits"].double(), dim=1)
    noisy = tensors["noisy_probs"].double()
    experts = tensors["experts"]
    num_experts = clean.shape[1]
    k = experts.shape[1]
    threshold = noisy.sort(dim=1, descending=True).values[:, k - 1:k]
    normal = torch.distributions.Normal(0.0, 1.0 / num_experts)
    importance = clean.sum(0)
    load = normal.cdf(clean - threshold).sum(0)
    importance_load = 0.01 * (cv_squared(importance) + cv_squared(load)) / 2
    first = experts[:, 0]
    fraction = torch.bincount(first, minlength=num_experts).double() / clean.shape[0]
    switch = 0.01 * num_experts * (fraction * clean.mean(0)).sum()
    return {"importance_load": importance_load.reshape(1), "switch": switch.reshape(1)}


def kron(tensors):
    L, R, left, right = tensors["L"].double(), tensors["R"].double(), tensors["left"].double(), tensors["right"].double()
    h = None
    for s in range(L.shape[0]):
        term = torch.kron(left[s] @ right[s], L[s] @ R[s])
        h = term if h is None else h + term
    return {"H": h}


def main():
    mode, src, dst = sys.argv[1:4]
    tensors = load_file(src)
    save_file(aux(tensors) if mode == "aux" else kron(tensors), dst)


if __name__ == "__main__":
    main()
