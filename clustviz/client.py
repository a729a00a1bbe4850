"""A small HTTP client for notebooks and scripts.

>>> from clustviz.client import Client
>>> c = Client("http://127.0.0.1:8000")
>>> df = c.project("smollm2-…", "Students were outraged over the administration's new", "umap")
>>> c.plot(..., "tsne")                  # shows inline in Jupyter
>>> points = c.batch("smollm2-…", projectors=["umap", "clusterplot"])   # progress bar
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from clustviz.event_stream import follow_events, follow_with_bar

__all__ = ["RESULT_FORMATS", "Client", "ClientError", "PlotImage"]

#: Output file suffix -> the export format the server writes for it.
RESULT_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json"}


class ClientError(Exception):
    """An error answer of the server, with its HTTP status and stable ``code``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class PlotImage(bytes):
    """PNG/SVG bytes that Jupyter displays inline."""

    def _repr_png_(self) -> bytes | None:
        return bytes(self) if self[:4] == b"\x89PNG" else None

    def _repr_svg_(self) -> str | None:
        return None if self[:4] == b"\x89PNG" else self.decode()


class Client:
    """Talks to one clustviz server. ``api_key`` is sent as ``X-API-Key`` when given."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 300) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                payload = response.json()
                code, detail = payload.get("code", "error"), payload.get("detail", response.text)
            except ValueError:
                code, detail = "error", response.text
            raise ClientError(response.status_code, code, detail)
        return response

    def _check_stream(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            response.read()  # a streamed error answer: its body, for the message
            self._check(response)

    def datasets(self) -> list[dict[str, Any]]:
        return self._check(self._http.get("/datasets")).json()

    def preambles(self, dataset: str, q: str | None = None, limit: int = 1000) -> pl.DataFrame:
        params: dict[str, Any] = {"limit": limit, **({"q": q} if q else {})}
        page = self._check(self._http.get(f"/datasets/{dataset}/preambles", params=params)).json()
        return pl.DataFrame(page["items"])

    def projection(
        self,
        dataset: str,
        preamble: str,
        projector: str,
        *,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """The full JSON answer (points, params used, metrics, hulls…)."""
        body = _body(dataset, preamble, projector, params, seed)
        return self._check(self._http.post("/projections", json=body)).json()

    def project(
        self,
        dataset: str,
        preamble: str,
        projector: str,
        *,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> pl.DataFrame:
        """One row per guess: guess, token_id, logit, cluster_id, label, x, y."""
        answer = self.projection(dataset, preamble, projector, params=params, seed=seed)
        return pl.DataFrame(answer["points"])

    def plot(
        self,
        dataset: str,
        preamble: str,
        projector: str,
        *,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        fmt: str = "png",
    ) -> PlotImage:
        """The rendered plot (PNG or SVG bytes; shows inline in Jupyter)."""
        accept = {"png": "image/png", "svg": "image/svg+xml"}[fmt]
        response = self._http.post(
            "/projections",
            json=_body(dataset, preamble, projector, params, seed),
            headers={"Accept": accept},
        )
        return PlotImage(self._check(response).content)

    def submit_batch(
        self,
        dataset: str,
        *,
        projectors: list[str],
        preambles: list[str] | None = None,
        params: dict[str, dict[str, Any]] | None = None,
        seed: int | None = None,
        align: dict[str, Any] | None = None,
    ) -> str:
        """Start a batch job; return its id (``preambles=None`` means all). ``align``
        (``{"map": map_id, "weight": ...}``) aligns every layout to that global map."""
        body = {
            "dataset": dataset,
            "preambles": "all" if preambles is None else preambles,
            "projectors": projectors,
            "params": params or {},
            **({"seed": seed} if seed is not None else {}),
            **({"align": align} if align is not None else {}),
        }
        return str(self._check(self._http.post("/batches", json=body)).json()["id"])

    def batch_status(self, job_id: str) -> dict[str, Any]:
        return self._check(self._http.get(f"/batches/{job_id}")).json()

    def events(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        read_timeout: float | None = 60.0,
        max_retries: int = 8,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event, data)`` pairs from the job's Server-Sent Events stream, until it ends.

        A dropped connection, or one silent for ``read_timeout`` seconds (the server sends a
        keep-alive comment every 15 s by default), is reopened with ``Last-Event-ID``: the
        stream goes on where it stopped, no event twice, none missed, across a server restart
        too. ``max_retries`` reconnects in a row that bring no event raise the last error."""
        return follow_events(
            self._http,
            f"/batches/{job_id}/events",
            check=self._check_stream,
            last_event_id=last_event_id,
            read_timeout=read_timeout,
            max_retries=max_retries,
        )

    def wait(self, job_id: str, *, progress: bool = True) -> dict[str, Any]:
        """Follow a job to its end (tqdm bar fed by the event stream); return the final status."""
        status = self.batch_status(job_id)

        def show(bar: Any, data: dict[str, Any]) -> None:
            bar.n = data["done"] + data["failed"]
            bar.set_postfix(failed=data["failed"], refresh=False)

        bar = {"total": status["total"], "unit": "item", "desc": job_id}
        return follow_with_bar(self.events(job_id), status, bar, show, progress)

    def results(self, job_id: str) -> pl.DataFrame:
        """The job's finished points (one row per point) as a polars DataFrame."""
        response = self._http.get(f"/batches/{job_id}/results", params={"format": "parquet"})
        return pl.read_parquet(io.BytesIO(self._check(response).content))

    def download_results(self, job_id: str, path: str | Path) -> int:
        """Stream the job's finished points to ``path`` as the server writes them, never held
        whole in memory; the format follows the suffix: ``.parquet``, ``.arrow`` (Arrow IPC
        stream) or ``.json`` (newline-delimited). Returns the bytes written."""
        return self._download(f"/batches/{job_id}/results", Path(path))

    def _download(self, url: str, path: Path) -> int:
        """``url``'s answer in the format ``path``'s suffix names, streamed to ``path``."""
        fmt = _result_format(path)
        with self._http.stream("GET", url, params={"format": fmt}) as response:
            self._check_stream(response)
            with path.open("wb") as out:
                return sum(out.write(chunk) for chunk in response.iter_bytes())

    def batch(
        self,
        dataset: str,
        *,
        projectors: list[str],
        preambles: list[str] | None = None,
        params: dict[str, dict[str, Any]] | None = None,
        seed: int | None = None,
        align: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> pl.DataFrame:
        """Submit, wait with a progress bar, return every point of every finished item."""
        job_id = self.submit_batch(
            dataset,
            projectors=projectors,
            preambles=preambles,
            params=params,
            seed=seed,
            align=align,
        )
        self.wait(job_id, progress=progress)
        return self.results(job_id)

    # ---- global maps ------------------------------------------------------------------------

    def submit_map(
        self,
        dataset: str,
        *,
        method: str | None = None,
        fit_on: str | None = None,
        supervised: bool = False,
        sample_size: int | None = None,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Ask for a global map of every row of ``dataset`` (the server's defaults for what is
        not given); its status: the same request names the same map, done at once if made."""
        body: dict[str, Any] = {"dataset": dataset, "supervised": supervised}
        optional = {"method": method, "fit_on": fit_on, "sample_size": sample_size, "seed": seed}
        body |= {name: value for name, value in optional.items() if value is not None}
        if params:
            body["params"] = params
        return self._check(self._http.post("/maps", json=body)).json()

    def map_status(self, map_id: str) -> dict[str, Any]:
        return self._check(self._http.get(f"/maps/{map_id}")).json()

    def wait_map(self, map_id: str, *, progress: bool = True) -> dict[str, Any]:
        """Follow a map to its end (a tqdm bar of its progress, by stage); its final status."""
        status = self.map_status(map_id)
        if status["state"] not in ("queued", "running"):
            return status

        def show(bar: Any, data: dict[str, Any]) -> None:
            bar.n = round(100 * data["progress"])
            bar.set_postfix(stage=data["stage"], refresh=False)

        events = follow_events(self._http, f"/maps/{map_id}/events", check=self._check_stream)
        bar = {"total": 100, "unit": "%", "desc": map_id}
        return follow_with_bar(events, status, bar, show, progress)

    def map_points(self, map_id: str, *, preamble: str | None = None) -> pl.DataFrame:
        """A finished map's points (all rows, or one preamble's) as a polars DataFrame:
        ``preamble, guess, token_id, cluster_id, x, y``."""
        params = {"format": "parquet", **({"preamble": preamble} if preamble else {})}
        response = self._http.get(f"/maps/{map_id}/points", params=params)
        return pl.read_parquet(io.BytesIO(self._check(response).content))

    def download_map(self, map_id: str, path: str | Path) -> int:
        """A finished map's points written to ``path`` (``.parquet``, ``.arrow`` or ``.json``
        by its suffix); the bytes written."""
        return self._download(f"/maps/{map_id}/points", Path(path))

    def map(
        self,
        dataset: str,
        *,
        method: str | None = None,
        fit_on: str | None = None,
        supervised: bool = False,
        sample_size: int | None = None,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        progress: bool = True,
    ) -> pl.DataFrame:
        """Make (or find) a global map, wait with a progress bar, return its points."""
        status = self.submit_map(
            dataset,
            method=method,
            fit_on=fit_on,
            supervised=supervised,
            sample_size=sample_size,
            params=params,
            seed=seed,
        )
        final = self.wait_map(status["id"], progress=progress)
        if final["state"] != "done":
            error = final.get("error") or {}
            raise ClientError(409, error.get("code", final["state"]), error.get("detail", ""))
        return self.map_points(status["id"])


def _result_format(path: Path) -> str:
    fmt = RESULT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"output path={str(path)!r}: the suffix must be one of {sorted(RESULT_FORMATS)}"
        )
    return fmt


def _body(
    dataset: str,
    preamble: str,
    projector: str,
    params: dict[str, Any] | None,
    seed: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"dataset": dataset, "preamble": preamble, "projector": projector}
    if params:
        body["params"] = params
    if seed is not None:
        body["seed"] = seed
    return body
