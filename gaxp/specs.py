"""The frozen, hashable dataclasses a validated config is made of (built and checked by
``gaxp.config.load``; the parts the step needs are static arguments of ``jax.jit``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol


@dataclass(frozen=True)
class Phase:
    """A stretch of a run that compiles to a program of its own, declared by a task, an arch or a
    stabilizer entry (``phases=``): from step ``start`` (0-based ``state.step``) until the entry's
    next phase. ``trains``: what it updates (``both``, ``g`` or ``d``), read by the step as
    ``spec.trains``. A task's step reads its active phase's name as ``spec.phase``; ``bind(spec) ->
    spec``, when given, binds anything else the phase changes (ProGAN: the growth stage, as
    ``spec.schedule``). ``value``: the phase's own datum (ProGAN: the stage)."""

    name: str
    start: int
    trains: str = "both"
    value: Any = None
    bind: Optional[Callable] = field(default=None, compare=False, hash=False, repr=False)


class Schedule(Protocol):
    """What an arch's phase binds into the step as ``StepSpec.schedule`` (ProGAN's growth stage,
    ``gaxp.models.growth.Growth``). Each method takes the traced ``state.step``; the object must be
    hashable (it is part of the static spec)."""

    def model_kwargs(self, step) -> dict:
        """What G and D take on top of their inputs during training at ``step``."""

    def real(self, x, step):
        """The real images ``[..., H, W, C]`` (the arch's pixel range) as D sees them at ``step``."""

    def metrics(self, step) -> dict:
        """The phase's own figures, logged with the step's metrics."""


@dataclass(frozen=True)
class GrowSpec:
    """Progressive growing (Karras et al. 2018), ``model=progan``: the stages' resolutions (from 4
    px, doubling, ending at the data size), the channels per resolution, and the schedule in kimg
    of real images shown to D. ``fade_kimg``/``stable_kimg`` are one number for every stage or a
    list with one per resolution (the first stage has no fade-in; the last trains on until
    ``trainer.steps``). Checked against the data by ``gaxp.models.progan.check``."""

    resolutions: tuple = (4, 8, 16, 32)
    g_widths: tuple = (128, 128, 64, 32)  # G channels per resolution
    d_widths: tuple = (128, 128, 64, 32)  # D channels per resolution
    fade_kimg: Any = 10.0  # a number or a list per resolution
    stable_kimg: Any = 10.0

    def __post_init__(self):  # YAML lists -> tuples, so the spec stays hashable
        for key in ("fade_kimg", "stable_kimg"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))


@dataclass(frozen=True)
class ModelSpec:
    name: str = "dcgan"
    z_dim: int = 100
    g_width: int = 64
    d_width: int = 64
    g_depth: int = 2
    d_depth: int = 2
    g_norm: str = "batch"  # batch | none
    d_norm: str = "batch"  # batch | layer | none
    maxout: int = 0  # pieces of a maxout D (MLP); 0 = LeakyReLU units
    spectral_norm: bool = False  # spectral norm on every D layer (Miyato et al. 2018)
    g_spectral_norm: bool = False  # spectral norm on every G layer too (Zhang et al. 2019, SAGAN)
    d_pack: int = 1  # PacGAN: D scores packs of this many samples (Lin et al. 2018); 1 = off
    d_mbstd: int = 0  # minibatch-stddev group size before D's head (Karras et al. 2018); 0 = off
    init: str = "default"  # default (lecun normal) | dcgan (N(0, 0.02), Radford et al. 2016)
    bn_momentum: float = 0.9
    grow: Optional[GrowSpec] = None  # progressive growing schedule (model=progan only)
    # Class conditioning (gaxp.models.conditional): none | projection | acgan. num_classes comes
    # from the dataset (set by the train loop; leave null); ac_weight scales AC-GAN's class loss.
    # G's class embedding concatenated to z: cond_embed_dim features (null = z_dim; 0 = none,
    # conditional BatchNorm only), initialised N(0, cond_embed_std^2).
    cond: str = "none"
    num_classes: Optional[int] = None
    ac_weight: float = 1.0
    cond_embed_dim: Optional[int] = None
    cond_embed_std: float = 1.0
    # Pix2Pix's noise (Isola et al. 2017): dropout with this rate after the first dropout_levels
    # decoder levels of the U-Net (model=pix2pix only); also when sampling if dropout_at_test.
    dropout: float = 0.0
    dropout_levels: int = 3
    dropout_at_test: bool = True
    # The arch's own hyperparameters (gaxp.register.arch(..., params=...)): a frozen dataclass
    # built from the model.* keys this spec does not have; None for archs without any.
    params: Any = None


