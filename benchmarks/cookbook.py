"""A faithful stand-in of openai-cookbook's ``api_request_parallel_processor.py``, the reference
client the pace benchmarks compare batcher against.

Its dispatch loop as the cookbook writes it: one request per loop turn, capacity refilled from
``max_requests_per_minute`` / ``max_tokens_per_minute`` by the time elapsed, a task per call, a
1 ms ``asyncio.sleep`` each turn, 15 s of pause after a rate-limit error, retries through a queue,
each result appended to the output JSONL by opening the file. Two changes, both forced: the
token count is batcher's estimate (the cookbook's tiktoken downloads its encodings at first use,
which nothing here may do), and the API key comes from the argument.

    python -m benchmarks.cookbook REQUESTS.jsonl OUT.jsonl --url http://127.0.0.1:8765/v1/embeddings
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR = 15
SECONDS_TO_SLEEP_EACH_LOOP = 0.001


@dataclass
class StatusTracker:
    """The cookbook's counters."""

    num_tasks_started: int = 0
    num_tasks_in_progress: int = 0
    num_tasks_succeeded: int = 0
    num_tasks_failed: int = 0
    num_rate_limit_errors: int = 0
    num_api_errors: int = 0
    num_other_errors: int = 0
    time_of_last_rate_limit_error: float = 0.0


@dataclass
class APIRequest:
    """One request with its retries, as the cookbook keeps it."""

    task_id: int
    request_json: dict[str, Any]
    token_consumption: int
    attempts_left: int
    result: list[Any] = field(default_factory=list)

    async def call_api(
        self,
        *,
        session: aiohttp.ClientSession,
        request_url: str,
        request_header: dict[str, str],
        retry_queue: asyncio.Queue[APIRequest],
        save_filepath: str,
        status_tracker: StatusTracker,
    ) -> None:
        error = None
        try:
            async with session.post(
                url=request_url, headers=request_header, json=self.request_json
            ) as response:
                response_json = await response.json(content_type=None)
            if "error" in response_json:
                status_tracker.num_api_errors += 1
                error = response_json
                if "Rate limit" in str(response_json["error"].get("message", "")):
                    status_tracker.time_of_last_rate_limit_error = time.time()
                    status_tracker.num_rate_limit_errors += 1
                    status_tracker.num_api_errors -= 1
        except Exception as e:  # the cookbook catches everything here
            status_tracker.num_other_errors += 1
            error = e
        if error:
            self.result.append(error)
            if self.attempts_left:
                retry_queue.put_nowait(self)
            else:
                append_to_jsonl([self.request_json, [str(e) for e in self.result]], save_filepath)
                status_tracker.num_tasks_in_progress -= 1
                status_tracker.num_tasks_failed += 1
        else:
            append_to_jsonl([self.request_json, response_json], save_filepath)
            status_tracker.num_tasks_in_progress -= 1
            status_tracker.num_tasks_succeeded += 1


def append_to_jsonl(data: Any, filename: str) -> None:
    """Append one JSON line, opening the file each time as the cookbook does."""
    with open(filename, "a") as f:
        f.write(json.dumps(data) + "\n")


def num_tokens(request_json: dict[str, Any]) -> int:
    """batcher's estimate in place of tiktoken (see the module docstring)."""
    text = json.dumps(request_json.get("input") or request_json.get("messages") or "")
    return max(1, len(text) // 4)


def task_ids() -> Iterator[int]:
    task_id = 0
    while True:
        yield task_id
        task_id += 1


async def process_api_requests_from_file(
    requests_filepath: str,
    *,
    save_filepath: str,
    request_url: str,
    api_key: str,
    max_requests_per_minute: float,
    max_tokens_per_minute: float,
    max_attempts: int,
) -> StatusTracker:
    """The cookbook's dispatch loop; see the module docstring."""
    request_header = {"Authorization": f"Bearer {api_key}"}
    queue_of_requests_to_retry: asyncio.Queue[APIRequest] = asyncio.Queue()
    task_id_generator = task_ids()
    status_tracker = StatusTracker()
    next_request: APIRequest | None = None
    available_request_capacity = max_requests_per_minute
    available_token_capacity = max_tokens_per_minute
    last_update_time = time.time()
    file_not_finished = True
    tasks = set()
    async with aiohttp.ClientSession() as session:
        with open(requests_filepath) as file:
            requests = iter(file)
            while True:
                if next_request is None:
                    if not queue_of_requests_to_retry.empty():
                        next_request = queue_of_requests_to_retry.get_nowait()
                    elif file_not_finished:
                        try:
                            request_json = json.loads(next(requests))["body"]
                            next_request = APIRequest(
                                task_id=next(task_id_generator),
                                request_json=request_json,
                                token_consumption=num_tokens(request_json),
                                attempts_left=max_attempts,
                            )
                            status_tracker.num_tasks_started += 1
                            status_tracker.num_tasks_in_progress += 1
                        except StopIteration:
                            file_not_finished = False
                current_time = time.time()
                seconds_since_update = current_time - last_update_time
                available_request_capacity = min(
                    available_request_capacity + max_requests_per_minute * seconds_since_update / 60.0,
                    max_requests_per_minute,
                )
                available_token_capacity = min(
                    available_token_capacity + max_tokens_per_minute * seconds_since_update / 60.0,
                    max_tokens_per_minute,
                )
                last_update_time = current_time
                if next_request:
                    next_request_tokens = next_request.token_consumption
                    if available_request_capacity >= 1 and available_token_capacity >= next_request_tokens:
                        available_request_capacity -= 1
                        available_token_capacity -= next_request_tokens
                        next_request.attempts_left -= 1
                        task = asyncio.create_task(
                            next_request.call_api(
                                session=session,
                                request_url=request_url,
                                request_header=request_header,
                                retry_queue=queue_of_requests_to_retry,
                                save_filepath=save_filepath,
                                status_tracker=status_tracker,
                            )
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        next_request = None
                if status_tracker.num_tasks_in_progress == 0:
                    break
                await asyncio.sleep(SECONDS_TO_SLEEP_EACH_LOOP)
                seconds_since_rate_limit_error = time.time() - status_tracker.time_of_last_rate_limit_error
                if seconds_since_rate_limit_error < SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR:
                    await asyncio.sleep(
                        SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR - seconds_since_rate_limit_error
                    )
    return status_tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requests_filepath")
    parser.add_argument("save_filepath")
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", default="sk-bench-not-a-real-key")
    parser.add_argument("--max-requests-per-minute", type=float, default=1e9)
    parser.add_argument("--max-tokens-per-minute", type=float, default=1e12)
    parser.add_argument("--max-attempts", type=int, default=5)
    args = parser.parse_args()
    tracker = asyncio.run(
        process_api_requests_from_file(
            args.requests_filepath,
            save_filepath=args.save_filepath,
            request_url=args.url,
            api_key=args.api_key,
            max_requests_per_minute=args.max_requests_per_minute,
            max_tokens_per_minute=args.max_tokens_per_minute,
            max_attempts=args.max_attempts,
        )
    )
    print(json.dumps({"succeeded": tracker.num_tasks_succeeded, "failed": tracker.num_tasks_failed}))


if __name__ == "__main__":
    main()
