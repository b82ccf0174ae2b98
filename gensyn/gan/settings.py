"""The SyntheX CycleGAN's settings: a plain dataclass, no Hydra.

Defaults are the original SyntheX recipe (pytorch-CycleGAN-and-pix2pix options used by the
study, see docs/synthex.md): 1 channel, resnet_9blocks, 70×70 PatchGAN, instance norm,
no dropout, LSGAN, cycle weight 10, identity 0.5, Adam 2e-4 (β1 0.5), 100 + 100 epochs,
batch 1, pool 50, load 552 → random crop 512 with flips, at most 1024 images per domain.
Domain A is the DRRs, domain B the real X-rays; the translator used downstream is A→B.
The ``generator`` config group's schema (:class:`gensyn.config.generator.GeneratorConfig`)
is this class plus the group's ``name``, so each field is declared here only.
"""

from dataclasses import dataclass

from gensyn.base.bounds import bounded, unhashed

__all__ = ["CycleGANSettings"]


@dataclass
class CycleGANSettings:
    """Networks, objective, optimisation, data, speed and translation options."""

    # --- networks
    arch: str = "resnet_9blocks"  # generator: resnet_9blocks | resnet_6blocks
    input_nc: int = bounded(1, ge=1)  # channels of domain A (DRR)
    output_nc: int = bounded(1, ge=1)  # channels of domain B (real X-ray)
    ngf: int = bounded(64, ge=1)  # generator filters in the first conv layer
    ndf: int = bounded(64, ge=1)  # discriminator filters in the first conv layer
    n_layers_d: int = bounded(
        3, ge=1
    )  # PatchGAN conv layers (3: 70×70 receptive field, the 'basic' D)
    norm: str = "instance"  # instance | batch | none
    use_dropout: bool = False
    init_type: str = "normal"  # normal | xavier | kaiming | orthogonal
    init_gain: float = bounded(0.02, gt=0)
    # --- objective
    gan_mode: str = "lsgan"  # lsgan | vanilla
    lambda_a: float = bounded(10.0, ge=0)  # cycle weight A→B→A
    lambda_b: float = bounded(10.0, ge=0)  # cycle weight B→A→B
    lambda_identity: float = bounded(0.5, ge=0)  # identity weight, relative to the cycle weights
    # --- optimisation
    lr: float = bounded(2.0e-4, gt=0)
    beta1: float = bounded(0.5, ge=0, lt=1)
    beta2: float = bounded(0.999, ge=0, lt=1)
    n_epochs: int = bounded(100, ge=0)  # epochs at the initial learning rate
    n_epochs_decay: int = bounded(100, ge=0)  # epochs of linear decay towards 0
    pool_size: int = bounded(50, ge=0)  # history of generated images shown to the discriminators
    batch_size: int = bounded(1, ge=1)
    # --- data (synthex_prep and training augmentation)
    max_dataset_size: int = bounded(
        1024, ge=1
    )  # at most this many training images per domain (seeded draw)
    heldout_size: int = bounded(
        64, ge=0
    )  # per domain, kept out of training for checks and sample grids
    load_size: int = bounded(552, ge=1)  # images are resized to load_size² ...
    crop_size: int = bounded(512, ge=1)  # ... then randomly cropped to crop_size²
    flip: bool = True  # random horizontal flips during training
    # --- speed (bf16 changes results only within bf16 rounding, so precision is hashed; the
    # switches below change them within floating-point rounding and are unhashed; CPU: fp32)
    precision: str = "bf16"  # bf16 | fp32 (autocast on CUDA)
    channels_last: bool = unhashed(False)  # NHWC memory format on CUDA (slower here: RESULTS.md)
    compile: bool = unhashed(
        True
    )  # torch.compile training and translation (CUDA; ~1 min compiling)
    cuda_graphs: bool = unhashed(True)  # replay the training step as CUDA graphs (CUDA)
    fused_adam: bool = unhashed(True)  # fused Adam kernels on CUDA
    cudnn_benchmark: bool = unhashed(True)
    # --- logging and translation (unhashed: the trained networks are the same)
    sample_every_epochs: int = unhashed(
        1, ge=1
    )  # sample grid (DRR → translated → real) every n epochs
    num_samples: int = unhashed(4, ge=1)  # rows of the sample grid
    translate_batch_size: int = unhashed(32, ge=1)
    translate_channels_last: bool = unhashed(
        False
    )  # NCHW translates faster on an H100 (RESULTS.md)
    translate_write_threads: int = unhashed(4, ge=1)  # threads encoding and writing translated PNGs
