#!/usr/bin/python3
"""Writes the PyTorch parity fixtures the C++ tests read (no Python needed to run those tests).

Run from the repository root with Debian's interpreter and python3-torch:
    /usr/bin/python3 tests/golden/make_golden.py
It rewrites tests/golden/{generator,optim}.safetensors, tests/golden/parity/*.safetensors,
tests/golden/state_dicts/*.safetensors and tests/golden/book/*.safetensors. Every file is
deterministic given torch's CPU generator.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import book_attention  # noqa: E402
import original_selfattn as orig  # noqa: E402
import safetensors_io  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)

BOOK_INPUTS = torch.tensor(
    [[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
     [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])

# (label, seq, d_in, d_out, input scale): the book's sentence, seq 1, d_out 1, non-square,
# head dim >= 128, and large scores that stress the softmax's max subtraction.
SHAPES = [
    ("book", 6, 3, 2, None),
    ("seq1", 1, 3, 2, 1.0),
    ("dout1", 5, 4, 1, 1.0),
    ("nonsquare", 7, 5, 3, 1.0),
    ("wide", 9, 16, 128, 1.0),
    ("large_scores", 6, 8, 4, 12.0),
]
CONFIGS = [
    ("SelfAttention_Params", False),
    ("SelfAttention_Linear", False), ("SelfAttention_Linear", True),
    ("SelfAttention_Linear4", False), ("SelfAttention_Linear4", True),
    ("SelfAttention_Linear5", False), ("SelfAttention_Linear5", True),
]


def data_generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def parity_case(index, class_name, bias, shape, batched):
    label, seq, d_in, d_out, scale = shape
    seed = 1000 + index
    g = data_generator(seed + 7)
    if scale is None:
        x = BOOK_INPUTS.clone()
        seed = 123 if class_name == "SelfAttention_Params" else 789
    else:
        x = torch.randn(seq, d_in, generator=g) * scale
    if batched:
        batch = 3 if seq == 1 else 2
        x = torch.stack([x] + [torch.randn(seq, d_in, generator=g) for _ in range(batch - 1)])
    x.requires_grad_(True)

    torch.manual_seed(seed)
    module = orig.build(class_name, d_in, d_out, bias)
    init = {name: p.detach().clone() for name, p in module.named_parameters()}
    out = module(x)
    next_rand = torch.rand(4)  # where forward left the default generator
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)

    t = {"x": x.detach(), "out": out.detach(), "attn_weights": module.attn_weights.detach(),
         "values": module.values.detach(), "grad_out": grad_out, "grad_x": x.grad,
         "next_rand": next_rand}
    none_grads = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue  # derived, frozen layers
        t["init." + name] = init[name]
        if p.grad is None:
            none_grads.append(name)
        else:
            t["grad." + name] = p.grad
    if not batched and class_name in ("SelfAttention_Linear4", "SelfAttention_Linear5"):
        for key, value in module.state_dict().items():
            if not key.startswith("W_"):
                t["derived." + key] = value
    # The same computation in float64 from the same weights and inputs: the ground truth that
    # shows how far float32 PyTorch itself is from exact, for ill-conditioned cases.
    module64 = orig.build(class_name, d_in, d_out, bias).double()
    with torch.no_grad():
        for name, p in module64.named_parameters():
            p.copy_(init[name].double())
    x64 = x.detach().double().requires_grad_(True)
    module64(x64).backward(grad_out.double())
    t["grad64_x"] = x64.grad.float()
    for name, p in module64.named_parameters():
        if p.grad is not None:
            t["grad64." + name] = p.grad.float()
    meta = {"class": class_name, "d_in": d_in, "d_out": d_out, "qkv_bias": int(bias),
            "seed": seed, "none_grads": ",".join(none_grads)}
    rank = "3d" if batched else "2d"
    name = f"{class_name}_{'bias' if bias else 'nobias'}_{label}_{rank}"
    safetensors_io.save(os.path.join(HERE, "parity", name + ".safetensors"), t, meta)


def generator_fixtures():
    t = {}
    for seed in [0, 1, 42, 123, 789, 2**32 + 5, 67280421310721]:
        torch.manual_seed(seed)
        t[f"rand.seed{seed}"] = torch.rand(1000)
    torch.manual_seed(42)
    t["rand.seed42.tail_of_1000000"] = torch.rand(1_000_000)[-1000:].clone()
    torch.manual_seed(7)
    t["uniform.seed7.-0.37_2.5"] = torch.empty(500).uniform_(-0.37, 2.5)
    torch.manual_seed(123)
    t["rand.seed123.3x2"] = torch.rand(3, 2)
    for seed, fan_in, fan_out in [(789, 3, 2), (0, 7, 5), (5, 768, 64), (11, 1, 3)]:
        torch.manual_seed(seed)
        layer = torch.nn.Linear(fan_in, fan_out)
        t[f"linear.seed{seed}.{fan_in}x{fan_out}.weight"] = layer.weight.detach()
        t[f"linear.seed{seed}.{fan_in}x{fan_out}.bias"] = layer.bias.detach()
    safetensors_io.save(os.path.join(HERE, "generator.safetensors"), t)


OPTIMIZERS = [
    ("sgd_plain", lambda p: torch.optim.SGD(p, lr=0.1)),
    ("sgd_momentum", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1,
                                               weight_decay=0.01)),
    ("sgd_nesterov", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True,
                                               weight_decay=0.001)),
    ("adamw_default", lambda p: torch.optim.AdamW(p)),
    ("adamw_amsgrad", lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6,
                                                  weight_decay=0.1, amsgrad=True)),
]
OPTIM_STEPS = 4


def optimizer_fixtures():
    t = {}
    g = data_generator(99)
    x = torch.randn(2, 5, 4, generator=g)
    grad_out = torch.randn(2, 5, 3, generator=g)
    t["x"] = x
    t["grad_out"] = grad_out
    for class_name in ["SelfAttention_Linear", "SelfAttention_Linear4", "SelfAttention_Params"]:
        for opt_name, make in OPTIMIZERS:
            torch.manual_seed(31)
            module = orig.build(class_name, 4, 3, class_name != "SelfAttention_Params")
            params = [p for p in module.parameters() if p.requires_grad]
            opt = make(params)
            for step in range(OPTIM_STEPS):
                opt.zero_grad()
                # loss = sum(out * grad_out) over a batch, so dL/dout = grad_out.
                module(x).backward(grad_out)
                prefix = f"{class_name}.{opt_name}.step{step + 1}"
                for name, p in module.named_parameters():
                    if p.grad is not None:
                        t[f"{prefix}.grad.{name}"] = p.grad.detach().clone()
                opt.step()
                for name, p in module.named_parameters():
                    if p.requires_grad:
                        t[f"{prefix}.{name}"] = p.detach().clone()
    safetensors_io.save(os.path.join(HERE, "optim.safetensors"), t,
                        {"steps": OPTIM_STEPS, "seed": 31})


def state_dict_fixtures():
    """What a PyTorch user writes from module.state_dict() after a forward."""
    os.makedirs(os.path.join(HERE, "state_dicts"), exist_ok=True)
    for class_name in orig.CLASSES:
        torch.manual_seed(2024)
        module = orig.build(class_name, 3, 2, class_name != "SelfAttention_Params")
        out = module(BOOK_INPUTS)
        sd = {k: v.detach() for k, v in module.state_dict().items()}
        sd_out = dict(sd)
        safetensors_io.save(os.path.join(HERE, "state_dicts", class_name + ".safetensors"), sd_out)
        safetensors_io.save(os.path.join(HERE, "state_dicts", class_name + ".output.safetensors"),
                            {"x": BOOK_INPUTS, "out": out.detach()})


# The book's causal and multi-head classes (tests/golden/book_attention.py), dropout 0:
# (label, batch or None for 2-D input, seq, d_in, d_out, context_length, num_heads, bias).
# "book" is chapter 3's example: seed 123, two copies of the sentence, context_length 6.
BOOK_ATTENTION_CASES = [
    ("book", 2, 6, 3, 2, 6, 2, False),
    ("seq_lt_context", 2, 5, 4, 6, 8, 3, True),
    ("seq1", None, 1, 3, 4, 4, 2, False),
    ("twod", None, 7, 5, 4, 7, 2, True),
    ("past_flash_tile", 2, 70, 8, 8, 80, 2, True),
]


def book_attention_case(index, class_name, case):
    label, batch, seq, d_in, d_out, context_length, num_heads, bias = case
    g = data_generator(5000 + index)
    if label == "book":
        x = torch.stack((BOOK_INPUTS, BOOK_INPUTS))
        seed = 123
    else:
        shape = (seq, d_in) if batch is None else (batch, seq, d_in)
        x = torch.randn(shape, generator=g)
        seed = 3000 + index
    x.requires_grad_(True)
    torch.manual_seed(seed)
    module = book_attention.build(class_name, d_in, d_out, context_length, 0.0, num_heads, bias)
    init = {name: p.detach().clone() for name, p in module.named_parameters()}
    out = module(x)
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)
    t = {"x": x.detach(), "out": out.detach(), "grad_out": grad_out, "grad_x": x.grad}
    for name, p in module.named_parameters():
        t["init." + name] = init[name]
        t["grad." + name] = p.grad
    if label == "book":
        t["mask"] = module.state_dict()["heads.0.mask" if "Wrapper" in class_name else "mask"]
    meta = {"class": class_name, "d_in": d_in, "d_out": d_out, "context_length": context_length,
            "num_heads": num_heads, "qkv_bias": int(bias), "seed": seed,
            "state_keys": ",".join(module.state_dict().keys())}
    rank = "2d" if batch is None else "3d"
    name = f"{class_name}_{'bias' if bias else 'nobias'}_{label}_{rank}"
    safetensors_io.save(os.path.join(HERE, "book", name + ".safetensors"), t, meta)


def book_attention_fixtures():
    os.makedirs(os.path.join(HERE, "book"), exist_ok=True)
    index = 0
    for class_name in book_attention.CLASSES:
        for case in BOOK_ATTENTION_CASES:
            book_attention_case(index, class_name, case)
            index += 1
    return index


def main():
    os.makedirs(os.path.join(HERE, "parity"), exist_ok=True)
    index = 0
    for class_name, bias in CONFIGS:
        for shape in SHAPES:
            for batched in (False, True):
                parity_case(index, class_name, bias, shape, batched)
                index += 1
    generator_fixtures()
    optimizer_fixtures()
    state_dict_fixtures()
    book_cases = book_attention_fixtures()
    print(f"wrote {index} parity cases and {book_cases} book attention cases")


if __name__ == "__main__":
    main()
