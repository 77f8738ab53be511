"""Specification of audio reading: 16 kHz float32 mono, or an AudioError naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sanas.kws.data.audio import SAMPLE_RATE, AudioError, fit_length, read_wav


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_int16_pcm_is_scaled_to_float32_in_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "pcm.wav"
    samples = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    x = read_wav(path)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, samples / 32768.0)


def test_float_wav_is_read_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    samples = tone(0.1, SAMPLE_RATE)
    sf.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(read_wav(path), samples)


def test_stereo_is_mixed_down_to_the_mean_of_the_channels(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left, right = tone(0.1, SAMPLE_RATE), np.full(1600, 0.25, dtype=np.float32)
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    x = read_wav(path)
    assert x.shape == (1600,)
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-7)


def test_other_sample_rate_is_resampled_keeping_duration_and_pitch(tmp_path: Path) -> None:
    path = tmp_path / "8k.wav"
    sf.write(path, tone(0.5, 8000, hz=440.0), 8000, subtype="FLOAT")
    x = read_wav(path)
    assert x.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(x))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(x)
    assert abs(peak_hz - 440.0) <= 2.0


def test_other_sample_rate_is_refused_when_resampling_is_off(tmp_path: Path) -> None:
    path = tmp_path / "44k.wav"
    sf.write(path, tone(0.1, 44100), 44100)
    with pytest.raises(AudioError, match=r"44k\.wav.*44100 Hz, expected 16000 Hz"):
        read_wav(path, resample=False)


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"absent\.wav: no such file"):
        read_wav(tmp_path / "absent.wav")


def test_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav: empty file"):
        read_wav(path)


@pytest.mark.parametrize(
    "content",
    [b"this is not audio at all" * 10, b"RIFF\x24\x00\x00\x00WAVEfmt "],
    ids=["garbage", "truncated-header"],
)
def test_corrupt_file_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=r"corrupt\.wav: cannot decode"):
        read_wav(path)


def test_wav_without_samples_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"silent\.wav: no samples"):
        read_wav(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_samples_are_an_error(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "nonfinite.wav"
    samples = tone(0.1, SAMPLE_RATE)
    samples[100] = bad
    sf.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nonfinite\.wav: NaN or infinite"):
        read_wav(path)


def test_audio_error_is_a_value_error() -> None:
    assert issubclass(AudioError, ValueError)


def test_real_clip_is_one_second_of_float32(speech_commands_root: Path) -> None:
    clip = next((speech_commands_root / "yes").glob("*.wav"))
    x = read_wav(clip)
    assert x.shape == (SAMPLE_RATE,)
    assert x.dtype == np.float32
    assert 0 < np.abs(x).max() <= 1


def test_fit_length_pads_short_clips_with_zeros_at_the_end() -> None:
    np.testing.assert_array_equal(fit_length(np.ones(3, np.float32), 5), [1, 1, 1, 0, 0])


def test_fit_length_crops_long_clips_at_the_end() -> None:
    np.testing.assert_array_equal(fit_length(np.arange(5.0), 3), [0, 1, 2])


def test_fit_length_keeps_exact_clips_and_their_dtype() -> None:
    x = np.arange(4, dtype=np.float32)
    assert fit_length(x, 4).dtype == np.float32
    np.testing.assert_array_equal(fit_length(x, 4), x)


def test_fit_length_refuses_negative_length_and_multichannel_input() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        fit_length(np.zeros(3), -1)
    with pytest.raises(ValueError, match="1-D"):
        fit_length(np.zeros((3, 2)), 3)
