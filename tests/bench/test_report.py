"""`vivace report`: one page from bench outputs, rendered for real in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import VIVACE, cli_env

MACHINE = {"platform": "Linux-x86_64", "python": "3.11.7", "cpus": 2, "cpu": "test cpu"}


def _plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["1", "16"], [20.0, 154.2], color="#c44e52")
    fig.savefig(path)
    plt.close(fig)


def write_fixture_runs(root: Path) -> Path:
    runs = root / "runs"
    backend = runs / "bench-backend"
    backend.mkdir(parents=True)
    (backend / "report.json").write_text(json.dumps({
        "bench": "backend", "backend": "vllm", "model": "smollm2-135m", "load_s": 32.5, "machine": MACHINE,
        "levels": [{"concurrency": 1, "tok_s": 20.0, "ttft_median_s": 0.154, "per_stream_decode_tok_s": 20.4, "speedup_vs_1": 1.0},
                   {"concurrency": 16, "tok_s": 154.2, "ttft_median_s": 1.692, "per_stream_decode_tok_s": 11.0, "speedup_vs_1": 7.72}],
        "config": {"dtype": "float32", "kv_cache_space_gib": "1"},
    }))
    _plot(backend / "throughput.png")
    # An older backend run elsewhere must lose to the newer one.
    old = runs / "old-backend"
    old.mkdir()
    (old / "report.json").write_text(json.dumps({"bench": "backend", "levels": [{"concurrency": 1, "tok_s": 1.5}]}))
    past = time.time() - 3600
    os.utime(old / "report.json", (past, past))
    quant = runs / "bench-quant"
    quant.mkdir()
    (quant / "report.json").write_text(json.dumps({
        "bench": "quant", "kv_space_gib": 1.0, "text_tokens": 20706, "machine": MACHINE, "config": {"window": "1024"},
        "configs": [
            {"name": "bf16", "weights": "bf16", "kv": "bf16", "status": "ok", "reason": None, "perplexity": 41.25, "ppl_delta_pct": 0.0,
             "mc_accuracy": 0.52, "kv_capacity_tokens": 46592, "decode_tok_s": 6.1, "batch16_tok_s": 40.2, "load_s": 28.5},
            {"name": "kv-fp8-e4m3", "weights": "bf16", "kv": "fp8_e4m3", "status": "unsupported",
             "reason": "kv_cache_dtype 'fp8_e4m3' needs a CPU with AVX-512 or AMX", "perplexity": None},
        ],
        "engine_vs_emulation": [{"config": "kv-fp8-e4m3-cal", "emulation": "KV-fp8-e4m3-engine-cal", "engine_pct": 0.77,
                                 "emulated_pct": 0.9, "gap_pct_points": -0.13, "old_emulation_pct": 0.98}],
        "fake_quant": [{"name": "fp32", "tensor": "none", "bits": None, "granularity": None, "perplexity": 40.0, "ppl_delta_pct": 0.0},
                       {"name": "W3-pc", "tensor": "weight", "bits": 3, "granularity": "per-channel", "perplexity": 97.1, "ppl_delta_pct": 142.75}],
    }))
    load = runs / "bench-load"
    load.mkdir()
    (load / "report.json").write_text(json.dumps({
        "bench": "load", "machine": MACHINE,
        "series": {"normal": [{"concurrency": 1, "tasks": 8, "tasks_per_min": 9.5, "p50_s": 6.2, "p95_s": 7.9, "speedup_vs_1": 1.0,
                               "peak_in_flight": 1, "kv_usage_peak": 0.012, "kv_usage_mean": 0.006, "mean_output_tokens": 120,
                               "length_ratio_vs_1": 1.0, "same_answer_vs_1": 1.0},
                              {"concurrency": 16, "tasks": 8, "tasks_per_min": 61.3, "p50_s": 7.4, "p95_s": 8.8, "speedup_vs_1": 6.45,
                               "peak_in_flight": 16, "kv_usage_peak": 0.171, "kv_usage_mean": 0.084, "mean_output_tokens": 118,
                               "length_ratio_vs_1": 0.98, "same_answer_vs_1": 0.875}]},
    }))
    return runs


def vivace(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=cli_env(home), cwd=cwd, timeout=120)


def screenshot(page: Path, png: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs it)")
    profile = png.parent / "chromium-profile"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,1600", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )


def test_report_gathers_the_latest_runs_and_renders(tmp_path: Path, vivace_home: Path) -> None:
    write_fixture_runs(tmp_path)
    proc = vivace("report", "--out", "out/report.html", cwd=tmp_path, home=vivace_home)  # default: ./runs
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "out" / "report.html"
    text = page.read_text()
    assert "154.2" in text and "7.72" in text  # the newer backend run, not the old one
    assert "1.5" not in re.sub(r"<img[^>]*>", "", text).split("throughput by concurrency")[1].split("</table>")[0]
    assert "unsupported: kv_cache_dtype" in text and "46592" in text and "142.75" in text.replace("+142.75", "142.75")
    assert "data:image/png;base64," in text
    assert not re.search(r"""(src|href)=['"]https?:""", text)  # opens with no network
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 16 | 154.2 |" in md and "## quant" in md and "## load" in md
    assert "| kv-fp8-e4m3-cal | KV-fp8-e4m3-engine-cal | +0.77 | +0.90 | -0.13 | +0.98 |" in md  # engine vs emulation
    assert "| normal | 16 | 8 | 61.3 | 7.40 | 8.80 | 6.45 | 16 | 17.1% / 8.4% | 118 | 0.98 | 88% |" in md
    assert "<td class='text'>unsupported: kv_cache_dtype" in text  # words align left, numbers right
    image = re.search(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert image and (tmp_path / "out" / image.group(1)).is_file()

    png = tmp_path / "shot.png"
    screenshot(page, png)
    from PIL import Image

    shot = Image.open(png).convert("RGB")
    assert shot.size == (1200, 1600)
    import numpy as np

    pixels = np.asarray(shot).reshape(-1, 3)
    non_white = float((pixels.astype(int).sum(axis=1) < 720).mean())
    assert non_white > 0.02, non_white  # text, tables and the plot are on the page
    assert len(np.unique(pixels, axis=0)) > 50  # not a flat colour


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_run_dir_is_one_line(tmp_path: Path, vivace_home: Path, make: str) -> None:
    target = tmp_path / "runs"
    if make == "empty":
        target.mkdir()
    proc = vivace("report", str(target), "--out", str(tmp_path / "r.html"), cwd=tmp_path, home=vivace_home)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert ("does not exist" if make == "missing" else "no report.json") in proc.stderr
    assert not (tmp_path / "r.html").exists()
