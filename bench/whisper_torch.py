#!/usr/bin/python3
"""The PyTorch side of bench/whisper: the same Whisper forward passes as tg's
(log-Mel of a 30-s window, the encoder, one decoder step with a KV cache) on
the same weights, timed on the CPU. Run by bench/whisper.c with Debian's
/usr/bin/python3 (python3-torch); prints one JSON object on stdout.

    whisper_torch.py CHECKPOINT.safetensors D_MODEL HEADS ENC_LAYERS DEC_LAYERS
                     N_MELS VOCAB MAX_LEN TOKENS

torch.set_num_threads(2) (the machine's two vCPUs); PyTorch's defaults
otherwise (oneDNN on: its conv1d *backward* is wrong on this CPU, see
../shared/LAVAPIPE.md, but only forward passes run here). The Mel filterbank
is random: the timing does not depend on its values."""
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = {"F32": np.float32, "F16": np.float16}[info["dtype"]]
        arr = np.frombuffer(data, dtype=dtype, count=(b - a) // np.dtype(dtype).itemsize,
                            offset=base + a).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out


def ln(x, w, p):
    return F.layer_norm(x, (x.shape[-1],), w[p + ".weight"], w[p + ".bias"], 1e-5)


def lin(x, w, p, bias=True):
    return F.linear(x, w[p + ".weight"], w[p + ".bias"] if bias else None)


def heads(x, h):
    b, t, d = x.shape
    return x.view(b, t, h, d // h).transpose(1, 2)


def attend(q, k, v):
    s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    o = torch.softmax(s, -1) @ v
    b, h, t, hd = o.shape
    return o.transpose(1, 2).reshape(b, t, h * hd)


def encoder(mel, w, n_heads, layers):
    e = "model.encoder."
    x = F.gelu(F.conv1d(mel, w[e + "conv1.weight"], w[e + "conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, w[e + "conv2.weight"], w[e + "conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + w[e + "embed_positions.weight"]
    for i in range(layers):
        p = e + "layers.%d." % i
        h = ln(x, w, p + "self_attn_layer_norm")
        a = p + "self_attn."
        q, k, v = (heads(lin(h, w, a + "q_proj"), n_heads), heads(lin(h, w, a + "k_proj", False), n_heads),
                   heads(lin(h, w, a + "v_proj"), n_heads))
        x = x + lin(attend(q, k, v), w, a + "out_proj")
        h = ln(x, w, p + "final_layer_norm")
        x = x + lin(F.gelu(lin(h, w, p + "fc1")), w, p + "fc2")
    return ln(x, w, e + "layer_norm")


def cross_kv(enc, w, n_heads, layers):
    kv = []
    for i in range(layers):
        a = "model.decoder.layers.%d.encoder_attn." % i
        kv.append((heads(lin(enc, w, a + "k_proj", False), n_heads), heads(lin(enc, w, a + "v_proj"), n_heads)))
    return kv


def step(token, pos, cache, cross, w, n_heads, layers):
    """One token with a growing self-attention cache (openai-whisper's
    kv_cache hooks concatenate the same way)."""
    d = "model.decoder."
    x = w[d + "embed_tokens.weight"][token][:, None] + w[d + "embed_positions.weight"][pos]
    for i in range(layers):
        p = d + "layers.%d." % i
        h = ln(x, w, p + "self_attn_layer_norm")
        a = p + "self_attn."
        q = heads(lin(h, w, a + "q_proj"), n_heads)
        k = heads(lin(h, w, a + "k_proj", False), n_heads)
        v = heads(lin(h, w, a + "v_proj"), n_heads)
        if cache[i] is not None:
            k = torch.cat([cache[i][0], k], 2)
            v = torch.cat([cache[i][1], v], 2)
        cache[i] = (k, v)
        x = x + lin(attend(q, k, v), w, a + "out_proj")
        h = ln(x, w, p + "encoder_attn_layer_norm")
        a = p + "encoder_attn."
        x = x + lin(attend(heads(lin(h, w, a + "q_proj"), n_heads), *cross[i]), w, a + "out_proj")
        h = ln(x, w, p + "final_layer_norm")
        x = x + lin(F.gelu(lin(h, w, p + "fc1")), w, p + "fc2")
    x = ln(x, w, d + "layer_norm")
    return x[:, -1] @ w[d + "embed_tokens.weight"].T


def log_mel(audio, filters):
    window = torch.hann_window(400)
    stft = torch.stft(audio, 400, 160, window=window, return_complex=True)
    mag = stft[..., :-1].abs() ** 2
    mel = filters @ mag
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def timed(fn, runs):
    fn()  # warm-up
    best = math.inf
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    path = sys.argv[1]
    d_model, n_heads, enc_layers, dec_layers, n_mels, vocab, max_len, tokens = map(int, sys.argv[2:10])
    torch.set_num_threads(2)
    t = time.perf_counter()
    w = load_safetensors(path)
    load_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(480000, generator=g) * 0.1
    filters = torch.rand(n_mels, 201, generator=g) * 0.01
    res = {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
           "mkldnn": torch.backends.mkldnn.is_available(), "load_s": load_s}
    with torch.no_grad():
        res["mel_s"], mel = timed(lambda: log_mel(audio, filters), 3)
        res["encoder_s"], enc = timed(lambda: encoder(mel[None], w, n_heads, enc_layers), 2)
        cross = cross_kv(enc, w, n_heads, dec_layers)

        def decode():
            cache = [None] * dec_layers
            tok = torch.tensor([50258])
            for pos in range(tokens):
                logits = step(tok, pos, cache, cross, w, n_heads, dec_layers)
                tok = logits.argmax(-1)
            return tok
        best, _ = timed(decode, 2)
        res["decoder_ms_per_token"] = 1000.0 * best / tokens
        res["decoder_tokens"] = tokens
    print(json.dumps(res))


if __name__ == "__main__":
    main()
