#!/usr/bin/python3
"""Side-by-side: the same workloads through `selfattn bench` and through PyTorch code written the
way the original llm_utils.selfAttn is (materialised scores, torch.softmax, autograd), with the
same thread count. Writes a markdown table with ratios.

    /usr/bin/python3 bench/compare_pytorch.py --threads 2 --out docs/benchmarks.md

Uses Debian's python3-torch. Every number in the output is measured by this run; a section
headed "## Notes" at the end of an existing output file is written by hand and kept.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
import book_attention  # noqa: E402
import mha_extensions  # noqa: E402
import original_selfattn as orig  # noqa: E402


class Times(float):
    """The best of a workload's timed runs (a float, in ms), with their median as `.median`."""

    def __new__(cls, best, median):
        t = super().__new__(cls, best)
        t.median = median
        return t


def best_ms(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return Times(min(times), statistics.median(times))


def torch_module_ms(module, x, grad, backward, repeat):
    """A module's forward (under no_grad), or forward + backward of `grad`."""
    if not backward:
        def run():
            with torch.no_grad():
                module(x)
    else:
        def run():
            module.zero_grad()
            module(x).backward(grad)
    return best_ms(run, repeat)


def torch_linear(seq, d_in, d_out, backward, repeat):
    torch.manual_seed(0)
    module = orig.SelfAttention_Linear(d_in, d_out)
    return torch_module_ms(module, torch.rand(seq, d_in), torch.rand(seq, d_out), backward, repeat)


def torch_core(seq, d, backward, causal, repeat):
    torch.manual_seed(0)
    q, k, v = (torch.rand(seq, d, requires_grad=backward) for _ in range(3))
    grad = torch.rand(seq, d)
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1) if causal else None

    def forward():
        scores = q @ k.T
        if mask is not None:
            scores = scores.masked_fill(mask, -torch.inf)
        return torch.softmax(scores / d ** 0.5, dim=-1) @ v

    if not backward:
        def run():
            with torch.no_grad():
                forward()
    else:
        def run():
            forward().backward(grad)
    return best_ms(run, repeat)


def torch_book_mha(batch, seq, d, heads, backward, repeat, dtype=torch.float32):
    """The book's MultiHeadAttention (chapter 3.6.2), causal, dropout 0; in bfloat16 the module
    converted with .to(torch.bfloat16)."""
    torch.manual_seed(0)
    module = book_attention.MultiHeadAttention(d, d, seq, 0.0, heads).to(dtype)
    return torch_module_ms(module, torch.rand(batch, seq, d, dtype=dtype),
                           torch.rand(batch, seq, d, dtype=dtype), backward, repeat)


def torch_decode_step(cache, d, heads, repeat):
    """One token against `cache` cached tokens, the KV cache written the way the book's KV-cache
    bonus code writes it (torch.cat of the new keys and values)."""
    torch.manual_seed(0)
    module = mha_extensions.MultiHeadAttentionExt(d, d, cache + repeat + 2, 0.0, heads).eval()
    with torch.no_grad():
        for start in range(0, cache, 1024):
            module(torch.rand(1, min(1024, cache - start), d), use_cache=True)
        x = torch.rand(1, 1, d)
        return best_ms(lambda: module(x, use_cache=True), repeat)


def ours(selfattn, threads, repeat, isa=None, **kw):
    """`selfattn bench --json` with the flags kw names; isa: LLM_UTILS_ISA for the run."""
    args = [selfattn, "bench", "--json", "--threads", str(threads), "--repeat", str(repeat)]
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False:
            args += [flag, str(value)]
    env = dict(os.environ, LLM_UTILS_ISA=isa) if isa else None
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out)
    # The tables use the best run on both sides (see the header); the rates follow it.
    faster = r["median_ms"] / r["min_ms"]
    r["ms"] = r["min_ms"]
    for rate in ("gflops", "percent_of_sgemm", "percent_of_peak", "percent_of_bf16_peak",
                 "tokens_per_s"):
        r[rate] *= faster
    return r


