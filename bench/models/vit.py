"""A small Vision Transformer (timm's VisionTransformer) sized by options, at the dataset's image size.

For the LoRA methods (DEeR and its baselines) on CPU: timm's named ViTs expect 224 px images and
tens of millions of parameters; this one takes any image side divisible by `patch_size` and has
`depth` blocks of width `embed_dim` (defaults: 2 blocks of 64, ~70k parameters). A `model.weights`
file must hold the state dict of a timm VisionTransformer of exactly these options (loaded
strictly, its classifier `head.*` dropped); the
DEeR paper fine-tunes a pretrained BiomedCLIP ViT-B/16, which no offline run here has (random init
is the default and is not the paper's setting).
"""

from __future__ import annotations

from bench.errors import UserError
from bench.models.classifier import Classifier
from bench.models.weights import load_strictly, read_weights


def build(num_classes: int, in_chans: int, image_size: int, weights: str | None = None, patch_size: int = 4, embed_dim: int = 64,
          depth: int = 2, num_heads: int = 2, mlp_ratio: float = 2.0) -> Classifier:
    """A small timm ViT (class token, `depth` blocks of `embed_dim`) at the dataset's image size."""
    from timm.models.vision_transformer import VisionTransformer

    if image_size % patch_size:
        raise UserError(f"config key 'model.patch_size': the image side {image_size} is not a multiple of patch_size {patch_size}; pick a divisor")
    if embed_dim % num_heads:
        raise UserError(f"config key 'model.num_heads': embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
    body = VisionTransformer(img_size=image_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, embed_dim=embed_dim,
                             depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)
    if weights:
        state = {k: v for k, v in read_weights(weights).items() if not k.startswith("head.")}
        load_strictly(body, state, weights)
    return Classifier(body, body.num_features, num_classes)
