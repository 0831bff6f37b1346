"""The dashboard's web application (Starlette): routes, errors, headers.

Every page is served twice: as HTML at its path and as JSON under ``/api``
with the same path. Every page takes ``?as_of=SEQ`` (or an ISO time) and its
links keep it. The store is opened read-only; nothing here writes.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import (
    ArtifactNotFoundError,
    ArtledgerError,
    InvalidArgumentError,
    RunNotFoundError,
    SharedStoreUnavailableError,
)
from engine.query import pages as q
from engine.store import Store
from engine.ui import pages
from engine.ui.views import ViewCache

HERE = Path(__file__).parent
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
# Bytes an artifact chose: served in a sandbox (an opaque origin, no access to ours).
RAW_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
HTML_VIS_CSP = "sandbox allow-scripts; default-src 'unsafe-inline' data:"


class Headers:
    """ASGI middleware adding security headers (a route may set its own CSP)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", PAGE_CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"SAMEORIGIN"),
                ]
                headers += [(k, v) for k, v in extra if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


class Dashboard:
    """The application state: the store, its cached ``as_of`` views, templates."""

    SYNC_EVERY = 2.0  # a shared store's replica pulls new events at most this often (s)

    def __init__(self, store: Store, cache_size: int = 4) -> None:
        self.store = store
        self._synced = 0.0
        self.views = ViewCache(store, cache_size)
        self.env = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(default=True),
        )

    # -- helpers -----------------------------------------------------------------------
    def context(self, request: Request) -> tuple[Any, int | None, Any]:
        """(catalog, as_of seq, link function) for a request."""
        self._follow()
        catalog, seq = self.views.resolve(request.query_params.get("as_of"))

        def link(path: str, **params: Any) -> str:
            qp = {k: v for k, v in params.items() if v is not None and v != ""}
            if seq is not None:
                qp["as_of"] = seq
            return path + ("?" + urlencode(qp) if qp else "")

        return catalog, seq, link

    def _follow(self) -> None:
        """A shared store: pull what other machines committed (throttled; when
        the log server is down the replica is served as it is)."""
        now = time.monotonic()
        if now - self._synced < self.SYNC_EVERY:
            return
        self._synced = now
        if self.store.replica_status() is None:
            return
        with contextlib.suppress(SharedStoreUnavailableError):
            self.store.sync()

    def respond(
        self, request: Request, template: str, data: dict[str, Any], **ctx: Any
    ) -> Response:
        if request.url.path.startswith("/api"):
            return JSONResponse(_public(data))
        head = self.store.head
        html = self.env.get_template(template).render(**data, **ctx, head=head)
        return HTMLResponse(html)

    # -- pages -------------------------------------------------------------------------
    def runs(self, request: Request) -> Response:
        catalog, seq, link = self.context(request)
        before = _int(request, "before")
        data = pages.runs_page(catalog, before, _int(request, "limit") or pages.PAGE)
        return self.respond(request, "runs.html", data, as_of=seq, link=link, title="Runs")

    def run(self, request: Request) -> Response:
        catalog, seq, link = self.context(request)
        data = pages.run_page(catalog, request.path_params["run_id"], link)
        return self.respond(
            request, "run.html", data, as_of=seq, link=link, title=f"Run {data['run']['id']}"
        )

    def artifacts(self, request: Request) -> Response:
        catalog, seq, link = self.context(request)
        p = request.query_params
        data = pages.artifacts_page(
            catalog,
            p.get("name"),
            p.get("tag"),
            p.get("after"),
            _int(request, "limit") or pages.PAGE,
        )
        return self.respond(
            request, "artifacts.html", data, as_of=seq, link=link, title="Artifacts"
        )

    def artifact(self, request: Request) -> Response:
        catalog, seq, link = self.context(request)
        pp = request.path_params
        data = pages.artifact_page(catalog, pp["name"], pp["version"])
        a = data["artifact"]
        return self.respond(
            request,
            "artifact.html",
            data,
            as_of=seq,
            link=link,
            title=f"{a['name']}:{a['version']}",
        )

    def lineage(self, request: Request) -> Response:
        catalog, seq, link = self.context(request)
        pp = request.path_params
        direction = request.query_params.get("direction", "upstream")
        depth = _int(request, "depth")
        depth = 8 if depth is None else depth
        data = pages.lineage_page(catalog, pp["name"], pp["version"], direction, depth, link)
        a = data["artifact"]
        return self.respond(
            request,
            "lineage.html",
            data,
            as_of=seq,
            link=link,
            title=f"Lineage of {a['name']}:{a['version']}",
        )

    def log(self, request: Request) -> Response:
        catalog, seq, link = self.context(request)
        before = _int(request, "before")
        data = pages.log_page(
            catalog, before, _int(request, "after"), _int(request, "limit") or 100
        )
        return self.respond(
            request,
            "log.html",
            data,
            as_of=seq,
            link=link,
            title="Event log",
            paged=before is not None,
        )

    # -- raw bytes ---------------------------------------------------------------------
    def _art(self, request: Request) -> Any:
        catalog, _, _ = self.context(request)
        return catalog, catalog.get_artifact_by_id(request.path_params["aid"])

    def file(self, request: Request) -> Response:
        catalog, art = self._art(request)
        name = request.path_params["file"]
        f = q.open_file(catalog, art, name)
        base = name.rsplit("/", 1)[-1].replace('"', "")

        def chunks() -> Any:
            with f:
                while block := f.read(1 << 20):
                    yield block

        return StreamingResponse(
            chunks(),
            media_type="application/octet-stream",
            headers={
                "content-disposition": f'attachment; filename="{base}"',
                "content-security-policy": RAW_CSP,
            },
        )

    def vis(self, request: Request) -> Response:
        _, art = self._art(request)
        index = int(request.path_params["index"])
        vis = art.visualizations
        if not 0 <= index < len(vis):
            raise ArtifactNotFoundError(f"{art.name}:{art.version} has no visualization {index}")
        name, kind, data = vis[index]
        if kind == "html":
            return Response(
                data, media_type="text/html", headers={"content-security-policy": HTML_VIS_CSP}
            )
        from engine.ui.visuals import image_type

        mime = image_type(name, data) if kind == "image" else "text/plain"
        return Response(data, media_type=mime, headers={"content-security-policy": RAW_CSP})

    # -- errors ------------------------------------------------------------------------
    def error(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api"):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        html = self.env.get_template("error.html").render(
            status=status,
            message=message,
            head=self.store.head,
            as_of=None,
            link=lambda p, **k: p,
            title=f"{status}",
        )
        return HTMLResponse(html, status_code=status)

    async def on_artledger_error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, (ArtifactNotFoundError, RunNotFoundError)):
            status = 404
        elif isinstance(exc, InvalidArgumentError):
            status = 400
        else:
            status = 500
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return self.error(request, status, message)

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.error(request, exc.status_code, str(exc.detail))


def _int(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgumentError(f"{key}={raw!r} is not an integer") from None


def _public(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _public(v) for k, v in data.items() if not str(k).startswith("_")}
    if isinstance(data, list):
        return [_public(v) for v in data]
    return data


def create_app(store: Store, *, cache_size: int = 4) -> Starlette:
    """The dashboard for ``store`` (which the caller opened, read-only, and closes)."""
    d = Dashboard(store, cache_size)
    routes: list[Any] = []
    for prefix in ("", "/api"):
        routes += [
            Route(prefix + "/", d.runs),
            Route(prefix + "/runs/{run_id}", d.run),
            Route(prefix + "/artifacts", d.artifacts),
            Route(prefix + "/artifacts/{name:path}/{version}", d.artifact),
            Route(prefix + "/lineage/{name:path}/{version}", d.lineage),
            Route(prefix + "/log", d.log),
        ]
    routes += [
        Route("/api", d.runs),
        Route("/files/{aid}/{file:path}", d.file),
        Route("/vis/{aid}/{index:int}", d.vis),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ArtledgerError: d.on_artledger_error,
            HTTPException: d.on_http_error,
        },
    )
    app.state.dashboard = d
    app.add_middleware(Headers)
    return app
