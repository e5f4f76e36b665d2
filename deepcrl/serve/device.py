"""Where the server's sessions run: ``--device cpu|cuda|tensorrt`` -> ONNX Runtime execution providers, checked.

onnxruntime's most reported trap: a session asked for CUDA whose provider fails to load (no onnxruntime-gpu,
a CUDA or cuDNN mismatch) logs a warning and runs on the CPU. The server therefore compares what it asked for
with `session.get_providers()` after creating each session and refuses to start (one sentence, exit 2) when
the requested provider is not the one running. The fallbacks listed after it (CUDA after TensorRT, CPU last)
only take nodes the first cannot run, as ONNX Runtime assigns them.
"""

from __future__ import annotations

from pathlib import Path

from deepcrl.errors import DeepcrlError

DEVICES: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    # TensorRT builds an engine per input shape on first use (minutes for a deep model); CUDA takes what it
    # cannot run. Engines are cached beside nothing: the first requests of each batch size pay for the build.
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


def providers_for(device: str) -> list[str]:
    """The execution providers to ask for, in order; a `DeepcrlError` for an unknown device."""
    if device not in DEVICES:
        raise DeepcrlError(f"--device is one of {', '.join(DEVICES)}, not {device!r}.")
    return list(DEVICES[device])


def check_providers(device: str, running: list[str], path: Path | str) -> None:
    """Refuse a session that does not run on the requested device's provider (ORT's silent CPU fallback)."""
    wanted = DEVICES[device][0]
    if running and running[0] == wanted:
        return
    import onnxruntime as ort

    available = ort.get_available_providers()
    hint = ("install the gpu extra (pip uninstall -y onnxruntime && pip install 'deepcrl[gpu]') with a CUDA and "
            "cuDNN that match it" if wanted not in available else
            "its libraries failed to load (see ONNX Runtime's warning above: usually a CUDA or cuDNN mismatch)")
    raise DeepcrlError(f"--device {device} needs ONNX Runtime's {wanted}, but {Path(path).name} runs on "
                       f"{', '.join(running) or 'nothing'} (this onnxruntime offers {', '.join(available)}): "
                       f"{hint}, or serve with --device cpu.")
