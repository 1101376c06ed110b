"""Annotators: a batch of image pairs in, per pair P(first is more interesting) and a preference label out.

`make_annotator(cfg)` builds the one named by `annotate.annotator`: `llava` (the VLM, `sensei_jax.annotators.vlm`),
`oracle` (SENSEI's heuristic on the simulator states, `oracle`) or `random` (`chance`). `base` holds the contract,
`config` the `annotate` section. Names are imported on first use, so reading a config stays free of jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ANNOTATORS": "sensei_jax.annotators.registry",
    "AnnotateConfig": "sensei_jax.annotators.config",
    "Annotator": "sensei_jax.annotators.base",
    "Label": "sensei_jax.reward.labels",
    "OracleAnnotator": "sensei_jax.annotators.oracle",
    "RandomAnnotator": "sensei_jax.annotators.chance",
    "make_annotator": "sensei_jax.annotators.registry",
})