@dataclass(frozen=True)
class LossSpec:
    name: str = "ns"
    n_critic: int = 1  # discriminator updates per generator update
    clip: float = 0.0  # WGAN weight clipping of D parameters to [-clip, clip]; 0 = off
    penalty: Optional[str] = None  # a gaxp.regularizers entry, e.g. wgan_gp
    penalty_weight: float = 0.0
    params: Any = None  # the loss's own settings (gaxp.register.loss(..., params=...)), or None


@dataclass(frozen=True)
class PenaltyParams:
    """A gradient penalty (``gaxp.regularizers``): ``weight * penalty`` is added to D's loss,
    every ``every`` D updates with the weight multiplied by ``every`` (lazy regularization)."""

    weight: float = 10.0
    every: int = 1


@dataclass(frozen=True)
class AugmentParams:
    policy: tuple = ("color", "translation", "cutout")  # DiffAugment ops (gaxp.augment.POLICIES)


@dataclass(frozen=True)
class BcrParams:
    real_weight: float = 10.0  # lambda_real of bCR (Zhao et al. 2021)
    fake_weight: float = 10.0  # lambda_fake
    policy: tuple = ("translation",)  # augmentation T (gaxp.augment.POLICIES)


@dataclass(frozen=True)
class SmoothingParams:
    real_target: float = 0.9  # one-sided: only D's real target moves (Salimans et al. 2016)


@dataclass(frozen=True)
class NoiseParams:
    sigma: float = 0.1  # instance noise std on every D input (Sonderby et al. 2017)
    anneal_steps: int = 0  # linear decay of sigma to 0 over this many steps; 0 = constant


@dataclass(frozen=True)
class SpectralNormParams:
    d: bool = True
    g: bool = False


@dataclass(frozen=True)
class PackParams:
    pack: int = 2  # m samples per D input; 1 = a plain GAN (PacGAN's m=1 row)
    batch: str = "samples"  # data.batch_size counts samples (D sees batch/m packs) or packs


@dataclass(frozen=True)
class MbstdParams:
    group: int = 4


@dataclass(frozen=True)
class DraganParams(PenaltyParams):
    """DRAGAN's perturbation and what its gradient is taken of. ``normal``: x + N(0, (c std x)^2)
    (Kodali et al. 2017); ``uniform``: a point between x and x + c std(x) U[0, 1) (one scalar std
    of the batch), as in compare_gan, Lucic et al. 2018. ``of``: D's ``logits``, or its
    ``sigmoid`` probability (compare_gan)."""

    c: float = 0.5
    noise: str = "normal"  # normal | uniform
    of: str = "logits"  # logits | sigmoid


@dataclass(frozen=True)
class DriftParams:
    weight: float = 0.001  # epsilon_drift of ProGAN's drift term (Karras et al. 2018, A.1)


@dataclass(frozen=True)
class PretrainParams:
    steps: int = 100  # the first `steps` train steps update D only


@dataclass(frozen=True)
class RegSpec:
    """The stabilizers of a run: ``entries`` is ((name, params), ...) sorted by name."""

    entries: tuple = ()

    def get(self, name: str):
        return dict(self.entries).get(name)

    @property
    def names(self) -> tuple:
        return tuple(n for n, _ in self.entries)

    @property
    def penalties(self) -> tuple:
        return tuple((n, p) for n, p in self.entries if isinstance(p, PenaltyParams))

    @property
    def lazy_interval(self) -> int:
        """The D-step interval of the lazy penalties (1 when none is lazy)."""
        return max([p.every for _, p in self.penalties] + [1])


