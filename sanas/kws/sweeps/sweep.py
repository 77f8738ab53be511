"""A sweep: a family of runs of one recipe (settings × seeds), trained as Ray Tune trials.

Each trial is an ordinary run folder ``SWEEP/<trial>/`` made by
:func:`~sanas.kws.training.recipes.train_recipe`, named from its settings
(``search.budget=3000000.0_seed=0``) so that a rerun finds it. When the run is trained, the
trial scores it on the sweep's two streams (``SWEEP/valstream`` from the validation list, on
which runs are compared and chosen; ``SWEEP/stream`` from the testing list, reported only)
and writes ``trial.json`` into the run folder last. A run folder holding ``trial.json`` is
finished: rerunning the sweep skips it and resumes every other trial where its run folder
stopped (the run folder decides, not Ray's experiment state, so a sweep also resumes after
its driver was killed). A trial that fails (a bad value, a crash, a SIGKILL) is recorded
with its error in ``SWEEP/sweep.json`` beside every other trial's status, settings and
metrics; the others go on.

A grid runs every combination of the given values with every seed. With ``trials=N`` an
Optuna sampler (multi-objective TPE, through Ray Tune's ``OptunaSearch``) proposes N
settings instead: two numbers given for a key are a range (log-uniform when they span a
factor of 10 or more, integers when both are), any other list a choice. A rerun tells the
sampler the finished trials and samples the rest.

Ray (the ``sweep`` extra) is imported only inside the functions that run trials; a local
Ray instance by default, or the cluster at ``address``. Ray's own files stay in
``SWEEP/ray/``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sanas.kws.config import ConfigError, load_recipe, parse_setting
from sanas.kws.data.speech_commands import SpeechCommands
from sanas.kws.data.stream_file import generate_streaming_test
from sanas.kws.evaluation.evaluate import evaluate_run
from sanas.kws.run_files import atomic_write_json
from sanas.kws.sweeps.pareto import write_hparams
from sanas.kws.training.recipes import train_recipe

SWEEP_RECORD = "sweep.json"
TRIAL_RECORD = "trial.json"  # written last into a trial's run folder: a finished trial
RAY_STORAGE = "ray"
# Stream folders of a sweep and the list each is made from (as the Table-1 experiment's).
STREAMS = {"valstream": "validation", "stream": "testing"}
# What a trial reports (on validation) and whether more is better.
OBJECTIVES = {"correct": "max", "matched": "max", "accuracy": "max", "macs": "min"}
STREAM_OBJECTIVES = ("correct", "matched")
INSTALL_HINT = "a sweep runs on Ray Tune: pip install 'sanas[sweep]'"


class SweepError(ValueError):
    """A sweep that cannot run as asked: a bad grid, objective or option, named."""


# ------------------------------------------------------------------------ the trials
def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["key=v1,v2", ...]`` (the CLI's ``--grid``) as {key: [values]}, each value read as
    a ``--set`` value is (YAML: numbers, booleans, strings)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise SweepError(f"--grid expects key=v1,v2,... (e.g. search.budget=1e6,3e6), "
                             f"got {item!r}")  # fmt: skip
        if key.strip() in grid or key.strip() == "seed":
            raise SweepError(f"--grid {key.strip()!r} given twice (seeds go in --seeds)")
        grid[key.strip()] = [parse_setting(f"{key}={v}")[1] for v in values]
    return grid


def trial_name(values: dict[str, Any]) -> str:
    """The run folder name of a trial: its settings, in order, as ``key=value_key=value``
    (characters a folder name should not hold become ``-``)."""
    text = "_".join(f"{key}={value}" for key, value in values.items())
    return "".join(c if c.isalnum() or c in "._=+-" else "-" for c in text)


def grid_trials(grid: dict[str, list[Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, each with every seed (the seed last)."""
    keys = list(grid)
    return [
        {**dict(zip(keys, combination, strict=True)), "seed": seed}
        for combination in itertools.product(*grid.values())
        for seed in seeds
    ]


