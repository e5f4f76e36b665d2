"""TLS on every protocol of `deepcrl serve` (HTTPS, WSS, gRPC over TLS, mutual TLS) against a real server process
with a throwaway CA made here, the clients' TLS options, and the one-sentence refusals of bad PEM files."""

from __future__ import annotations

import concurrent.futures
import datetime
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

x509 = pytest.importorskip("cryptography.x509", reason="makes the test certificates (dev extra)")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from deepcrl.errors import DeepcrlError  # noqa: E402
from deepcrl.serve.client import PolicyClient, ServerError, StreamClient  # noqa: E402

NAME = "policy"  # the server serves policy.onnx under its file stem
_READY = re.compile(r"ready at (https://127\.0\.0\.1:\d+) \(gRPC \(TLS\) at (127\.0\.0\.1:\d+);")


# ---- a throwaway PKI --------------------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False,
           server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                        critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, *objects) -> Path:
    pem = b""
    for obj in objects:
        if isinstance(obj, x509.Certificate):
            pem += obj.public_bytes(serialization.Encoding.PEM)
        else:
            pem += obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    path.write_bytes(pem)
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> SimpleNamespace:
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate it signed, as PEM files."""
    root = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _issue("deepcrl test CA", ca_key, _name("deepcrl test CA"), ca_key, ca=True)
    encrypted = root / "encrypted.key"
    encrypted.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.BestAvailableEncryption(b"secret")))
    return SimpleNamespace(
        ca=_write(root / "ca.pem", ca),
        cert=_write(root / "server.pem", _issue("localhost", server_key, ca.subject, ca_key, server=True)),
        key=_write(root / "server.key", server_key),
        client_cert=_write(root / "client.pem", _issue("robot-7", client_key, ca.subject, ca_key)),
        client_key=_write(root / "client.key", client_key),
        encrypted_key=encrypted)


# ---- real servers ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(policy_onnx, pki, stop_served, *extra: str):
    """`deepcrl serve` over TLS (HTTP, WebSocket, gRPC on a free port); yields (https URL, gRPC target)."""
    proc = subprocess.Popen([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(policy_onnx), "--port", "0",
                             "--grpc-port", str(_free_port()), "--warmup", "1", "--tls-cert", str(pki.cert),
                             "--tls-key", str(pki.key), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until the ready line (or EOF if the server failed)
        match = _READY.search(line)
        assert match, line + proc.stderr.read()
        yield match.group(1), match.group(2)
    finally:
        stop_served(proc, 30)
    assert "Traceback" not in proc.stderr.read()


@pytest.fixture(scope="module")
def tls_server(policy_onnx, pki, stop_served):
    yield from _serve(policy_onnx, pki, stop_served)


@pytest.fixture(scope="module")
def mtls_server(policy_onnx, pki, stop_served):
    """Requires a client certificate signed by the test CA."""
    yield from _serve(policy_onnx, pki, stop_served, "--tls-client-ca", str(pki.ca))


def _rows(reference, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (batch, reference.obs_size)).astype(np.float32),
            rng.uniform(-1, 1, (batch, reference.goal_size)).astype(np.float32))


def _grpc_infer(target: str, obs, goal, **tls):
    import tritonclient.grpc as grpcclient

    tensors = []
    for name, value in (("observation", obs), ("goal", goal)):
        tensor = grpcclient.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    with grpcclient.InferenceServerClient(target, **tls) as client:
        return client.infer(NAME, tensors, client_timeout=20).as_numpy("action")


def _pem(path: Path) -> bytes:
    return path.read_bytes()


# ---- HTTPS, WSS, gRPC over TLS -------------------------------------------------------------------------------------


def test_https_answers_the_same_action_as_the_model_in_process(tls_server, pki, reference):
    url, _ = tls_server
    obs, goal = _rows(reference, 3)
    with PolicyClient(url, ca=str(pki.ca)) as client:
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)
        assert client.metadata()["obs_size"] == reference.obs_size
    with PolicyClient(url, ca=pki.ca, protocol="v2", model_name=NAME) as client:  # the v2 routes too
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)


def test_wss_answers(tls_server, pki, reference):
    url, _ = tls_server
    obs, goal = _rows(reference, 2, seed=1)
    with StreamClient(url, ca=str(pki.ca)) as client:
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)


def test_grpc_over_tls_answers_and_refuses_an_insecure_client(tls_server, pki, reference):
    from tritonclient.utils import InferenceServerException

    _, target = tls_server
    obs, goal = _rows(reference, 2, seed=2)
    action = _grpc_infer(target, obs, goal, ssl=True, root_certificates=str(pki.ca))
    np.testing.assert_allclose(action, reference(obs, goal), atol=1e-6)
    with pytest.raises(InferenceServerException) as refused:  # plaintext HTTP/2 to a TLS port: no answer
        _grpc_infer(target, obs, goal)
    assert "UNAVAILABLE" in str(refused.value.status())
    with pytest.raises(InferenceServerException):  # TLS, but the test CA is not trusted
        _grpc_infer(target, obs, goal, ssl=True)


def test_plain_http_and_an_untrusting_client_get_no_answer(tls_server, pki):
    url, _ = tls_server
    with pytest.raises(ServerError) as plain:  # the server expects a TLS handshake and drops the connection
        PolicyClient(url.replace("https://", "http://"), timeout=10)
    assert plain.value.status == 0
    with pytest.raises(ServerError, match="certificate is not trusted") as untrusted:  # the system CAs only
        PolicyClient(url, timeout=10)
    assert untrusted.value.status == 0
    with pytest.raises(ServerError, match="cannot open"):
        StreamClient(url, timeout=10)
    with pytest.raises(ServerError, match="certificate is not trusted"):  # a CA bundle that did not sign it
        PolicyClient(url, ca=str(pki.client_cert), timeout=10)


def test_client_tls_options_are_checked(tls_server, pki, tmp_path):
    url, _ = tls_server
    with pytest.raises(DeepcrlError, match="not an https:// URL"):
        PolicyClient(url.replace("https://", "http://"), ca=str(pki.ca))
    with pytest.raises(DeepcrlError, match="does not exist"):
        PolicyClient(url, ca=str(tmp_path / "missing.pem"))
    with pytest.raises(DeepcrlError, match="needs its client certificate"):
        PolicyClient(url, ca=str(pki.ca), key=str(pki.client_key))


# ---- mutual TLS ----------------------------------------------------------------------------------------------------


def test_mutual_tls_refuses_a_client_without_a_certificate_and_answers_one_with_it(mtls_server, pki, reference):
    from tritonclient.utils import InferenceServerException

    url, target = mtls_server
    obs, goal = _rows(reference, 2, seed=3)
    with pytest.raises(ServerError, match="wants cert= and key=") as refused:
        PolicyClient(url, ca=str(pki.ca), timeout=10)
    assert refused.value.status == 0
    with pytest.raises(ServerError):
        StreamClient(url, ca=str(pki.ca), timeout=10)
    with PolicyClient(url, ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key)) as client:
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)
    with StreamClient(url, ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key)) as client:
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)

    with pytest.raises(InferenceServerException):
        _grpc_infer(target, obs, goal, ssl=True, root_certificates=str(pki.ca))
    action = _grpc_infer(target, obs, goal, ssl=True, root_certificates=str(pki.ca),
                         private_key=str(pki.client_key), certificate_chain=str(pki.client_cert))
    np.testing.assert_allclose(action, reference(obs, goal), atol=1e-6)


# ---- refusals from raw bytes under TLS ---------------------------------------------------------------------------


class _Gate:
    """Wraps the served model: each call blocks until `release` is set."""

    def __init__(self, model):
        self.model, self.name = model, model.name
        self.release, self.entered = threading.Event(), threading.Event()

    def __call__(self, observation, goal):
        self.entered.set()
        assert self.release.wait(30), "the test never released the model"
        return self.model(observation, goal)


def test_a_full_server_refuses_over_https_from_the_raw_bytes_with_503_and_retry_after(policy_onnx, pki, reference):
    """uvicorn decrypts before `connection.py` reads the request's bytes: two pipelined requests over the in-flight
    bound are refused by the raw-bytes path (it counts `admission.full`), each with 503 + Retry-After."""
    from deepcrl.serve.app import RunningServer, create_app
    from deepcrl.serve.tls import ServerTls

    app = create_app(policy_onnx, max_in_flight=1, warmup=1)
    server = app.state.server
    (served,) = server.served.values()
    gate = served.batcher.model = _Gate(served.model)
    full, raw_refusals = server.admission.full, []
    server.admission.full = lambda: (raw_refusals.append(1), full())[1]
    body = json.dumps({"observation": [0.0] * reference.obs_size, "goal": [0.0] * reference.goal_size})
    request = (f"POST /v1/act HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    context = ssl.create_default_context(cafile=str(pki.ca))
    obs, goal = _rows(reference, 1, seed=4)
    with RunningServer(app, tls=ServerTls(pki.cert, pki.key)) as running, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert running.url.startswith("https://")
        held = pool.submit(lambda: PolicyClient(running.url, ca=str(pki.ca)).act(obs[0], goal[0]))
        assert gate.entered.wait(30), "the first request never reached the model"
        host, port = running.sock.getsockname()[:2]
        with socket.create_connection((host, port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request + request)  # one TLS record, decrypted into one read
            answers = b""
            while answers.count(b"HTTP/1.1 503 ") < 2 or not answers.endswith(b"}"):
                chunk = tls.recv(65536)
                assert chunk, answers
                answers += chunk
        gate.release.set()
        np.testing.assert_allclose(held.result(timeout=30), reference(obs, goal)[0], atol=1e-6)
    assert answers.count(b"\r\nretry-after: 1\r\n") == 2, answers
    assert raw_refusals == [1, 1]


# ---- bad files -----------------------------------------------------------------------------------------------------


def _error(capsys, *args: str) -> str:
    from deepcrl.cli import main

    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())  # rich wraps long sentences


def test_bad_tls_files_are_one_sentence_and_exit_2(policy_onnx, pki, tmp_path, capsys):
    model = ("--model", str(policy_onnx), "--port", "0", "--warmup", "1")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.key"
    assert f"--tls-key {missing} does not exist." in _error(capsys, *model, "--tls-cert", str(pki.cert),
                                                            "--tls-key", str(missing))
    assert f"--tls-cert {garbage} is not a PEM certificate" in _error(capsys, *model, "--tls-cert", str(garbage),
                                                                     "--tls-key", str(pki.key))
    assert f"--tls-key {pki.client_key} does not match the certificate --tls-cert {pki.cert}." in _error(
        capsys, *model, "--tls-cert", str(pki.cert), "--tls-key", str(pki.client_key))
    assert f"--tls-key {pki.encrypted_key} is encrypted" in _error(
        capsys, *model, "--tls-cert", str(pki.cert), "--tls-key", str(pki.encrypted_key))
    assert f"--tls-key {pki.cert} is not a PEM private key" in _error(
        capsys, *model, "--tls-cert", str(pki.cert), "--tls-key", str(pki.cert))
    assert f"--tls-client-ca {garbage} is not a PEM certificate" in _error(
        capsys, *model, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(garbage))
    assert "--tls-cert and --tls-key go together" in _error(capsys, *model, "--tls-cert", str(pki.cert))
    assert "--tls-client-ca needs --tls-cert" in _error(capsys, *model, "--tls-client-ca", str(pki.ca))


def test_a_bad_file_stops_the_server_process_before_it_listens(policy_onnx, pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    out = subprocess.run([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(policy_onnx), "--port", "0",
                          "--workers", "2", "--tls-cert", str(garbage), "--tls-key", str(pki.key)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"--tls-cert {garbage} holds a PEM block OpenSSL cannot read" in " ".join(out.stderr.split())
    assert "ready at" not in out.stdout


# ---- the verbs that build a client from a URL ----------------------------------------------------------------------


def test_cli_eval_over_https_equals_eval_of_the_file(tls_server, pki, policy_onnx, capsys):
    from deepcrl.cli import main

    url, _ = tls_server
    args = ["--eval-episodes", "4", "--episode-length", "20", "--seed", "2", "--json"]
    assert main(["eval", "--url", url, "--tls-ca", str(pki.ca), *args]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", str(policy_onnx), *args]) == 0
    local = json.loads(capsys.readouterr().out)
    assert remote["env"] == local["env"] and remote["episodes"] == 4 and remote["success"] == local["success"]
    assert remote["final_distance"] == pytest.approx(local["final_distance"], abs=1e-4)
    assert main(["eval", "--url", url, *args]) == 2  # the test CA is not among the system's
    assert "certificate is not trusted" in capsys.readouterr().err
    assert main(["eval", "--model", str(policy_onnx), "--tls-ca", str(pki.ca), *args]) == 2
    assert "are for an https:// --url" in capsys.readouterr().err


def test_bench_serve_measures_a_tls_server_over_every_protocol(mtls_server, pki, tmp_path):
    from deepcrl.bench.config import BenchServeConfig
    from deepcrl.bench.serve import run

    url, target = mtls_server
    results = run(BenchServeConfig(url=url, grpc_port=int(target.rsplit(":", 1)[1]), tls_ca=pki.ca,
                                   tls_client_cert=pki.client_cert, tls_client_key=pki.client_key,
                                   out=tmp_path / "lat", duration_s=0.2, concurrency=(1,), rates=(), rounds=1,
                                   protocols=("json", "ws", "grpc"), max_minutes=1))
    assert {c["protocol"] for c in results["cells"]} == {"json", "ws", "grpc"}
    for cell in results["cells"]:
        assert cell["errors"] == 0 and cell["requests"] > 0, cell
    assert results["floors"]["noop_http_json"]["errors"] == 0 and results["floors"]["noop_ws"]["errors"] == 0
    assert results["clients"]["PolicyClient_msgpack_c1"]["errors"] == 0
    assert results["clients"]["StreamClient_c1"]["errors"] == 0
    with pytest.raises(DeepcrlError, match="are for an https:// --url"):
        BenchServeConfig(url=url.replace("https://", "http://"), tls_ca=pki.ca)


@pytest.mark.slow  # two server processes
def test_every_worker_serves_tls(policy_onnx, pki, reference, tmp_path, stop_served):
    """`--workers 2`: uvicorn's supervisor hands the TLS settings to each worker, gRPC too."""
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the workers' metric files land under tmp_path
    proc = subprocess.Popen([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(policy_onnx), "--port", "0",
                             "--grpc-port", str(port), "--workers", "2", "--warmup", "1", "--tls-cert", str(pki.cert),
                             "--tls-key", str(pki.key), "--tls-client-ca", str(pki.ca)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert f"(gRPC (TLS) at 127.0.0.1:{port}; 2 workers" in line, line + proc.stderr.read()
        url = line.split("ready at ")[1].split()[0]
        assert url.startswith("https://")
        obs, goal = _rows(reference, 2, seed=5)
        expected = reference(obs, goal)
        mine = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}

        def one(_):  # a new connection each, so the kernel hands them to both workers
            with PolicyClient(url, **mine) as client:
                return client(obs, goal)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for action in pool.map(one, range(40)):
                np.testing.assert_allclose(action, expected, atol=1e-6)
        pids = {f.name for f in tmp_path.glob("deepcrl-metrics-*/counter_*.db")}
        assert len(pids) == 2, pids  # both workers answered over TLS (each writes its own counter file)
        with pytest.raises(ServerError):
            PolicyClient(url, ca=str(pki.ca), timeout=10)
        action = _grpc_infer(f"127.0.0.1:{port}", obs, goal, ssl=True, root_certificates=mine["ca"],
                             private_key=mine["key"], certificate_chain=mine["cert"])
        np.testing.assert_allclose(action, expected, atol=1e-6)
    finally:
        stop_served(proc, 60)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]


@pytest.mark.slow  # two server processes and a short benchmark
def test_the_tls_benchmark_measures_both_modes_without_errors(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_tls.py"
    out = tmp_path / "serve_tls.json"
    done = subprocess.run([sys.executable, str(script), "--duration-s", "0.3", "--rounds", "1", "--connections", "5",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["cells"]) == {f"{t} {m}" for t in ("http v1 msgpack", "ws msgpack", "grpc unary")
                                     for m in ("plain", "tls")}
    for cell in [*results["cells"].values(), *results["fresh_connection"].values()]:
        assert cell["errors"] == 0 and cell["requests"] > 0 and cell["p50_us"] > 0
    assert "loadavg_start" in results["machine"] and "loadavg_end" in results["machine"]
