"""The dashboard's web app: its routes, pages (Jinja templates) and the JSON the pages poll.

Pages are rendered once with the data of that moment; their script then polls the JSON routes
(every ``POLL_MS``) and redraws the numbers, bars and charts in place, with no page reload.
Store reads run in Starlette's thread pool, never on the event loop. The chart library (uPlot,
MIT licence, beside it in ``static/``) ships in the package: nothing is fetched from elsewhere.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from batcher.dashboard.actions import Action, act, export_download
from batcher.dashboard.board import Board
from batcher.dashboard.guard import Access, GuardMiddleware
from batcher.dashboard.reports import GROUPINGS, UsageReports, estimate_upload
from batcher.export import ExportFormat
from jobs.db import Store
from jobs.errors import BatcherError, JobNotFound
from jobs.models import JobStatus
from jobs.settings import Settings

HERE = Path(__file__).parent
POLL_MS = 1000
PAGE_JOBS = 100
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def build_app(store: Store, settings: Settings, access: Access) -> Starlette:
    """The dashboard over ``store``, guarded by ``access``."""
    h = Handlers(store, settings, access)
    routes = [
        Route("/", h.jobs_page),
        Route("/jobs/{job_id:int}", h.job_page),
        Route("/jobs/{job_id:int}/lines/{line_no:int}", h.line_page),
        Route("/jobs/{job_id:int}/export", h.export),
        Route("/usage", h.usage_page),
        Route("/api/jobs", h.jobs_json),
        Route("/api/jobs/{job_id:int}", h.job_json),
        Route("/api/jobs/{job_id:int}/{action}", h.action, methods=["POST"]),
        Route("/api/estimate", h.estimate, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers = {JobNotFound: _not_found}
    middleware = [Middleware(GuardMiddleware, access=access)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


class Handlers:
    """The routes' endpoints over one store."""

    def __init__(self, store: Store, settings: Settings, access: Access) -> None:
        self.store, self.settings = store, settings
        self.board = Board(store, settings)
        self.reports = UsageReports(store)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        statuses = [s.value for s in JobStatus]
        self.templates.env.globals |= {"csrf": access.csrf, "poll_ms": POLL_MS, "statuses": statuses}

    def page(self, request: Request, name: str, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, name, context)

    async def jobs_page(self, request: Request) -> Response:
        status, tag = _filters(request)
        rows, total = await run_in_threadpool(self.board.jobs, status=status, tag=tag, limit=PAGE_JOBS)
        return self.page(request, "jobs.html", jobs=rows, total=total, status=status or "", tag=tag or "")

    async def jobs_json(self, request: Request) -> Response:
        status, tag = _filters(request)
        rows, total = await run_in_threadpool(self.board.jobs, status=status, tag=tag, limit=PAGE_JOBS)
        return JSONResponse({"jobs": [r.to_dict() for r in rows], "total": total})

    async def job_page(self, request: Request) -> Response:
        view = await run_in_threadpool(self.board.job, _job_id(request))
        formats = [f.value for f in ExportFormat]
        return self.page(request, "job.html", view=view, data=view.to_dict(), formats=formats)

    async def job_json(self, request: Request) -> Response:
        view = await run_in_threadpool(self.board.job, _job_id(request))
        return JSONResponse(view.to_dict())

    async def line_page(self, request: Request) -> Response:
        job_id, line_no = _job_id(request), int(request.path_params["line_no"])
        line = await run_in_threadpool(self.board.line, job_id, line_no)
        if line is None:
            return _error(404, f"job {job_id} has no line {line_no}")
        return self.page(request, "line.html", job_id=job_id, line=line)

    async def action(self, request: Request) -> Response:
        try:
            chosen = Action(request.path_params["action"])
        except ValueError:
            return _error(404, f"no such action; use one of {', '.join(a.value for a in Action)}")
        try:
            message = await run_in_threadpool(act, self.store, self.settings, _job_id(request), chosen)
        except JobNotFound as exc:
            return _error(404, str(exc))
        except BatcherError as exc:
            return _error(409, str(exc))
        return JSONResponse({"message": message})

    async def export(self, request: Request) -> Response:
        try:
            fmt = ExportFormat(request.query_params.get("format", "jsonl"))
        except ValueError:
            return _error(400, f"format must be one of {', '.join(f.value for f in ExportFormat)}")
        got = await run_in_threadpool(export_download, self.store, _job_id(request), fmt)
        cleanup = BackgroundTask(shutil.rmtree, got.folder, ignore_errors=True)
        return FileResponse(got.path, media_type=got.media_type, filename=got.filename, background=cleanup)

    async def usage_page(self, request: Request) -> Response:
        tables = [await run_in_threadpool(self.reports.table, by) for by in GROUPINGS]
        return self.page(request, "usage.html", tables=tables)

    async def estimate(self, request: Request) -> Response:
        async with request.form(max_part_size=MAX_UPLOAD_BYTES) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _error(400, "send the JSONL file as the form field `file`")
            folder = Path(tempfile.mkdtemp(prefix="batcher-estimate-"))
            try:
                path = folder / "upload.jsonl"
                with path.open("wb") as out:
                    while chunk := await upload.read(1 << 20):
                        out.write(chunk)
                return JSONResponse(await run_in_threadpool(estimate_upload, path))
            except BatcherError as exc:
                return _error(400, str(exc))
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def _filters(request: Request) -> tuple[str | None, str | None]:
    params = request.query_params
    return params.get("status") or None, params.get("tag") or None


def _job_id(request: Request) -> int:
    value: int = request.path_params["job_id"]
    return value


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, str(exc))
