"""The learned router (`eval_routing: learned`): which parameter set decodes an utterance, without the task
identity, from a classifier the suite trains on each experience's own training audio.

What it is: streaming linear discriminant analysis (Hayes & Kanan, "Lifelong machine learning with deep
streaming linear discriminant analysis", CVPR-W 2020) over one feature per utterance, the frozen backbone's
encoder output averaged over the frames that hold speech. Each experience adds a class (its set key): its
feature sum and count, and the features' outer products go into one shared sum. No audio and no feature is
kept (rehearsal-free); what is stored is d numbers per experience plus one d x d matrix in all (d = 512 for
whisper-base), counted in `stored_numbers`.

Base languages have no training audio in a stream, so they cannot be a class. An utterance far from every
learned experience goes to 'no set' (the plain backbone, which already knows the base languages): its squared
Mahalanobis distance to the nearest class mean exceeds `REJECT_FACTOR` times the typical squared distance of an
unseen utterance of a learned class. That typical distance is the in-sample one (the training features to their
own class means, computable from the sums: tr(Sigma^-1 S_within / n)) times an inflation measured on held-out
folds of the latest experience's features when it is added: with 140 utterances in 512 dimensions the in-sample
distance is several times smaller than an unseen utterance's, and the more so the fewer experiences the
covariance has pooled, so a fixed factor on the in-sample distance rejected every utterance of the first
experience after it was learned. One number is stored for it.

Why not Whisper's language ID (`lid`): a new language has no token, and its utterances score as a related
base language (Interlingua as Spanish), so LID sends them to 'no set'. The encoder features of a language's
training audio separate it from the others better (routing accuracy is reported beside `lid` and `oracle`).
"""
from __future__ import annotations

import torch

from ..core import mean_over_speech

HELD_OUT_FOLDS = 5
# Shrinkage of the shared covariance towards its mean variance (times the identity): 140 utterances per
# experience cannot estimate 512 x 512 covariances. Both constants were chosen on the languages scenario's DEV
# sets, standard profile (20 utterances per set; the base languages' dev sets, and the sets of experiences not
# learned yet, stand for 'no set'), never on a test set, scored after every experience of the stream:
# `python tools/router_calibration.py --profile standard --shrinkage 0.6,0.7,0.8,0.9,0.95 --reject 0.6,0.8,1,1.2,1.5`
# gave a mean routing accuracy of 0.821 at 0.8 / 1.0 (0.914, 0.821, 0.729 after eo, ia, ga; at the end eo 0.70,
# ia 0.60, ga 0.55, en 0.95, de 0.55, es 0.75, ru_real 1.00), 0.7 / 1.0 the same. The rule before the held-out
# inflation scored at most 0.807 over the same positions (`--inflation off`; 0.800 at its constants then, 0.6 /
# 3.0, which rejected every eo utterance after the first experience: 0.857 there, what 'no set for all' scores).
# Routing everything to no set scores 0.714: telling a new language from a base one spoken by the same synthetic
# voices is the hard part.
SHRINKAGE = 0.8
REJECT_FACTOR = 1.0


