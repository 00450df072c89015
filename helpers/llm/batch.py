"""The Batch API route: the same requests, sent as JSONL batches at batch prices, with unchanged stage code.

`BatchBackend` stands in for an `OpenAIBackend`: a stage's coroutines call `complete()` as usual, but each request
is parked as a pending future. When every coroutine of the running `agather` is waiting (or no new request came
for `settle_s`), the pending requests go out as one batch (files + batches endpoints of the official `openai`
client), the batch is polled, and its output lines resolve the futures. A multi-turn conversation therefore goes
out one turn per batch round. Results return through `ChatClient.achat`, so they land in the same content cache
under the same keys as live calls (the backend reports the live backend's kind and model), and every later step
is unchanged.

Failed lines and the unrun lines of an expired or failed batch raise `TransientError`: the client retries them in
the next round and never caches them. The journal `batches.jsonl` under the run folder gets the request
fingerprints of every line when the input file is uploaded, and the batch id as soon as the batch exists, BEFORE
any wait; a run that is killed and started again adopts those batches (polls them instead of submitting the same
requests again; a batch whose id never reached the journal is found on the server by its input file), so nothing
is paid twice.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from tqdm.auto import tqdm

from ..jsonl import append_jsonl, read_jsonl
from .cache import default_cache_dir
from ..params import ParameterError
from .errors import PermanentError, TransientError, api_key_from_env
from .openai_backend import OpenAIBackend, result_from_reply
from .types import ChatResult, Message

BATCH_MAX_REQUESTS = 50_000  # OpenAI's limit of requests per batch
JOURNAL_NAME = "batches.jsonl"
ENDPOINT = "/v1/chat/completions"
FINAL_STATES = ("completed", "expired", "failed", "cancelled")
TICK_S = 0.02  # how often the collector looks whether every conversation is waiting
# HTTP statuses of a failed line that retrying cannot fix (bad request, auth, unknown model)
PERMANENT_STATUSES = (400, 401, 403, 404, 422)


def default_batch_dir() -> Path:
    return default_cache_dir() / "batches"


def request_fingerprint(body: dict[str, Any]) -> str:
    """Content of one request; a journal line's custom ids carry it so a resumed run can match its requests."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:40]


@dataclass
class _Pending:
    body: dict[str, Any]
    fingerprint: str
    future: asyncio.Future


