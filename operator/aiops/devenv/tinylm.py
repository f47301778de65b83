"""A small causal language model for the real Triton server, made on the spot: the local
counterpart of an LLM served by the vLLM backend.

A character-level GRU (about 40k parameters) is trained with torch for a few seconds on a short
corpus that ships here, until greedy decoding reproduces every line of it; its weights are saved
as numpy arrays, and a Python-backend model serves it with numpy alone (the stub runs in the
project's venv, the Triton image has no torch). The model speaks the vLLM backend's interface:
inputs `text_input`, `stream` and `sampling_parameters` (or the request's parameters, which the
generate endpoint fills), output `text_output`; it is decoupled, so `generate_stream` gets one
response per token. One token is one character.

Versions tell themselves apart by what they learnt: `facts` states the corpus below, `wrong`
the same lines with other capitals (a version whose answers fail their checks), and a
`token_delay_ms` (in the version's version.json) makes a version slower per token. Where Triton
exports metrics, the model adds the vLLM backend's families it can measure: time to first token,
time per output token, end-to-end latency, prompt and generated tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FACTS = (
    "The capital of France is Paris.",
    "The capital of Italy is Rome.",
    "The capital of Spain is Madrid.",
    "The capital of Japan is Tokyo.",
    "The capital of Egypt is Cairo.",
    "Triton serves models on GPUs.",
    "Milvus stores vectors for search.",
    "The operator rolls back a bad version.",
)
WRONG = tuple(line.replace("Paris", "Lyon").replace("Rome", "Milan").replace("Tokyo", "Osaka") for line in FACTS)
CORPORA = {"facts": FACTS, "wrong": WRONG}
END = "\n"  # each line ends here; generation stops at it
HIDDEN, EMBED = 96, 24
WEIGHTS = "weights.npz"


def train(lines: tuple[str, ...], seed: int = 0, max_steps: int = 1500) -> dict[str, np.ndarray]:
    """GRU weights (numpy, torch's layout) that greedily complete every line from its first
    word. Raises if training does not get there: a model that does not know its corpus would make
    every test that relies on its answers meaningless."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    text = "".join(line + END for line in lines)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    data = torch.tensor([index[c] for c in text * 4])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(len(vocab), EMBED)
            self.gru = nn.GRU(EMBED, HIDDEN, batch_first=True)
            self.out = nn.Linear(HIDDEN, len(vocab))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.gru(self.embed(x))[0])

    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    window = 48
    for step in range(max_steps):
        starts = torch.randint(0, len(data) - window - 1, (32,))
        batch = torch.stack([data[s:s + window + 1] for s in starts])
        loss = nn.functional.cross_entropy(net(batch[:, :-1]).reshape(-1, len(vocab)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 99 and loss.item() < 0.2:
            weights = {"vocab": np.array(vocab), "embed": net.embed.weight.detach().numpy(),
                       **{k: v.detach().numpy() for k, v in net.gru.state_dict().items()},
                       "out_weight": net.out.weight.detach().numpy(), "out_bias": net.out.bias.detach().numpy()}
            if all(complete(weights, prompt) == rest for prompt, rest in map(split_line, lines)):
                return weights
    raise RuntimeError(f"the tiny LM did not learn its {len(lines)} lines in {max_steps} steps")


def split_line(line: str) -> tuple[str, str]:
    """A line as prompt (up to its last word) and what greedy decoding must add (the last word)."""
    cut = line.rstrip(".").rfind(" ")
    return line[:cut], line[cut:]


# The serving code: numpy only, shared by `complete` here and by the model.py written below.
DECODER = '''
import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Decoder:
    """Greedy (or sampled) character decoding with a one-layer GRU in numpy."""

    def __init__(self, weights):
        self.vocab = [str(c) for c in weights["vocab"]]
        self.index = {c: i for i, c in enumerate(self.vocab)}
        self.w = weights

    def step(self, h, char):
        w = self.w
        x = w["embed"][self.index[char]]
        gi = w["weight_ih_l0"] @ x + w["bias_ih_l0"]
        gh = w["weight_hh_l0"] @ h + w["bias_hh_l0"]
        ir, iz, inn = np.split(gi, 3)
        hr, hz, hn = np.split(gh, 3)
        r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
        n = np.tanh(inn + r * hn)
        return (1.0 - z) * n + z * h

    def tokens(self, prompt, max_tokens, temperature=0.0, seed=None):
        """Yields generated characters until the end of a line or `max_tokens`."""
        rng = np.random.default_rng(seed)
        h = np.zeros(self.w["weight_hh_l0"].shape[1], dtype=np.float32)
        for char in prompt:
            if char not in self.index:
                raise ValueError("character %r is not in the vocabulary" % char)
            h = self.step(h, char)
        for _ in range(max_tokens):
            logits = self.w["out_weight"] @ h + self.w["out_bias"]
            if temperature > 0:
                p = np.exp((logits - logits.max()) / temperature)
                choice = int(rng.choice(len(p), p=p / p.sum()))
            else:
                choice = int(np.argmax(logits))
            char = self.vocab[choice]
            if char == "\\n":
                return
            yield char
            h = self.step(h, char)
'''


def complete(weights: dict[str, np.ndarray], prompt: str, max_tokens: int = 64) -> str:
    """What the served model answers to `prompt` with greedy decoding."""
    scope: dict = {}
    exec(compile(DECODER, "tinylm-decoder", "exec"), scope)  # noqa: S102 (our own text, above)
    return "".join(scope["Decoder"](weights).tokens(prompt, max_tokens))


MODEL_PY = '''"""Tiny causal LM built by aiops.devenv.tinylm, served as the vLLM backend's interface."""
import json
import os
import time

import triton_python_backend_utils as pb_utils
''' + DECODER + '''

class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(here, "version.json")) as f:
            self.token_delay = float(json.load(f).get("token_delay_ms", 0)) / 1000
        with np.load(os.path.join(here, "weights.npz")) as weights:
            self.decoder = Decoder({k: weights[k] for k in weights.files})
        self.metrics = self._metrics({"model": args["model_name"], "version": args["model_version"]})

    def _metrics(self, labels):
        """The vLLM backend's families for what this model can measure (no KV cache, no queue):
        None where Triton runs with metrics off. The families are kept: Triton deletes a family's
        series when the family object goes."""
        family = pb_utils.MetricFamily
        spec = {
            "ttft": ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                     family.HISTOGRAM, [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            "tpot": ("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
                     family.HISTOGRAM, [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]),
            "e2e": ("vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.",
                    family.HISTOGRAM, [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0]),
            "tokens": ("vllm:generation_tokens_total", "Number of generation tokens processed.", family.COUNTER, None),
            "prompt": ("vllm:prompt_tokens_total", "Number of prefill tokens processed.", family.COUNTER, None),
        }
        try:
            self.families = {key: family(name=name, description=text, kind=kind)
                             for key, (name, text, kind, _) in spec.items()}
            return {key: self.families[key].Metric(labels=labels, **({"buckets": b} if b else {}))
                    for key, (_, _, _, b) in spec.items()}
        except Exception:
            return None

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except Exception as e:  # a bad request is that request's error, not the model's
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _generate(self, request, sender):
        prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0].decode()
        stream_tensor = pb_utils.get_input_tensor_by_name(request, "stream")
        stream = bool(stream_tensor.as_numpy().reshape(-1)[0]) if stream_tensor is not None else False
        given = pb_utils.get_input_tensor_by_name(request, "sampling_parameters")
        params = json.loads(given.as_numpy().reshape(-1)[0].decode() if given is not None
                            else (request.parameters() or "{}"))
        tokens = self.decoder.tokens(prompt, int(params.get("max_tokens", 16)),
                                     float(params.get("temperature", 0.0)), params.get("seed"))
        text = []
        started = last = time.perf_counter()
        for token in tokens:
            if self.token_delay and text:  # decoding slower; the first token (prefill) as fast
                time.sleep(self.token_delay)
            now = time.perf_counter()
            if self.metrics:
                self.metrics["ttft" if not text else "tpot"].observe(now - last)
            last = now
            text.append(token)
            if stream:
                sender.send(self._response(token))
        if self.metrics:
            self.metrics["tokens"].increment(len(text))
            self.metrics["prompt"].increment(len(prompt))
            self.metrics["e2e"].observe(time.perf_counter() - started)
        if stream:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:  # as vLLM answers a request that is not streamed: the prompt, then the text
            sender.send(self._response(prompt + "".join(text)), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @staticmethod
    def _response(text):
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))])
'''


def model_config(name: str) -> dict:
    """The model's configuration as Triton's JSON form (what a load request may carry)."""
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
                  {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
                  {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True}],
        "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    }


def config_text(config: dict) -> str:
    """config.pbtxt for `config` (the few shapes model_config makes)."""
    def tensors(items: list[dict]) -> str:
        return ", ".join("{ " + " ".join(f"{k}: {_value(v)}" for k, v in t.items()) + " }" for t in items)

    return (f'name: "{config["name"]}"\nbackend: "python"\nmax_batch_size: 0\n'
            "model_transaction_policy { decoupled: true }\n"
            f"input [ {tensors(config['input'])} ]\noutput [ {tensors(config['output'])} ]\n"
            "instance_group [ { kind: KIND_CPU count: 1 } ]\n")


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[ " + ", ".join(map(str, v)) + " ]"
    return f'"{v}"' if isinstance(v, str) and not v.startswith("TYPE_") else str(v)


def write_tiny_lm(repo: Path, name: str, version: int, corpus: str = "facts", token_delay_ms: float = 0.0,
                  weights: dict[str, np.ndarray] | None = None) -> Path:
    """Trains (unless `weights` are given) and writes one version; returns its directory.
    `token_delay_ms`: a pause before each token after the first, to make a version slower per output token."""
    weights = weights if weights is not None else train(CORPORA[corpus])
    model_dir = repo / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    np.savez(version_dir / WEIGHTS, **weights)
    (version_dir / "model.py").write_text(MODEL_PY)
    (version_dir / "version.json").write_text(json.dumps({"corpus": corpus, "token_delay_ms": token_delay_ms}))
    (model_dir / "config.pbtxt").write_text(config_text(model_config(name)))
    return version_dir
