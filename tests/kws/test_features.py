"""Specification of the features: MFCC / log-mel as the librosa reference, and their cache."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.fftpack
import soundfile as sf
import torch

from sanas.kws.data.audio import AudioError, read_wav
from sanas.kws.data.features import MFCC, FeatureCache, LogMel, dct_matrix, mel_filterbank

# Clips spread over words, plus the two hardest of the subset (digital silence with isolated
# samples: the window's smallest edge weights must be exact for the log to agree).
PARITY_CLIPS = [
    "yes/022cd682_nohash_0.wav",
    "left/022cd682_nohash_0.wav",
    "off/0b57a6ed_nohash_0.wav",
    "marvin/0c40e715_nohash_0.wav",
    "stop/f2e59fea_nohash_2.wav",
    "no/dcb57584_nohash_0.wav",
]


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """The reference's log mel (mels, frames), computed with librosa."""
    mel = librosa.feature.melspectrogram(
        y=x, sr=16000, n_fft=480, hop_length=160, n_mels=40, fmin=20, fmax=4000,
        pad_mode="constant",
    )  # fmt: skip
    mel[mel > 0] = np.log(mel[mel > 0])
    return mel


def reference_mfcc(x: np.ndarray) -> np.ndarray:
    """The reference's MFCC (mels, frames)."""
    return scipy.fftpack.dct(reference_log_mel(x), axis=0, type=2, norm="ortho")


@pytest.fixture(scope="module")
def parity_waves(speech_commands_root: Path) -> list[np.ndarray]:
    return [read_wav(speech_commands_root / name) for name in PARITY_CLIPS]


def test_mfcc_matches_the_librosa_reference_on_real_clips(parity_waves: list[np.ndarray]) -> None:
    mfcc = MFCC()
    out = mfcc(torch.from_numpy(np.stack(parity_waves))).numpy()
    for x, ours in zip(parity_waves, out, strict=True):
        np.testing.assert_allclose(ours, reference_mfcc(x).T, rtol=0, atol=1e-3)


def test_log_mel_matches_the_librosa_reference_on_real_clips(
    parity_waves: list[np.ndarray],
) -> None:
    for x in parity_waves[:3]:
        ours = LogMel()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours, reference_log_mel(x).T, rtol=0, atol=1e-3)


def test_mel_filterbank_is_librosas_slaney_filterbank() -> None:
    ours = mel_filterbank(16000, 480, 40, 20.0, 4000.0)
    theirs = librosa.filters.mel(sr=16000, n_fft=480, n_mels=40, fmin=20, fmax=4000)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)


def test_dct_matrix_is_the_orthonormal_dct_ii() -> None:
    x = np.random.default_rng(0).normal(size=(40, 7))
    np.testing.assert_allclose(dct_matrix(40) @ x, scipy.fftpack.dct(x, axis=0, norm="ortho"))
    np.testing.assert_allclose(dct_matrix(40) @ dct_matrix(40).T, np.eye(40), atol=1e-12)


def test_one_second_gives_101_frames_of_40_coefficients() -> None:
    assert MFCC()(torch.zeros(3, 16000)).shape == (3, 101, 40)
    assert MFCC()(torch.zeros(16000)).shape == (101, 40)
    assert LogMel()(torch.zeros(2, 24000)).shape == (2, 151, 40)
    assert MFCC().n_frames(48000) == 301


def test_a_batch_is_computed_as_its_items() -> None:
    waves = torch.randn(4, 16000) * 0.1
    batch = MFCC()(waves)
    for wave, features in zip(waves, batch, strict=True):
        torch.testing.assert_close(MFCC()(wave), features, rtol=0, atol=1e-4)


def test_zero_energy_stays_zero_instead_of_minus_infinity() -> None:
    features = MFCC()(torch.zeros(16000))
    assert torch.equal(features, torch.zeros(101, 40))


def test_input_of_other_rank_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"expected \(batch, samples\)"):
        MFCC()(torch.zeros(1, 1, 16000))


