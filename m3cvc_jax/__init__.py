"""m3cvc-jax: generative ultra-low-bitrate video compression in JAX/Flax."""
__version__ = "0.1.0"
