"""The activation stream computed ahead in a thread (`stream.prefetched`): same chunks, same
order, the same trained SAE; errors reach the consumer; a consumer that stops stops the thread."""

from __future__ import annotations

import threading

import pytest
import torch

from workbench import Corpus
from workbench.saes import SAEConfig, TrainConfig, train_sae
from workbench.saes.config import SAEConfigError
from workbench.saes.stream import prefetched

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _threads() -> int:
    return sum(t.name == "activation-prefetch" for t in threading.enumerate())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_chunks_same_order(device, depth):
    dev = torch.device(device)
    want = [torch.full((5, 3), float(i), device=dev) for i in range(9)]
    got = list(prefetched(iter([w.clone() for w in want]), depth, dev))
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert _threads() == 0


def test_producer_error_is_raised_in_the_consumer():
    def chunks():
        yield torch.zeros(2)
        raise RuntimeError("corpus window 7 is empty")

    it = prefetched(chunks(), 2)
    assert torch.equal(next(it), torch.zeros(2))
    with pytest.raises(RuntimeError, match="corpus window 7 is empty"):
        next(it)
    assert _threads() == 0


def test_a_consumer_that_stops_stops_the_thread():
    made = []

    def chunks():
        for i in range(1000):
            made.append(i)
            yield torch.tensor([i])

    it = prefetched(chunks(), 2)
    assert [int(next(it)) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert _threads() == 0
    # what was taken, the queue, one blocked in hand, one more if the closing drain freed its slot
    assert len(made) <= 3 + 2 + 2, made


def test_bad_depth_is_one_clear_error():
    with pytest.raises(ValueError, match="prefetch depth -1 must be >= 0"):
        list(prefetched(iter([]), -1))
    with pytest.raises(SAEConfigError, match="prefetch=-2 must be None or an integer >= 0"):
        TrainConfig(prefetch=-2)


def test_training_with_prefetch_equals_training_without(tiny, small_corpus_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=20000)
    cfg = SAEConfig("topk", tiny.d_model, 128, site="resid_post:1", k=8)
    out = []
    for depth in (0, 3):
        tc = TrainConfig(total_tokens=4096, batch_size=256, buffer_tokens=1024, window=32,
                         tokens_per_forward=256, warmup_steps=2, eval_tokens=0, prefetch=depth)
        out.append(train_sae(tiny, corpus, cfg, tc, progress=False))
    assert _threads() == 0
    assert out[0].tokens == out[1].tokens == 4096
    for name, p in out[0].sae.state_dict().items():
        assert torch.equal(p, out[1].sae.state_dict()[name]), name
