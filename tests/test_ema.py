"""The weights' moving average (train.ema_decay): its arithmetic, that training is unchanged by it, resume, loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ccvae import load_run
from ccvae.checkpoint import load_checkpoint
from ccvae.cli import main
from ccvae.ema import WeightAverage, ema_decay_at


def test_decay_warms_up_to_its_setting():
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert [ema_decay_at(0.9, n) for n in (80, 81, 1000)] == [0.9, 0.9, 0.9]  # (1 + n) / (10 + n) >= 0.9 from n = 80


def test_average_is_the_exponential_mean_and_copies_integer_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    avg = WeightAverage(net, decay=0.5)
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    net(torch.randn(8, 3))  # moves batch norm's running statistics and its step count
    with torch.no_grad():
        net[0].weight.add_(1.0)
    w1 = {k: v.clone() for k, v in net.state_dict().items()}
    avg.update(net)
    d = ema_decay_at(0.5, 1)  # 2 / 11: the warm-up's, below the setting
    for k, v in avg.state_dict()["weights"].items():
        if v.is_floating_point():
            assert torch.allclose(v, d * w0[k] + (1 - d) * w1[k]), k
        else:
            assert torch.equal(v, w1[k]), k  # num_batches_tracked follows the live model
    assert avg.state_dict()["updates"] == 1
    assert not torch.equal(avg.state_dict()["weights"]["0.weight"], net[0].weight)  # a copy, not the weights

    other = WeightAverage(net, decay=0.5)
    other.load_state_dict(avg.state_dict())
    assert other.updates == 1 and all(torch.equal(other.avg[k], avg.avg[k]) for k in avg.avg)
    with pytest.raises(KeyError):
        WeightAverage(nn.Linear(3, 4), 0.5).load_state_dict(avg.state_dict())
    with pytest.raises(ValueError):
        WeightAverage(nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5)), 0.5).load_state_dict(avg.state_dict())
    with pytest.raises(ValueError):
        WeightAverage(net, decay=1.0)


def _train(data, out, *extra):
    return main(["train", "--data", str(data), "--preset", "smoke", "--out", str(out), "--quiet", "--device", "cpu",
                 *extra])


def test_ema_run_steps_as_without_it_resumes_exactly_and_loads_the_average(tmp_path, tiny_npz):
    ema = ["--set", "train.ema_decay=0.9"]
    assert _train(tiny_npz, tmp_path / "plain", "--max-steps", "20") == 0
    assert _train(tiny_npz, tmp_path / "a", "--max-steps", "20", *ema) == 0
    assert _train(tiny_npz, tmp_path / "b", "--max-steps", "10", *ema) == 0
    assert main(["train", "--data", str(tiny_npz), "--out", str(tmp_path / "b"), "--resume", "--max-steps", "20",
                 "--quiet", "--device", "cpu"]) == 0
    plain, a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt") for r in ("plain", "a", "b"))
    assert "ema" not in plain
    # Training never reads the average: the live weights are those of the run without it.
    assert all(torch.equal(plain["model"][k], a["model"][k]) for k in a["model"])
    # Resumed == uninterrupted, the average and its update count included.
    assert a["ema"]["updates"] == b["ema"]["updates"] == 20
    assert all(torch.equal(a["ema"]["weights"][k], b["ema"]["weights"][k]) for k in a["ema"]["weights"])
    # Loading takes the average by default, the live weights on request; they differ after 20 steps.
    avg, _ = load_run(tmp_path / "a")
    live, _ = load_run(tmp_path / "a", weights="live")
    assert all(torch.equal(v, a["ema"]["weights"][k]) for k, v in avg.state_dict().items())
    assert all(torch.equal(v, a["model"][k]) for k, v in live.state_dict().items())
    assert not torch.equal(avg.state_dict()["encoder.s.weight"], live.state_dict()["encoder.s.weight"])
    # A run without the average has only its live weights.
    assert all(torch.equal(v, plain["model"][k]) for k, v in load_run(tmp_path / "plain")[0].state_dict().items())


def test_ema_decay_out_of_range_is_a_clean_error(tmp_path, capsys, tiny_npz):
    assert _train(tiny_npz, tmp_path / "r", "--set", "train.ema_decay=1.0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.ema_decay must be in [0, 1)" in err[0]
    assert not (tmp_path / "r").exists()