class BatchBackend:
    """Batch transport for an `OpenAIBackend` (same identity, so the same cache keys). See the module docstring."""

    batch = True

    def __init__(self, live: OpenAIBackend, batch_dir: str | Path, *, poll_s: float = 30.0, settle_s: float = 0.5,
                 completion_window: str = "24h", active: Callable[[], int] | None = None,
                 max_requests: int = BATCH_MAX_REQUESTS, verbose: bool = True) -> None:
        self.live = live
        self.kind, self.model = live.kind, live.model
        self.journal = Path(batch_dir) / JOURNAL_NAME
        self.poll_s, self.settle_s, self.completion_window = poll_s, settle_s, completion_window
        self.active, self.max_requests, self.verbose = active, max_requests, verbose
        self.rounds = 0          # batch rounds this process ran (a round may adopt old batches and submit one new)
        self.submitted = 0       # batches this process submitted
        self.adopted = 0         # batches of an earlier, interrupted run this process polled instead of re-sending
        self._pending: list[_Pending] = []
        self._waiting = 0        # requests inside batches that are being polled
        self._claimed: set[str] = set()  # batch ids this process already polls or polled
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self._wake: asyncio.Event | None = None

    def __getattr__(self, name: str) -> Any:  # base_url, api_key_env, role, ... of the live backend
        if name == "live":
            raise AttributeError(name)
        return getattr(self.live, name)

    def describe(self) -> dict[str, Any]:
        return {**self.live.describe(), "batch": True, "batch_journal": str(self.journal)}

    def check(self) -> None:
        self.live.check()
        self.check_batch_api()

    def check_batch_api(self) -> None:
        """Whether the server has the batches endpoint at all (many compatible servers, vLLM's among them, serve
        chat completions only): better a ParameterError now than failed requests later."""
        client = openai.OpenAI(base_url=self.live.base_url, api_key=api_key_from_env(self.live.api_key_env, self.live.role),
                               max_retries=1, timeout=15)
        try:
            client.batches.list(limit=1)
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):
                raise ParameterError(f"{self.live.role}_BATCH", f"{self.live.base_url} has no Batch API "
                                     f"(GET /batches answered HTTP {exc.status_code})",
                                     f"set {self.live.role}_BATCH=False to send live requests") from None
            raise
        finally:
            client.close()

    async def release_loop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._loop, self._wake, self._pending, self._waiting = None, None, [], 0
        await self.live.release_loop()

    # ------------------------------------------------------------------ what the client calls
    async def complete(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> ChatResult:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new blocking call (each runs its own loop): start its collector
            self._loop, self._wake, self._pending, self._waiting = loop, asyncio.Event(), [], 0
            self._spawn(self._collect())
        body = self.live.request_body(messages, sampling, salt)
        pending = _Pending(body, request_fingerprint(body), loop.create_future())
        self._pending.append(pending)
        assert self._wake is not None
        self._wake.set()
        reply = await pending.future
        return result_from_reply(reply, sampling, self.model)

    # ------------------------------------------------------------------ rounds
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _collect(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            await self._settle()
            todo, self._pending = self._pending[: self.max_requests], self._pending[self.max_requests:]
            if self._pending:
                self._wake.set()
            self.rounds += 1
            try:
                leftovers = await self._adopt(todo)
                if leftovers:
                    await self._submit(leftovers)
            except Exception as exc:  # never leave a conversation waiting on a future nobody resolves
                error = self.live.redact(f"{exc.__class__.__name__}: {exc}")
                self._fail(todo, TransientError(f"batch round failed: {error}"))

    async def _settle(self) -> None:
        """Wait until every running conversation is waiting on a batch, or no new request came for settle_s."""
        last, idle = len(self._pending), 0.0
        while True:
            active = self.active() if self.active is not None else 0
            if active and len(self._pending) + self._waiting >= active:
                return
            await asyncio.sleep(TICK_S)
            if len(self._pending) == last:
                idle += TICK_S
                if idle >= self.settle_s:
                    return
            else:
                last, idle = len(self._pending), 0.0

    async def _adopt(self, todo: list[_Pending]) -> list[_Pending]:
        """Give requests that an interrupted run already submitted to its batches; return the rest."""
        offers: dict[str, list[tuple[str, str]]] = {}
        for batch_id, custom_ids in (await self._open_batches()).items():
            for cid in custom_ids:
                offers.setdefault(cid.rsplit("-", 1)[0], []).append((batch_id, cid))
        assigned: dict[str, dict[str, _Pending]] = {}
        rest = []
        for p in todo:
            if offers.get(p.fingerprint):
                batch_id, cid = offers[p.fingerprint].pop(0)
                assigned.setdefault(batch_id, {})[cid] = p
            else:
                rest.append(p)
        for batch_id, lines in assigned.items():
            self._claimed.add(batch_id)
            self.adopted += 1
            self._say(f"resuming batch {batch_id} of an interrupted run ({len(lines)} requests): polling, not re-sending")
            self._follow_later(batch_id, lines)
        return rest

    async def _open_batches(self) -> dict[str, list[str]]:
        """Batches of this endpoint and model in the journal whose results were never collected: batch id ->
        custom ids. An upload whose batch id never reached the journal (killed in between) is looked up on the
        server by its input file, so even that batch is not paid twice."""
        if not self.journal.exists():
            return {}
        uploads: dict[str, dict[str, Any]] = {}  # input file id -> its "uploaded" record
        submitted: dict[str, str] = {}  # batch id -> input file id
        never: set[str] = set()  # input files that never became a batch
        collected: set[str] = set()  # batch ids whose results were handed out
        for rec in read_jsonl(self.journal, tolerate_torn=True):
            event, file_id = rec.get("event"), rec.get("input_file_id", "")
            if rec.get("base_url") != self.live.base_url or rec.get("model") != self.model:
                continue
            if event == "uploaded":
                uploads[file_id] = rec
            elif event == "submitted":
                submitted[rec["batch_id"]] = file_id
            elif event == "never_submitted":
                never.add(file_id)
            elif event == "collected":
                collected.add(rec.get("batch_id", ""))
        orphans = set(uploads) - set(submitted.values()) - never
        if orphans:
            submitted.update(await self._find_batches_of(orphans, min(uploads[f]["uploaded_at"] for f in orphans)))
        return {b: uploads[f]["custom_ids"] for b, f in submitted.items()
                if f in uploads and b not in collected and b not in self._claimed}

    async def _find_batches_of(self, file_ids: set[str], since: float) -> dict[str, str]:
        """Batches on the server made from these input files (newest first, back to `since`)."""
        found: dict[str, str] = {}
        async for batch in self.live._client().batches.list(limit=100):
            if batch.input_file_id in file_ids:
                found[batch.id] = batch.input_file_id
                self._journal("submitted", batch_id=batch.id, input_file_id=batch.input_file_id,
                              found_on_server=True)
            if batch.created_at < since - 600 or len(found) == len(file_ids):
                break
        for file_id in file_ids - set(found.values()):
            self._journal("never_submitted", input_file_id=file_id)
        return found

    def _journal(self, event: str, **fields: Any) -> None:
        append_jsonl(self.journal, {"event": event, "base_url": self.live.base_url, "model": self.model,
                                    "at": time.time(), **fields})

    async def _submit(self, requests: list[_Pending]) -> None:
        seen: dict[str, int] = {}
        lines: dict[str, _Pending] = {}
        for p in requests:
            n = seen[p.fingerprint] = seen.get(p.fingerprint, -1) + 1
            lines[f"{p.fingerprint}-{n}"] = p
        data = "".join(json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": p.body},
                                  ensure_ascii=False) + "\n" for cid, p in lines.items()).encode("utf-8")
        client = self.live._client()
        try:
            upload = await client.files.create(file=("requests.jsonl", data, "application/jsonl"), purpose="batch")
            # The request fingerprints go to the journal before the batch exists, with its input file: a run
            # killed between here and the next record still finds the batch on the server.
            self._journal("uploaded", input_file_id=upload.id, uploaded_at=time.time(), custom_ids=list(lines))
            batch = await client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,  # type: ignore[arg-type]
                                                completion_window=self.completion_window,  # type: ignore[arg-type]
                                                metadata={"model": self.model})
        except openai.APIStatusError as exc:
            error: Exception = (PermanentError(f"{self.live.base_url} has no batch endpoints (HTTP {exc.status_code})")
                                if exc.status_code in (404, 405) else
                                TransientError(f"batch submission failed: HTTP {exc.status_code}", retry_after=0))
            self._fail(lines.values(), error)
            return
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            self._fail(lines.values(), TransientError(f"batch submission failed: {exc.__class__.__name__}"))
            return
        # Written before any wait: a run killed from here on finds the batch and polls it instead of paying again.
        self._journal("submitted", batch_id=batch.id, input_file_id=upload.id, round=self.rounds, requests=len(lines))
        self._claimed.add(batch.id)
        self.submitted += 1
        self._say(f"batch {batch.id} submitted: {len(lines)} requests (round {self.rounds}); id kept in {self.journal}")
        self._follow_later(batch.id, lines)

    def _follow_later(self, batch_id: str, lines: dict[str, _Pending]) -> None:
        self._waiting += len(lines)
        self._spawn(self._follow(batch_id, lines))

    async def _follow(self, batch_id: str, lines: dict[str, _Pending]) -> None:
        """Poll one batch to its end, then resolve its requests (results, or errors to retry)."""
        try:
            try:
                status, rows = await self._wait_for(batch_id)
            except Exception as exc:  # e.g. the batch is unknown to this server: send its requests again
                error = self.live.redact(str(exc))
                self._fail(lines.values(), TransientError(f"batch {batch_id} could not be followed: {error}"))
                self._journal("collected", batch_id=batch_id, status="unreachable", error=error[:300])
                return
            for cid, p in lines.items():
                if p.future.done():
                    continue
                row = rows.get(cid)
                if row is None:
                    p.future.set_exception(TransientError(f"batch {batch_id} {status}: request not run", retry_after=0))
                else:
                    outcome = _line_outcome(row, self.live.redact)
                    if isinstance(outcome, Exception):
                        p.future.set_exception(outcome)
                    else:
                        p.future.set_result(outcome)
            for _ in range(3):  # let the woken requests store their results in the cache first
                await asyncio.sleep(0)
            ok = sum(1 for p in lines.values() if p.future.done() and not p.future.exception())
            self._journal("collected", batch_id=batch_id, status=status, succeeded=ok, failed=len(lines) - ok)
            self._say(f"batch {batch_id} {status}: {ok} of {len(lines)} requests answered")
        finally:
            self._waiting -= len(lines)

    async def _wait_for(self, batch_id: str) -> tuple[str, dict[str, dict[str, Any]]]:
        client = self.live._client()
        while True:
            try:
                batch = await client.batches.retrieve(batch_id)
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError):
                await asyncio.sleep(self.poll_s)  # the batch runs on regardless: just ask again later
                continue
            if batch.status in FINAL_STATES:
                break
            await asyncio.sleep(self.poll_s)
        rows: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                found, unreadable = output_rows(await self._download(file_id))
                rows.update(found)
                if unreadable:
                    self._say(f"batch {batch_id}: {unreadable} unreadable line(s) in {file_id}; only their requests "
                              "are sent again")
        return batch.status, rows

    async def _download(self, file_id: str) -> str:
        """A batch's output or error file. It stays on the server, so a dropped download is asked for again rather
        than the batch's requests being sent (and paid) again."""
        client = self.live._client()
        while True:
            try:
                return (await client.files.content(file_id)).text
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError):
                await asyncio.sleep(self.poll_s)

    def _fail(self, requests: Any, error: Exception) -> None:
        for p in requests:
            if not p.future.done():
                p.future.set_exception(error)

    def _say(self, text: str) -> None:
        if self.verbose:
            tqdm.write(text, file=sys.stderr)


