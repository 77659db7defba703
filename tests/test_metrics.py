"""metrics: torchnet meters fed in buffered flushes give exact, sample-weighted results."""

from __future__ import annotations

import numpy as np
import torch

from trainkit.run.metrics import EpochMeters, most_confused, per_class


def test_loss_mean_is_sample_weighted_when_the_last_batch_is_smaller():
    meters = EpochMeters(num_classes=3, flush_every=2)
    batches = [(torch.tensor(1.0), 4), (torch.tensor(2.0), 4), (torch.tensor(10.0), 2)]
    for loss, n in batches:
        meters.add(loss, torch.zeros(n, 3), torch.zeros(n, dtype=torch.long))
    expected = (1.0 * 4 + 2.0 * 4 + 10.0 * 2) / 10  # 3.2, not the batch average 4.33
    assert abs(meters.summary()["loss"] - expected) < 1e-9
    assert meters.summary()["samples"] == 10


def test_top1_top5_and_confusion_match_a_direct_count():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 8, generator=gen)
    targets = torch.randint(0, 8, (50,), generator=gen)
    meters = EpochMeters(num_classes=8, flush_every=3)
    for chunk in range(0, 50, 7):
        meters.add(torch.tensor(0.0), logits[chunk : chunk + 7], targets[chunk : chunk + 7])
    s = meters.summary()
    top5 = logits.topk(5, dim=1).indices
    assert s["acc"] == (logits.argmax(1) == targets).sum().item() / 50
    assert s["acc5"] == (top5 == targets[:, None]).any(1).sum().item() / 50
    conf = meters.confusion_matrix()
    direct = np.zeros((8, 8), dtype=np.int64)
    for t, p in zip(targets.tolist(), logits.argmax(1).tolist()):
        direct[t, p] += 1
    assert (conf == direct).all()


def test_per_class_and_most_confused():
    conf = np.array([[8, 2, 0], [0, 5, 5], [1, 0, 9]])
    pc = per_class(conf)
    assert pc["recall"] == [0.8, 0.5, 0.9]
    assert np.allclose(pc["precision"], [8 / 9, 5 / 7, 9 / 14])
    assert most_confused(conf, ["a", "b", "c"], n=2) == [("b", "c", 5), ("a", "b", 2)]
