"""``recframe serve``: a gRPC top-K service over an export and an item index.

The service (``protos/recframe/protos/serving.proto``) takes a user's raw features — the
columns the exported user tower reads, as ``tower.json`` names them — and answers with the
top-K catalogue items and their scores, optionally excluding ids sent with the request.

- **Catalogue**: the item tower embeds ``--items`` (a Parquet/CSV table with the item
  tower's columns; default: the export's ``item_input_path``) at start-up, or
  ``--item_embeddings`` gives the vectors (``recframe predict``'s output: id + embedding).
  The index is exact (``flat``: matrix product on ``--device``, the ranking
  ``recframe evaluate`` and ``recframe retrieve`` use) or faiss ``ivf`` / ``hnsw``.
- **Batching**: concurrent requests wait at most ``max_wait_ms`` to be embedded and searched
  together (at most ``max_batch_size`` per tower call); a request that cannot be parsed is
  answered alone with its error and never fails the others.
- **Reload**: ``Reload`` (or SIGHUP: the current directory again) loads the new export and
  builds its index beside the serving one, then switches in one assignment; batches in flight
  finish on the old one, so no request is lost.
- **Errors**: a missing, unknown or mistyped feature, or a value the features cannot read,
  gets ``INVALID_ARGUMENT`` with a message naming the column; anything else ``INTERNAL``;
  neither stops the server.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recframe.errors import RecframeError, did_you_mean
from recframe.features.hashing import item_keys
from recframe.metrics.item_index import ItemIndex
from recframe.metrics.retrieval import exact_top_k
from recframe.serving.tower import Tower, load_tower

logger = logging.getLogger("recframe")

INDEXES = ("flat", "ivf", "hnsw")


class RequestError(RecframeError, ValueError):
    """A request the service cannot answer as asked (answered with INVALID_ARGUMENT)."""


@dataclass
class ServeOptions:
    """What ``recframe serve`` serves, and how (the fields are its flags)."""

    export_dir: str
    items: str | None = None
    item_embeddings: str | None = None
    index: str = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    top_k: int = 10
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    device: str | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 64

    def __post_init__(self) -> None:
        if self.index not in INDEXES:
            raise RequestError(f"--index: got {self.index!r}, expected one of {', '.join(INDEXES)}")
        for name in ("top_k", "max_batch_size", "workers"):
            if getattr(self, name) < 1:
                raise RequestError(f"--{name}: got {getattr(self, name)}, expected >= 1")
        if self.items and self.item_embeddings:
            raise RequestError("--items and --item_embeddings: give one (a table to embed, or the vectors)")


# ---- the catalogue ----------------------------------------------------------------------------

class Catalogue:
    """The items a service can return: their ids, and an index over their embeddings.

    Args:
        ids: (N,) item ids (integers or strings).
        embeddings: (N, D) float32.
        options: the index kind and its parameters; the device of the exact index.
    """

    def __init__(self, ids: pa.Array, embeddings: np.ndarray, options: ServeOptions) -> None:
        self.ids = ids
        self.int_ids = pa.types.is_integer(ids.type)
        self.id_values = ids.to_numpy(zero_copy_only=False) if self.int_ids else np.array(ids.to_pylist(), dtype=object)
        self.rows = ItemIndex(item_keys(ids))
        self.options = options
        self.dim = embeddings.shape[1]
        if options.index == "flat":
            from recframe.device import resolve_device

            self.device = resolve_device(options.device or "cpu")
            self.embeddings = torch.from_numpy(np.ascontiguousarray(embeddings, np.float32)).to(self.device)
            self.index = None
        else:
            from recframe.serving.index import build_index

            self.index = build_index(np.ascontiguousarray(embeddings, np.float32), options.index, options.nlist,
                                     options.hnsw_m, options.ef_construction)

    def __len__(self) -> int:
        return len(self.ids)

    def exclusion_rows(self, int_ids, string_ids) -> np.ndarray:
        """The rows of the ids to exclude (ids not in the catalogue are ignored)."""
        values = list(int_ids) if self.int_ids else list(string_ids)
        if not values:
            return np.zeros(0, np.int64)
        rows = self.rows.lookup(item_keys(pa.array(values, self.ids.type)))
        return rows[rows >= 0]

    def search(self, users: np.ndarray, k: int, exclude: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) (B, k) of the users' top k, each row's exclusions left out."""
        offsets = np.zeros(len(exclude) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in exclude], out=offsets[1:])
        values = np.concatenate(exclude) if exclude else np.zeros(0, np.int64)
        if self.index is None:
            jagged = (torch.from_numpy(values), torch.from_numpy(offsets)) if len(values) else None
            scores, rows = exact_top_k(torch.from_numpy(users).to(self.device), self.embeddings, k, jagged)
            return scores.cpu().numpy(), rows.cpu().numpy()
        from recframe.serving.index import search_index

        return search_index(self.index, users, k, (values, offsets) if len(values) else None, self.options.nprobe,
                            self.options.ef_search)