def output_rows(text: str) -> tuple[dict[str, dict[str, Any]], int]:
    """The lines of a batch output (or error) file by custom id, and how many could not be read. Lines end at "\n"
    only: a reply may hold U+2028, U+2029 or U+0085, at which `str.splitlines()` would cut its line (and lose the
    whole batch, bought again each round). An unreadable line costs only its own request."""
    rows: dict[str, dict[str, Any]] = {}
    unreadable = 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            unreadable += 1
            continue
        if isinstance(row, dict):
            rows[str(row.get("custom_id", ""))] = row
        else:
            unreadable += 1
    return rows, unreadable


def _line_outcome(row: dict[str, Any], redact: Callable[[str], str]) -> dict[str, Any] | Exception:
    """One line of a batch's output or error file: the reply body, or the error to raise for that request (its
    text redacted before it is cut)."""
    response = row.get("response") or {}
    status = response.get("status_code")
    if status == 200 and isinstance(response.get("body"), dict):
        return response["body"]
    error = row.get("error") or (response.get("body") or {}).get("error") or {}
    text = redact(str(error.get("message", "")))[:200]
    message = f"batch line failed: {status or error.get('code', 'error')}: {text}"
    if status in PERMANENT_STATUSES:
        return PermanentError(message)
    return TransientError(message, retry_after=0)
