"""The BERT encoder of all-MiniLM-L6-v2 in plain torch, loaded from the package's files.

The same computation as ``transformers.BertModel`` (absolute positions, post-LayerNorm
layers, exact GELU) for the configuration this model uses, without importing transformers:
that import alone took 2.4 s of a quiet start and 6-10 s beside a running ingestion.
tests/test_text_embedding.py checks the vectors against transformers' own model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class BertEncoder(nn.Module):
    """(token ids, attention mask) -> last hidden states, both (texts, tokens). Its parameter
    names are transformers' (``embeddings.word_embeddings.weight``, ``encoder.layer.0...``),
    so the model's safetensors load into it as they are."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        if (
            config.get("hidden_act", "gelu") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError("only BERT with absolute positions and GELU is supported")
        self.heads = int(config["num_attention_heads"])
        if int(config["hidden_size"]) % self.heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        self.embeddings = _Embeddings(config)
        self.encoder = _Layers(config)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.embeddings.embed(ids)
        attend = mask[:, None, None, :].to(torch.bool)  # (texts, 1, 1, tokens): keys to use
        for layer in self.encoder.layers():
            states = layer.encode(states, attend, self.heads)
        return states


def _linear(layer: nn.Linear, states: torch.Tensor) -> torch.Tensor:
    return nn.functional.linear(states, layer.weight, layer.bias)


def _norm(layer: nn.LayerNorm, states: torch.Tensor) -> torch.Tensor:
    return nn.functional.layer_norm(
        states, layer.normalized_shape, layer.weight, layer.bias, layer.eps
    )


class _Embeddings(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden = int(config["hidden_size"])
        self.word_embeddings = nn.Embedding(int(config["vocab_size"]), hidden)
        self.position_embeddings = nn.Embedding(int(config["max_position_embeddings"]), hidden)
        self.token_type_embeddings = nn.Embedding(int(config["type_vocab_size"]), hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=float(config["layer_norm_eps"]))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_embeddings.weight[: ids.shape[1]]
        words = nn.functional.embedding(ids, self.word_embeddings.weight)
        # One segment: token type 0 throughout.
        return _norm(self.LayerNorm, words + positions + self.token_type_embeddings.weight[0])


class _Layers(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(int(config["num_hidden_layers"])))

    def layers(self) -> list[_Layer]:
        return [layer for layer in self.layer if isinstance(layer, _Layer)]


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)


class _Output(nn.Module):
    """A linear layer, then LayerNorm of the residual sum (BERT's ``*.output`` blocks)."""

    def __init__(self, inputs: int, outputs: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, outputs)
        self.LayerNorm = nn.LayerNorm(outputs, eps=eps)

    def add(self, states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return _norm(self.LayerNorm, _linear(self.dense, states) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden)
        self.output = _Output(hidden, hidden, eps)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)


class _Layer(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, inner = int(config["hidden_size"]), int(config["intermediate_size"])
        eps = float(config["layer_norm_eps"])
        self.attention = _Attention(hidden, eps)
        self.intermediate = _Intermediate(hidden, inner)
        self.output = _Output(inner, hidden, eps)

    def encode(self, states: torch.Tensor, attend: torch.Tensor, heads: int) -> torch.Tensor:
        texts, tokens, hidden = states.shape
        projections = self.attention.self

        def split(layer: nn.Linear) -> torch.Tensor:
            projected = _linear(layer, states)
            return projected.view(texts, tokens, heads, hidden // heads).transpose(1, 2)

        query, key, value = (
            split(projections.query),
            split(projections.key),
            split(projections.value),
        )
        scores = query @ key.transpose(-1, -2) / math.sqrt(hidden // heads)
        scores = scores.masked_fill(~attend, torch.finfo(scores.dtype).min)
        mixed = (torch.softmax(scores, dim=-1) @ value).transpose(1, 2)
        states = self.attention.output.add(mixed.reshape(texts, tokens, hidden), states)
        inner = nn.functional.gelu(_linear(self.intermediate.dense, states))
        return self.output.add(inner, states)
