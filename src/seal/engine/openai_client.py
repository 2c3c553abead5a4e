"""One small client for OpenAI-compatible /chat/completions endpoints: self-edit generation and the LLM judge.

A request that fails for a reason that may pass (no connection, a timeout, a dropped connection, HTTP 5xx, HTTP 429,
a reply that is not a chat completion) is retried with back-off (a 429's Retry-After is honoured up to a cap); a
request the server refuses (any other 4xx: a wrong model name, URL or key) fails at once. Either way the error
is one line naming the endpoint, the model and the cause, never the key: the key is read from the environment
variable `key_env` names, sent only in the Authorization header, and replaced by *** in every message (`redact`).
"""
from __future__ import annotations

import email.utils
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

# 4xx statuses that may pass on their own: retried like a 5xx (408 timeout, 409 conflict, 425 too early, 429).
RETRIED_4XX = (408, 409, 425, 429)


def redact(text: str, key_envs: Iterable[str]) -> str:
    """`text` with the value of each environment variable named in `key_envs` replaced by ***. Values shorter
    than 4 characters are left alone: no real key is that short, and replacing them would garble the text."""
    for name in set(key_envs):
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


class _Retry(Exception):
    """A failed attempt that may succeed if tried again: `cause` says why, `wait` is the server's Retry-After."""

    def __init__(self, cause: str, wait: float | None = None):
        super().__init__(cause)
        self.cause, self.wait = cause, wait


@dataclass
class ChatEndpoint:
    """An OpenAI-compatible endpoint and how to call it. `what` names it in errors ("generation endpoint",
    "judge endpoint"); `error` is the exception class raised; `attempts` counts the first try; back-off waits
    `backoff`, then twice that, and so on, each wait (a Retry-After too) at most `max_wait` seconds."""
    base_url: str
    model: str
    key_env: str = "OPENAI_API_KEY"
    what: str = "endpoint"
    error: type = RuntimeError
    timeout: float = 60.0
    attempts: int = 3
    backoff: float = 1.0
    max_wait: float = 60.0
    resume_hint: str = "Finished work is stored: the same command resumes once it answers."

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _chat(self, client, messages: list[dict], stop: threading.Event, **params: Any) -> str:
        """The reply's text to `messages` (one request, retried); `params` are the request's other fields
        (max_tokens, temperature, top_p). A set `stop` ends the retries (another request has failed)."""
        cause, tried = "no attempt made", 0
        for attempt in range(max(1, self.attempts)):
            tried = attempt + 1
            try:
                return self._once(client, messages, params)
            except _Retry as e:
                cause = e.cause
                wait = min(self.max_wait, e.wait if e.wait is not None else self.backoff * 2 ** attempt)
                if tried >= self.attempts or stop.wait(wait):     # out of attempts, or another request failed
                    break
        tries = "1 attempt" if tried == 1 else f"{tried} attempts"
        hint = f"{' ' if cause.endswith('?') else '. '}{self.resume_hint}" if self.resume_hint else ""
        raise self.error(self._redact(f"{self.what} {self.base_url} (model {self.model}) failed after {tries}: "
                                      f"{cause}{hint}")) from None

    def chat_all(self, messages: Sequence[list[dict]], concurrency: int = 4, **params: Any) -> list[str]:
        """Replies to each conversation in `messages`, `concurrency` requests at a time, in order. The first
        request that fails for good stops the others (no new requests, no more retries) and raises."""
        import httpx
        if not messages:
            return []
        stop = threading.Event()
        first: list[BaseException] = []     # the failure that stopped the others: the one to report
        lock = threading.Lock()

        def one(msgs):
            if stop.is_set():
                return None
            try:
                return self._chat(client, msgs, stop, **params)
            except BaseException as e:
                with lock:
                    if not stop.is_set():
                        first.append(e)
                        stop.set()
                raise

        with httpx.Client(timeout=self.timeout) as client:
            pool = ThreadPoolExecutor(max(1, concurrency))
            try:
                futures = [pool.submit(one, m) for m in messages]
                try:
                    return [f.result() for f in futures]
                except Exception:
                    if first:
                        raise first[0] from None
                    raise
            finally:
                stop.set()   # on success every request is done; on failure the others stop at once
                pool.shutdown(wait=True, cancel_futures=True)

    def _once(self, client, messages, params) -> str:
        import httpx
        key = os.environ.get(self.key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            r = client.post(self.url, headers=headers, json={"model": self.model, "messages": messages, **params})
        except httpx.TimeoutException:
            raise _Retry(f"timed out after {self.timeout:g} s (is the server overloaded, or the timeout too "
                         "short?)") from None
        except httpx.ConnectError as e:
            text = str(e)
            if "refused" in text.lower() or "errno 111" in text.lower():
                raise _Retry("connection refused: is the server running?") from None
            raise _Retry(f"cannot connect ({self._one_line(text)}): is the URL right and the server up?") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            raise _Retry(f"the connection was closed before the reply ({type(e).__name__}): did the server stop?") \
                from None
        except httpx.HTTPError as e:
            raise _Retry(f"{type(e).__name__}: {self._one_line(str(e))}") from None
        status = r.status_code
        if status == 429:
            raise _Retry("HTTP 429 rate limited", self._retry_after(r))
        if status >= 500 or status in RETRIED_4XX:
            raise _Retry(f"HTTP {status} server error" if status >= 500 else f"HTTP {status}", self._retry_after(r))
        if status >= 400:
            detail = self._one_line(r.text)[:200]
            raise self.error(self._redact(
                f"{self.what} {self.base_url} refused the request for model {self.model} (HTTP {status}"
                f"{': ' + detail if detail else ''}); check the model name, the URL and the key in "
                f"${self.key_env}"))
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry(f"HTTP {status} with a reply that is not a chat completion") from None
        return content if isinstance(content, str) else ""

    def _retry_after(self, r) -> float | None:
        """The Retry-After header in seconds (a number or an HTTP date), or None if absent or unreadable."""
        value = r.headers.get("Retry-After")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, IndexError):
            return None

    def _redact(self, text: str) -> str:
        return redact(text, (self.key_env, "OPENAI_API_KEY"))

    @staticmethod
    def _one_line(text: str) -> str:
        return " ".join(text.split())
