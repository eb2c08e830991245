"""The CUDA paths, where a CUDA GPU is present (skipped elsewhere): the models give the CPU's logits, the
cross attention's CUDA training path (PyTorch's fused kernels) computes the CPU's function, and a short
training run on CUDA with bfloat16 autocast, stopped and resumed, writes a complete run folder. The rest of the
suite runs on CPU even there (``FSL_CORE_AUTO_DEVICE``, set in conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY

from fsl_core.engine import train
from fsl_core.models import build_model
from fsl_core.models.cross_attention import cross_attention
from fsl_core.runtime import native_bfloat16

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("name", ["protonet", "frn", "bifrn", "hmdrn"])
def test_models_give_the_cpus_logits_on_cuda(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same weights, same 5-way 1-shot 3-query episode at 32 px whose queries are noisy copies of their class's
    support image (so that the classes' scores differ), evaluation mode, float32 convolutions on both (cuDNN's
    TF32 off): each query's logits about their mean agree to 1 % of their range over the episode (at
    initialisation the classes' scores differ by well under 1 % of the scores themselves)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = build_model(name, "conv4", image_size=32).eval()
    support, labels = torch.randn(5, 3, 32, 32), torch.arange(5)
    queries = support.repeat(3, 1, 1, 1) + 0.3 * torch.randn(15, 3, 32, 32)
    with torch.no_grad():
        on_cpu = model(support, labels, queries)
        on_cuda = model.cuda()(support.cuda(), labels.cuda(), queries.cuda()).cpu()
    assert on_cuda.shape == on_cpu.shape == (15, 5)
    centred_cpu, centred_cuda = (x - x.mean(dim=1, keepdim=True) for x in (on_cpu, on_cuda))
    spread = (centred_cpu.max() - centred_cpu.min()).item()
    assert spread > 0
    torch.testing.assert_close(centred_cuda, centred_cpu, rtol=0, atol=1e-2 * spread)


def test_cross_attention_on_cuda_is_the_cpus_function() -> None:
    """Training without dropout: the fused kernel on CUDA against the chunked path on CPU, forward and
    gradients; with dropout 0.1 the CUDA output keeps its shape and is finite."""
    torch.manual_seed(0)
    queries, keys, values = torch.randn(300, 16), torch.randn(3, 40, 16), torch.randn(3, 40, 16)
    results = {}
    for device in ("cpu", "cuda"):
        inputs = [t.to(device).requires_grad_() for t in (queries, keys, values)]
        out = cross_attention(*inputs, dropout=0.0, training=True)
        (out * torch.linspace(-1, 1, 16, device=device)).sum().backward()
        results[device] = [out.detach().cpu()] + [t.grad.cpu() for t in inputs]
    for on_cuda, on_cpu in zip(results["cuda"], results["cpu"]):
        torch.testing.assert_close(on_cuda, on_cpu, rtol=1e-4, atol=1e-5)
    dropped = cross_attention(queries.cuda(), keys.cuda(), values.cuda(), dropout=0.1, training=True)
    assert dropped.shape == (3, 300, 16) and torch.isfinite(dropped).all()
    assert not torch.allclose(dropped.cpu(), results["cpu"][0])  # some probabilities were dropped


def test_a_short_training_run_on_cuda_with_bf16_resumes(birds: Path, tmp_path: Path) -> None:
    """Stopped after its first epoch and resumed (the checkpoint's random states read back to the host), the
    second part making its images on the GPU (``augment_on_device``): three finite epochs, the first one's row
    kept as it was written."""
    run_dir, settings = tmp_path / "cuda", dict(TINY, device="cuda", amp=True)
    first = train(data_root=str(birds), run_dir=str(run_dir), stop_after_epochs=1, **settings)
    assert first.epochs_done == 1 and not first.finished
    first_row = pd.read_csv(run_dir / "metrics.csv")
    result = train(data_root=str(birds), run_dir=str(run_dir), augment_on_device=True, **settings)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3] and all(math.isfinite(loss) for loss in metrics["loss"])
    assert metrics.iloc[:1].equals(first_row)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["device_used"] == "cuda" and config["amp"] is True and config["resumed_at_epoch"] == 1
    assert config["bfloat16_autocast"] is native_bfloat16("cuda")
    assert result.finished and (run_dir / "best.pt").is_file() and (run_dir / "last.pt").is_file()
