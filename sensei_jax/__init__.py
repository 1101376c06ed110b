"""sensei_jax: SENSEI (semantic exploration guided by a vision-language model) end to end in JAX."""

__version__ = "0.1.0"
