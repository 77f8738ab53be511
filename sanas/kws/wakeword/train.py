"""``sanas wakeword train``: a custom wake word, from synthetic speech to a run folder.

Two stages, each skipped when complete, so rerunning the same command after a kill
resumes: the corpus (:mod:`sanas.kws.wakeword.corpus`, built in ``RUN/corpus.partial``
and renamed to ``RUN/corpus`` when whole), then the ``wakeword`` recipe on it
(:func:`~sanas.kws.training.recipes.train_recipe`: the static network, the network with
exits, a stream of training speakers and the SANAS controller imitating the aligned gate).
The result is an ordinary run folder of task ``wake:<label>``, whose labels are
``(_silence_, _unknown_, <label>)``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from sanas.kws.config import load_recipe, parse_setting, recipe_config
from sanas.kws.data.synth import word_folder
from sanas.kws.runs import RunResult
from sanas.kws.training.recipes import STAGE_PREFIXES, train_recipe
from sanas.kws.wakeword.corpus import (
    CORPUS_DIR,
    CorpusConfig,
    WakeWordError,
    build_corpus,
    corpus_is_complete,
    normalize_phrase,
    read_corpus_record,
)

WAKEWORD_RECIPE = "wakeword"
CORPUS_PREFIX = "corpus."


def train_wakeword(
    phrase: str,
    out: str | os.PathLike[str],
    *,
    speech_commands: str | os.PathLike[str] | None = None,
    positives: str | os.PathLike[str] | None = None,
    negatives: str | os.PathLike[str] | None = None,
    settings: Sequence[str] = (),
    progress: bool = True,
) -> RunResult:
    """Train a detector of ``phrase`` into the run folder ``out``.

    ``speech_commands``: a Speech Commands folder for real negatives (its training
    speakers) and background noise; ``positives`` / ``negatives``: the user's recordings
    of the phrase and false activations to retrain on (see
    :func:`~sanas.kws.wakeword.corpus.build_corpus`). ``settings``: ``corpus.<field>=value``
    for the corpus (:class:`~sanas.kws.wakeword.corpus.CorpusConfig`), anything else for
    the ``wakeword`` recipe (``epochs=``, ``pretrain.epochs=``, ``imitate.epochs=``...).
    A folder holding another phrase's run is refused.
    """
    phrase = normalize_phrase(phrase)
    out = Path(out).resolve()
    corpus_settings = [s.strip()[len(CORPUS_PREFIX) :] for s in settings if _is_corpus(s)]
    recipe_settings = [s for s in settings if not _is_corpus(s)]
    config = CorpusConfig.from_settings(corpus_settings)
    corpus = out / CORPUS_DIR
    task = f"wake:{word_folder(phrase)}"
    run_settings = [
        s for s in recipe_settings if parse_setting(s)[0].split(".")[0] not in STAGE_PREFIXES
    ]
    # Check this run's settings now, not after minutes of synthesis.
    recipe_config(
        load_recipe(WAKEWORD_RECIPE),
        [f"task={task}", *run_settings],
        data=str(corpus),
        out=str(out),
    )
    if corpus_is_complete(corpus):
        built = read_corpus_record(corpus)["phrase"]
        if built != phrase:
            raise WakeWordError(
                f"--out {out}: holds a run for {built!r}, not {phrase!r}; give a new folder"
            )
    else:
        partial = out / f"{CORPUS_DIR}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build_corpus(
            phrase,
            partial,
            speech_commands=speech_commands,
            positives=positives,
            negatives=negatives,
            config=config,
            progress=progress,
        )
        partial.rename(corpus)
    return train_recipe(WAKEWORD_RECIPE, corpus, out, [f"task={task}", *recipe_settings], progress)


def _is_corpus(setting: str) -> bool:
    """Whether a ``key=value`` setting addresses the corpus (``corpus.<field>``)."""
    return parse_setting(setting)[0].startswith(CORPUS_PREFIX)
