"""Bad input to ``sanas train``, ``imitate``, ``data``, ``demo`` and ``costs``: data
folders, configs, recipes and settings, streams, archives and output paths. The rules are
those of test_bad_inputs.py (tests/bad_inputs.py checks them).
"""

from __future__ import annotations

import shutil

import pytest

from tests.bad_inputs import Case, Cases, World, check, download, tar

case = Cases()


# ------------------------------------------------------------------------ train inputs
@case("train: --data missing (no OUT/front left)")
def _(w: World) -> Case:
    missing = w.inputs / "nothing"
    return Case(w.train(data=missing), says=(f"{missing}: no such directory",))


@case("train: --data is a file")
def _(w: World) -> Case:
    path = w.file("data.txt", "yes/a.wav\n")
    return Case(w.train(data=path), says=(f"{path}: no such directory",))


@case("train: --data without word folders")
def _(w: World) -> Case:
    (w.inputs / "bare").mkdir()
    return Case(w.train(data=w.inputs / "bare"), says=("bare: no word folders with .wav files",))


@case("train: split list that is not text")
def _(w: World) -> Case:
    (w.data / "testing_list.txt").write_bytes(b"\x00\xff\xfe" * 30)
    return Case(w.train(), says=("testing_list.txt: not a text file",))


@case("train: split list naming no clip")
def _(w: World) -> Case:
    (w.data / "validation_list.txt").write_text("nope/x.wav\nalso/missing.wav\n")
    return Case(w.train(), says=("split 'validation' has no clips",))


@case("train: --config missing")
def _(w: World) -> Case:
    path = w.inputs / "none.yaml"
    return Case(["train", "--config", str(path)], says=(str(path),))


@case("train: --config not text")
def _(w: World) -> Case:
    path = w.file("config.yaml", b"\x89PNG\r\n\x1a\n\xff\xfe")
    return Case(["train", "--config", str(path)], says=("config.yaml: not a text file",))


@case("train: --config broken YAML")
def _(w: World) -> Case:
    path = w.file("config.yaml", "epochs: [1,\nmodel: sanas\n")
    return Case(["train", "--config", str(path)], says=("config.yaml: not valid YAML/JSON",))


@case("train: --config broken JSON")
def _(w: World) -> Case:
    path = w.file("config.json", '{"epochs": ')
    return Case(["train", "--config", str(path)], says=("config.json: not valid YAML/JSON",))


@case("train: --config a list")
def _(w: World) -> Case:
    path = w.file("config.yaml", "- epochs\n- 3\n")
    return Case(["train", "--config", str(path)], says=("config.yaml: expected a mapping",))


@case("train: --config unknown field")
def _(w: World) -> Case:
    path = w.file("config.yaml", f"data: {w.data}\nout: {w.out}\nepoch: 3\n")
    return Case(["train", "--config", str(path)], says=("unknown config field(s) 'epoch'",))


@case("train: --config ill-typed field")
def _(w: World) -> Case:
    path = w.file("config.yaml", f"data: {w.data}\nout: {w.out}\nepochs: ten\n")
    return Case(["train", "--config", str(path)], says=("'epochs' must be an integer",))


@case("train: --recipe unknown")
def _(w: World) -> Case:
    args = ["train", "--recipe", "fpool3-nope", "--data", str(w.data), "--out", str(w.out)]
    return Case(args, says=("no recipe 'fpool3-nope'",))


@case("train: --recipe and --config")
def _(w: World) -> Case:
    path = w.file("config.yaml", "epochs: 1\n")
    args = ["train", "--recipe", "fpool3-static", "--config", str(path)]
    return Case(args, says=("give --recipe or --config, not both",))


@case("train: --recipe without --data")
def _(w: World) -> Case:
    args = ["train", "--recipe", "fpool3-static", "--out", str(w.out)]
    return Case(args, says=("--recipe needs --data",))


@case("train: --set without '='")
def _(w: World) -> Case:
    return Case(w.train("--set", "epochs"), says=("--set expects key=value", "'epochs'"))


@case("train: --set out of range")
def _(w: World) -> Case:
    return Case(w.train("--set", "lr=-1"), says=("config field 'lr' must be > 0",))


@case("train: --set unknown field")
def _(w: World) -> Case:
    return Case(w.train("--set", "search.lamda=1e-8"), says=("'search.lamda'",))


@case("train: --set on a recipe's missing stage")
def _(w: World) -> Case:
    args = ["train", "--recipe", "fpool3-static", "--data", str(w.data), "--out", str(w.out)]
    return Case([*args, "--set", "pretrain.epochs=1"], says=("has no 'pretrain' stage",))


