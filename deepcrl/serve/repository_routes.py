"""HTTP routes of the model repository (Triton's repository extension): ``/v2/repository/index`` and
``/v2/repository/models/{name}/load|unload``, over `repository.Repository` (gRPC's are in `grpc_service.py`)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from deepcrl.serve import protocol
from deepcrl.serve.control import check_load_parameters
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.repository import Repository
from deepcrl.serve.shared import NEEDS_TOKEN, PolicyServer


def add_routes(app: FastAPI, server: PolicyServer, repo: Repository) -> None:
    """Add ``/v2/repository/index`` and ``/v2/repository/models/{name}/load|unload`` to `app`."""

    def error(exc: RequestError) -> Response:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return Response(protocol.encode({"error": str(exc)}, "json"), exc.status, headers=headers,
                        media_type=protocol.JSON)

    async def body_of(request: Request) -> dict:
        raw = await request.body()
        if not raw.strip():
            return {}
        parsed = protocol.decode(raw, "json")
        if not isinstance(parsed, dict):
            raise RequestError(400, "the body must be a JSON map.")
        return parsed

    async def index(request: Request) -> Response:
        try:
            if not server.authorized(request.headers):
                raise RequestError(401, NEEDS_TOKEN)
            body = await body_of(request) if request.method == "POST" else {}
            return Response(protocol.encode(repo.index(bool(body.get("ready", False))), "json"),
                            media_type=protocol.JSON)
        except RequestError as exc:
            return error(exc)

    def change(action):
        """A load or unload route: authorised, the control mode allows it, no Triton parameters it ignores."""

        async def route(request: Request, name: str) -> Response:
            try:
                if not server.authorized(request.headers):
                    raise RequestError(401, NEEDS_TOKEN)
                repo.check_control()
                check_load_parameters((await body_of(request)).get("parameters", {}))
                await action(name)
                return Response(b"", 200)
            except RequestError as exc:
                return error(exc)

        return route

    app.add_api_route("/v2/repository/index", index, methods=["GET", "POST"])
    app.add_api_route("/v2/repository/models/{name}/load", change(repo.load), methods=["POST"])
    app.add_api_route("/v2/repository/models/{name}/unload", change(repo.unload), methods=["POST"])
