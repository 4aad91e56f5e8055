r"""Ads: synthetic ads ranking with click, conversion and a distillation target from a teacher.

Each impression has four categorical ids (user, ad, the ad's category, site),
drawn with power-law popularity, ``num_dense`` dense features and
``num_privileged`` privileged features (seen by the teacher only, as in
privileged-feature distillation, Xu et al. 2020). With latent id vectors
:math:`U_u, A_a, C_c \in \mathbb R^k` and a conversion taste
:math:`B_a = 0.6 A_a + 0.8 N_a` partly shared with the click taste:

.. math::
    \text{logit}_{click} &= b_1 + \tfrac{1.5}{\sqrt k} U_u^\top (A_a + C_c) + s_{site}
        + w_1^\top x + p_1^\top z \\
    \text{logit}_{conv|click} &= b_2 + \tfrac{1}{\sqrt k} U_u^\top B_a + q_a + w_2^\top x + p_2^\top z

click ~ Bernoulli(σ(logit_click)), conv|click ~ Bernoulli(σ(logit_conv|click)),
conv = click · conv|click; the biases :math:`b_1, b_2` are set by bisection so the
mean probabilities equal ``click_rate`` and ``conversion_rate``.

A larger teacher (:class:`~benchmarks.models.AdsModel` on ids, dense and
privileged features) is trained first on the training split plus
``num_teacher_extra`` further impressions (more history than the student sees),
with click and conv|click losses. Its click probability on the training and test
impressions, shifted by a systematic error per user and per ad (normal offsets of standard
deviation ``teacher_bias`` added to its logit: a teacher fit elsewhere), is the
``distill`` target (cached with the data). With the offsets the target helps the
student's click in moderation and hurts it in excess (docs/benchmarks/ads.md measures click
NE against a fixed distillation weight). The student's inputs
are the ids and dense features only.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import Arrays, cached_arrays
from ..datasets import Splits, TensorDictDataset, iterate_batches
from ..losses import masked_binary_cross_entropy
from ..models.ads import AdsModel

GENERATOR_VERSION = 2
ADS_TASKS = ("click", "conv_given_click", "conv", "distill")
_SPLIT_CODES = {"train": 0, "test": 1, "extra": 2}


@dataclass(frozen=True)
class AdsConfig:
    """Vocabulary sizes, feature counts, base rates, split sizes and the teacher's training."""

    num_users: int = 2000
    num_ads: int = 500
    num_categories: int = 20
    num_sites: int = 50
    num_dense: int = 8
    num_privileged: int = 4
    latent_dim: int = 4
    click_rate: float = 0.1
    conversion_rate: float = 0.2
    """Mean probability of a conversion given a click."""
    num_train: int = 100_000
    num_test: int = 50_000
    num_teacher_extra: int = 200_000
    teacher_embedding_dim: int = 16
    teacher_hidden: tuple[int, ...] = (128, 64)
    teacher_epochs: int = 3
    teacher_batch_size: int = 1024
    teacher_lr: float = 3e-3
    teacher_bias: float = 0.25
    """Standard deviation of the teacher's systematic error: a random offset per user and per
    ad added to its click logit ``z`` (a teacher fit to another population)."""

    def __post_init__(self) -> None:
        for name in (
            "num_users", "num_ads", "num_categories", "num_sites", "latent_dim", "num_train", "num_test",
            "teacher_embedding_dim", "teacher_epochs", "teacher_batch_size",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.num_dense < 0 or self.num_privileged < 0 or self.num_teacher_extra < 0:
            raise ValueError("num_dense, num_privileged and num_teacher_extra must be >= 0")
        for name in ("click_rate", "conversion_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if not self.teacher_lr > 0:
            raise ValueError(f"teacher_lr must be > 0, got {self.teacher_lr!r}")
        if not self.teacher_bias >= 0:
            raise ValueError(f"teacher_bias must be >= 0, got {self.teacher_bias!r}")

    @property
    def vocab_sizes(self) -> tuple[int, int, int, int]:
        return self.num_users, self.num_ads, self.num_categories, self.num_sites


def _popularity(rng: np.random.Generator, size: int, exponent: float = 0.8) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return result


def _calibrate(logits: np.ndarray, rate: float) -> float:
    """The bias ``b`` with ``mean σ(logits + b) = rate`` (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(80):
        middle = (low + high) / 2
        if _sigmoid(logits + middle).mean() < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _impressions(config: AdsConfig, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Features and labels of every split (``train``, ``test``, ``extra``)."""
    rng = np.random.default_rng([seed, 13])
    k = config.latent_dim
    users, ads = rng.normal(size=(config.num_users, k)), rng.normal(size=(config.num_ads, k))
    categories = rng.normal(0.0, 0.7, size=(config.num_categories, k))
    conversion_taste = 0.6 * ads + 0.8 * rng.normal(size=ads.shape)
    site_bias, ad_quality = rng.normal(0.0, 0.5, config.num_sites), rng.normal(0.0, 0.7, config.num_ads)
    ad_category = rng.integers(0, config.num_categories, config.num_ads)
    w_click, w_conv = rng.normal(0.0, 0.4, size=(2, config.num_dense))
    p_click, p_conv = rng.normal(0.0, 0.8, size=(2, config.num_privileged))
    popularity = [_popularity(rng, n) for n in (config.num_users, config.num_ads, config.num_sites)]
    sizes = {"train": config.num_train, "test": config.num_test, "extra": config.num_teacher_extra}
    splits: dict[str, dict[str, np.ndarray]] = {}
    for split, size in sizes.items():
        split_rng = np.random.default_rng([seed, 13, _SPLIT_CODES[split]])
        user = split_rng.choice(config.num_users, size, p=popularity[0])
        ad = split_rng.choice(config.num_ads, size, p=popularity[1])
        site = split_rng.choice(config.num_sites, size, p=popularity[2])
        dense = split_rng.normal(size=(size, config.num_dense))
        privileged = split_rng.normal(size=(size, config.num_privileged))
        category = ad_category[ad]
        click_logit = 1.5 / math.sqrt(k) * np.einsum("ij,ij->i", users[user], ads[ad] + categories[category])
        click_logit += site_bias[site] + dense @ w_click + privileged @ p_click
        conv_logit = np.einsum("ij,ij->i", users[user], conversion_taste[ad]) / math.sqrt(k)
        conv_logit += ad_quality[ad] + dense @ w_conv + privileged @ p_conv
        splits[split] = {
            "ids": np.stack([user, ad, category, site], axis=1),
            "dense": dense,
            "privileged": privileged,
            "click_logit": click_logit,
            "conv_logit": conv_logit,
            "uniform": split_rng.random((size, 2)),
        }
    pooled = {key: np.concatenate([s[key] for s in splits.values()]) for key in ("click_logit", "conv_logit")}
    click_bias = _calibrate(pooled["click_logit"], config.click_rate)
    conv_bias = _calibrate(pooled["conv_logit"], config.conversion_rate)
    for record in splits.values():
        uniform = record.pop("uniform")
        click = (uniform[:, 0] < _sigmoid(record.pop("click_logit") + click_bias)).astype(np.float32)
        given = (uniform[:, 1] < _sigmoid(record.pop("conv_logit") + conv_bias)).astype(np.float32)
        record.update(click=click, conv_given_click=given, conv=click * given)
    return splits


def _inputs(split: dict[str, np.ndarray], privileged: bool) -> torch.Tensor:
    columns = [split["ids"].astype(np.float32), split["dense"].astype(np.float32)]
    if privileged:
        columns.append(split["privileged"].astype(np.float32))
    return torch.from_numpy(np.concatenate(columns, axis=1))


def train_teacher(config: AdsConfig, data: TensorDictDataset, seed: int, progress: bool = True) -> AdsModel:
    """Train the teacher on click + conv|click (conv|click only on clicked impressions)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        teacher = AdsModel(
            config.vocab_sizes,
            config.num_dense + config.num_privileged,
            ("click", "conv_given_click"),
            embedding_dim=config.teacher_embedding_dim,
            hidden=config.teacher_hidden,
        )
    optimizer = torch.optim.Adam(teacher.parameters(), lr=config.teacher_lr)
    steps = config.teacher_epochs * math.ceil(len(data) / config.teacher_batch_size)
    with tqdm(total=steps, desc="ads teacher", disable=not progress, leave=False) as bar:
        for epoch in range(config.teacher_epochs):
            for inputs, targets in iterate_batches(
                data, config.teacher_batch_size, shuffle=True, seed=seed + epoch
            ):
                outputs = teacher(inputs)
                click_loss = masked_binary_cross_entropy(outputs["click"], targets["click"])
                conv_loss = masked_binary_cross_entropy(
                    outputs["conv_given_click"], targets["conv_given_click"], targets["click"] > 0
                )
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(click_loss + conv_loss)
                optimizer.step()
                bar.update()
    return teacher.eval()


def generate_ads(config: AdsConfig, seed: int, progress: bool = True) -> Arrays:
    """Both student splits (``{split}/inputs`` and one array per task) with the teacher's targets."""
    splits = _impressions(config, seed)
    labels = ("click", "conv_given_click")
    teacher_sets = [s for name, s in splits.items() if name in ("train", "extra")]
    teacher_data = TensorDictDataset(
        torch.cat([_inputs(s, privileged=True) for s in teacher_sets]),
        {key: torch.from_numpy(np.concatenate([s[key] for s in teacher_sets])) for key in labels},
    )
    teacher = train_teacher(config, teacher_data, seed, progress)
    arrays: Arrays = {}
    rng = np.random.default_rng([seed, 17])
    offsets = [config.teacher_bias * rng.normal(size=n) for n in (config.num_users, config.num_ads)]
    for name in ("train", "test"):
        split = splits[name]
        with torch.no_grad():
            logits = teacher(_inputs(split, privileged=True))["click"].double().numpy()
        logits += offsets[0][split["ids"][:, 0]] + offsets[1][split["ids"][:, 1]]
        distill = _sigmoid(logits)
        arrays[f"{name}/inputs"] = _inputs(split, privileged=False).numpy()
        for task in ("click", "conv_given_click", "conv"):
            arrays[f"{name}/{task}"] = split[task]
        arrays[f"{name}/distill"] = distill.astype(np.float32)
    return arrays


def load_ads(
    config: AdsConfig,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> Splits:
    """Train/test data: inputs ``[N, 4 + num_dense]`` (ids as floats, then dense) and float32
    targets ``click``, ``conv_given_click`` (meaningful where ``click == 1``), ``conv``, ``distill``."""
    key = {"generator": "ads", "version": GENERATOR_VERSION, "seed": seed, **asdict(config)}
    arrays = cached_arrays("ads", key, lambda: generate_ads(config, seed, progress), cache_dir, use_cache)

    def split(name: str) -> TensorDictDataset:
        targets = {task: torch.from_numpy(arrays[f"{name}/{task}"]) for task in ADS_TASKS}
        return TensorDictDataset(torch.from_numpy(arrays[f"{name}/inputs"]), targets)

    return Splits(split("train"), split("test"))