def read_item_embeddings(path: str) -> tuple[pa.Array, np.ndarray]:
    """(ids, (N, D) vectors) of ``recframe predict``'s output: an id column and ``embedding``."""
    table = pq.read_table(path)
    if "embedding" not in table.column_names or table.num_columns != 2:
        raise RequestError(f"--item_embeddings {path}: expected two columns, an id and 'embedding' (what recframe "
                           f"predict writes), got {table.column_names}")
    id_column = next(c for c in table.column_names if c != "embedding")
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    return table.column(id_column).combine_chunks(), vectors


@dataclass
class Served:
    """One loaded export: its user tower and its catalogue."""

    export_dir: str
    user: Tower
    catalogue: Catalogue

    @classmethod
    def load(cls, options: ServeOptions, export_dir: str) -> "Served":
        user = load_tower(Path(export_dir) / "user", options.device)
        if options.item_embeddings:
            ids, vectors = read_item_embeddings(options.item_embeddings)
        else:
            item = load_tower(Path(export_dir) / "item", options.device)
            items = options.items or _exported_item_path(export_dir)
            from recframe.data.prepare import read_table

            table = read_table(items, "--items")
            vectors = item.embed(table, batch_size=4096, source=items)
            ids = table.column(item.id_column).combine_chunks()
        if vectors.shape[1] != user.output_dim:
            raise RequestError(f"the item vectors have {vectors.shape[1]} dimensions, the user tower of {export_dir} "
                               f"{user.output_dim}")
        return cls(str(export_dir), user, Catalogue(ids, vectors, options))


def _exported_item_path(export_dir: str) -> str:
    from recframe.config import load_pipeline_config

    path = load_pipeline_config(str(Path(export_dir) / "item" / "pipeline.config")).item_input_path
    if not path:
        raise RequestError(f"{export_dir}: its config has no item_input_path; pass --items or --item_embeddings")
    return path


# ---- requests ---------------------------------------------------------------------------------

_LIST_TYPES = {"int_list": pa.list_(pa.int64()), "float_list": pa.list_(pa.float64()),
               "string_list": pa.list_(pa.string())}
_SCALAR_TYPES = {"int_value": pa.int64(), "float_value": pa.float64(), "string_value": pa.string()}


