"""seal's OpenAI-compatible clients against a real server it did not write: `transformers serve` on loopback,
serving the built-in model (the safetensors folder seal converts its GGUF into, found by seal's own
`resolve_model_path`), offline. Self-edit generation (`endpoint:MODEL` conditions, eval and cpt), the LLM judge
(grading and the grader-injection cases), and faults: the server killed mid-run, a read timeout, HTTP 429 with
Retry-After (a loopback handler: a real server cannot be made to rate-limit), a refused request.

The inner loop runs on conftest's tiny random model; only the self-edits and the verdicts come from the server.
A server pinned to a model (FORCE_MODEL) accepts only that exact string as a request's `model`, so the server is
started in the folder's parent with the folder's name: the condition is `endpoint:<folder name>`. (This server
samples greedily whatever the temperature, unless the model's generation_config says do_sample: the k self-edits
of a context come back identical. vLLM samples.) The tests on loopback handlers need no serving extra; the others
skip, saying why, without it.
"""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from seal.domains.knowledge.graders import GradeItem, JudgeError, OpenAIJudge
from seal.engine.generation import EndpointError, generate_openai
from seal.engine.openai_client import ChatEndpoint, redact

from .conftest import loopback_server, send_json
from .test_hostile import _paired, injection_cases
from .test_reliability import _one_clear_line


def _why_no_server() -> str | None:
    """Why `transformers serve` cannot run here, or None."""
    import transformers
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        return "this transformers has no `serve` command"
    if not is_serve_available():
        return ("transformers' serving extra is not installed (fastapi, uvicorn, openai): "
                "pip install 'transformers[serving]' (seal's test extra has it)")
    if int(transformers.__version__.split(".")[0]) < 5:
        return f"these tests drive transformers 5's `serve`; transformers {transformers.__version__} is installed"
    return None


START_TIMEOUT = 180.0      # seconds for the server to load the model and answer /health


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    """The server's and the CLI's environment: offline, and one OpenMP thread that sleeps when it waits. On 2
    cores shared with the test process (and often with other work), torch's OpenMP threads spin-wait for each other
    by default. Measured here under load: 8 judge requests to the server took 58 s of CPU with two spinning
    threads, 5 s with one (or two passive ones; this whole file took 139 s with two passive server threads, 108 s
    with one); 18 tiny-model trials in the CLI took 52 s with two threads, 5 s with one."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


class Server:
    """`transformers serve` pinned to the built-in model's folder, on 127.0.0.1:`port`, its output in `log`."""

    def __init__(self, log: Path, port: int | None = None):
        from seal.engine.models import resolve_model_path
        folder = Path(resolve_model_path(None))     # converts the GGUF on first use, as seal itself does
        self.folder, self.model, self.port = folder, folder.name, port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.start(log)

    def start(self, log: Path) -> None:
        """Start (or start again, on the same port) and wait until /health answers; `log` gets its output."""
        self.log = log
        t0 = time.perf_counter()
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1", "--port",
                 str(self.port), "--device", "cpu", self.model], cwd=self.folder.parent, env=_env(), stdout=out,
                stderr=subprocess.STDOUT)
        self._wait_healthy()
        self.startup_s = time.perf_counter() - t0

    def _wait_healthy(self) -> None:
        import httpx
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer /health in {START_TIMEOUT:g} s:\n"
                           f"{self.log.read_text()}")

    def chat_requests(self) -> int:
        """Chat completions this server has answered (its access log)."""
        return self.log.read_text().count('"POST /v1/chat/completions')

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shared server (the tests that need none run without the serving extra)."""
    reason = _why_no_server()
    if reason:
        pytest.skip(reason)
    s = Server(tmp_path_factory.mktemp("serve") / "serve.log")
    print(f"\ntransformers serve started in {s.startup_s:.1f} s")
    yield s
    s.stop()


def _seal_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "seal", *map(str, args)]


def _seal(*args, timeout=600):
    return subprocess.run(_seal_cmd(*args), capture_output=True, text=True, timeout=timeout, env=_env())


def _tiny(tiny_dir, out, tokens=8):
    return ["--model", tiny_dir, "--dtype", "fp32", "--no-progress", "--out", out, "--epochs", "1",
            "--max-new-tokens", tokens]


def _self_edits(out: Path, source: str) -> dict[tuple[str, int], str]:
    db = sqlite3.connect(f"{(out / 'store.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT context_id, sample, text FROM self_edits WHERE source=?", (source,)).fetchall()
    finally:
        db.close()
    return {(c, s): t for c, s, t in rows}


# ----------------------------------------------------------------------------------------- a. self-edits

def test_cpt_with_endpoint_self_edits_from_the_real_server(server, tiny_dir, tmp_path):
    """`knowledge cpt` with an endpoint condition (`knowledge eval` with one is the killed-and-resumed run below)."""
    out = tmp_path / "cpt"
    before = server.chat_requests()
    r = _seal("knowledge", "cpt", "--n", "2", "--conditions", f"base,endpoint:{server.model}", "--gen-url",
              server.url, *_tiny(tiny_dir, out))
    assert r.returncode == 0, r.stderr[-3000:]
    edits = _self_edits(out, f"endpoint:{server.model}")
    assert len(edits) == 2 and all(t.strip() for t in edits.values()), edits
    assert server.chat_requests() - before == 2        # each one written by the server, none by the tiny model


def test_a_refused_request_names_the_server_status_model_and_key_variable(server):
    """A model name the pinned server does not serve: HTTP 400 at once (no retry), with the server's reason."""
    before = server.chat_requests()
    with pytest.raises(EndpointError) as err:
        generate_openai(server.url, "gpt-4.1", ["Say hi."], key_env="SEAL_SERVE_KEY", max_tokens=2, backoff=0.01)
    msg = str(err.value)
    assert "refused" in msg and "HTTP 400" in msg and "gpt-4.1" in msg and server.url in msg, msg
    assert "pinned" in msg and "$SEAL_SERVE_KEY" in msg, msg
    assert server.chat_requests() - before == 1


