"""Serve an exported ONNX policy over HTTP and WebSocket, with a light client and a latency benchmark.

Importing this package is cheap on purpose: `deepcrl.serve.client` must load on a robot with only numpy,
msgpack, httpx and websockets installed, so nothing here imports the server, ONNX Runtime or JAX.
"""