def request_table(features, tower: Tower) -> pa.Table:
    """The one-row table of a request's features (``map<string, Value>``), checked against the
    columns and types the user tower reads."""
    columns = tower.input_columns
    unknown = [name for name in features if name not in columns]
    if unknown:
        raise RequestError(f"unknown feature column '{unknown[0]}'{did_you_mean(unknown[0], columns)}; the user tower "
                           f"reads {columns}")
    arrays = {}
    for name in columns:
        if name not in features:
            raise RequestError(f"missing feature column '{name}'; the user tower reads {columns}")
        value = features[name]
        kind = value.WhichOneof("kind")
        if kind is None:
            arrays[name] = pa.nulls(1)
        elif kind in _SCALAR_TYPES:
            arrays[name] = pa.array([getattr(value, kind)], _SCALAR_TYPES[kind])
        else:
            arrays[name] = pa.array([list(getattr(value, kind).values)], _LIST_TYPES[kind])
    table = pa.table(arrays)
    from recframe.features import FeatureInputError

    try:
        tower.check_columns(table)
    except FeatureInputError as e:
        raise RequestError(str(e)) from None
    return table


@dataclass
class _Pending:
    table: pa.Table
    k: int
    exclude: tuple
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Batcher:
    """Embeds and searches concurrent requests together (one tower call per batch)."""

    def __init__(self, current, max_batch_size: int, max_wait_ms: float) -> None:
        self.current = current  # () -> Served: the export serving now
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000.0
        self.queue: queue.Queue[_Pending | None] = queue.Queue()
        # Requests between their arrival and their answer (parsing included): when every one of
        # them is in the batch, waiting for more would only add latency.
        self.in_flight = 0
        self._count_lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="recframe-batcher", daemon=True)
        self.thread.start()

    def arrived(self) -> None:
        with self._count_lock:
            self.in_flight += 1

    def left(self) -> None:
        with self._count_lock:
            self.in_flight -= 1

    def submit(self, table: pa.Table, k: int, exclude: tuple, timeout: float | None = None):
        """(Served, scores (k,), rows (k,)) of one request; raises its error."""
        pending = _Pending(table, k, exclude)
        self.queue.put(pending)
        if not pending.done.wait(timeout):
            raise TimeoutError("the request was not answered in time")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < min(self.max_batch_size, self.in_flight):
                remaining = deadline - time.perf_counter()
                try:
                    item = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            self._answer(batch, self.current())

    def _answer(self, batch: list[_Pending], served: Served) -> None:
        try:
            table = batch[0].table if len(batch) == 1 else pa.concat_tables([p.table for p in batch],
                                                                            promote_options="permissive")
            users = served.user.embed(table)
        except Exception as e:  # noqa: BLE001 - a request the features cannot read: find it alone
            if len(batch) > 1:
                for pending in batch:
                    self._answer([pending], served)
                return
            batch[0].error = (e if isinstance(e, RequestError) else RequestError(str(e)) if isinstance(e, RecframeError)
                              else RequestError(f"cannot parse the request: {e}"))
            batch[0].done.set()
            return
        try:
            k = max(p.k for p in batch)
            exclude = [served.catalogue.exclusion_rows(*p.exclude) for p in batch]
            scores, rows = served.catalogue.search(users, min(k, len(served.catalogue)), exclude)
            for i, pending in enumerate(batch):
                pending.result = (served, scores[i, :pending.k], rows[i, :pending.k])
        except Exception as e:  # noqa: BLE001 - reported to every request of the batch, the server goes on
            logger.exception("search failed")
            for pending in batch:
                pending.error = e
        for pending in batch:
            pending.done.set()


# ---- the service ------------------------------------------------------------------------------

