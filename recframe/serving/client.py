"""A small client of ``recframe serve`` (the ``serve`` extra: grpcio).

Example::

    from recframe.serving.client import RetrievalClient

    with RetrievalClient("127.0.0.1:50051") as client:
        client.health()                                   # {"live": True, "ready": True, ...}
        client.top_k({"user_id": 7, "gender": "F", "age": 25, "occupation": "writer",
                      "zip_prefix": "941", "hist_movie_ids": [50, 181, 1]}, k=10, exclude=[50, 181, 1])
        # -> [(item id, score), ...] best first
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from recframe.protos import serving_pb2


def to_value(value: Any) -> serving_pb2.Value:
    """A request Value of a Python value: int, float, str, a list of one of them, or None."""
    if value is None:
        return serving_pb2.Value()
    if isinstance(value, bool):
        return serving_pb2.Value(int_value=int(value))
    if isinstance(value, int):
        return serving_pb2.Value(int_value=value)
    if isinstance(value, float):
        return serving_pb2.Value(float_value=value)
    if isinstance(value, str):
        return serving_pb2.Value(string_value=value)
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        values = value.tolist() if hasattr(value, "tolist") else list(value)
        if all(isinstance(v, str) for v in values):
            return serving_pb2.Value(string_list=serving_pb2.StringList(values=values))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return serving_pb2.Value(int_list=serving_pb2.IntList(values=values))
        if all(isinstance(v, (int, float)) for v in values):
            return serving_pb2.Value(float_list=serving_pb2.FloatList(values=values))
    raise TypeError(f"cannot send {value!r}: expected an int, float, str, a list of one of them, or None")


def top_k_request(features: Mapping[str, Any], k: int = 0, exclude: Iterable = ()) -> serving_pb2.TopKRequest:
    """The TopKRequest of one user's raw features (exclusions as integer or string ids)."""
    request = serving_pb2.TopKRequest(k=k)
    for name, value in features.items():
        request.features[name].CopyFrom(to_value(value))
    for item in exclude:
        (request.exclude_string_ids if isinstance(item, str) else request.exclude_int_ids).append(item)
    return request


class RetrievalClient:
    """A client of one ``recframe serve`` address; gRPC errors surface as ``grpc.RpcError``
    (``.code()``: INVALID_ARGUMENT for a bad request)."""

    def __init__(self, address: str = "127.0.0.1:50051", timeout: float = 10.0) -> None:
        import grpc

        from recframe.protos import serving_pb2_grpc

        self.timeout = timeout
        self.channel = grpc.insecure_channel(address)
        self.stub = serving_pb2_grpc.RetrievalStub(self.channel)

    def top_k(self, features: Mapping[str, Any], k: int = 0, exclude: Iterable = ()) -> list[tuple[Any, float]]:
        """[(item id, score)] best first for one user's raw features."""
        response = self.stub.TopK(top_k_request(features, k, exclude), timeout=self.timeout)
        ids = list(response.int_ids) or list(response.string_ids)
        return list(zip(ids, response.scores))

    def health(self) -> dict:
        response = self.stub.Health(serving_pb2.HealthRequest(), timeout=self.timeout)
        return {"live": response.live, "ready": response.ready, "export_dir": response.export_dir,
                "num_items": response.num_items}

    def reload(self, export_dir: str | None = None) -> dict:
        response = self.stub.Reload(serving_pb2.ReloadRequest(export_dir=export_dir or ""), timeout=max(self.timeout, 600))
        return {"export_dir": response.export_dir, "num_items": response.num_items}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "RetrievalClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RetrievalClient", "to_value", "top_k_request"]