def runnable_isas(selfattn):
    """The ISAs LLM_UTILS_ISA can force on this CPU, widest last (portable left out: a baseline
    for old CPUs, not a speed path)."""
    isas = []
    for isa in ("avx2", "avx512", "avx512_bf16", "amx"):
        r = subprocess.run([selfattn, "bench", "--module", "core", "--seq", "64", "--d-out", "8",
                            "--repeat", "1", "--sgemm-size", "64"], capture_output=True,
                           env=dict(os.environ, LLM_UTILS_ISA=isa))
        if r.returncode == 0:
            isas.append(isa)
    return isas


# The ISAs whose float32 table is avx512's: only their bfloat16 rows are run.
BF16_ONLY_ISAS = ("avx512_bf16", "amx")

CORE_PASSES = [("forward", {}), ("causal forward", {"causal": True}),
               ("backward alone", {"backward_only": True}),
               ("causal backward alone", {"causal": True, "backward_only": True})]


def isa_tables(selfattn, threads, repeat, n, rounds):
    """The attention core (N = n, d = 64) on every ISA this CPU runs, in float32 and bfloat16
    (the float32 table of avx512_bf16 and amx is avx512's, so only their bfloat16 is run), each
    against the peaks measured in the same run; then 1 -> `threads` scaling on the widest ISA.

    Every configuration runs once per round, the rounds one after another, and each keeps its
    best round: the ratios (bf16 over fp32, 1 -> n threads) then compare runs from the same
    stretches of time, not a quiet minute against a loaded one."""
    isas = runnable_isas(selfattn)
    widest = isas[-1] if isas else None
    fp32_widest = "avx512" if "avx512" in isas else (isas[0] if isas else None)
    configs = []  # (key, isa, dtype, pass flags, threads)
    for isa in isas:
        for dtype in (("bf16",) if isa in BF16_ONLY_ISAS else ("fp32", "bf16")):
            for name, flags in CORE_PASSES:
                configs.append(((isa, dtype, name), isa, dtype, flags, threads))
    for dtype, isa in (("fp32", fp32_widest), ("bf16", widest)):
        for name, flags in CORE_PASSES:
            configs.append((("one thread", dtype, name), isa, dtype, flags, 1))
    best = {}  # key -> json of the best round
    for _ in range(rounds):
        for key, isa, dtype, flags, run_threads in configs:
            r = ours(selfattn, run_threads, repeat, isa=isa, module="core", seq=n, d_out=64,
                     dtype=dtype, **flags)
            if key not in best or r["ms"] < best[key]["ms"]:
                best[key] = r
    results = {k: r for k, r in best.items() if k[0] != "one thread"}
    scaling = {}  # (dtype, pass) -> (1-thread json, threads json)
    for dtype, isa in (("fp32", fp32_widest), ("bf16", widest)):
        for name, _ in CORE_PASSES:
            scaling[(dtype, name)] = (best[("one thread", dtype, name)],
                                      results[(isa, dtype, name)])
    lines = ["", f"## Kernels per ISA and dtype", "",
             f"The attention core, N={n} d=64, {threads} threads, each ISA's table forced with "
             f"`LLM_UTILS_ISA`, every row the best of {rounds} rounds (each round runs every row "
             f"once, best of {repeat} runs, so that ratios compare the same stretches of time). "
             "The FP32 peak of each row is measured with that table's vector "
             "width (AVX2's 256-bit FMAs for avx2), the BF16 peak with vdpbf16ps where the CPU "
             "has it (tdpbf16ps on the amx rows). Causal rows count only the unmasked half of the "
             "pairs.", "",
             "| ISA | dtype | pass | ms | GFLOP/s | % of FP32 peak | % of BF16 peak "
             "| bf16 speed-up |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for (isa, dtype, name), r in results.items():
        base = results.get((isa if isa not in BF16_ONLY_ISAS else "avx512", "fp32", name))
        ratio = f"{base['ms'] / r['ms']:.2f}x" if dtype == "bf16" and base else ""
        bf16_peak = f"{r['percent_of_bf16_peak']:.0f}%" if r.get("bf16_peak_gflops") else ""
        lines.append(f"| {isa} | {dtype} | {name} | {r['ms']:.2f} | {r['gflops']:.1f} | "
                     f"{r['percent_of_peak']:.0f}% | {bf16_peak} | {ratio} |")
    lines += ["", f"1 -> {threads} threads (fp32 on {fp32_widest}, bf16 on {widest}):", "",
              f"| dtype | pass | 1 thread (ms) | {threads} threads (ms) | scaling |",
              "|---|---|---:|---:|---:|"]
    for (dtype, name), (one, many) in scaling.items():
        lines.append(f"| {dtype} | {name} | {one['ms']:.2f} | {many['ms']:.2f} | "
                     f"{one['ms'] / many['ms']:.2f}x |")
    return lines, results, scaling, isas


def targets(rows, scaling, book, threads, peak, peak_isa, kernels):
    """The speed targets of the performance and multi-head issues against this run; `peak` is
    the FP32 FMA peak `selfattn bench` measured in this run."""
    by_name = {name: (r, t) for name, r, t in rows}
    linear = "SelfAttention_Linear, B=1 N=4096 d_in=768 d_out=64, "
    core = "attention core, N=4096 d=64, "
    mha = "MultiHeadAttention (book config), B=8 N=1024 d=768 12 heads causal, "

    def speedup(name):
        r, t = by_name[name]
        return t / r["ms"]

    def gflops(name):
        return by_name[name][0]["gflops"]

    big = scaling[-1][1]
    growth = [b[1]["ms"] / a[1]["ms"] for a, b in zip(scaling, scaling[1:])]
    checks = [
        ("SelfAttention_Linear N=4096 forward >= 4x PyTorch", speedup(linear + "forward"), 4, "x"),
        ("SelfAttention_Linear N=4096 forward+backward >= 3x PyTorch",
         speedup(linear + "forward+backward"), 3, "x"),
        (f"attention core forward >= 70% of the FP32 peak of {threads} cores",
         gflops(core + "forward"), 0.7 * peak, " GFLOP/s"),
        (f"attention core backward >= 50% of the FP32 peak of {threads} cores",
         gflops(core + "backward alone"), 0.5 * peak, " GFLOP/s"),
        ("MultiHeadAttention book config forward >= 3x PyTorch", speedup(mha + "forward"), 3, "x"),
        ("MultiHeadAttention book config forward+backward >= 2.5x PyTorch",
         speedup(mha + "forward+backward"), 2.5, "x"),
        (f"MultiHeadAttention book config forward >= 70% of the FP32 peak of {threads} cores",
         gflops(mha + "forward"), 0.7 * peak, " GFLOP/s"),
        (f"MultiHeadAttention book config forward+backward >= 60% of the FP32 peak of {threads} "
         "cores", gflops(mha + "forward+backward"), 0.6 * peak, " GFLOP/s"),
    ]
    results, thread_scaling, isas = kernels
    for isa in isas:
        if isa in BF16_ONLY_ISAS:
            continue
        for name, goal in (("forward", 0.75), ("causal forward", 0.70),
                           ("backward alone", 0.70), ("causal backward alone", 0.70)):
            r = results[(isa, "fp32", name)]
            checks.append((f"attention core fp32 {name} on {isa} >= {goal:.0%} of its FP32 peak",
                           r["percent_of_peak"], 100 * goal, "%"))
    for (dtype, name), (one, many) in thread_scaling.items():
        if dtype == "fp32":
            checks.append((f"attention core fp32 {name}: 1 -> {threads} threads >= 1.85x",
                           one["ms"] / many["ms"], 1.85, "x"))
    if "avx512_bf16" in isas:
        for name, _ in CORE_PASSES:
            bf16, fp32 = results[("avx512_bf16", "bf16", name)], results[("avx512", "fp32", name)]
            checks.append((f"attention core {name}: bf16 (AVX512_BF16) >= 1.8x fp32",
                           fp32["ms"] / bf16["ms"], 1.8, "x"))
    if "amx" in isas:
        for name, _ in CORE_PASSES:
            bf16, fp32 = results[("amx", "bf16", name)], results[("avx512", "fp32", name)]
            checks.append((f"attention core {name}: bf16 (AMX) >= 4x fp32",
                           fp32["ms"] / bf16["ms"], 4, "x"))
    out = ["## Targets", "", "The speed targets of the performance, multi-head, foundation and "
           "kernel issues, "
           f"against this run (FP32 FMA peak of {threads} cores, measured in this run with "
           f"{peak_isa} FMAs from registers: {peak:.0f} GFLOP/s):", "",
           "| target | this run | met |", "|---|---:|---|"]
    for name, value, goal, unit in checks:
        if unit == "x":
            shown = f"{value:.2f}{unit}"
        elif unit == "%":
            shown = f"{value:.0f}%"
        else:
            shown = f"{value:.0f}{unit} (goal {goal:.0f})"
        out.append(f"| {name} | {shown} | {'yes' if value >= goal else 'no'} |")
    out.append(f"| N={scaling[-1][0]} forward: peak memory < 1 GiB | {big['peak_rss_mib']:.0f} MiB "
               f"| {'yes' if big['peak_rss_mib'] < 1024 else 'no'} |")
    ok = all(3.0 <= g <= 5.0 for g in growth)
    out.append("| forward time grows as N^2 (x4 per doubling of N) | "
               + ", ".join(f"x{g:.1f}" for g in growth) + f" | {'yes' if ok else 'no'} |")
    us = book["ms"] * 1e3
    out.append(f"| the book's 6 x 3 forward < 1 us | {us:.2f} us | {'yes' if us < 1 else 'no'} |")
    return out + [""]


NOTES_HEADING = "## Notes"


def hand_written_notes(path):
    """The part of an earlier output from NOTES_HEADING on: written by hand, kept across runs."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    at = text.find("\n" + NOTES_HEADING)
    return text[at + 1:] if at >= 0 else ""


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--selfattn", default=os.path.join(HERE, "..", "build", "bin", "selfattn"))
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "benchmarks.md"))
    parser.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the per-ISA kernel table, each row keeping its best")
    a = parser.parse_args()
    if a.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(a.threads)
    n = 1024 if a.quick else 4096

    rows = []  # (workload, ours json, pytorch ms or None)
    for backward in (False, True):
        r = ours(a.selfattn, a.threads, a.repeat, module="linear", seq=n, d_in=768, d_out=64,
                 backward=backward)
        rows.append((f"SelfAttention_Linear, B=1 N={n} d_in=768 d_out=64, "
                     f"{'forward+backward' if backward else 'forward'}", r,
                     torch_linear(n, 768, 64, backward, a.repeat)))
    for backward in (False, True):
        for causal in (False, True):
            r = ours(a.selfattn, a.threads, a.repeat, module="core", seq=n, d_out=64,
                     backward=backward, causal=causal)
            rows.append((f"attention core, N={n} d=64{' causal' if causal else ''}, "
                         f"{'forward+backward' if backward else 'forward'}", r,
                         torch_core(n, 64, backward, causal, a.repeat)))
    r = ours(a.selfattn, a.threads, a.repeat, module="core", seq=n, d_out=64, backward_only=True)
    rows.append((f"attention core, N={n} d=64, backward alone", r, None))
    mha_seq = 256 if a.quick else 1024
    for backward in (False, True):
        r = ours(a.selfattn, a.threads, a.repeat, module="mha", batch=8, seq=mha_seq, d_in=768,
                 d_out=768, num_heads=12, backward=backward)
        rows.append((f"MultiHeadAttention (book config), B=8 N={mha_seq} d=768 12 heads causal, "
                     f"{'forward+backward' if backward else 'forward'}", r,
                     torch_book_mha(8, mha_seq, 768, 12, backward, a.repeat)))
    for backward in (False, True):
        r = ours(a.selfattn, a.threads, a.repeat, module="mha", batch=8, seq=mha_seq, d_in=768,
                 d_out=768, num_heads=12, backward=backward, dtype="bf16")
        rows.append((f"MultiHeadAttention (book config) in bfloat16 (PyTorch: .to(bfloat16)), "
                     f"B=8 N={mha_seq}, {'forward+backward' if backward else 'forward'}", r,
                     torch_book_mha(8, mha_seq, 768, 12, backward, a.repeat, torch.bfloat16)))
    decode_cache = 512 if a.quick else 4096
    decode_repeat = 50
    decode = ours(a.selfattn, a.threads, decode_repeat, module="mha", batch=1, seq=decode_cache,
                  d_in=768, d_out=768, num_heads=12, decode=True)
    decode_torch = torch_decode_step(decode_cache, 768, 12, decode_repeat)
    scaling = []
    for seq in ([1024, 2048, 4096] if a.quick else [4096, 8192, 16384, 32768, 65536]):
        r = ours(a.selfattn, a.threads, 1 if seq > 16384 else a.repeat, module="core", seq=seq,
                 d_in=64, d_out=64)
        torch_ms = torch_core(seq, 64, False, False, 1) if seq <= 8192 else None
        scaling.append((seq, r, torch_ms))
    book = ours(a.selfattn, a.threads, 2000, module="linear", seq=6, d_in=3, d_out=2)
    kernel_lines, kernel_results, kernel_scaling, isas = isa_tables(a.selfattn, a.threads,
                                                                    a.repeat, n, a.rounds)

    # Each `selfattn bench` measured both rates after its workload; a neighbour's burst can
    # pull one measurement down, so the tables use the best of them all, one figure per run.
    sgemm = max(r["sgemm_gflops"] for _, r, _ in rows)
    peak = max(r["fma_peak_gflops"] for _, r, _ in rows)
    peak_isa = rows[0][1]["fma_peak_isa"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `/usr/bin/python3 bench/compare_pytorch.py --threads {a.threads}"
        f"{' --quick' if a.quick else ''}` on {time.strftime('%Y-%m-%d')}: "
        f"{cpu_name()}, {os.cpu_count()} cores, {a.threads} threads for both sides, "
        f"PyTorch {torch.__version__} (Debian). Times are the best of {a.repeat} runs after a "
        "warm-up, medians after the slash; rates and speed-ups use the best runs (on a shared "
        "VM the medians carry its neighbours' load, see Notes). PyTorch runs the code the way "
        "the original module is written (scores materialised, `torch.softmax`, autograd; "
        "forward-only runs under `torch.no_grad()`). "
        f"GEMMs: {rows[0][1].get('blas', 'CBLAS')}; fused kernels: "
        f"{rows[0][1].get('kernel_isa', '?')}. The projections' SGEMM on 2048^3 in the same run "
        f"(best of all its measurements): {sgemm:.1f} GFLOP/s; the FP32 FMA peak "
        f"of {a.threads} cores, measured the same way ({peak_isa} FMAs from registers): "
        f"{peak:.1f} GFLOP/s.",
        "",
        "| workload | ours (ms) | GFLOP/s | % of SGEMM | % of peak | peak RSS (MiB) "
        "| PyTorch (ms) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r, t in rows:
        torch_cols = ("| |" if t is None else
                      f"| {t:.2f} / {t.median:.2f} | {t / r['ms']:.1f}x |")
        lines.append(f"| {name} | {r['ms']:.2f} / {r['median_ms']:.2f} | {r['gflops']:.1f} | "
                     f"{100 * r['gflops'] / sgemm:.0f}% | {100 * r['gflops'] / peak:.0f}% | "
                     f"{r['peak_rss_mib']:.0f} {torch_cols}")
    lines += ["", f"Decoding with a KV cache: `MultiHeadAttention(768, 768, num_heads=12)`, batch 1, "
              f"one token against {decode_cache} cached tokens (best of {decode_repeat} steps; "
              "PyTorch: the book's KV-cache style, torch.cat per step, under no_grad):", "",
              "| | ms per token | tokens/s |", "|---|---:|---:|",
              f"| ours | {decode['ms']:.3f} | {decode['tokens_per_s']:.0f} |",
              f"| PyTorch | {decode_torch:.3f} | {1e3 / decode_torch:.0f} |",
              f"| speed-up | {decode_torch / decode['ms']:.1f}x | |"]
    lines += ["", "Fused forward as the sequence grows (attention core, d = 64; PyTorch's "
              "materialised scores need 4 N^2 bytes, 16 GiB at N = 65536):", "",
              "| N | ours (ms) | GFLOP/s | peak RSS (MiB) | PyTorch (ms) |", "|---:|---:|---:|---:|---:|"]
    for seq, r, t in scaling:
        lines.append(f"| {seq} | {r['ms']:.1f} | {r['gflops']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {'' if t is None else f'{t:.1f}'} |")
    lines += ["", f"The book's 6 x 3 example, `SelfAttention_Linear(3, 2)` forward: "
              f"{book['ms'] * 1e3:.2f} us (best of 2000 runs; median {book['median_ms'] * 1e3:.2f} "
              "us).", ""]
    lines += kernel_lines + [""]
    if not a.quick:
        lines += targets(rows, scaling, book, a.threads, peak, peak_isa,
                         (kernel_results, kernel_scaling, isas))
    notes = hand_written_notes(a.out)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + ("\n" + notes if notes else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
