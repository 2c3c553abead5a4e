import json
import os
import threading
from contextlib import contextmanager
from http.server import HTTPServer
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def smol():
    """The built-in SmolLM2-135M-Instruct in fp32 (exact comparisons need fp32)."""
    from seal.logging_setup import quiet_libraries
    from seal.engine.models import load_model
    quiet_libraries()
    return load_model(dtype="fp32")


@pytest.fixture(scope="session")
def smol64():
    """The built-in model in fp64: batched-vs-alone training is compared here, where float rounding is far
    below anything Adam could amplify (in fp32, near-zero gradients make Adam turn 1e-7 noise into lr-sized
    steps on a few weights, which hides what the test is about)."""
    from seal.engine.models import load_model
    return load_model(dtype="fp64")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, smol):
    """A tiny random Llama saved as a Hugging Face folder, with the built-in tokenizer: the same loading path
    a user's hub model takes, at a size that makes end-to-end CLI tests take seconds."""
    from transformers import LlamaConfig, LlamaForCausalLM
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = smol.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def state_hash(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def send_json(handler, status: int, obj) -> None:
    """Answer the request `handler` holds with `obj` as JSON (the tests' loopback servers)."""
    out = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(out)))
    handler.end_headers()
    handler.wfile.write(out)


@contextmanager
def loopback_server(handler_cls):
    """`handler_cls` served on 127.0.0.1 in a thread; yields the server's /v1 base URL."""
    server = HTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
