"""A Triton Inference Server model repository for an exported policy.

Layout: ``<repository>/<name>/config.pbtxt`` and ``<repository>/<name>/1/model.onnx``. With
``max_batch_size > 0`` Triton adds the batch dimension itself, so the tensor ``dims`` list only the feature
size (Triton reports the full shape as ``[-1, n]``); the dynamic batcher merges concurrent requests.
`validate_config` parses the text against a hand-declared subset of Triton's ``ModelConfig`` schema, so a
misspelt field or a wrong type fails here instead of on the server. A real Triton server (2.51, from the
``nvidia-pytriton`` wheel) loads the repository in ``tests/export/test_triton.py`` (``-m slow``), with a
Python-based stand-in for the ONNX Runtime backend.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from deepcrl.errors import DeepcrlError
from deepcrl import contract


# The metadata_props a config.pbtxt repeats as `parameters` (keys prefixed `deepcrl_`).
_PARAMETERS = (contract.DEEPCRL_VERSION, contract.KIND, contract.ENV_ID, contract.SOURCE_HASH, contract.ACTION_LOW,
               contract.ACTION_HIGH, contract.PRECISION, contract.PARITY_MAX_ABS_DIFF)


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid protobuf text-format string


def config_text(name: str, metadata: dict[str, str], max_batch_size: int = 256, max_queue_delay_us: int = 100,
                instance_kind: str = "KIND_AUTO") -> str:
    """The `config.pbtxt` of a policy with the deepcrl signature."""
    obs, goal, act = (metadata[k] for k in (contract.OBS_SIZE, contract.GOAL_SIZE, contract.ACTION_SIZE))
    # Triton sends the largest *preferred* batch it can form at once, so a preferred size of 1 would dispatch every
    # request alone whenever fewer than the next preferred size were queued: with 2-7 waiting it ran them one by one.
    # Without 1, a short queue waits at most max_queue_delay_us and then runs as one batch.
    preferred = sorted({b for b in (8, 32, max_batch_size) if 1 < b <= max_batch_size})
    preferred_line = f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n" if preferred else ""
    params = "".join(f"parameters {{ key: {_quote('deepcrl_' + k if not k.startswith('deepcrl_') else k)} "
                     f"value {{ string_value: {_quote(v)} }} }}\n"
                     for k, v in metadata.items() if k in _PARAMETERS)
    return (
        f"name: {_quote(name)}\n"
        'platform: "onnxruntime_onnx"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {int(max_batch_size)}\n"
        "input [\n"
        f"  {{ name: {_quote(contract.OBSERVATION)} data_type: TYPE_FP32 dims: [ {obs} ] }},\n"
        f"  {{ name: {_quote(contract.GOAL)} data_type: TYPE_FP32 dims: [ {goal} ] }}\n"
        "]\n"
        "output [\n"
        f"  {{ name: {_quote(contract.ACTION)} data_type: TYPE_FP32 dims: [ {act} ] }}\n"
        "]\n"
        "dynamic_batching {\n"
        f"{preferred_line}"
        f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n"
        "}\n"
        f"instance_group [ {{ count: 1 kind: {instance_kind} }} ]\n"
        f"{params}"
    )


def _schema():
    """A message class for the subset of Triton's `ModelConfig` that deepcrl writes."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="deepcrl_triton_subset.proto", package="deepcrl_triton",
                                             syntax="proto3")
    dtype = fdp.enum_type.add(name="DataType")
    for i, n in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                           "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32",
                           "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]):
        dtype.value.add(name=n, number=i)

    def message(name, fields, nested=()):
        msg = fdp.message_type.add(name=name)
        for n in nested:
            msg.nested_type.append(n)
        for number, (fname, ftype, label, type_name) in enumerate(fields, start=1):
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        return msg

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    tensor = [("name", F.TYPE_STRING, OPT, None), ("data_type", F.TYPE_ENUM, OPT, ".deepcrl_triton.DataType"),
              ("dims", F.TYPE_INT64, REP, None)]
    message("ModelInput", tensor)
    message("ModelOutput", tensor)
    message("ModelDynamicBatching", [("preferred_batch_size", F.TYPE_INT32, REP, None),
                                     ("max_queue_delay_microseconds", F.TYPE_UINT64, OPT, None)])
    group = message("ModelInstanceGroup", [("count", F.TYPE_INT32, OPT, None),
                                           ("kind", F.TYPE_ENUM, OPT, ".deepcrl_triton.ModelInstanceGroup.Kind")])
    kind = group.enum_type.add(name="Kind")
    for i, n in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]):
        kind.value.add(name=n, number=i)
    message("ModelParameter", [("string_value", F.TYPE_STRING, OPT, None)])
    entry = descriptor_pb2.DescriptorProto(name="ParametersEntry",
                                           options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=OPT)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=OPT, type_name=".deepcrl_triton.ModelParameter")
    message("ModelConfig", [
        ("name", F.TYPE_STRING, OPT, None), ("platform", F.TYPE_STRING, OPT, None),
        ("backend", F.TYPE_STRING, OPT, None), ("max_batch_size", F.TYPE_INT32, OPT, None),
        ("input", F.TYPE_MESSAGE, REP, ".deepcrl_triton.ModelInput"),
        ("output", F.TYPE_MESSAGE, REP, ".deepcrl_triton.ModelOutput"),
        ("dynamic_batching", F.TYPE_MESSAGE, OPT, ".deepcrl_triton.ModelDynamicBatching"),
        ("instance_group", F.TYPE_MESSAGE, REP, ".deepcrl_triton.ModelInstanceGroup"),
        ("parameters", F.TYPE_MESSAGE, REP, ".deepcrl_triton.ModelConfig.ParametersEntry"),
    ], nested=[entry])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("deepcrl_triton.ModelConfig"))


def validate_config(text: str):
    """Parse `config.pbtxt` text strictly (unknown fields and bad values fail); returns the message.

    Raises:
        DeepcrlError: the text is not a valid config of the subset deepcrl writes.
    """
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _schema()())
    except text_format.ParseError as exc:
        raise DeepcrlError(f"invalid Triton config.pbtxt: {exc}.") from exc


def write_repository(repository: Path, name: str, model_bytes: bytes, metadata: dict[str, str],
                     max_batch_size: int = 256, max_queue_delay_us: int = 100) -> Path:
    """Write (or replace) model `name` in a Triton repository; returns the path of its `model.onnx`.

    The model directory is assembled beside its final place and renamed in, so a Triton server polling the
    repository never loads half a model.
    """
    if not name or "/" in name or name.startswith("."):
        raise DeepcrlError(f"the Triton model name {name!r} must be a plain directory name.")
    if max_batch_size < 1:
        raise DeepcrlError(f"--max-batch-size must be at least 1 (got {max_batch_size}).")
    text = config_text(name, metadata, max_batch_size, max_queue_delay_us)
    validate_config(text)
    repository = Path(repository)
    final, tmp = repository / name, repository / f".{name}.{os.getpid()}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "1").mkdir(parents=True)
        (tmp / "1" / "model.onnx").write_bytes(model_bytes)
        (tmp / "config.pbtxt").write_text(text)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeepcrlError(f"cannot write the Triton repository {repository}: {exc.strerror or exc}.") from exc
    return final / "1" / "model.onnx"
