"""One command from data to a trained model: every stage a recipe names, into one run folder.

A recipe (:class:`~sanas.kws.config.Recipe`) may first pretrain another recipe into
``RUN/pretrain`` (whose weights start this run), then either train (``sanas train``'s loop)
or, for an ``imitate`` recipe, make a stream of training speakers in ``RUN/trainstream``
(and, with ``imitate.noise_minutes``, one of background noise alone in ``RUN/trainnoise``)
and train the SANAS controller of the pretrained network to imitate a gate on them. Each
stage is skipped when its output is complete and resumes when it is not, so rerunning the
same command after a kill finishes the run.

``settings`` (``key=value``) go to this run's config; ``pretrain.key=value`` to the
pretraining stage, ``imitate.key=value`` to the imitation's settings and
``operating_point.key=value`` to the stored operating point. The pretraining stage also
takes this run's settings that define the network or the data (channels, task, seed, the
example limits, threads, workers, device), so the two networks match, and when this run's
``model`` is set, the same network in the family its recipe trains: ``--set
model=bc-resnet-1-sanas`` on ``kws-efficient-sanas`` trains ``bc-resnet-1-bsn``'s exits
after a static ``bc-resnet-1``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sanas.kws.config import (
    ConfigError,
    Recipe,
    TrainConfig,
    load_recipe,
    parse_setting,
    recipe_config,
)
from sanas.kws.data.speech_commands import SILENCE, UNKNOWN, SpeechCommands, kws_task
from sanas.kws.data.stream_file import generate_streaming_test
from sanas.kws.model.operating_point import OperatingPoint
from sanas.kws.model.registry import model_family
from sanas.kws.model.zoo import counterpart
from sanas.kws.runs import RunResult, save_operating_point
from sanas.kws.training.distributed import world_size
from sanas.kws.training.imitation import IMITATION_RECORD, imitation_result, imitation_run
from sanas.kws.training.loop import train

PRETRAIN_DIR = "pretrain"
STREAM_DIR = "trainstream"
NOISE_DIR = "trainnoise"  # background noise alone, with imitate.noise_minutes
# Settings the pretraining stage shares with the run it starts: its network and data.
SHARED_WITH_PRETRAINING = ("channels", "task", "seed", "limit_train", "limit_val", "threads",
                           "workers", "device")  # fmt: skip
STAGE_PREFIXES = ("pretrain", "imitate", "operating_point")


def train_recipe(
    recipe: Recipe | str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: Sequence[str] = (),
    progress: bool = True,
) -> RunResult:
    """Run every stage of ``recipe`` on the Speech Commands folder ``data`` into ``out``
    (paths stored absolute, so a rerun from another directory resumes the same run)."""
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    data, out = Path(data).resolve(), Path(out).resolve()
    stages = _split_settings(settings)
    recipe = _with_stage_settings(recipe, stages)
    config = recipe_config(recipe, stages[""], data=str(data), out=str(out), progress=progress)
    if stages["pretrain"] and recipe.pretrain is None:
        raise ConfigError(f"recipe {recipe.name!r} has no 'pretrain' stage to set")
    if recipe.imitate is not None and world_size() > 1:
        raise ConfigError(
            f"recipe {recipe.name!r} imitates on one process: run it without torchrun "
            f"(its pretraining recipe {recipe.pretrain!r} may use torchrun)"
        )
    pretrained = None
    if recipe.pretrain is not None:
        shared = [s for s in stages[""] if s.split("=")[0].strip() in SHARED_WITH_PRETRAINING]
        shared += _pretraining_model(recipe.pretrain, config.model, stages[""])
        pretrained = out / PRETRAIN_DIR
        train_recipe(recipe.pretrain, data, pretrained, [*shared, *stages["pretrain"]], progress)
    if recipe.imitate is not None:
        if pretrained is None:
            raise ConfigError(f"recipe {recipe.name!r}: 'imitate' needs a 'pretrain' recipe")
        words = [w for w in kws_task(config.task).labels if w not in (SILENCE, UNKNOWN)]
        result = _imitate(recipe.imitate, pretrained, data, out, config.seed, words, progress)
    else:
        if pretrained is not None:
            config = replace(config, init_from=str(pretrained))
        result = train(config)
    if recipe.operating_point is not None:
        save_operating_point(out, OperatingPoint.from_dict(recipe.operating_point))
    return result


def _pretraining_model(pretrain: str, model: str, settings: Sequence[str]) -> list[str]:
    """``["model=M"]``: the pretraining recipe's family of ``model`` when ``settings`` set
    this run's model (explicit ``pretrain.model=`` settings come after and win)."""
    if not any(parse_setting(setting)[0] == "model" for setting in settings):
        return []
    stage_model = load_recipe(pretrain).fields.get("model", TrainConfig.model)
    try:
        return [f"model={counterpart(model, model_family(stage_model))}"]
    except ValueError as error:
        raise ConfigError(
            f"model {model!r}: {error}; set the pretraining stage's with --set pretrain.model=..."
        ) from None


