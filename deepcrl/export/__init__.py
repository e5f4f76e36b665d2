"""Export a policy artifact to a verified, self-describing ONNX file (and Triton / SavedModel layouts).

`deepcrl.export.onnx.export(ExportConfig(...))` is the library entry. The file's tensor names, metadata keys
and checks are `deepcrl.contract` (shared with the server and the robot client, which import nothing from
here); `deepcrl.onnx_policy.OnnxPolicy` runs the file with ONNX Runtime behind the same policy signature as
every other stage. Importing this package imports nothing heavy.
"""