class RetrievalService:
    """The gRPC service: owns the export serving now, the batcher, reloads."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.served: Served | None = None
        self._reload_lock = threading.Lock()
        self.reload(options.export_dir)
        self.batcher = Batcher(lambda: self.served, options.max_batch_size, options.max_wait_ms)

    def reload(self, export_dir: str | None = None) -> Served:
        """Load ``export_dir`` (default: the current one again) beside the serving export,
        then switch to it."""
        with self._reload_lock:
            target = export_dir or (self.served.export_dir if self.served is not None else self.options.export_dir)
            fresh = Served.load(self.options, target)
            self.served = fresh  # one assignment: batches in flight keep the export they started with
            logger.info("serving %s (%d items)", target, len(fresh.catalogue))
            return fresh

    def top_k(self, request, timeout: float | None = None):
        """(Served, scores, rows) of a TopKRequest."""
        self.batcher.arrived()
        try:
            table = request_table(request.features, self.served.user)
            k = request.k or self.options.top_k
            return self.batcher.submit(table, k, (request.exclude_int_ids, request.exclude_string_ids), timeout)
        finally:
            self.batcher.left()

    def close(self) -> None:
        self.batcher.stop()


def _servicer(service: RetrievalService):
    import grpc

    from recframe.protos import serving_pb2, serving_pb2_grpc

    class Servicer(serving_pb2_grpc.RetrievalServicer):
        def TopK(self, request, context):
            try:
                served, scores, rows = service.top_k(request, timeout=context.time_remaining())
            except RequestError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            except TimeoutError as e:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(e))
            except Exception as e:  # noqa: BLE001 - the server stays up
                logger.exception("TopK failed")
                context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            rows = rows[rows >= 0]
            response = serving_pb2.TopKResponse(scores=scores[:len(rows)].tolist(), export_dir=served.export_dir)
            ids = served.catalogue.id_values[rows]
            if served.catalogue.int_ids:
                response.int_ids.extend(ids.tolist())
            else:
                response.string_ids.extend(ids.tolist())
            return response

        def Health(self, request, context):
            served = service.served
            return serving_pb2.HealthResponse(live=True, ready=served is not None,
                                              export_dir=served.export_dir if served else "",
                                              num_items=len(served.catalogue) if served else 0)

        def Reload(self, request, context):
            try:
                served = service.reload(request.export_dir or None)
            except Exception as e:  # noqa: BLE001 - a bad export leaves the serving one in place
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"reload failed, still serving "
                                                                   f"{service.served.export_dir}: {e}")
            return serving_pb2.ReloadResponse(export_dir=served.export_dir, num_items=len(served.catalogue))

    return Servicer()


class Server:
    """A running ``recframe serve``: ``start()`` binds and returns; ``wait()`` blocks; ``stop()``.

    Example::

        server = Server(ServeOptions("out/export", port=0)).start()   # port 0: any free port
        client = RetrievalClient(f"127.0.0.1:{server.port}")
        client.top_k({"user_id": 7, "hist_movie_ids": [1, 2]}, k=10)
        server.stop()
    """

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.service = RetrievalService(options)
        self.port: int | None = None
        self._grpc = None

    def start(self) -> "Server":
        import grpc

        from recframe.protos import serving_pb2_grpc

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=self.options.workers),
                                 options=[("grpc.so_reuseport", 0)])
        serving_pb2_grpc.add_RetrievalServicer_to_server(_servicer(self.service), self._grpc)
        self.port = self._grpc.add_insecure_port(f"{self.options.host}:{self.options.port}")
        if not self.port:
            raise RequestError(f"cannot listen on {self.options.host}:{self.options.port}")
        self._grpc.start()
        return self

    def wait(self) -> None:
        self._grpc.wait_for_termination()

    def stop(self, grace: float = 5.0) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        self.service.close()


def serve(options: ServeOptions) -> None:
    """Run the service until SIGINT / SIGTERM (SIGHUP reloads the current export)."""
    server = Server(options).start()
    served = server.service.served
    print(f"serving {served.export_dir} ({len(served.catalogue):,} items, {options.index} index) on "
          f"{options.host}:{server.port}", flush=True)

    def reload_in_background(*_):
        def run():
            try:
                server.service.reload()
            except Exception:  # noqa: BLE001 - keep serving the current export
                logger.exception("reload on SIGHUP failed")
        threading.Thread(target=run, daemon=True).start()

    def stop(*_):
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGHUP, reload_in_background)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait()


__all__ = ["Batcher", "Catalogue", "INDEXES", "RequestError", "RetrievalService", "ServeOptions", "Served", "Server",
           "read_item_embeddings", "request_table", "serve"]