@torch.inference_mode()
def speech_frame_features(model, input_features: torch.Tensor, encoder_states: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """[N, d] the encoder's output averaged over the frames that hold speech (`core.mean_over_speech`), for a
    batch of log-mel features (`encoder_states`: that output where already at hand, from an encoder cache)."""
    device = next(model.parameters()).device
    feats = input_features.to(device)
    states = model.get_encoder()(input_features=feats).last_hidden_state if encoder_states is None \
        else encoder_states.to(device)
    return mean_over_speech(states, feats).cpu()


class StreamingLDARouter:
    """Classes (set keys) added one experience at a time; `route` returns each row's key or None ('no set')."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}  # key -> sum of its features (float64)
        self.counts: dict[str, int] = {}
        self.outer: torch.Tensor | None = None  # sum over all features of x x^T (float64)
        self.experiences: dict[int, str] = {}  # experience index -> its set key (shared mode: one key for all)
        self.inflation = 1.0  # held-out over in-sample squared distance, measured on the latest experience

    def add(self, key: str, index: int, features: torch.Tensor) -> None:
        """Experience `index`'s training features, [N, d], join class `key`."""
        self.experiences[index] = key
        x = features.double()
        self.sums[key] = self.sums.get(key, torch.zeros(x.shape[1], dtype=torch.float64)) + x.sum(dim=0)
        self.counts[key] = self.counts.get(key, 0) + x.shape[0]
        self.outer = x.T @ x if self.outer is None else self.outer + x.T @ x
        self.inflation = self._held_out_inflation(key, x)

    def _held_out_inflation(self, key: str, x: torch.Tensor) -> float:
        """Mean over folds of x's rows: their squared distance to class `key`'s mean under the model fitted
        without them, over that model's in-sample typical distance. 1.0 where x has under two rows per fold (what
        is left of its class could have no spread at all: no covariance to invert)."""
        if x.shape[0] < 2 * HELD_OUT_FOLDS:
            return 1.0
        ratios = []
        for rows in torch.arange(x.shape[0]).chunk(HELD_OUT_FOLDS):
            held = x[rows]
            sums = {**self.sums, key: self.sums[key] - held.sum(dim=0)}
            counts = {**self.counts, key: self.counts[key] - held.shape[0]}
            means, precision, typical = _fit(sums, counts, self.outer - held.T @ held)
            diff = held - means[key]
            ratios.append(float(torch.einsum("nd,de,ne->n", diff, precision, diff).mean()) / typical)
        return sum(ratios) / len(ratios)

    @property
    def keys(self) -> list[str]:
        return list(self.sums)

    def keys_learned(self, experiences_trained: int) -> list[str]:
        """The classes of the experiences whose training has finished (a set not trained yet is not routed to)."""
        return list(dict.fromkeys(k for i, k in sorted(self.experiences.items()) if i < experiences_trained))

    def stored_numbers(self) -> int:
        return sum(s.numel() + 1 for s in self.sums.values()) + (self.outer.numel() if self.outer is not None else 0) \
            + 1  # the inflation

    def distances(self, features: torch.Tensor, keys: list[str]) -> tuple[torch.Tensor, float]:
        """([N, K] squared Mahalanobis distances to the classes `keys`, an unseen utterance's typical squared
        distance to its own class: the in-sample one times the held-out inflation)."""
        means, precision, typical = _fit(self.sums, self.counts, self.outer)
        diff = features.double()[:, None, :] - torch.stack([means[k] for k in keys])[None]  # [N, K, d]
        return torch.einsum("nkd,de,nke->nk", diff, precision, diff), typical * self.inflation

    def route(self, features: torch.Tensor, keys: list[str]) -> list[str | None]:
        """Each row's nearest class among `keys`, or None where even that one is farther than REJECT_FACTOR times
        the typical distance of an unseen utterance of its class (a base language: the plain backbone decodes it)."""
        if not keys:
            return [None] * features.shape[0]
        dist, typical = self.distances(features, keys)
        best, at = dist.min(dim=1)
        return [keys[i] if b <= REJECT_FACTOR * typical else None for b, i in zip(best.tolist(), at.tolist())]


def _fit(sums: dict, counts: dict, outer: torch.Tensor) -> tuple[dict, torch.Tensor, float]:
    """(class means by key, precision [d, d], the training features' mean squared distance to their own class
    mean under it) over every class in the sums: one shared, shrunk covariance."""
    n = sum(counts.values())
    means = {k: sums[k] / counts[k] for k in sums}
    between = sum(counts[k] * torch.outer(m, m) for k, m in means.items())
    cov = (outer - between) / max(1, n - len(means))
    d = cov.shape[0]
    shrunk = (1 - SHRINKAGE) * cov + SHRINKAGE * (torch.trace(cov) / d) * torch.eye(d, dtype=cov.dtype)
    precision = torch.linalg.inv(shrunk)
    typical = float(torch.trace(precision @ cov))  # E ||x - mean_class||^2 under the precision, in-sample
    return means, precision, typical
