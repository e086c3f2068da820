"""selfattn heatmap, demo --heatmap and train, end to end: the PNGs they write decode (with the
small reader below, independent of the CLI's libpng) and show what they should, training lowers
the loss, saved weights load into PyTorch running the original code, and every error is one line.

Run by ctest with the rest of tests/cli (see tests/CMakeLists.txt).
"""

import os
import pty
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import original_selfattn as orig  # noqa: E402
import safetensors_io  # noqa: E402

SELFATTN = os.environ.get("SELFATTN", os.path.join(HERE, "..", "..", "build", "bin", "selfattn"))
BOOK_X = np.array([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                   [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]], np.float32)
VIRIDIS_LOW, VIRIDIS_HIGH = (68, 1, 84), (253, 231, 37)


def selfattn(*args, env=None):
    return subprocess.run([SELFATTN, *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def ok(*args):
    r = selfattn(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    return r.stdout


# ----------------------------------------------------------------- a minimal PNG reader

def read_png(path):
    """(width, height, pixels) of an 8-bit RGB PNG; pixels is a (height, width, 3) uint8 array.
    Checks the signature, every chunk's CRC, and the IEND chunk."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, idat, ihdr, ended = 8, b"", None, False
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            ended = True
        pos += 12 + length
    assert ihdr is not None and ended, "IHDR or IEND missing"
    width, height, depth, colour, _, _, interlace = ihdr
    assert (depth, colour, interlace) == (8, 2, 0), "expected 8-bit RGB, not interlaced"
    raw, stride = zlib.decompress(idat), width * 3
    assert len(raw) == height * (stride + 1)
    rows, prev = [], np.zeros(stride, np.uint8)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).copy()
        if f == 1:  # Sub: a running sum per channel
            line = (np.cumsum(line.reshape(-1, 3), axis=0, dtype=np.int64) % 256).astype(
                np.uint8).reshape(-1)
        elif f == 2:  # Up
            line = line + prev
        elif f in (3, 4):  # Average, Paeth: each pixel depends on the one before it
            cur, up = line.astype(np.int64).tolist(), prev.astype(np.int64).tolist()
            for i in range(stride):
                a = cur[i - 3] if i >= 3 else 0
                b, c = up[i], (up[i - 3] if i >= 3 else 0)
                if f == 3:
                    cur[i] = (cur[i] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            line = np.array(cur, np.uint8)
        else:
            assert f == 0, f"bad filter {f}"
        rows.append(line)
        prev = line
    pixels = np.stack(rows).reshape(height, width, 3)
    return width, height, pixels


def colours(pixels):
    return set(map(tuple, np.unique(pixels.reshape(-1, 3), axis=0).tolist()))


def assert_plausible(path, min_size=(300, 250), max_size=(2500, 2500)):
    w, h, px = read_png(path)
    assert min_size[0] <= w <= max_size[0] and min_size[1] <= h <= max_size[1], (w, h)
    assert tuple(px[0, 0]) == (255, 255, 255), "the background should be white"
    assert len(colours(px)) > 20, "expected anti-aliased text and a colour scale"
    return w, h, px


# --------------------------------------------------------------------------- heatmap

def test_demo_heatmap_draws_the_books_example(tmp_path):
    out = ok("demo", "--heatmap", tmp_path / "demo.png")
    assert "-0.0739   0.0713" in out  # the demo itself still runs
    assert "demo.png" in out
    _, _, px = assert_plausible(tmp_path / "demo.png")
    # The colour scale runs from the smallest to the largest weight: both ends appear.
    assert {VIRIDIS_LOW, VIRIDIS_HIGH} <= colours(px)


def test_heatmap_of_a_run_equals_heatmap_of_its_saved_weights(tmp_path):
    np.save(tmp_path / "x.npy", BOOK_X)
    ok("run", "--module", "linear", "--d-in", 3, "--d-out", 2, "--seed", 789, "--input",
       tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--attn-weights", tmp_path / "a.npy")
    tokens = "Your,journey,starts,with,one,step"
    out = ok("heatmap", "--module", "linear", "--d-in", 3, "--d-out", 2, "--seed", 789,
             "--input", tmp_path / "x.npy", "--tokens", tokens, "--title", "T",
             "--output", tmp_path / "run.png")
    assert "6 x 6 tokens" in out
    ok("heatmap", "--attn-weights", tmp_path / "a.npy", "--tokens", tokens, "--title", "T",
       "--output", tmp_path / "file.png")
    # Same pixels through the same encoder give the same bytes.
    assert (tmp_path / "run.png").read_bytes() == (tmp_path / "file.png").read_bytes()
    assert_plausible(tmp_path / "run.png")


def test_heatmap_batch_index_picks_one_batch_element(tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ok("run", "--module", "linear4", "--d-in", 4, "--d-out", 3, "--seed", 1, "--input",
       tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--attn-weights", tmp_path / "a.npy")
    np.save(tmp_path / "a1.npy", np.load(tmp_path / "a.npy")[1])
    out = ok("heatmap", "--module", "linear4", "--d-in", 4, "--d-out", 3, "--seed", 1,
             "--input", tmp_path / "x.npy", "--batch-index", 1, "--title", "T",
             "--output", tmp_path / "b1.png")
    assert "batch element 1 of 3" in out
    ok("heatmap", "--attn-weights", tmp_path / "a1.npy", "--title", "T",
       "--output", tmp_path / "a1.png")
    assert (tmp_path / "b1.png").read_bytes() == (tmp_path / "a1.png").read_bytes()


def test_heatmap_of_a_long_sequence_stays_a_sensible_size(tmp_path):
    np.save(tmp_path / "a.npy", np.full((300, 300), 1 / 300, np.float32))
    ok("heatmap", "--attn-weights", tmp_path / "a.npy", "--output", tmp_path / "big.png")
    w, h, _ = assert_plausible(tmp_path / "big.png")
    assert w < 1200 and h < 1200


def test_heatmap_fixed_scale(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[0.25, 0.75], [0.5, 0.5]], np.float32))
    ok("heatmap", "--attn-weights", tmp_path / "a.npy", "--cell-values", "never",
       "--output", tmp_path / "auto.png")
    ok("heatmap", "--attn-weights", tmp_path / "a.npy", "--vmin", 0, "--vmax", 1,
       "--cell-values", "never", "--output", tmp_path / "fixed.png")
    # By default the smallest weight gets the dark end of the scale ...
    assert VIRIDIS_LOW in colours(read_png(tmp_path / "auto.png")[2])
    # ... with 0..1 fixed, 0.25 gets viridis(0.25) = (59, 82, 139) and nothing is that dark.
    fixed = colours(read_png(tmp_path / "fixed.png")[2])
    assert (59, 82, 139) in fixed and VIRIDIS_LOW not in fixed


# ----------------------------------------------------------------------------- train

def loss_line(out):
    m = re.search(r"loss ([0-9.e+-]+) -> ([0-9.e+-]+)", out)
    assert m, out
    return float(m.group(1)), float(m.group(2))


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_train_lowers_the_loss_and_writes_a_loss_plot(tmp_path, optimizer):
    extra = ["--momentum", 0.9, "--lr", 0.05] if optimizer == "sgd" else []
    out = ok("train", "--module", "linear", "--optimizer", optimizer, "--steps", 80,
             "--loss-plot", tmp_path / "loss.png", *extra)
    first, last = loss_line(out)
    assert last < first / 5, out
    assert "steps/s" in out and "\r" not in out  # plain lines when not a terminal
    assert "wrote the loss curve" in out
    assert_plausible(tmp_path / "loss.png", min_size=(600, 400))


def test_train_recall_task(tmp_path):
    out = ok("train", "--module", "linear", "--qkv-bias", "--task", "recall", "--d-in", 4,
             "--d-out", 2, "--steps", 150, "--seq", 5)
    first, last = loss_line(out)
    assert last < first / 5, out


def test_trained_weights_load_into_pytorch(tmp_path):
    w = tmp_path / "w.safetensors"
    ok("train", "--module", "linear", "--qkv-bias", "--d-in", 4, "--d-out", 3, "--seed", 5,
       "--teacher-seed", 6, "--steps", 40, "--save-weights", w)
    tensors, metadata = safetensors_io.load(w)
    assert metadata["format"] == "pt" and metadata["module"] == "SelfAttention_Linear"
    torch.manual_seed(5)
    initial = orig.build("SelfAttention_Linear", 4, 3, True)
    m = orig.build("SelfAttention_Linear", 4, 3, True)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    for name, p in initial.state_dict().items():
        assert not np.array_equal(p.numpy(), tensors[name]), f"{name} did not train"
    # ... and the CLI itself runs them.
    np.save(tmp_path / "x.npy", BOOK_X[:, :3].repeat(2, axis=1)[:, :4].copy())
    ok("run", "--module", "linear", "--weights", w, "--input", tmp_path / "x.npy",
       "--output", tmp_path / "y.npy")


@pytest.mark.parametrize("module", ["linear4", "linear5"])
def test_train_linear4_linear5_train_only_w_value(tmp_path, module):
    w = tmp_path / "w.safetensors"
    out = ok("train", "--module", module, "--seed", 3, "--steps", 30, "--save-weights", w)
    assert "only W_value" in out
    assert "no gradient, unchanged: W_query.weight, W_key.weight" in out
    tensors, _ = safetensors_io.load(w)
    torch.manual_seed(3)
    initial = orig.build("SelfAttention_Linear", 3, 2, False)  # same init as Linear4/5
    np.testing.assert_array_equal(tensors["W_query.weight"], initial.W_query.weight.detach())
    np.testing.assert_array_equal(tensors["W_key.weight"], initial.W_key.weight.detach())
    assert not np.array_equal(tensors["W_value.weight"], initial.W_value.weight.detach())


def test_train_shows_a_progress_bar_on_a_terminal():
    parent, child = pty.openpty()
    p = subprocess.Popen([SELFATTN, "train", "--steps", "50"], stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(parent, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(parent)
    assert p.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    assert "\r[" in text and "50/50" in text and "steps/s" in text, text


# ---------------------------------------------------------------------- help, errors

def test_every_subcommand_help_has_examples():
    for args in [["--help"], ["demo", "--help"], ["run", "--help"], ["heatmap", "--help"],
                 ["train", "--help"]]:
        r = selfattn(*args)
        assert r.returncode == 0, args
        assert "Example" in r.stdout, args
    assert "only W_value" in selfattn("train", "--help").stdout


def expect_error(tmp_path, args, text, env=None):
    before = set(os.listdir(tmp_path))
    r = selfattn(*args, env=env)
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert text in lines[0], lines[0]
    assert set(os.listdir(tmp_path)) == before, "an output or temporary file was left behind"


@pytest.fixture
def weights_npy(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.full((2, 4, 4), 0.25, np.float32))
    return path


def test_heatmap_errors(tmp_path, weights_npy):
    out = ["--output", tmp_path / "h.png"]
    expect_error(tmp_path, ["heatmap", *out], "--attn-weights")  # no input at all
    expect_error(tmp_path, ["heatmap", "--attn-weights", weights_npy, "--input", weights_npy,
                            "--module", "linear", *out], "excludes")
    expect_error(tmp_path, ["heatmap", "--attn-weights", weights_npy, "--tokens", "a,b,c", *out],
                 "--tokens has 3 labels, the attention weights have 4 tokens")
    expect_error(tmp_path, ["heatmap", "--attn-weights", weights_npy, "--batch-index", 2, *out],
                 "--batch-index 2")
    expect_error(tmp_path, ["heatmap", "--attn-weights", weights_npy, "--vmin", 1, "--vmax", 0,
                            *out], "--vmin")
    expect_error(tmp_path, ["heatmap", "--attn-weights", weights_npy,
                            "--output", tmp_path / "nowhere" / "h.png"], "nowhere")
    np.save(tmp_path / "rect.npy", np.zeros((3, 4), np.float32))
    expect_error(tmp_path, ["heatmap", "--attn-weights", tmp_path / "rect.npy", *out], "[3, 4]")
    np.save(tmp_path / "two_d.npy", np.full((3, 3), 1 / 3, np.float32))
    expect_error(tmp_path, ["heatmap", "--attn-weights", tmp_path / "two_d.npy",
                            "--batch-index", 1, *out], "2-D")
    expect_error(tmp_path, ["heatmap", "--input", weights_npy, *out], "--module")
    expect_error(tmp_path, ["heatmap", "--attn-weights", tmp_path / "missing.npy", *out],
                 "missing.npy")


def test_heatmap_without_a_font_is_a_clear_error(tmp_path, weights_npy):
    env = dict(os.environ, SELFATTN_FONT=str(tmp_path / "no-such-font.ttf"))
    expect_error(tmp_path, ["heatmap", "--attn-weights", weights_npy, "--output",
                            tmp_path / "h.png"], "no-such-font.ttf", env=env)


def test_train_errors(tmp_path):
    expect_error(tmp_path, ["train", "--momentum", 0.9], "--momentum applies to --optimizer sgd")
    expect_error(tmp_path, ["train", "--seed", 4, "--teacher-seed", 4], "--teacher-seed")
    expect_error(tmp_path, ["train", "--task", "recall", "--d-in", 2, "--d-out", 2], "d_in")
    expect_error(tmp_path, ["train", "--lr", 0], "--lr")
    expect_error(tmp_path, ["train", "--optimizer", "lion"], "lion")
    expect_error(tmp_path, ["train", "--module", "params", "--qkv-bias"], "bias")
    expect_error(tmp_path, ["train", "--steps", 5, "--loss-plot", tmp_path / "no" / "l.png"],
                 "no")
    expect_error(tmp_path, ["train", "--optimizer", "sgd", "--lr", 1e6, "--steps", 50,
                            "--save-weights", tmp_path / "w.safetensors"], "diverged")