# ----------------------------------------------------------------------------------------- b. the judge

N_CASES = 4    # each case is 4 judge requests (wrong and injected, each against its gold and a decoy)


def test_the_judge_behind_the_real_server_grades_and_resists_injections(server):
    """The reliability suite's paired injection cases (tests/test_hostile.py), judged by the 135M model behind
    the real server, asserted as the local judge's test asserts: the injected answers are not credited more often
    than the same wrong answers alone (one-sided sign test, 5%) and by at most 1 case in 32. The 135M judge credits
    almost nothing (wrong, injected and gold answers alike; measured with 8 cases: 0 of 8 plain, 0 of 8 injected), so this
    mostly shows the path holds: every answer gets a verdict, nothing crashes."""
    cases = injection_cases(N_CASES)
    judge = OpenAIJudge(server.url, server.model, key_env="SEAL_SERVE_NO_KEY", backoff=0.05)
    judge.check()
    before = server.chat_requests()
    items = [GradeItem(c["question"], c["gold"], c[kind]) for kind in ("wrong", "injected") for c in cases]
    grades = judge.grade([*items, GradeItem("Capital of Italy?", "Rome", "")])
    assert len(grades) == 2 * N_CASES + 1 and set(grades) <= {0.0, 1.0}
    assert grades[-1] == 0.0 and server.chat_requests() - before == 2 * len(items)  # the empty answer: unasked
    counts = _paired(grades[:N_CASES], grades[N_CASES:2 * N_CASES])
    print(f"\n{judge.name} (transformers serve): {counts}")
    assert counts["sign_test_p_one_sided"] >= 0.05, counts
    assert counts["credit_injected"] - counts["credit_plain"] <= N_CASES / 32, counts


# ----------------------------------------------------------------------------------------- c. faults

