"""`make_annotator`: the annotator named by `annotate.annotator`, built from a run config.

Implementations are imported only when chosen, so that naming the registry's entries needs neither jax nor LLaVA.
"""

from __future__ import annotations

from sensei_jax.annotators.base import Annotator

ANNOTATORS = ("llava", "oracle", "random")


def make_annotator(cfg, env=None) -> Annotator:
    """The annotator configured by `cfg.annotate` (and `cfg.vlm` for llava, `cfg.interest` for the oracle). The
    Robodesk oracle restores states in `env` (built from `cfg.env` without rendering when not given); MiniHack's
    (`run.domain: minihack`) scores the stored features by `minihack.task`'s heuristic."""
    kind = cfg.annotate.annotator
    if kind == "random":
        from sensei_jax.annotators.chance import RandomAnnotator

        return RandomAnnotator(cfg.annotate)
    if kind == "oracle" and getattr(cfg.run, "domain", "robodesk") == "minihack":
        from sensei_jax.annotators.oracle import MiniHackOracle

        return MiniHackOracle(cfg.minihack.task)
    if kind == "oracle":
        from sensei_jax.annotators.oracle import OracleAnnotator

        if env is None:
            from sensei_jax.envs.robodesk import Robodesk

            env = Robodesk.from_config(cfg.env, render_images=False)
        return OracleAnnotator(cfg.interest, env)
    if kind == "llava":
        from sensei_jax.vlm.annotate import from_config

        return from_config(cfg.vlm, cfg.annotate)
    raise ValueError(f"annotate.annotator: unknown annotator {kind!r}; known: {', '.join(ANNOTATORS)}")
