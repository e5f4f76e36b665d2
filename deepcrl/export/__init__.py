"""Export a policy artifact to a verified, self-describing ONNX file (and Triton / SavedModel layouts).

`deepcrl.export.onnx.export(ExportConfig(...))` is the library entry; `contract` holds the file's tensor
names, metadata keys and checks (importable without JAX); `OnnxPolicy` (runtime.py) runs the file with ONNX
Runtime behind the same policy signature as every other stage. Importing this package imports nothing heavy.
"""
