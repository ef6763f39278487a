"""The blocking and asyncio clients."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from . import _convert
from ._quiver import Client as _Native
from ._response import OnlineResponse, pandas_types
from .errors import InvalidArgument, NotFound

Seconds = Union[float, int, dt.timedelta]


@dataclasses.dataclass(frozen=True)
class TLS:
    """TLS settings: the CA that signs the nodes' certificates (else the system's roots),
    a client certificate and key for mutual TLS, and the name to verify."""

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    server_name: Optional[str] = None


def _seconds(x: Optional[Seconds], what: str) -> Optional[float]:
    if x is None:
        return None
    if isinstance(x, dt.timedelta):
        return x.total_seconds()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise InvalidArgument(f"{what} must be seconds or a timedelta, not {type(x).__name__}")
    return float(x)


def _refs(features: Any, feature_service: Optional[str]) -> List[str]:
    """The feature references of a call that names features or a service (one of them)."""
    refs = _convert.feature_list(features)
    if not refs and feature_service is None:
        raise InvalidArgument("give features=[...] or feature_service=...")
    if refs and feature_service is not None:
        raise InvalidArgument("give features or feature_service, not both")
    return refs


def _deletes(keys: Any) -> list:
    """Push rows deleting ``keys``."""
    return [(k, 0, {}, True) for k in _convert.key_list(keys)]


class _Registry:
    """The client's view of the registry: which entity each view is keyed by (to name the
    key column, read entity rows and pushes). Re-read when a name is not known."""

    def __init__(self, native: _Native) -> None:
        self._native = native
        self._snapshot: Optional[Dict[str, Any]] = None

    def snapshot(self, refresh: bool = False) -> Dict[str, Any]:
        if self._snapshot is None or refresh:
            self._snapshot = self._native.registry()
        return self._snapshot

    def _find(self, kind: str, name: str) -> Optional[Dict[str, Any]]:
        for refresh in (False, True):
            for item in self.snapshot(refresh)[kind]:
                if item["name"] == name:
                    return item
        return None

    def view(self, name: str) -> Dict[str, Any]:
        v = self._find("views", name)
        if v is None:
            raise NotFound(f"view {name!r} is not registered")
        return v

    def entity_of(self, features: List[str], feature_service: Optional[str]) -> Optional[str]:
        """The entity of a lookup's first view (None if the names are unknown: the
        native client then refuses the lookup with the precise reason)."""
        refs = features
        if feature_service is not None:
            s = self._find("feature_services", feature_service)
            refs = s["features"] if s else []
        for r in refs:
            view_name = r.split(":", 1)[0]
            v = self._find("views", view_name)
            if v is not None:
                return v["entity"]
        return None

    def key_type(self, entity: str) -> Optional[str]:
        e = self._find("entities", entity)
        return e["key_type"] if e else None


class _Base:
    def __init__(
        self,
        seeds: Union[str, Sequence[str]],
        *,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        tls: Union[None, bool, TLS] = None,
        deadline: Optional[Seconds] = None,
        hedge_after: Optional[Seconds] = None,
        connect_to: Optional[Dict[str, str]] = None,
    ) -> None:
        if isinstance(seeds, str):
            seeds = [s.strip() for s in seeds.split(",") if s.strip()]
        t = tls if isinstance(tls, TLS) else TLS()
        self._native = _Native(
            list(seeds),
            token=token,
            token_file=None if token_file is None else os.fspath(token_file),
            tls=bool(tls),
            tls_ca=t.ca,
            tls_cert=t.cert,
            tls_key=t.key,
            tls_server_name=t.server_name,
            deadline_secs=_seconds(deadline, "deadline"),
            hedge_after_secs=_seconds(hedge_after, "hedge_after"),
            connect_to=list((connect_to or {}).items()),
        )
        self._registry = _Registry(self._native)
        self._entities: Dict[tuple, str] = {}

    # ---- shared argument handling -------------------------------------------------

    def _lookup_args(
        self,
        features: Any,
        feature_service: Optional[str],
        keys: Any,
        entity_rows: Optional[Iterable[dict]],
        min_watermarks: Optional[str],
        as_of: Any,
        exclude_late_arrivals: bool,
        event_times: bool,
        deadline: Optional[Seconds],
    ) -> tuple:
        refs = _refs(features, feature_service)
        if (keys is None) == (entity_rows is None):
            raise InvalidArgument("give keys=[...] or entity_rows=[...] (one of them)")
        entity = self._entity_of(refs, feature_service)
        per_entity: Optional[Dict[str, list]] = None
        if entity_rows is not None:
            entity_rows = list(entity_rows)
            several = any(isinstance(r, dict) and len(r) > 1 for r in entity_rows)
            if several:
                per_entity = _convert.entity_rows_by_entity(entity_rows)
            else:
                key_list = _convert.entity_rows_keys(entity_rows, entity)
        elif isinstance(keys, dict):
            per_entity = {str(e): _convert.key_list(k) for e, k in keys.items()}
        else:
            key_list = _convert.key_list(keys)
        more_keys: List[tuple] = []
        if per_entity is not None:
            # Features spanning entities: one key per entity per row (the native client
            # splits the lookup per entity and joins the answer).
            if not per_entity:
                raise InvalidArgument("keys per entity: give at least one entity's keys")
            (entity, key_list), *rest = per_entity.items()
            more_keys = rest
            keys_arg: Any = per_entity
        else:
            keys_arg = key_list
        as_of_one, as_of_each = None, None
        if as_of is not None:
            if _convert.is_sequence(as_of):
                as_of_each = _convert.micros_many(as_of, len(key_list))
            else:
                as_of_one = _convert.micros(as_of, "as_of")
        elif exclude_late_arrivals:
            raise InvalidArgument("exclude_late_arrivals needs as_of")
        if min_watermarks is not None and not isinstance(min_watermarks, str):
            raise InvalidArgument("min_watermarks is a token string (from push or a response's .watermark)")
        args = (refs, feature_service, keys_arg)
        kwargs = dict(
            min_watermark=min_watermarks,
            as_of=as_of_one,
            as_of_per_key=as_of_each,
            exclude_late_arrivals=exclude_late_arrivals,
            event_times=event_times,
            deadline_secs=_seconds(deadline, "deadline"),
        )
        return args, kwargs, key_list, entity or "key", more_keys

    def _entity_of(self, refs: List[str], feature_service: Optional[str]) -> Optional[str]:
        """The lookup's entity, remembered per feature list (a known entity only: unknown
        names are looked up again, and refused by the native client)."""
        key = (tuple(refs), feature_service)
        entity = self._entities.get(key)
        if entity is None:
            entity = self._registry.entity_of(refs, feature_service)
            if entity is not None:
                if len(self._entities) >= 1024:
                    self._entities.clear()
                self._entities[key] = entity
        return entity

    def _push_rows(self, view: str, data: Any, key_column: Optional[str], event_time_column: Optional[str]) -> list:
        v = self._registry.view(view)
        key_column = key_column or v["entity"]
        return _convert.rows_to_push(data, key_column, event_time_column)

    # ---- the registry ------------------------------------------------------------

    def _list_views(self) -> List[Dict[str, Any]]:
        return list(self._registry.snapshot(refresh=True)["views"])

    def _list_feature_services(self) -> List[Dict[str, Any]]:
        return list(self._registry.snapshot(refresh=True)["feature_services"])

    def _describe_view(self, name: str) -> Dict[str, Any]:
        return json.loads(self._native.describe_view(name))

    # ---- training sets ---------------------------------------------------------------

    def _export_file(self, labels: str, out: str, refs: List[str], feature_service: Optional[str],
                     **options: Any) -> int:
        """The native export of the label file ``labels`` to ``out``; the rows written."""
        rows, _ = self._native.export(labels, out, refs, feature_service, **options)
        return rows

    def _historical(
        self,
        entity_df: Any,
        features: Any,
        feature_service: Optional[str],
        key_column: Optional[str],
        timestamp_column: str,
        exclude_late_arrivals: bool,
        status_columns: bool,
        nullable: bool,
        progress: Optional[Callable[[int], None]],
    ):
        import pyarrow as pa
        import pyarrow.parquet as pq

        refs = _refs(features, feature_service)
        entity = self._entity_of(refs, feature_service)
        key_column = key_column or entity or "key"
        if not hasattr(entity_df, "columns"):
            raise InvalidArgument("entity_df must be a pandas DataFrame")
        for col, what in ((key_column, "entity key"), (timestamp_column, "timestamp")):
            if col not in entity_df.columns:
                raise InvalidArgument(
                    f"entity_df has no {what} column {col!r} (it has {list(entity_df.columns)})"
                )
        int_keys = entity is not None and self._registry.key_type(entity) == "int64"
        with tempfile.TemporaryDirectory(prefix="quiver-export-") as tmp:
            labels = os.path.join(tmp, "labels.parquet")
            out = os.path.join(tmp, "train.parquet")
            pq.write_table(pa.Table.from_pandas(entity_df, preserve_index=False), labels)
            self._export_file(
                labels, out, refs, feature_service, key_column=key_column, time_column=timestamp_column,
                int_keys=int_keys, exclude_late_arrivals=exclude_late_arrivals,
                status_columns=status_columns, progress=progress,
            )
            table = pq.read_table(out)
        return table.to_pandas(types_mapper=pandas_types(nullable))


class Client(_Base):
    """A client of a quiver cluster, on the Rust smart client: keys are routed to their
    shards' replicas, fanned out in parallel, failed over and hedged within the deadline,
    and reads never go back in time (the session's watermarks).

    ``seeds`` are any nodes' ``host:port`` (a list, or comma separated). Authenticate with
    ``token`` or ``token_file``; ``tls=True`` (system roots) or ``tls=TLS(ca=..., cert=...,
    key=...)``. ``deadline`` bounds every call (seconds or a timedelta). Safe to share
    between threads; every blocking call releases the GIL while it waits.
    """

    def get_online_features(
        self,
        features: Optional[Sequence[str]] = None,
        *,
        feature_service: Optional[str] = None,
        keys: Any = None,
        entity_rows: Optional[Iterable[dict]] = None,
        min_watermarks: Optional[str] = None,
        as_of: Any = None,
        exclude_late_arrivals: bool = False,
        event_times: bool = False,
        deadline: Optional[Seconds] = None,
    ) -> OnlineResponse:
        """Looks up features (``["view:feature", "view:*"]`` or a ``feature_service``) for a
        batch of entity ``keys`` (or Feast-style ``entity_rows=[{"user": "u1"}]``).

        ``min_watermarks``: a token from :meth:`push` or a response — read at least that
        state (read-your-writes). ``as_of``: one time (datetime, µs, ISO text) or one per
        key — the values as of then, from views with ``history`` (by event time; with
        ``exclude_late_arrivals=True`` exactly what a lookup at that time returned).
        ``event_times=True`` also returns each value's event time.

        Raises :class:`InvalidArgument` / :class:`NotFound` before sending anything for a
        bad request, :class:`DeadlineExceeded` when no replica answered in time.
        """
        args, kwargs, keys_sent, key_name, more_keys = self._lookup_args(
            features, feature_service, keys, entity_rows, min_watermarks, as_of,
            exclude_late_arrivals, event_times, deadline,
        )
        native = self._native.get_online_features(*args, **kwargs)
        return OnlineResponse(native, keys_sent, key_name, more_keys)

    def push(
        self,
        view: str,
        data: Any,
        *,
        key_column: Optional[str] = None,
        event_time_column: Optional[str] = None,
    ) -> str:
        """Writes rows (a DataFrame or a list of dicts) into ``view``: produced to its
        topic, then ingested by every replica. The key column is the view's entity name
        (or ``key_column``); ``event_time_column`` (default ``event_timestamp`` if present,
        else the time of the push) holds datetimes or µs. Other columns are features;
        None / pd.NA are nulls (and NaN for every type but float64).

        Returns a watermark token: pass it as ``min_watermarks`` and the read sees the
        write. Every row is checked first; nothing is sent if one is wrong.
        """
        rows = self._push_rows(view, data, key_column, event_time_column)
        return self._native.push(view, rows)

    def delete(self, view: str, keys: Any) -> str:
        """Deletes entities' rows from ``view`` (tombstones); returns a watermark token."""
        return self._native.push(view, _deletes(keys))

    def get_historical_features(
        self,
        entity_df: Any,
        features: Optional[Sequence[str]] = None,
        *,
        feature_service: Optional[str] = None,
        exclude_late_arrivals: bool = False,
        key_column: Optional[str] = None,
        timestamp_column: str = "event_timestamp",
        status_columns: bool = False,
        nullable: bool = False,
        progress: Optional[Callable[[int], None]] = None,
    ):
        """A point-in-time correct training set: ``entity_df`` (the entity key column,
        named after the entity or ``key_column``; ``timestamp_column``; any label
        columns) with each feature's value as of that row's time, as a DataFrame.

        By default a value is the version with the greatest event time at or before the
        row's time (within the view's TTL then); ``exclude_late_arrivals=True`` counts only
        versions that had arrived by then — exactly what online lookups returned at that
        time. Runs through the same export path as ``quiverctl export``, streamed in
        chunks across the shards. ``progress(rows_done)`` is called after each chunk.
        """
        return self._historical(
            entity_df, features, feature_service, key_column, timestamp_column,
            exclude_late_arrivals, status_columns, nullable, progress,
        )

    def export_training_set(
        self,
        labels: str,
        out: str,
        features: Optional[Sequence[str]] = None,
        *,
        feature_service: Optional[str] = None,
        key_column: Optional[str] = None,
        timestamp_column: str = "event_timestamp",
        time_unit: str = "us",
        exclude_late_arrivals: bool = False,
        status_columns: bool = False,
        chunk_rows: int = 1000,
        parallel: int = 4,
        progress: Optional[Callable[[int], None]] = None,
        through_node: Optional[str] = None,
    ) -> int:
        """:meth:`get_historical_features` from file to file, for label sets larger than
        memory: reads the label file ``labels`` (Parquet, or CSV with a header) and writes
        the training set to the Parquet file ``out`` — the label columns as they are, then
        one column per feature (``--status-columns`` style ``__status`` columns with
        ``status_columns=True``). Streamed in chunks of ``chunk_rows`` with ``parallel``
        chunks in flight, so memory stays at a few chunks whatever the file's size (the
        same path as ``quiverctl export``). Integer time columns are in ``time_unit``
        (``s``, ``ms``, ``us``, ``ns``). Returns the rows written; nothing is left at
        ``out`` after an error.

        ``through_node="host:port"`` streams the whole export through that one node's
        ``ExportFeatures`` RPC (the node reads the shards it lacks from their replicas on
        the caller's behalf) — for a machine that reaches one node or a load balancer but
        not every node. Same values; one network hop more per key.
        """
        refs = _refs(features, feature_service)
        entity = self._entity_of(refs, feature_service)
        int_keys = entity is not None and self._registry.key_type(entity) == "int64"
        if chunk_rows < 1 or parallel < 1:
            raise InvalidArgument(f"chunk_rows ({chunk_rows}) and parallel ({parallel}) must be at least 1")
        return self._export_file(
            os.fspath(labels), os.fspath(out), refs, feature_service,
            key_column=key_column or entity or "key", time_column=timestamp_column, time_unit=time_unit,
            int_keys=int_keys, exclude_late_arrivals=exclude_late_arrivals, status_columns=status_columns,
            chunk_rows=chunk_rows, parallel=parallel, progress=progress, through_node=through_node,
        )

    def list_views(self) -> List[Dict[str, Any]]:
        """Registered views: name, version, entity, topic, TTL and ``features`` as
        ``(name, type)`` pairs."""
        return self._list_views()

    def describe_view(self, name: str) -> Dict[str, Any]:
        """A view's full definition (source, features, TTL, history, the feature services
        using it, a version being built)."""
        return self._describe_view(name)

    def list_feature_services(self) -> List[Dict[str, Any]]:
        """Registered feature services and their resolved ``view:feature`` references."""
        return self._list_feature_services()

    def cluster_map(self) -> Dict[str, Any]:
        """The cluster map: epoch, and each shard's replicas ``(node id, state)``."""
        return self._native.cluster_map()

    def stats(self) -> Dict[str, int]:
        """Counters since the client was built (calls, sub-requests, retries, hedges)."""
        return self._native.stats()

    @property
    def session_watermark(self) -> str:
        """The highest state this client has read, as a watermark token."""
        return self._native.session_watermark()


class AsyncClient(_Base):
    """The asyncio flavour of :class:`Client`: the same arguments, awaitable methods.
    Lookups and pushes run on the client's own runtime (no thread per call); many can be
    in flight at once from one event loop."""

    async def get_online_features(
        self,
        features: Optional[Sequence[str]] = None,
        *,
        feature_service: Optional[str] = None,
        keys: Any = None,
        entity_rows: Optional[Iterable[dict]] = None,
        min_watermarks: Optional[str] = None,
        as_of: Any = None,
        exclude_late_arrivals: bool = False,
        event_times: bool = False,
        deadline: Optional[Seconds] = None,
    ) -> OnlineResponse:
        """As :meth:`Client.get_online_features`."""
        args, kwargs, keys_sent, key_name, more_keys = self._lookup_args(
            features, feature_service, keys, entity_rows, min_watermarks, as_of,
            exclude_late_arrivals, event_times, deadline,
        )
        native = await self._native.get_online_features_async(*args, **kwargs)
        return OnlineResponse(native, keys_sent, key_name, more_keys)

    async def push(
        self,
        view: str,
        data: Any,
        *,
        key_column: Optional[str] = None,
        event_time_column: Optional[str] = None,
    ) -> str:
        """As :meth:`Client.push`."""
        rows = self._push_rows(view, data, key_column, event_time_column)
        return await self._native.push_async(view, rows)

    async def delete(self, view: str, keys: Any) -> str:
        """As :meth:`Client.delete`."""
        return await self._native.push_async(view, _deletes(keys))

    async def get_historical_features(self, entity_df: Any, features: Optional[Sequence[str]] = None, **kwargs: Any):
        """As :meth:`Client.get_historical_features` (run on a worker thread)."""
        opts = dict(
            feature_service=None, exclude_late_arrivals=False, key_column=None,
            timestamp_column="event_timestamp", status_columns=False, nullable=False, progress=None,
        )
        unknown = set(kwargs) - set(opts)
        if unknown:
            raise InvalidArgument(f"unknown arguments {sorted(unknown)}")
        opts.update(kwargs)
        return await asyncio.to_thread(
            self._historical, entity_df, features, opts["feature_service"], opts["key_column"],
            opts["timestamp_column"], opts["exclude_late_arrivals"], opts["status_columns"],
            opts["nullable"], opts["progress"],
        )

    async def list_views(self) -> List[Dict[str, Any]]:
        """As :meth:`Client.list_views`."""
        return await asyncio.to_thread(self._list_views)

    async def describe_view(self, name: str) -> Dict[str, Any]:
        """As :meth:`Client.describe_view`."""
        return await asyncio.to_thread(self._describe_view, name)

    async def list_feature_services(self) -> List[Dict[str, Any]]:
        """As :meth:`Client.list_feature_services`."""
        return await asyncio.to_thread(self._list_feature_services)

    def stats(self) -> Dict[str, int]:
        """As :meth:`Client.stats`."""
        return self._native.stats()
