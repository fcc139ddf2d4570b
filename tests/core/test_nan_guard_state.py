"""NaNGuard's public handles on its last good state (what a resume uses after loading its state)."""

from __future__ import annotations

import torch

from tokensmith.training_math import NaNGuard, make_optimizer


def _trained_once(seed: int):
    p = torch.nn.Parameter(torch.randn(2, 8, generator=torch.Generator().manual_seed(seed)))
    opt = make_optimizer([p], 1e-2)
    (p**2).sum().backward()
    opt.step()
    opt.zero_grad()
    return p, opt


def test_snapshot_of_loaded_state_is_where_a_rollback_returns():
    p, opt = _trained_once(0)
    guard = NaNGuard([p], opt)  # its last good state: the vectors it was made with, one optimizer step in
    # a resume loads other vectors and optimizer state, then takes a snapshot of them
    loaded_p, loaded_opt = _trained_once(1)
    with torch.no_grad():
        p.copy_(loaded_p)
    opt.load_state_dict(loaded_opt.state_dict())
    guard.snapshot()
    loaded_vectors = p.detach().clone()
    loaded_moments = {k: v.clone() for k, v in opt.state[p].items()}
    (p * float("nan")).sum().backward()
    assert guard.check(float("nan")) == NaNGuard.ROLLED_BACK
    assert torch.equal(p.detach(), loaded_vectors) and p.grad is None
    for k, v in loaded_moments.items():
        assert torch.equal(opt.state[p][k], v), k


def test_restore_puts_the_last_good_state_back():
    p, opt = _trained_once(2)
    guard = NaNGuard([p], opt)
    good = p.detach().clone()
    (p**2).sum().backward()
    opt.step()
    assert not torch.equal(p.detach(), good)
    guard.restore()
    assert torch.equal(p.detach(), good) and p.grad is None
    assert guard.rollbacks == 0 and guard.lr_factor == 1.0  # restoring by hand is no rollback