@dataclass(frozen=True)
class ObjectiveSpec:
    key: str = "train/d_loss"  # a key of the final metrics, returned to a sweeper
    direction: str = "minimize"  # minimize | maximize


@dataclass(frozen=True)
class OptSpec:
    name: str = "adam"
    lr: float = 2e-4
    b1: float = 0.5
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # global-norm clipping; 0 = off
    # Linear decay of lr to zero over this last fraction of the network's updates in the run
    # (CycleGAN, Zhu et al. 2017: constant, then linear to zero over the second half: 0.5);
    # 0 = constant lr.
    decay: float = 0.0


@dataclass(frozen=True)
class OptimSpec:
    g: OptSpec = OptSpec()
    d: OptSpec = OptSpec()


@dataclass(frozen=True)
class DataSpec:
    source: str = "mnist"
    name: str = "mnist"
    batch_size: int = 64  # global batch, over all devices and hosts
    image_size: Optional[int] = None  # None = the dataset's own size
    split: str = "train"
    data_dir: Optional[str] = None
    labeled: bool = False  # toy2d: label each point with its mode's index (image sets: their labels)


@dataclass(frozen=True)
class EmaSpec:
    halflife_kimg: float = 10.0  # EMA of G by half-life in thousands of images (Karras et al.)
    rampup: Optional[float] = 0.05  # half-life <= rampup * images seen so far; None = off


@dataclass(frozen=True)
class GuardSpec:
    """Non-finite gradients: skip the update (``optim.skip_nonfinite``, optax's
    ``apply_if_finite`` semantics) and count it; after
    ``patience`` consecutive skipped steps (checked at log and checkpoint steps) roll back to the
    last checkpoint with the learning rates times ``lr_factor``, or stop."""

    enabled: bool = True
    patience: int = 20  # consecutive skipped steps before acting
    action: str = "rollback"  # rollback | stop
    lr_factor: float = 0.5  # learning-rate multiplier applied at each rollback (1 = unchanged)
    max_rollbacks: int = 3  # then stop
    inject_nan: tuple = ()  # debug: steps whose G and D gradients are NaN (first attempt only)


@dataclass(frozen=True)
class TrainerSpec:
    steps: int = 3000
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    sample_every: int = 500
    keep: int = 3
    resume: Any = False  # false | true (latest matching run / this run dir) | a run directory
    devices: Optional[int] = None  # None = every device of every process
    ema: EmaSpec = EmaSpec()
    n_samples: int = 64  # images in the fixed-noise sample grid
    progress: bool = True
    guard: GuardSpec = GuardSpec()
    precision: str = "fp32"  # fp32 | bf16 (bfloat16 compute, float32 parameters and losses)
    distributed: str = "auto"  # auto (cluster detected) | manual | off: jax.distributed
    coordinator: Optional[str] = None  # manual: host:port of process 0
    num_processes: Optional[int] = None  # manual
    process_id: Optional[int] = None  # manual
    init_timeout: float = 300.0  # seconds to wait for every process to join
    population: int = 1  # members trained together in one vmapped step (gaxp.population)
    on_write_error: str = "stop"  # stop | warn: a periodic checkpoint that cannot be written


@dataclass(frozen=True)
class PopulationSpec:
    """Per-member values of a population (``trainer.population`` > 1): ``vary`` is
    ((name, (value per member, ...)), ...) sorted by name, for the names of
    ``gaxp.population.VARY``; ``shard`` puts the member axis (``members``) or each member's batch
    (``batch``) on the devices; ``auto`` = members when they divide evenly over the devices;
    ``cpu_devices``: CPU devices to spread the members over (``gaxp.members.spread_over_cores``);
    ``unroll``: members one by one (a loop over them) instead of vmapped (``gaxp.members.unrolled``)."""

    vary: tuple = ()
    shard: str = "auto"  # auto | members | batch
    cpu_devices: object = "auto"  # auto | int
    unroll: object = "auto"  # auto | True | False (gaxp.members.unrolled)

    def get(self, name: str):
        return dict(self.vary).get(name)


