"""The models shipped in `ciaosr_arch/weights/` (package data): the one table of them (`SHIPPED_MODELS`), which the
tools' `--model` help, the web app's model menu, the benchmark's in-scale range and README's "Shipped models" table
follow, and the resolution of a model name to its file.

How each was trained is in its file's metadata and in `weights/README.md`.
"""
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model. `file`: its name in WEIGHTS_DIR; `description`: what network and training it is;
    `scales`: the range of scales it was trained on, (smallest, largest); `licence`: of its weights; `use`: what it
    is for, in a few words (the web app's menu shows it)."""

    file: str
    description: str
    scales: tuple[float, float]
    licence: str
    use: str

    @property
    def path(self) -> Path:
        """Where its file is (it may be missing, e.g. in a checkout where it was not trained yet)."""
        return WEIGHTS_DIR / self.file


SHIPPED_MODELS = {  # name -> model, in the order the tools offer them ('default': what every tool loads by default)
    'default': ShippedModel(
        'ciaosr_edsr_baseline.safetensors', 'CiaoSR, EDSR-baseline encoder, bicubic degradation', (1, 4),
        "this project's weights, trained from scratch", 'bicubic-trained, best up to x4'),
    'real-l1': ShippedModel(
        'ciaosr_realnet_x4_edsr.safetensors', 'the default model fine-tuned on real-world degradations (stage 1, L1)',
        (1, 4), "this project's weights, fine-tuned from the default model", 'real-world photos, L1'),
    'real': ShippedModel(
        'ciaosr_real_rrdb_x4.safetensors',
        'real-world, version 4: a CiaoSR head (without the non-local branch) as a residual over Real-ESRGAN x4plus '
        '(its RRDBNet, GAN-trained and frozen, is the encoder; its x4 output, resampled by Lanczos-4, is the skip), '
        'trained with L1 on Real-ESRGAN and BSRGAN degradations at scales 4-8', (4, 8),
        "the RRDBNet's weights: Real-ESRGAN x4plus, BSD-3-Clause (copyright Xintao Wang et al.); the rest: this "
        "project's", 'real-world photos'),
}


def shipped_weights(name: str) -> Path:
    """Path of a shipped model by name (SHIPPED_MODELS); CheckpointError if the name is unknown or the file missing."""
    if name not in SHIPPED_MODELS:
        raise CheckpointError(f'unknown model name {name!r}; shipped models: {", ".join(SHIPPED_MODELS)}')
    path = SHIPPED_MODELS[name].path
    if not path.is_file():
        raise CheckpointError(f'the {name} weights are missing ({path}); pass a checkpoint path')
    return path


def resolve_weights(spec: str | Path | None = None) -> Path:
    """Checkpoint path for `spec`: None -> the default model; a shipped name (SHIPPED_MODELS) -> its file
    (unless a file of that name exists in the working directory); anything else -> Path(spec)."""
    if spec is None:
        return shipped_weights('default')
    if str(spec) in SHIPPED_MODELS and not Path(spec).is_file():  # (a folder of that name, e.g. -o real, is not one)
        return shipped_weights(str(spec))
    return Path(spec)
