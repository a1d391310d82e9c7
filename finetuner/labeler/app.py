"""The labeler's web app (FastAPI): the page, its assets, and a small JSON API.

Every /api/ call needs the session token in the `X-Finetuner-Token` header. The token is made
at start (`secrets.token_urlsafe(32)`), handed to the page in the URL fragment (`#token=...`,
which browsers never send to the server, so it is in no access log) and compared in constant
time. A custom header also means another web site cannot call the API from the user's browser
(it would need a CORS pre-flight, which this app never grants), and the Host header check
stops DNS-rebinding pages. Request bodies are capped (`max_body_bytes`), every input is
validated, and static files are served from their folder only.

Endpoints:
    GET  /                 the page
    GET  /static/<file>    its script and style sheet
    GET  /api/status       model version, label counts, metrics, training state
    GET  /api/next         the next query (active learning) and its results
    GET  /api/labels       stored labels, newest page first (?offset=&limit=)
    POST /api/labels       store one labelled page {submission_id, query, model_version, marks}
    POST /api/train        ask for a tuning round now
    POST /api/save         save the current model to OUTPUT_DIR/model
    POST /api/stop         end the session (the server stops; `fit` returns once a running round
                           has ended, or was cancelled with ?cancel_round=true)
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Callable

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

STATIC_DIR = Path(__file__).parent / "static"
TOKEN_HEADER = "X-Finetuner-Token"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
SECURITY_HEADERS = {
    # no inline script, nothing from elsewhere: the page works offline and resists injection
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Mark(BaseModel):
    """One labelled result: its item position and whether it is relevant to the query."""

    model_config = ConfigDict(extra="forbid", strict=True)
    item: int = Field(ge=0)
    relevant: bool


class Submission(BaseModel):
    """One labelled result page."""

    model_config = ConfigDict(extra="forbid", strict=True)
    submission_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    query: int = Field(ge=0)
    model_version: int = Field(ge=0)
    marks: list[Mark] = Field(min_length=1, max_length=100)


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request whose body is larger than `max_bytes`, whether
    it declares its length or streams it in chunks (the body is never read past the limit)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _too_large(self.max_bytes, send)
        received, started, answered = 0, False, False

        async def limited_receive():
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # answer 413 now and tell the app the client left, so it stops reading
                    if not started and not answered:
                        answered = True
                        await _too_large(self.max_bytes, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if answered:  # the 413 went out already: drop the app's own answer
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _too_large(max_bytes: int, send) -> None:
    body = (b'{"detail":"request body too large: the limit is %d bytes"}' % max_bytes)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(labeler, token: str, *, worker=None, on_stop: Callable[[bool], None] | None = None,
               allowed_hosts: list[str] | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving `labeler`.

    Args:
        labeler: a `finetuner.labeler.Labeler`.
        token: the session token every /api/ call must send in `X-Finetuner-Token` (>= 16 chars).
        worker: the `TuningWorker` that POST /api/train wakes (None: the round runs in the request).
        on_stop: `on_stop(cancel_round: bool)`, called by POST /api/stop (the server uses it to
            shut down).
        allowed_hosts: accepted Host header names (default 127.0.0.1, localhost, ::1).
        max_body_bytes: largest accepted request body, in bytes (>= 1024).

    Raises:
        ValueError: a token shorter than 16 characters or max_body_bytes < 1024.
    """
    if not isinstance(token, str) or len(token) < 16:
        raise ValueError("token: expected a random string of at least 16 characters")
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes: expected an int >= 1024, got {max_body_bytes!r}")
    app = FastAPI(title="finetuner labeler", docs_url=None, redoc_url=None, openapi_url=None)
    expected = token.encode()

    def require_token(x_finetuner_token: str | None = Header(default=None)) -> None:
        if not x_finetuner_token or not hmac.compare_digest(x_finetuner_token.encode(), expected):
            raise HTTPException(status_code=401, detail=f"missing or wrong {TOKEN_HEADER} header: open the "
                                "labeler with the link printed when it started")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    # StaticFiles resolves each path and refuses anything outside its folder
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    api = [Depends(require_token)]

    @app.get("/api/status", dependencies=api)
    def status() -> dict:
        return labeler.status()

    @app.get("/api/next", dependencies=api)
    def next_page() -> dict:
        page = labeler.next_query()
        if page is None:
            return {"done": True, "model_version": labeler.version}
        results = [{**labeler.display(i), "distance": d} for i, d in zip(page["results"], page["distances"])]
        return {"done": False, "query": labeler.display(page["query"]), "results": results,
                "model_version": page["model_version"], "uncertainty": page["uncertainty"]}

    @app.get("/api/labels", dependencies=api)
    def list_labels(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> dict:
        num_labels, num_sessions = labeler.store.counts()
        return {"num_labels": num_labels, "num_sessions": num_sessions,
                "num_submissions": labeler.store.submission_count(),
                "submissions": labeler.store.submissions(offset, limit)}

    @app.post("/api/labels", dependencies=api)
    def add_labels(body: Submission) -> dict:
        ack = labeler.submit(body.query, [(m.item, m.relevant) for m in body.marks],
                             submission_id=body.submission_id, model_version=body.model_version)
        return {"submission_id": ack.submission_id, "duplicate": ack.duplicate,
                "num_labels": ack.num_labels, "num_sessions": ack.num_sessions}

    @app.post("/api/train", dependencies=api, status_code=202)
    def train() -> dict:
        if not labeler.store.submission_count():
            raise HTTPException(status_code=409, detail="no labels yet: label a page before training")
        if worker is not None and worker.alive:
            worker.request_round()
            return {"queued": True, "model_version": labeler.version}
        record = labeler.train()
        return {"queued": False, "model_version": record["version"]}

    @app.post("/api/save", dependencies=api)
    def save_model() -> dict:
        path = labeler.save()
        return {"path": str(path), "model_version": labeler.version}

    @app.post("/api/stop", dependencies=api)
    def stop(cancel_round: bool = Query(False)) -> dict:
        if on_stop is not None:
            on_stop(cancel_round)
        return {"stopping": True, "cancel_round": cancel_round}

    hosts = allowed_hosts or ["127.0.0.1", "localhost", "::1", "[::1]"]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app
