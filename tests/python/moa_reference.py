"""Independent references for the Mixture-of-Adapters numerics, in python3-torch.

mode aux IN OUT: IN holds clean_logits (T x E), noisy_probs (T x E), experts (T x k). Writes the
  reference's importance/load loss (Tutel-style cv^2, unbiased variance, normal CDF with sigma =
  1/E, threshold = k-th largest noisy probability, weight 0.01) and the Switch loss.
mode kron IN OUT: IN holds L (n x p x r), R (n x r x q), left (n x n x 1), right (n x 1 x n).
  Writes H = sum_s torch.kron(left_s right_s, L_s R_s).
mode layer IN OUT: one Mixture-of-Adapters layer in training mode with router noise and Kronecker
  dropout off and no capacity, written from docs/method.md's formulas (not from moa's code). IN
  holds the frozen Linear (linear.weight, linear.bias), the router (router.proj.weight,
  router.proj.bias, router.sim_matrix, router.temperature), the experts (experts.<e>.A and .B for
  LoRA; experts.<e>.L and .R with phm_rule.rule1_left and .rule1_right, and the layer's shared
  bias, for Kronecker), the input x (samples x tokens x in) and a projection (same shape as the
  output); its metadata gives expert (lora or kronecker), top_k, renormalize and aux_weight.
  Writes the output y = W0 x + b0 + sum over chosen experts of gate * Delta_e(x) (+ bias), the
  auxiliary loss, the chosen experts, the smallest gap between the k-th and (k+1)-th probability
  of any token, and the gradients of (y * projection).sum() ("grad_output.<name>") and of the
  auxiliary loss ("grad_aux.<name>") with respect to x ("input") and every trainable tensor.
"""
import math
import sys

import torch
from safetensors import safe_open
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


FROZEN = ("linear.weight", "linear.bias", "projection")


def cosine_router_logits(tokens, t):
    """logit_e = exp(min(temperature, ln 100)) * <P x / |P x|, S_e / |S_e|>, L2 eps 1e-12."""
    projected = tokens @ t["router.proj.weight"].T + t["router.proj.bias"]
    projected = projected / projected.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = t["router.sim_matrix"]
    keys = sim / sim.norm(dim=0, keepdim=True).clamp_min(1e-12)
    scale = torch.exp(torch.clamp(t["router.temperature"], max=math.log(100.0)))
    return scale * (projected @ keys)


def expert_updates(tokens, t, expert, num_experts):
    """Delta_e(x) for every expert on every token (the reference's dense computation)."""
    updates = []
    for e in range(num_experts):
        if expert == "lora":
            # LoRA experts inside an MoA layer always use scale 1 (docs/method.md, LoRA; Q9).
            a, b = t[f"experts.{e}.A"], t[f"experts.{e}.B"]
            updates.append((tokens @ a.T) @ b.T)
        else:
            left, right = t["phm_rule.rule1_left"], t["phm_rule.rule1_right"]
            factor_l, factor_r = t[f"experts.{e}.L"], t[f"experts.{e}.R"]
            h = sum(torch.kron(left[s] @ right[s], factor_l[s] @ factor_r[s])
                    for s in range(left.shape[0]))
            updates.append(tokens @ h)
    return updates


def layer(tensors, config):
    t = {name: value.double() for name, value in tensors.items()}
    for name, value in t.items():
        if name not in FROZEN:
            value.requires_grad_(True)
    x = t["input"]
    expert = config["expert"]
    k = int(config["top_k"])
    tokens = x.reshape(-1, x.shape[-1])
    logits = cosine_router_logits(tokens, t)
    num_experts = logits.shape[1]
    # Noise off: the noisy probabilities are the clean ones.
    probs = torch.softmax(logits, dim=1)
    ranked = probs.sort(dim=1, descending=True)
    chosen = ranked.indices[:, :k]
    gates = ranked.values[:, :k]
    if config["renormalize"] == "true":
        gates = gates / gates.sum(dim=1, keepdim=True)
    margin = (ranked.values[:, k - 1] - ranked.values[:, k]).min() if k < num_experts else None

    updates = expert_updates(tokens, t, expert, num_experts)
    y = tokens @ t["linear.weight"].T + t["linear.bias"]
    for slot in range(k):
        for e in range(num_experts):
            chosen_here = (chosen[:, slot] == e).double().unsqueeze(1)
            y = y + chosen_here * gates[:, slot:slot + 1] * updates[e]
    if expert == "kronecker":
        y = y + t["bias"]
    y = y.reshape(*x.shape[:-1], y.shape[-1])

    # The importance/load loss: threshold = the k-th largest noisy probability, sigma = 1/E.
    threshold = ranked.values[:, k - 1:k]
    normal = torch.distributions.Normal(0.0, 1.0 / num_experts)
    importance = probs.sum(0)
    load = normal.cdf(probs - threshold).sum(0)
    aux_loss = float(config["aux_weight"]) * (cv_squared(importance) + cv_squared(load)) / 2

    trainable = [name for name in t if name not in FROZEN]
    inputs = [t[name] for name in trainable]
    out = {"output": y.detach(), "aux": aux_loss.detach().reshape(1), "experts": chosen.contiguous()}
    if margin is not None:
        out["margin"] = margin.detach().reshape(1)
    for prefix, loss in (("grad_output", (y * t["projection"]).sum()), ("grad_aux", aux_loss)):
        grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        for name, value, grad in zip(trainable, inputs, grads):
            out[f"{prefix}.{name}"] = torch.zeros_like(value) if grad is None else grad
    return out


def main():
    mode, src, dst = sys.argv[1:4]
    tensors = load_file(src)
    if mode == "layer":
        with safe_open(src, "pt") as f:
            config = f.metadata()
        save_file(layer(tensors, config), dst)
    elif mode == "aux":
        save_file(aux(tensors), dst)
    else:
        save_file(kron(tensors), dst)


if __name__ == "__main__":
    main()