def _split_settings(settings: Sequence[str]) -> dict[str, list[str]]:
    """Settings by the stage they address ("" for this run's config), prefix removed."""
    stages: dict[str, list[str]] = {"": [], **{prefix: [] for prefix in STAGE_PREFIXES}}
    for setting in settings:
        key = parse_setting(setting)[0]
        prefix, _, rest = key.partition(".")
        if prefix in STAGE_PREFIXES and rest:
            stages[prefix].append(setting.strip()[len(prefix) + 1 :])
        else:
            stages[""].append(setting)
    return stages


def _with_stage_settings(recipe: Recipe, stages: dict[str, list[str]]) -> Recipe:
    """``recipe`` with its imitation settings and operating point overridden."""
    changes: dict[str, Any] = {}
    for stage in ("imitate", "operating_point"):
        if stages[stage]:
            own = getattr(recipe, stage)
            if own is None:
                raise ConfigError(f"recipe {recipe.name!r} has no '{stage}' section to set")
            changes[stage] = {**own, **dict(map(parse_setting, stages[stage]))}
    return replace(recipe, **changes) if changes else recipe


def _imitate(
    settings: dict[str, Any],
    pretrained: Path,
    data: Path,
    out: Path,
    seed: int,
    words: Sequence[str],
    progress: bool,
) -> RunResult:
    """The imitation stage: a stream of training speakers saying the task's ``words`` that
    the data has (and others), optionally a stream of background noise alone, then the
    controller imitating a gate on them (each skipped when complete)."""
    settings = dict(settings)
    minutes = float(settings.pop("stream_minutes", 120.0))
    noise_minutes = float(settings.pop("noise_minutes", 0.0))
    if not (math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"imitate.stream_minutes must be > 0, got {minutes}")
    if not (math.isfinite(noise_minutes) and noise_minutes >= 0):
        raise ConfigError(f"imitate.noise_minutes must be >= 0, got {noise_minutes}")
    streams = [out / STREAM_DIR]
    _make_stream(data, streams[0], words, minutes=minutes, seed=seed + 1, split="training")
    if noise_minutes > 0:
        streams.append(out / NOISE_DIR)
        _make_stream(data, streams[1], minutes=noise_minutes, seed=seed + 2, noise_only=True)
    if not (out / IMITATION_RECORD).is_file():
        try:
            imitation_run(pretrained, streams, out, seed=seed, progress=progress, **settings)
        except TypeError as error:  # an unknown or ill-typed imitation setting
            raise ConfigError(f"imitate: {error}") from None
    return imitation_result(out)


def _make_stream(data: Path, folder: Path, words: Sequence[str] = (), **settings: Any) -> None:
    """``folder``'s stream of the Speech Commands folder ``data`` (:func:`generate_streaming_test`
    with ``settings``, saying those of ``words`` the data has), unless a previous run of the
    stage wrote it already: a resumed run does not scan the data again."""
    if (folder / "labels.txt").is_file():
        return
    dataset = SpeechCommands(data)
    if words:
        settings["wanted_words"] = [word for word in words if word in dataset.words]
    generate_streaming_test(dataset, folder, **settings)