def finished_trial(run: Path) -> dict[str, Any] | None:
    """The record of a finished trial (its run folder's trial.json), or None."""
    path = run / TRIAL_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def run_trial(values: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Train one trial into ``SWEEP/<trial_name(values)>`` (resuming it), score it on the
    sweep's streams, write its trial.json; return its validation metrics. ``context``:
    recipe, data, out, settings (every trial's) and cpus, as :func:`run_sweep` sets them."""
    name = trial_name(values)
    run = Path(context["out"]) / name
    torch.set_num_threads(context["cpus"])
    settings = [*context["settings"], *(f"{key}={value}" for key, value in values.items())]
    result = train_recipe(context["recipe"], context["data"], run, settings, progress=False)
    metrics = {
        "accuracy": _number(result.best_accuracy),
        "macs": _number(result.best_macs_per_step),
    }
    test: dict[str, float | None] = {}
    if context["streams"]:
        scores = {
            folder: evaluate_run(
                run,
                Path(context["out"]) / folder / "stream.wav",
                Path(context["out"]) / folder / "labels.txt",
                run / f"{folder}_eval.json",
            ).to_dict()
            for folder in STREAMS
        }
        for target, folder in ((metrics, "valstream"), (test, "stream")):
            target.update({key: scores[folder][key] for key in STREAM_OBJECTIVES})
            target["macs"] = scores[folder]["macs_per_step"]
    record = {"name": name, "run": str(run), "settings": values, "metrics": metrics, "test": test}
    atomic_write_json(run / TRIAL_RECORD, record)
    return {key: value for key, value in metrics.items() if value is not None}


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Sampled floats to 4 significant digits: short trial names, and what the trial trains
    with (a grid's values are used as given)."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in values.items()}


def _number(value: float) -> float | None:
    """NaN (no such metric, e.g. the validation accuracy of an imitation run) as None."""
    return None if math.isnan(value) else float(value)


# ------------------------------------------------------------------------- the sweep
def run_sweep(
    recipe: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    grid: dict[str, list[Any]],
    seeds: Sequence[int] = (0,),
    trials: int | None = None,
    objectives: Sequence[str] = ("correct", "macs"),
    cpus_per_trial: int = 1,
    address: str | None = None,
    settings: Sequence[str] = (),
    stream_minutes: float | None = 10.0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the sweep into ``out`` and return every trial's record (name, run, settings,
    status: done / failed / pending, error, validation metrics, test metrics), also written
    to ``out/sweep.json``; TensorBoard HParams of the finished trials go to
    ``out/tensorboard/``.

    ``grid``: recipe settings and their values (a grid, × ``seeds``), or with ``trials`` the
    ranges an Optuna sampler draws ``trials`` settings from, for one seed, towards the
    ``objectives`` (names of :data:`OBJECTIVES`). ``settings``: ``key=value`` for every trial.
    ``stream_minutes``: the length of the validation and test streams each run is scored on
    (None: no streams; then the objectives are the validation sequences' accuracy and MACs).
    ``cpus_per_trial``: Ray CPUs (and torch threads) per trial; ``address``: a Ray cluster.
    """
    data, out = Path(data).resolve(), Path(out).resolve()
    _tune()  # Ray installed, or say which extra to install, before any work
    _check(recipe, grid, seeds, trials, objectives, cpus_per_trial, stream_minutes)
    dataset = SpeechCommands(data)  # names a missing data folder before any trial starts
    out.mkdir(parents=True, exist_ok=True)
    streams = bool(stream_minutes)
    if streams:
        for folder, split in STREAMS.items():
            if not (out / folder / "labels.txt").is_file():
                generate_streaming_test(
                    dataset, out / folder, minutes=stream_minutes, seed=0, split=split
                )
    context = {"recipe": recipe, "data": str(data), "out": str(out), "settings": list(settings),
               "cpus": cpus_per_trial, "streams": streams}  # fmt: skip
    header = {"recipe": recipe, "data": str(data), "grid": grid, "seeds": list(seeds),
              "trials": trials, "objectives": list(objectives), "settings": list(settings),
              "stream_minutes": stream_minutes}  # fmt: skip
    if trials is None:
        planned = grid_trials(grid, seeds)
        todo = [v for v in planned if finished_trial(out / trial_name(v)) is None]
        _write_record(out, header, planned, {})
        space = grid_space("trial", todo) if todo else None
        outcomes = run_on_ray(_grid_trial, context, space, out, cpus_per_trial=cpus_per_trial,
                              address=address, progress=progress,
                              samples=1 if todo else 0)  # fmt: skip
        outcomes = [(config["trial"], metrics, error) for config, metrics, error in outcomes]
    else:
        planned, outcomes = _search(grid, seeds[0], trials, objectives, context, address, progress)
    errors = {trial_name(values): error for values, _, error in outcomes if error}
    records = _write_record(out, header, planned, errors)
    write_hparams(out / "tensorboard", [r for r in records if r["status"] == "done"])
    return records


def _check(
    recipe: str,
    grid: dict[str, list[Any]],
    seeds: Sequence[int],
    trials: int | None,
    objectives: Sequence[str],
    cpus_per_trial: int,
    stream_minutes: float | None,
) -> None:
    """Refuse a sweep that cannot run, before any work, naming the option."""
    try:
        load_recipe(recipe)
    except ConfigError as error:
        raise SweepError(f"--recipe: {error}") from None
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise SweepError(f"--objectives must be among {', '.join(OBJECTIVES)}, got {unknown}")
    if not stream_minutes and any(o in STREAM_OBJECTIVES for o in objectives):
        raise SweepError("objectives 'correct' and 'matched' are scored on streams: "
                         "give stream_minutes > 0, or objectives accuracy,macs")  # fmt: skip
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds must be distinct seeds, got {list(seeds)}")
    if any(not values for values in grid.values()):
        raise SweepError("every --grid key needs at least one value")
    if cpus_per_trial < 1:
        raise SweepError(f"--cpus-per-trial must be >= 1, got {cpus_per_trial}")
    if trials is not None:
        if trials < 1:
            raise SweepError(f"--trials must be >= 1, got {trials}")
        if len(seeds) != 1:
            raise SweepError("a search (--trials) samples settings for one seed: give one --seeds")
        if not grid:
            raise SweepError("a search (--trials) needs at least one --grid key to sample")


def _tune() -> Any:
    """``ray.tune``, or a :class:`SweepError` naming the extra to install."""
    try:
        from ray import tune
    except ImportError:
        raise SweepError(INSTALL_HINT) from None
    return tune


def grid_space(key: str, values: list[Any]) -> dict[str, Any]:
    """A Tune search space of one trial per value of ``values`` (as ``config[key]``)."""
    return {key: _tune().grid_search(values)}


def _grid_trial(config: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A grid trial of Ray: its settings are ``config["trial"]``."""
    return run_trial(config["trial"], context)


def _search(
    grid: dict[str, list[Any]],
    seed: int,
    trials: int,
    objectives: Sequence[str],
    context: dict[str, Any],
    address: str | None,
    progress: bool,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], dict[str, Any] | None, str | None]]]:
    """The Optuna search: the finished trials of ``grid``'s keys told to the sampler, the rest
    sampled; (every trial's settings, the outcomes of those run now)."""
    _tune()
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise SweepError(INSTALL_HINT) from None

    out = Path(context["out"])
    done = [r for r in _records_in(out) if set(r["settings"]) == {*grid, "seed"}]
    done = [r for r in done if r["settings"]["seed"] == seed][:trials]
    modes = [OBJECTIVES[o] for o in objectives]
    told = [r for r in done if all(r["metrics"].get(o) is not None for o in objectives)]
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class TellsFinishedTrials(OptunaSearch):
        """Ray's OptunaSearch, its study told the sweep's finished trials first (Ray's own
        ``evaluated_rewards`` takes one objective only)."""

        def _setup_study(self, mode: Any) -> None:
            super()._setup_study(mode)
            for record in told:
                try:
                    trial = optuna.trial.create_trial(
                        params={key: record["settings"][key] for key in grid},
                        distributions=self._space,
                        values=[record["metrics"][o] for o in objectives],
                    )
                except ValueError:  # outside the ranges given now: not this search's
                    continue
                self._ot_study.add_trial(trial)

    # another seed per rerun: its first (random) draws must not repeat the finished trials'
    sampler = optuna.samplers.TPESampler(seed=seed * 1000 + len(done))
    searcher = TellsFinishedTrials(metric=list(objectives), mode=modes, sampler=sampler)
    outcomes = run_on_ray(_search_trial, {**context, "seed": seed}, _space(grid), out,
                          cpus_per_trial=context["cpus"], address=address, progress=progress,
                          samples=trials - len(done), search=searcher)  # fmt: skip
    outcomes = [(_rounded({**v, "seed": seed}), m, e) for v, m, e in outcomes]
    planned = [r["settings"] for r in done] + [values for values, _, _ in outcomes]
    distinct = {trial_name(values): values for values in planned}  # a repeated draw
    return list(distinct.values()), outcomes


def _search_trial(config: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A sampled trial of Ray: the sampled settings (rounded), then the sweep's seed."""
    return run_trial(_rounded({**config, "seed": context["seed"]}), context)


def _space(grid: dict[str, list[Any]]) -> dict[str, Any]:
    """The sampler's space: two numbers are a range, anything else a choice."""
    tune = _tune()
    space = {}
    for key, values in grid.items():
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if len(values) == 2 and numbers and values[0] < values[1]:
            low, high = values
            if isinstance(low, int) and isinstance(high, int):
                space[key] = tune.randint(low, high + 1)
            elif low > 0 and high / low >= 10:
                space[key] = tune.loguniform(low, high)
            else:
                space[key] = tune.uniform(low, high)
        else:
            space[key] = tune.choice(values)
    return space


def _records_in(out: Path) -> list[dict[str, Any]]:
    """The trial.json of every finished trial in the sweep folder."""
    return [json.loads(path.read_text()) for path in sorted(out.glob(f"*/{TRIAL_RECORD}"))]


def _write_record(
    out: Path, header: dict[str, Any], planned: list[dict[str, Any]], errors: dict[str, str]
) -> list[dict[str, Any]]:
    """sweep.json: every planned trial's status (from its run folder), settings, error,
    validation and test metrics; returns the trials' records."""
    records = []
    for values in planned:
        name = trial_name(values)
        finished = finished_trial(out / name)
        status = "done" if finished else "failed" if name in errors else "pending"
        records.append({
            "name": name, "run": str(out / name), "settings": values, "status": status,
            "error": None if finished else errors.get(name),
            "metrics": finished["metrics"] if finished else None,
            "test": finished["test"] if finished else None,
        })  # fmt: skip
    atomic_write_json(out / SWEEP_RECORD, {**header, "trials": records})
    return records


# ----------------------------------------------------------------------- Ray Tune
Outcome = tuple[dict[str, Any], dict[str, Any] | None, str | None]


def run_on_ray(
    function: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    context: dict[str, Any],
    param_space: dict[str, Any] | None,
    out: Path,
    *,
    cpus_per_trial: int = 1,
    address: str | None = None,
    progress: bool = True,
    samples: int = 1,
    search: Any = None,
    max_concurrent: int | None = None,
) -> list[Outcome]:
    """Run ``function(config, context)`` as Ray Tune trials (``param_space`` and ``samples``
    as Tune reads them, ``search``: a Tune searcher) with Ray's files in ``out/ray``; return
    each trial's (config, metrics or None, one-line error or None). A trial that raises or
    dies fails alone. Ray starts here unless it runs already (then it is reused)."""
    if samples < 1:
        return []
    tune = _tune()
    with _ray(address), _quiet_ray():
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(function, context=context),
                                {"cpu": cpus_per_trial}),
            param_space=param_space,
            tune_config=tune.TuneConfig(num_samples=samples, search_alg=search,
                                        max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(
                name=time.strftime("trials-%Y%m%d-%H%M%S"), storage_path=str(out / RAY_STORAGE),
                verbose=0, callbacks=[_progress_bar(progress)],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )  # fmt: skip
        results = tuner.fit()
    return [(r.config, r.metrics if r.error is None else None, _one_line(r.error)) for r in results]


@contextmanager
def _ray(address: str | None) -> Iterator[None]:
    """A Ray session: the running one, the cluster at ``address``, or a local instance on
    this machine's CPUs, quiet (no dashboard, workers' output not relayed to this terminal);
    the local instance is left running for the next sweep of this process."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no status tables
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        local = {"num_cpus": os.cpu_count()} if address is None else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **local)  # fmt: skip
    yield


@contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's own logging muted while trials run: a failed trial is reported in sweep.json
    and the summary, not as a traceback on the terminal."""
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _progress_bar(enabled: bool) -> Any:
    """A Tune callback advancing a tqdm bar as trials end (done or failed)."""
    from ray.tune import Callback

    class ProgressBar(Callback):
        def __init__(self) -> None:
            self.bar = tqdm(desc="trials", unit="trial", disable=not enabled)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.bar.total = len(trials)
            self.bar.refresh()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.bar.update()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.bar.update()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.bar.close()

    return ProgressBar()


def _one_line(error: BaseException | None) -> str | None:
    """A trial's error in one line: the exception the trial raised (``Type: message``), or
    the first line of Ray's (a worker that died: killed, out of memory, crashed)."""
    if error is None:
        return None
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause) else ''}"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