@case("train: --epochs 0")
def _(w: World) -> Case:
    return Case(w.train("--epochs", "0"), says=("config field 'epochs' must be >= 1",))


@case("train: --out under a file")
def _(w: World) -> Case:
    blocker = w.file("blocker", "not a folder")
    args = w.train()
    args[args.index("--out") + 1] = str(blocker / "run")
    return Case(args, says=(f"--out {blocker / 'run'}: {blocker} is a file",))


# ------------------------------------------------------------------------- other commands
@case("imitate: stream folder without labels")
def _(w: World) -> Case:
    folder = w.inputs / "stream"
    folder.mkdir()
    shutil.copy(w.wav, folder / "stream.wav")
    args = ["imitate", str(w.run), "--stream", str(folder), "--out", str(w.out)]
    return Case(args, says=(f"--stream {folder}: no labels.txt there",))


@case("imitate: stream labels with an unknown word")
def _(w: World) -> Case:
    folder = w.inputs / "stream"
    folder.mkdir()
    shutil.copy(w.wav, folder / "stream.wav")
    (folder / "labels.txt").write_text("yes, 100\ncow, 3000\n")
    args = ["imitate", str(w.run), "--stream", str(folder), "--out", str(w.out), "--no-progress"]
    return Case(args, says=("labels.txt:2: word 'cow' is not a label",))


@case("data stream: --data missing")
def _(w: World) -> Case:
    missing = w.inputs / "nothing"
    args = ["data", "stream", "--data", str(missing), "--out", str(w.out)]
    return Case(args, says=(f"{missing}: no such directory",))


@case("data stream: --minutes 0")
def _(w: World) -> Case:
    args = ["data", "stream", "--data", str(w.data), "--out", str(w.out), "--minutes", "0"]
    return Case(args, says=("minutes, word_gap_ms and clip_duration_ms must be positive",))


@case("data stream: --out under a file")
def _(w: World) -> Case:
    blocker = w.file("blocker", "")
    args = [
        "data",
        "stream",
        "--data",
        str(w.data),
        "--out",
        str(blocker / "s"),
        "--minutes",
        "0.1",
    ]
    return Case(args, says=(str(blocker),))


@case("data stream: unknown --words")
def _(w: World) -> Case:
    args = ["data", "stream", "--data", str(w.data), "--out", str(w.out), "--words", "yes,moo"]
    return Case(args, says=("wanted words with no clip in the split: moo",))


@case("download: chained symlinks (d -> ., d/e -> ..)")
def _(w: World) -> Case:
    return download(w, [("d", "-> ."), ("d/e", "-> .."), ("d/e/x", b"outside")])


@case("download: member climbing out")
def _(w: World) -> Case:
    return download(w, [("yes/../../evil.txt", b"outside")])


@case("download: absolute link")
def _(w: World) -> Case:
    return download(w, [("yes/passwd", "-> /etc/passwd")])


@case("download: special file")
def _(w: World) -> Case:
    return download(w, [("yes/pipe", "fifo")])


@case("download: corrupt archive")
def _(w: World) -> Case:
    name = "speech_commands_test_set_v0.01.tar.gz"  # no published digest: a gzip read
    w.out.mkdir()
    (w.out / "speech_commands_v0.01").mkdir()
    (w.out / "speech_commands_v0.01" / ".sanas_complete").write_text("done\n")
    archive = w.out / name
    archive.write_bytes(tar([("yes/a_nohash_0.wav", b"ok" * 500)])[:-40])
    args = ["data", "download", "--root", str(w.out), "--version", "v0.01", "--no-progress"]
    return Case(args, says=(f"{archive}: corrupt or truncated",), gone=(archive,))


@case("demo: --epochs 0")
def _(w: World) -> Case:
    return Case(["demo", "--out", str(w.out), "--epochs", "0"], says=("--epochs",))


@case("demo: --channels 0")
def _(w: World) -> Case:
    return Case(["demo", "--out", str(w.out), "--channels", "0"], says=("--channels",))


@case("demo: --out under a file")
def _(w: World) -> Case:
    blocker = w.file("blocker", "")
    return Case(["demo", "--out", str(blocker / "demo")], says=(str(blocker),))


@case("costs: unknown model")
def _(w: World) -> Case:
    return Case(["costs", "--model", "resnet-9000"], says=("unknown model 'resnet-9000'",))


@pytest.mark.parametrize("name", list(case))
def test_bad_input_is_one_line_naming_it(world: World, name: str) -> None:
    check(world, case[name](world))
