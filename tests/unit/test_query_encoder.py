"""The recall query encoder: the same vectors as the batch encoder, up to its precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memcrm.models.encoder import Encoder
from memcrm.models.query_encoder import QueryEncoder, native_bfloat16

QUERIES = [
    "When did Caroline go to the LGBTQ support group?",
    "suitcase did not arrive in Boston",
    "What does the customer think about the new pricing?",
    "",
]
MEMORIES = [
    "My suitcase never arrived in Boston and nobody answers the phone.",
    "I went to a support group meeting yesterday, it was so powerful.",
    "Your prices went up again, I am looking at other providers.",
    "Thanks, the crew on flight 22 were lovely!",
    "Can I add extra legroom to my booking next week?",
]


def test_float32_gives_the_batch_encoders_vectors(encoder: Encoder) -> None:
    query = QueryEncoder(encoder, precision="float32")
    assert query.precision == "float32"
    got = query.encode(QUERIES)
    assert got.shape == (len(QUERIES), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, encoder.encode(QUERIES), atol=1e-5)
    assert query.encode([]).shape == (0, 384)


def test_bfloat16_keeps_direction_and_ranking(encoder: Encoder) -> None:
    query = QueryEncoder(encoder, precision="bfloat16")
    got, want = query.encode(QUERIES), encoder.encode(QUERIES)
    cosines = (got * want).sum(axis=1)
    assert cosines.min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    memories = encoder.encode(MEMORIES)
    assert (
        np.argsort(-(got @ memories.T), axis=1) == np.argsort(-(want @ memories.T), axis=1)
    ).all()
    # The float32 model the encoder shares with others is left as it was.
    assert next(encoder.model[0].auto_model.parameters()).dtype == torch.float32


def test_auto_uses_bfloat16_only_where_the_cpu_computes_it(encoder: Encoder) -> None:
    expected = "bfloat16" if native_bfloat16() else "float32"
    assert QueryEncoder(encoder).precision == expected


def test_one_text_takes_the_lean_forward_with_bit_identical_vectors(encoder: Encoder) -> None:
    # One text skips the transformers module stack; its vector is the module stack's, bit for
    # bit, in both precisions (several texts, with padding, still take the module stack).
    texts = [*QUERIES, *MEMORIES, "x " * 400]  # empty, short, long and truncated at 256
    for precision in ("float32", "bfloat16"):
        query = QueryEncoder(encoder, precision=precision)
        assert query._lean is not None
        lean = np.stack([query.encode([t])[0] for t in texts])
        query._lean = None
        stack = np.stack([query.encode([t])[0] for t in texts])
        assert np.array_equal(lean, stack)
        # Padded together, several texts get the same vectors up to the arithmetic's rounding.
        np.testing.assert_allclose(query.encode(texts[:3]), stack[:3], atol=2e-2)


def test_bfloat16_lean_forward_packs_its_matrices_bit_identically(encoder: Encoder) -> None:
    # Where the CPU computes bfloat16, the lean forward prepacks its matrices for oneDNN and
    # runs as TorchScript; the vectors stay the module stack's, bit for bit, on texts of 1 to
    # 256 tokens.
    query = QueryEncoder(encoder, precision="bfloat16")
    assert query._lean is not None
    if not native_bfloat16():
        pytest.skip("this CPU emulates bfloat16: nothing is packed for it")
    assert isinstance(query._lean, torch.jit.ScriptModule)
    assert query._lean.packed
    texts = [*QUERIES, *MEMORIES, "x " * 400, "ok"]
    lean = np.stack([query.encode([t])[0] for t in texts])
    query._lean = None
    assert np.array_equal(lean, np.stack([query.encode([t])[0] for t in texts]))
    # Float32 products round differently when packed: float32 keeps plain ``linear``.
    float32 = QueryEncoder(encoder, precision="float32")
    assert float32._lean is not None and not float32._lean.packed


def test_a_forward_that_is_not_bit_identical_is_not_used(encoder: Encoder) -> None:
    from memcrm.models.enrichment import tokenize
    from memcrm.models.lean_bert import lean_forward

    bert = QueryEncoder(encoder, precision="float32")._bert
    probe = tokenize(encoder.model, ["a probe text"])
    assert lean_forward(bert, [probe]) is not None
    # A probe whose wanted hidden states no forward can give: every candidate is refused.
    probe_ids = probe["input_ids"]

    class Shifted:
        config = bert.config

        def __getattr__(self, name: str) -> object:
            return getattr(bert, name)

        def __call__(self, **inputs: torch.Tensor) -> object:
            out = bert(**inputs)
            out.last_hidden_state = out.last_hidden_state + 1e-3
            return out

    assert lean_forward(Shifted(), [{"input_ids": probe_ids, **probe}]) is None
