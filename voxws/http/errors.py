"""JSON errors of the HTTP API, in the two shapes PROTOCOL.md names: voxws's own for `/v1/voices*`, OpenAI's
for `/v1/audio/*` and `/v1/models`. The guard answers with these; the route families call them too."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

OPENAI_PREFIXES = ("/v1/audio/", "/v1/models")


def voxws_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """`{"error":{"code","message"}}`."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=dict(headers or {}))


def openai_error(status: int, code: str, message: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> JSONResponse:
    """`{"error":{"message","type","param","code"}}`, with OpenAI's error types."""
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else \
        "authentication_error" if status == 401 else "permission_error" if status == 403 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status,
                        headers=dict(headers or {}))


def is_openai(path: str) -> bool:
    return path.startswith(OPENAI_PREFIXES)


def error_for(path: str, status: int, code: str, message: str,
              headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The shape the route family of `path` uses."""
    if is_openai(path):
        return openai_error(status, code, message, headers=headers)
    return voxws_error(status, code, message, headers)