@dataclass(frozen=True)
class WandbSpec:
    mode: str = "auto"  # auto (online when logged in, else offline) | online | offline | disabled
    project: str = "gaxp"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: tuple = ()
    init_timeout: float = 60.0  # seconds before an unreachable W&B server falls back to offline


@dataclass(frozen=True)
class LoggerSpec:
    wandb: Optional[WandbSpec] = None  # None: W&B off (logger=none)
    jsonl: bool = True


@dataclass(frozen=True)
class MetricsSpec:
    """In-loop and on-demand evaluation (``gaxp.metrics``); empty ``names`` = no evaluation."""

    names: tuple = ()  # e.g. [auto] | [fd_mnist, is_mnist, kid_mnist, prdc_mnist] | [fid, kid]
    every: int = 1000  # steps between evaluations (and one at the last step)
    n_fake: Optional[int] = None  # generated samples; None: 2,500 points or 10,000 images
    n_real: Optional[int] = None  # reference examples; None: the split, at most 10,000
    split: str = "test"  # reference split of the training dataset
    batch_size: int = 100  # images per generate-and-embed batch (rounded up to the devices)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_splits: int = 10
    pr_k: int = 3  # k of improved precision and recall
    dc_k: int = 5  # k of density and coverage
    mode_min_count: int = 20  # high-quality samples for a toy mode to count as covered (PacGAN)
    seed: int = 0  # noise of the evaluated samples (the same at every evaluation)
    inception_weights: Optional[str] = None  # the .pth file; None: <cache>/inception/<file>
    download: bool = False  # fetch the Inception weights into the cache when missing
    cache_dir: Optional[str] = None  # None: $GAXP_CACHE, else ~/.cache/gaxp


@dataclass(frozen=True)
class TaskSpec:
    """What is trained (``gaxp.tasks``): ``gan`` (noise -> image, the default) or an image-to-image
    task on source/target batches. Weights of the terms added to the adversarial loss:"""

    name: str = "gan"  # gan | pix2pix | srgan | cyclegan
    l1_weight: float = 100.0  # pix2pix: lambda of the L1 term (Isola et al. 2017)
    adv_weight: float = 1.0  # weight of G's adversarial term (SRGAN: 1e-3, Ledig et al. 2017)
    pixel_weight: float = 1.0  # srgan: pixel MSE content loss
    perceptual: Optional[str] = None  # srgan: a classifier directory (scripts/train_classifier.py)
    perceptual_weight: float = 1.0  # srgan: MSE of that network's features (with `perceptual`)
    cycle_weight: float = 10.0  # cyclegan: lambda of the cycle-consistency L1 terms
    identity_weight: float = 0.5  # cyclegan: identity L1 weight, in units of cycle_weight
    pool_size: int = 0  # cyclegan: history of generated images shown to D (Shrivastava et al.
    # 2017; CycleGAN: 50); 0 = D sees only the newest fakes
    pretrain_steps: int = 0  # srgan: the first steps train G on pixel MSE only (the SRResNet)


@dataclass(frozen=True)
class Config:
    model: ModelSpec
    loss: LossSpec
    data: DataSpec
    optim: OptimSpec
    trainer: TrainerSpec
    logger: LoggerSpec
    out_dir: str
    runs_root: str = "outputs"
    metrics: MetricsSpec = MetricsSpec()
    regularizer: RegSpec = RegSpec()
    objective: Optional[ObjectiveSpec] = None  # what train returns to a sweeper (Optuna)
    task: TaskSpec = TaskSpec()  # gan, or an image-to-image task (gaxp.tasks)
    population: PopulationSpec = PopulationSpec()
    plugins: tuple = ()  # modules imported before validation; their entries register (gaxp.registry)
