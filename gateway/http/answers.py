"""A result sent as the route's JSON answer."""

from fastapi.responses import Response

from gateway.results import Result


def answer(result: Result) -> Response:
    """`result.body()` as JSON, serialized by pydantic-core straight to bytes (no dict, no json.dumps)."""
    return Response(result.body_json(), media_type="application/json")