def test_filters_are_buffers_so_the_module_moves_between_devices() -> None:
    assert {name for name, _ in MFCC().named_buffers()} == {"window", "mel_filters", "dct"}
    assert {name for name, _ in LogMel().named_buffers()} == {"window", "mel_filters"}
    double = MFCC().double()(torch.randn(16000, dtype=torch.float64))
    assert double.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mfcc_on_gpu_matches_cpu() -> None:
    waves = torch.randn(8, 16000) * 0.1
    gpu = MFCC().cuda()(waves.cuda()).cpu()
    torch.testing.assert_close(gpu, MFCC()(waves), rtol=0, atol=1e-3)


def test_describe_names_the_frontend_and_its_parameters() -> None:
    assert MFCC().describe() == {
        "frontend": "MFCC",
        "sample_rate": 16000,
        "n_fft": 480,
        "hop_length": 160,
        "n_mels": 40,
        "fmin": 20.0,
        "fmax": 4000.0,
    }
    assert LogMel(fmax=8000.0).describe()["fmax"] == 8000.0


# --- the feature cache -----------------------------------------------------------------


@pytest.fixture
def clip_paths(tmp_path: Path) -> list[Path]:
    """Three short clips of different lengths (padded or cropped to 1 s by the cache)."""
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([0.5, 1.0, 1.3]):
        path = tmp_path / "clips" / f"c{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, (0.1 * rng.normal(size=round(seconds * 16000))).astype(np.float32), 16000)
        paths.append(path)
    return paths


def counting(frontend: LogMel) -> list[int]:
    """Count the frontend's calls (batch sizes) through a forward hook."""
    calls: list[int] = []
    frontend.register_forward_hook(lambda _m, args, _out: calls.append(len(args[0])))
    return calls


def test_cache_computes_features_once_and_memory_maps_them(
    tmp_path: Path, clip_paths: list[Path]
) -> None:
    frontend = MFCC()
    calls = counting(frontend)
    cache = FeatureCache(tmp_path / "cache", frontend, batch_size=2, progress=False)
    features = cache.get("train", clip_paths)
    assert calls == [2, 1]
    assert isinstance(features, np.memmap) and features.shape == (3, 101, 40)
    # the 0.5 s clip is zero-padded to 1 s
    expected = MFCC()(torch.from_numpy(np.pad(read_wav(clip_paths[0]), (0, 8000))))
    np.testing.assert_allclose(features[0], expected.numpy(), atol=1e-5)
    again = cache.get("train", clip_paths)
    assert calls == [2, 1]
    np.testing.assert_array_equal(again, features)


def test_cache_is_rebuilt_when_frontend_parameters_change(
    tmp_path: Path, clip_paths: list[Path]
) -> None:
    directory = tmp_path / "cache"
    first = FeatureCache(directory, MFCC(), progress=False)
    old = np.array(first.get("train", clip_paths))
    changed = FeatureCache(directory, MFCC(fmax=8000.0), progress=False)
    assert changed.path("train", clip_paths) != first.path("train", clip_paths)
    new = changed.get("train", clip_paths)
    assert not np.allclose(new, old)
    assert sorted(p.name for p in directory.iterdir()) == [changed.path("train", clip_paths).name]


def test_cache_is_rebuilt_when_the_clip_list_changes(
    tmp_path: Path, clip_paths: list[Path]
) -> None:
    cache = FeatureCache(tmp_path / "cache", LogMel(), progress=False)
    assert cache.get("val", clip_paths[:2]).shape == (2, 101, 40)
    assert cache.get("val", clip_paths).shape == (3, 101, 40)
    assert cache.key(clip_paths) != cache.key(clip_paths[:2])
    assert cache.key(clip_paths) != FeatureCache(tmp_path, MFCC()).key(clip_paths)


def test_cache_build_with_a_bad_clip_raises_and_leaves_no_file(
    tmp_path: Path, clip_paths: list[Path]
) -> None:
    bad = clip_paths[0].with_name("bad.wav")
    bad.write_bytes(b"not a wav")
    directory = tmp_path / "cache"
    with pytest.raises(AudioError, match=r"bad\.wav"):
        FeatureCache(directory, MFCC(), progress=False).get("train", [*clip_paths, bad])
    assert list(directory.iterdir()) == []
