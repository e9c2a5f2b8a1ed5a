"""Toy pairs with a known shift: the paper's two moons (JMLR 2016 section 5.1.1).

`moons`: source = scikit-learn's inter-twinning moons, centred and scaled by 2 as in the
authors' reference code; target = the same distribution rotated by `rotation` degrees (35 in
the paper) about the centre. Float features (N, 2); train, val and test are independent draws
(fixed by split_seed).
"""

import math

import numpy as np
import torch

from dann.data.registry import DomainData, PairData, PairSpec, Split, register_pair

CENTRE = np.array([0.5, 0.25])  # centre of make_moons' two half circles


def _moons(n: int, noise: float, rotation_deg: float, seed: int) -> Split:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    a = math.radians(rotation_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    x = 2 * (x - CENTRE) @ rot.T
    return Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long))


@register_pair("moons")
def load_moons(spec: PairSpec) -> PairData:
    o = spec.options
    n_train, n_eval = o.get("train_size", 300), o.get("eval_size", 1000)
    noise, rotation, s = o.get("noise", 0.1), o.get("rotation", 35.0), spec.split_seed * 10

    def domain(name: str, angle: float, offset: int) -> DomainData:
        return DomainData(
            name,
            train=_moons(n_train, noise, angle, s + offset),
            val=_moons(n_eval, noise, angle, s + offset + 1),
            test=_moons(n_eval, noise, angle, s + offset + 2),
        )

    return PairData(domain("moons", 0.0, 0), domain(f"moons-rot{rotation:g}", rotation, 5), 2)


def _sines(n: int, length: int, classes: int, amplitude: float, offset: float, seed: int) -> Split:
    """Class k = a sine with k + 1 periods over the sequence, random phase, Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    t = torch.linspace(0, 1, length)
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    x = torch.sin(2 * math.pi * (labels[:, None] + 1) * t + phase)
    x = amplitude * x + offset + 0.1 * torch.randn(n, length, generator=g)
    return Split(x.unsqueeze(-1), labels)  # (N, T, 1)


@register_pair("sines_shift")
def load_sines_shift(spec: PairSpec) -> PairData:
    """A synthetic sequence shift for sequence backbones (e.g. backbone=gru): classify the
    frequency of a noisy sine; the target is rescaled and offset (amplitude 0.5, offset 1)."""
    o = spec.options
    n, length, k = o.get("train_size", 2000), o.get("length", 32), o.get("classes", 4)
    s = spec.split_seed * 10

    def domain(name: str, amplitude: float, offset: float, shift: int) -> DomainData:
        def make(size: int, i: int) -> Split:
            return _sines(size, length, k, amplitude, offset, s + shift + i)

        return DomainData(name, make(n, 0), make(n // 4, 1), make(n // 4, 2))

    return PairData(domain("sines", 1.0, 0.0, 0), domain("sines-shifted", 0.5, 1.0, 5), k)
