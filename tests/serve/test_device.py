"""--device: a session that does not run on the requested provider is refused in one sentence (no silent CPU)."""

from __future__ import annotations

import pytest

from deepcrl.errors import DeepcrlError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from deepcrl.bench.synthetic import write_policy

    return write_policy(tmp_path_factory.mktemp("device") / "policy.onnx", hidden=(8,))


def _has(provider: str) -> bool:
    import onnxruntime as ort

    return provider in ort.get_available_providers()


@pytest.mark.skipif(_has("CUDAExecutionProvider"), reason="CUDA is installed here: nothing falls back")
def test_asking_for_cuda_without_it_refuses_to_start(synthetic):
    from deepcrl.serve.app import create_app

    with pytest.raises(DeepcrlError, match=r"^--device cuda needs ONNX Runtime's CUDAExecutionProvider, but "
                                           r"policy.onnx runs on CPUExecutionProvider") as info:
        create_app(synthetic, warmup=1, device="cuda")
    assert "\n" not in str(info.value) and "--device cpu" in str(info.value)


@pytest.mark.skipif(_has("CUDAExecutionProvider"), reason="CUDA is installed here: nothing falls back")
def test_the_serve_command_exits_2_with_one_sentence(synthetic, capsys):
    from deepcrl.cli import main

    assert main(["serve", "--model", str(synthetic), "--port", "0", "--device", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "TensorrtExecutionProvider" in err and "Traceback" not in err


def test_cpu_reports_the_provider_that_runs(synthetic):
    import httpx

    from deepcrl.serve.app import RunningServer, create_app

    with RunningServer(create_app(synthetic, warmup=1, device="cpu")) as running:
        meta = httpx.get(running.url + "/v1/metadata").json()
    assert meta["device"] == "cpu" and meta["providers"] == ["CPUExecutionProvider"]
