#!/usr/bin/env python3
"""The CUDA kernels (src/cuda) against PyTorch's scaled_dot_product_attention on the same GPU, in
the same run: parity, then a table of TFLOP/s (FlashAttention's count: 4 N^2 d per head forward,
half with a causal mask; the backward 2.5 times that) for N = 1k .. 16k, head dims 64 and 128,
causal and not, forward and backward, beside PyTorch's flash backend.

For a machine with a GPU and a CUDA build of PyTorch (the device host: bench/cuda/device_check.sh
runs it there). It builds bench/cuda/torch_binding.cpp and src/cuda/*.cu as a PyTorch extension
first (a minute or two), then:

    python3 bench/cuda/compare_sdpa.py [--dtype bfloat16] [--budget-s 240] [--out DIR]

writes DIR/cuda_parity.txt and DIR/cuda_bench.md (and .json), and exits 1 if a parity check
fails. Parity tolerances, against float32 math on the same (rounded) inputs: bfloat16 out within
2^-7 of the largest |out|, gradients within 2^-6; float16 2^-9 and 2^-8; float32 2e-5 and 5e-5.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.cpp_extension import load

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
TOLERANCES = {torch.bfloat16: (2.0**-7, 2.0**-6), torch.float16: (2.0**-9, 2.0**-8),
              torch.float32: (2e-5, 5e-5)}


def build_extension():
    started = time.time()
    ext = load(name="llm_utils_cuda_ext",
               sources=[os.path.join(HERE, "torch_binding.cpp"),
                        os.path.join(ROOT, "src", "cuda", "forward.cu"),
                        os.path.join(ROOT, "src", "cuda", "backward.cu")],
               extra_include_paths=[os.path.join(ROOT, "src")],
               extra_cflags=["-O3", "-std=c++17"],
               extra_cuda_cflags=["-O3", "-std=c++17", "-gencode=arch=compute_90,code=sm_90"],
               verbose=False)
    print(f"extension built in {time.time() - started:.0f} s", flush=True)
    return ext


def reference(q, k, v, causal, scale):
    """float32 math on the same inputs, heads of k and v repeated for grouped queries."""
    q, k, v = q.float(), k.float(), v.float()
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    s = q @ k.transpose(-1, -2) * scale
    if causal:
        n, m = s.shape[-2:]
        s = s.masked_fill(torch.ones(n, m, dtype=torch.bool, device=s.device).triu(1), -math.inf)
    return torch.softmax(s, dim=-1) @ v


def parity(ext, log):
    ok = True
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        out_tol, grad_tol = TOLERANCES[dtype]
        for d in (64, 128, 40):
            for causal in (False, True):
                for heads, kv_heads in ((8, 8), (8, 2)):
                    shape_q, shape_kv = (2, heads, 333, d), (2, kv_heads, 333, d)
                    q = torch.randn(shape_q, generator=gen, device="cuda").to(dtype)
                    k = torch.randn(shape_kv, generator=gen, device="cuda").to(dtype)
                    v = torch.randn(shape_kv, generator=gen, device="cuda").to(dtype)
                    dout = torch.randn(shape_q, generator=gen, device="cuda").to(dtype)
                    scale = 1.0 / math.sqrt(d)
                    out, lse = ext.forward(q, k, v, causal, scale)
                    dq, dk, dv = ext.backward(q, k, v, out, lse, dout, causal, scale)
                    qr, kr, vr = (t.float().requires_grad_() for t in (q, k, v))
                    want = reference(qr, kr, vr, causal, scale)
                    want.backward(dout.float())
                    checks = [("out", out, want, out_tol), ("dq", dq, qr.grad, grad_tol),
                              ("dk", dk, kr.grad, grad_tol), ("dv", dv, vr.grad, grad_tol)]
                    name = f"{str(dtype)[6:]} d={d} causal={causal} heads={heads}/{kv_heads}"
                    for what, got, exp, tol in checks:
                        err = (got.float() - exp).abs().max().item()
                        bound = tol * max(1.0, exp.abs().max().item())
                        good = err <= bound
                        ok &= good
                        log(f"{'ok  ' if good else 'FAIL'} {name} {what}: max error {err:.3g} "
                            f"(bound {bound:.3g})")
                    # Against PyTorch's own kernel in the same dtype, for the record (heads
                    # repeated: enable_gqa needs PyTorch 2.5).
                    repeat = heads // kv_heads
                    sdpa = F.scaled_dot_product_attention(
                        q, k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1),
                        is_causal=causal)
                    log(f"     {name} out vs torch SDPA: max difference "
                        f"{(out.float() - sdpa.float()).abs().max().item():.3g}")
    return ok


def time_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def bench(ext, dtype, budget_s, log):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    rows = []
    started = time.time()
    for d in (64, 128):
        for causal in (False, True):
            for n in (1024, 2048, 4096, 8192, 16384):
                if time.time() - started > budget_s:
                    log(f"budget of {budget_s} s spent: stopping before d={d} causal={causal} "
                        f"N={n}")
                    return rows
                batch, heads = max(1, 16384 // n), 2048 // d
                shape = (batch, heads, n, d)
                q, k, v, dout = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(4))
                scale = 1.0 / math.sqrt(d)
                flops = 4.0 * batch * heads * n * n * d * (0.5 if causal else 1.0)
                out, lse = ext.forward(q, k, v, causal, scale)
                ours_f = time_ms(lambda: ext.forward(q, k, v, causal, scale), 5)
                ours_b = time_ms(lambda: ext.backward(q, k, v, out, lse, dout, causal, scale), 3)
                qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    sdpa_f = time_ms(lambda: F.scaled_dot_product_attention(
                        q, k, v, is_causal=causal), 5)
                    o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal)
                    sdpa_b = time_ms(lambda: torch.autograd.grad(
                        o, (qs, ks, vs), dout, retain_graph=True), 3)
                row = dict(d=d, causal=causal, n=n, batch=batch, heads=heads,
                           ours_fwd_ms=ours_f, sdpa_fwd_ms=sdpa_f, ours_bwd_ms=ours_b,
                           sdpa_bwd_ms=sdpa_b,
                           ours_fwd_tflops=flops / ours_f / 1e9,
                           sdpa_fwd_tflops=flops / sdpa_f / 1e9,
                           ours_bwd_tflops=2.5 * flops / ours_b / 1e9,
                           sdpa_bwd_tflops=2.5 * flops / sdpa_b / 1e9)
                rows.append(row)
                log(f"d={d} causal={causal} N={n}: forward {row['ours_fwd_tflops']:.1f} vs "
                    f"{row['sdpa_fwd_tflops']:.1f} TFLOP/s, backward {row['ours_bwd_tflops']:.1f}"
                    f" vs {row['sdpa_bwd_tflops']:.1f}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="stop the timing table after this many seconds")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = []

    def log(text):
        print(text, flush=True)
        lines.append(text)

    log(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    ext = build_extension()
    ok = parity(ext, log)
    with open(os.path.join(args.out, "cuda_parity.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if not args.skip_bench:
        dtype = getattr(torch, args.dtype)
        rows = bench(ext, dtype, args.budget_s, log)
        with open(os.path.join(args.out, "cuda_bench.json"), "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                           dtype=args.dtype, rows=rows), f, indent=1)
        with open(os.path.join(args.out, "cuda_bench.md"), "w") as f:
            f.write(f"{torch.cuda.get_device_name()}, {args.dtype}, torch {torch.__version__}; "
                    "TFLOP/s with FlashAttention's count (4 N^2 d per head forward, half when "
                    "causal; backward 2.5x)\n\n")
            f.write("| d | causal | N | B x H | ours fwd | SDPA flash fwd | ratio | ours bwd | "
                    "SDPA flash bwd | ratio |\n|---|---|---|---|---|---|---|---|---|---|\n")
            for r in rows:
                f.write(f"| {r['d']} | {r['causal']} | {r['n']} | {r['batch']} x {r['heads']} | "
                        f"{r['ours_fwd_tflops']:.1f} | {r['sdpa_fwd_tflops']:.1f} | "
                        f"{r['ours_fwd_tflops'] / r['sdpa_fwd_tflops']:.2f} | "
                        f"{r['ours_bwd_tflops']:.1f} | {r['sdpa_bwd_tflops']:.1f} | "
                        f"{r['ours_bwd_tflops'] / r['sdpa_bwd_tflops']:.2f} |\n")
    print("parity: " + ("all passed" if ok else "FAILURES"), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