def test_eval_with_endpoint_self_edits_survives_the_server_killed_mid_run(server, tiny_dir, tmp_path):
    """`knowledge eval` with conditions base,endpoint:MODEL and 18 self-edits (two chunks: 16, then 2). The server
    is killed once the first chunk is stored: the command fails with one line naming the endpoint; the chunk stays
    stored. With the server started again on the same port, the same command finishes, asking the server only
    for the 2 missing self-edits; every self-edit is a non-empty text from the server."""
    out = tmp_path / "run"
    source = f"endpoint:{server.model}"
    args = ["knowledge", "eval", "--n", "2", "--k", "9", "--conditions", f"base,{source}", "--gen-url", server.url,
            *_tiny(tiny_dir, out, tokens=4)]
    run = subprocess.Popen(_seal_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=_env())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            try:
                if len(_self_edits(out, source)) >= 16:
                    break
            except sqlite3.Error:      # the store does not exist yet, or is being created
                pass
            time.sleep(0.05)
        server.stop()                  # SIGKILL, while the second chunk's requests are with it
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
        if server.proc.poll() is not None:
            server.start(server.log.with_name("serve-restarted.log"))   # the same URL, so the same command
    line = _one_clear_line(subprocess.CompletedProcess(args, run.returncode, "", err))
    assert server.url in line and "connection" in line and "same command resumes" in line, line
    stored = _self_edits(out, source)
    assert len(stored) == 16, len(stored)

    r = _seal(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert server.chat_requests() == 2        # the 2 missing self-edits, not the 16 stored ones
    after = _self_edits(out, source)
    assert len(after) == 18 and all(t.strip() for t in after.values())
    assert all(after[key] == text for key, text in stored.items())
    assert source in json.loads((out / "results.json").read_text())["conditions"]


@pytest.fixture
def silent_url():
    """A loopback socket that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_a_read_timeout_is_retried_then_named(silent_url):
    t0 = time.perf_counter()
    with pytest.raises(EndpointError) as err:
        generate_openai(silent_url, "m", ["x", "y"], timeout=0.3, retries=2, backoff=0.01)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "timed out after 0.3 s" in msg and "failed after 2 attempts" in msg and silent_url in msg, msg
    with pytest.raises(JudgeError, match="not usable.*timed out"):
        OpenAIJudge(silent_url, "m", timeout=0.3).check()


def test_a_timeout_shorter_than_the_real_servers_reply(server):
    """One token, tried once: it leaves the server little work to finish for a client that is gone."""
    with pytest.raises(EndpointError, match="timed out after 0.001 s"):
        generate_openai(server.url, server.model, ["Say hi."], max_tokens=1, timeout=0.001, retries=1)


class _RateLimited(BaseHTTPRequestHandler):
    """429 with Retry-After for the first `limited` requests (all of them if None), then a chat completion."""
    limited: int | None = 1
    retry_after = "1"
    seen: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(time.monotonic())
        if self.limited is None or len(self.seen) <= self.limited:
            out = b'{"error": {"message": "slow down"}}'
            self.send_response(429)
            self.send_header("Retry-After", self.retry_after)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        else:
            send_json(self, 200, {"choices": [{"message": {"role": "assistant", "content": "1. A fact."}}]})

    def log_message(self, *args):
        pass


def test_429_honours_retry_after_then_succeeds_or_gives_up_clearly(monkeypatch):
    monkeypatch.setattr(_RateLimited, "seen", [])
    with loopback_server(_RateLimited) as url:
        t0 = time.perf_counter()
        assert generate_openai(url, "m", ["x"], backoff=0.01) == ["1. A fact."]
        # The server's 1 s, not the 0.01 s back-off.
        assert len(_RateLimited.seen) == 2 and _RateLimited.seen[1] - _RateLimited.seen[0] >= 0.95
        assert time.perf_counter() - t0 < 5

        monkeypatch.setattr(_RateLimited, "limited", None)       # never stops
        monkeypatch.setattr(_RateLimited, "retry_after", "3600")  # capped by max_wait
        monkeypatch.setattr(_RateLimited, "seen", [])
        endpoint = ChatEndpoint(url, "m", what="generation endpoint", error=EndpointError, attempts=3,
                                backoff=0.01, max_wait=0.2)
        t0 = time.perf_counter()
        with pytest.raises(EndpointError) as err:
            endpoint.chat_all([[{"role": "user", "content": "x"}]])
        assert time.perf_counter() - t0 < 3 and len(_RateLimited.seen) == 3
        msg = str(err.value)
        assert "HTTP 429 rate limited" in msg and "failed after 3 attempts" in msg and url in msg, msg
        assert "Finished work is stored: the same command resumes" in msg

        monkeypatch.setattr(_RateLimited, "retry_after", "0")
        with pytest.raises(JudgeError, match="judge endpoint .* HTTP 429 rate limited"):
            OpenAIJudge(url, "m", backoff=0.01).grade([GradeItem("Q?", "a", "a")])


class _Refusing(BaseHTTPRequestHandler):
    """401 with the caller's Authorization header echoed in the body (a hostile server)."""
    seen = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen += 1
        send_json(self, 401, {"error": {"message": f"bad key {self.headers.get('Authorization', '')}"}})

    def log_message(self, *args):
        pass


def test_a_refusal_is_not_retried_and_never_shows_the_key(monkeypatch):
    monkeypatch.setenv("SEAL_SERVE_KEY", "sk-serve-secret-8c1f")
    with loopback_server(_Refusing) as url, pytest.raises(EndpointError) as err:
        generate_openai(url, "m", ["x", "y", "z"], key_env="SEAL_SERVE_KEY", backoff=0.01, concurrency=1)
    msg = str(err.value)
    assert _Refusing.seen == 1, _Refusing.seen       # one refusal stops the others too
    assert "HTTP 401" in msg and "$SEAL_SERVE_KEY" in msg and "sk-serve-secret-8c1f" not in msg, msg


def test_a_failure_stops_the_other_requests():
    """With many prompts and one endpoint that refuses connections, the error comes after one prompt's retries,
    not after every prompt's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"     # closed once we leave: nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="connection refused: is the server running"):
        generate_openai(url, "m", ["x"] * 64, retries=3, backoff=0.2, concurrency=4)
    assert time.perf_counter() - t0 < 2.5


def test_one_redaction_for_every_key_variable(monkeypatch):
    monkeypatch.setenv("SEAL_SERVE_KEY", "sk-abc-123456")
    monkeypatch.setenv("SEAL_SERVE_SHORT", "ab")
    text = "key sk-abc-123456 in a message, and ab"
    assert redact(text, ["SEAL_SERVE_KEY", "SEAL_SERVE_SHORT", "SEAL_SERVE_UNSET"]) == "key *** in a message, and ab"
