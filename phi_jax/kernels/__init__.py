"""phi_jax's own Pallas kernels (GPU via Triton, TPU via Mosaic, CPU in interpret mode)."""

from phi_jax.kernels.flash_attention import (BlockSizes, DEFAULT_BLOCK_SIZES,
                                             default_block_sizes, dropout_keep_mask,
                                             dropout_seeds, flash_attention)

__all__ = ["BlockSizes", "DEFAULT_BLOCK_SIZES", "default_block_sizes", "dropout_keep_mask",
           "dropout_seeds", "flash_attention"]
