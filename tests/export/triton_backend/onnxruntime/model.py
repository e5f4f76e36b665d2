"""A Python-based Triton backend named ``onnxruntime``: a test-only stand-in for Triton's C++ ONNX Runtime backend.

PyPI's ``nvidia-pytriton`` wheel ships a real ``tritonserver`` with the Python backend but without the ONNX
Runtime backend. Triton loads a *Python-based backend* from ``<backend-directory>/<name>/model.py`` when no
``libtriton_<name>.so`` exists there, so with this directory on ``--backend-directory`` Triton itself parses an
unmodified ``platform: "onnxruntime_onnx"`` config.pbtxt, runs its dynamic batcher and serves the v2 protocol,
and only the last step (running the graph) is done here, by the ``onnxruntime`` Python package.

Like the real backend, loading checks the configuration against the model (tensor names, data types, and
dims with the batch dimension that ``max_batch_size > 0`` adds) and fails with a message naming the
mismatch; execution concatenates the requests Triton's batcher hands over into one session call and splits
the outputs back. It runs inside Triton's Python stub, so it imports only numpy, onnxruntime and Triton's
``triton_python_backend_utils``.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# Triton data type names <-> ONNX Runtime's type strings (the subset a policy can use).
_ORT_TYPES = {"TYPE_FP32": "tensor(float)", "TYPE_FP64": "tensor(double)", "TYPE_FP16": "tensor(float16)",
              "TYPE_INT32": "tensor(int32)", "TYPE_INT64": "tensor(int64)", "TYPE_INT8": "tensor(int8)",
              "TYPE_UINT8": "tensor(uint8)", "TYPE_BOOL": "tensor(bool)"}


def _dims(shape):
    """ONNX shape -> Triton dims: symbolic or unknown dimensions are -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _check(model_name, kind, configured, actual, batched):
    """Raise the load error the C++ backend would give when a configured tensor does not match the model."""
    by_name = {t.name: t for t in actual}
    names = sorted(by_name)
    if len(configured) != len(actual):
        raise pb_utils.TritonModelException(
            f"unable to load model '{model_name}', configuration expects {len(configured)} {kind}s, model "
            f"provides {len(actual)}")
    for tensor in configured:
        name = tensor["name"]
        if name not in by_name:
            raise pb_utils.TritonModelException(
                f"unexpected {kind} '{name}' in model configuration, allowed {kind}s are: {', '.join(names)}")
        onnx = by_name[name]
        want = _ORT_TYPES.get(tensor["data_type"])
        if want != onnx.type:
            raise pb_utils.TritonModelException(
                f"unexpected datatype {tensor['data_type']} for {kind} '{name}', model provides {onnx.type}")
        config_dims = [int(d) for d in tensor["dims"]]
        full = ([-1] if batched else []) + config_dims
        model_dims = _dims(onnx.shape)
        same = len(model_dims) == len(full) and all(m == -1 or m == c for m, c in zip(model_dims, full))
        if not same or (batched and model_dims[0] != -1):
            raise pb_utils.TritonModelException(
                f"model '{model_name}', tensor '{name}': the model expects {len(model_dims)} dimensions (shape "
                f"{model_dims}) but the model configuration specifies {len(full)} dimensions "
                f"({'an initial batch dimension because max_batch_size > 0 followed by ' if batched else ''}"
                f"the explicit tensor shape, making complete shape {full})")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        name = args["model_name"]
        _check(name, "input", config["input"], self.session.get_inputs(), self.batched)
        _check(name, "output", config["output"], self.session.get_outputs(), self.batched)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs] for r in requests]
        if not self.batched:  # no batch dimension to concatenate along: one session call per request
            return [self._responses(self.session.run(self.outputs, dict(zip(self.inputs, a))), None)[0]
                    for a in arrays]
        feeds = {n: np.concatenate([a[i] for a in arrays]) for i, n in enumerate(self.inputs)}
        return self._responses(self.session.run(self.outputs, feeds), [a[0].shape[0] for a in arrays])

    def _responses(self, results, rows):
        """One response per request: rows[i] consecutive rows of every output (all of them when rows is None)."""
        responses, start = [], 0
        for n in rows or [None]:
            stop = None if n is None else start + n
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(r[start:stop]))
                       for name, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
