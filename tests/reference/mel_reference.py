#!/usr/bin/python3
"""Reference log-Mel spectrograms for tg's Whisper front end (models/mel.c).

Computed with torch.stft exactly as openai-whisper's log_mel_spectrogram does
for one 30-second window (audio.pad_or_trim to 480000 samples, then):

    window = torch.hann_window(400)                      # periodic
    stft = torch.stft(audio, 400, 160, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2               # drop the last frame
    mel_spec = filters @ magnitudes                       # mel_filters.npz
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0

torch.stft centres the frames with reflect padding (center=True,
pad_mode="reflect"). The filters are Whisper's own (../shared/reference/
mel_filters.npz); the npz members are deflated, so they are also written as
plain .npy files for tests/test_mel.c, which checks tg's Slaney filterbank
against them.

Inputs: tests/data/whisper/speech.wav (espeak-ng, resampled to 16 kHz 16-bit
mono with sox; read here as int16 / 32768, as libsndfile does), a 440 Hz
sine (written as sine.npy), and one second of silence (zeros).

Outputs (tests/data/whisper/): mel_filters_80.npy, mel_filters_128.npy,
sine.npy, and for each case NAME_melN.npy holding the first F frames
[n_mels, F] (F covers the audio plus a margin) -- every later frame is
padding and equals one value, checked here and stored in mel_tails.npy
(order: speech 80, speech 128, sine 80, silence 80) to keep the files small.
"""
import os
import wave

import numpy as np
import torch

torch.backends.mkldnn.enabled = False

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "whisper")
FILTERS = os.path.join(HERE, "..", "..", "..", "shared", "reference", "mel_filters.npz")
N_SAMPLES, N_FFT, HOP = 480000, 400, 160


def log_mel(audio, filters, dtype=torch.float32):
    audio = torch.from_numpy(audio).to(dtype)
    audio = torch.nn.functional.pad(audio, (0, max(0, N_SAMPLES - audio.shape[-1])))[:N_SAMPLES]
    window = torch.hann_window(N_FFT, dtype=dtype)
    stft = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel_spec = torch.from_numpy(filters).to(dtype) @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


def main():
    torch.set_num_threads(1)
    with np.load(FILTERS) as z:
        filters = {80: z["mel_80"], 128: z["mel_128"]}
    for n, f in filters.items():
        np.save(os.path.join(OUT, "mel_filters_%d.npy" % n), f.astype(np.float32))

    with wave.open(os.path.join(OUT, "speech.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32)
    speech /= 32768.0
    t = np.arange(32000) / 16000.0
    sine = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    np.save(os.path.join(OUT, "sine.npy"), sine)
    silence = np.zeros(16000, dtype=np.float32)

    tails = []
    for name, audio, n_mels in (("speech", speech, 80), ("speech", speech, 128),
                                ("sine", sine, 80), ("silence", silence, 80)):
        mel = log_mel(audio, filters[n_mels])
        mel64 = log_mel(audio, filters[n_mels].astype(np.float64), torch.float64)
        frames = min(3000, len(audio) // HOP + 3)
        tail = mel[:, frames:]
        assert np.all(tail == tail[0, 0]), name
        tails.append(tail[0, 0])
        np.save(os.path.join(OUT, "%s_mel%d.npy" % (name, n_mels)), mel[:, :frames])
        print("%-8s mel%-3d %s frames kept %d, tail %.6f, |f32 - f64| max %.2e" %
              (name, n_mels, mel.shape, frames, tail[0, 0], np.abs(mel - mel64).max()))
    np.save(os.path.join(OUT, "mel_tails.npy"), np.array(tails, dtype=np.float32))


if __name__ == "__main__":
    main()
