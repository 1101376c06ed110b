"""`make_annotator`: the annotator named by `annotate.annotator`, built from a run config.

Implementations are imported only when chosen, so that naming the registry's entries needs neither jax nor LLaVA.
"""

from __future__ import annotations

from sensei_jax.annotators.base import Annotator

ANNOTATORS = ("llava", "oracle", "random")


def make_annotator(cfg, env=None) -> Annotator:
    """The annotator configured by `cfg.annotate` (and `cfg.vlm` for llava). The oracle is the run's domain's
    heuristic (`sensei_jax.domains`, `run.domain`) on the pairs' stored states; Robodesk's restores them in `env`
    (built from `cfg.env` without rendering when not given)."""
    kind = cfg.annotate.annotator
    if kind == "random":
        from sensei_jax.annotators.chance import RandomAnnotator

        return RandomAnnotator(cfg.annotate)
    if kind == "oracle":
        from sensei_jax import domains
        from sensei_jax.annotators.oracle import ScoreOracle

        domain = domains.of(cfg)
        return ScoreOracle(domain.oracle_scores(cfg, env), lambda a, b: domain.compare(a, b, cfg),
                           domain.describe(cfg))
    if kind == "llava":
        from sensei_jax.annotators.vlm import from_config

        return from_config(cfg.vlm, cfg.annotate)
    raise ValueError(f"annotate.annotator: unknown annotator {kind!r}; known: {', '.join(ANNOTATORS)}")
