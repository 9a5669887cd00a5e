#!/usr/bin/python3
"""Reference values for tg's Whisper graphs, from an independent PyTorch model.

Run with Debian's /usr/bin/python3 (python3-torch); the outputs are committed,
so the tests (tests/test_whisper_model.c) never need torch.

The model below is written from the semantics of Hugging Face transformers'
WhisperForConditionalGeneration (transformers is not used):

  encoder: gelu(conv1(mel)) (k3, p1); gelu(conv2(.)) (k3, s2, p1); transpose;
           + embed_positions (openai's sinusoids, stored in the checkpoint);
           pre-LayerNorm blocks: x + self_attn(ln(x)); x + fc2(gelu(fc1(ln(x))));
           final layer_norm.
  decoder: embed_tokens(ids) + embed_positions[past : past + T];
           blocks: x + causal_self_attn(ln(x)); x + cross_attn(ln(x), enc);
           x + fc2(gelu(fc1(ln(x)))); final layer_norm;
           logits = h @ embed_tokens^T (proj_out tied).
  attention: q = q_proj(x) * head_dim^-0.5 (with bias), k = k_proj(x) (no bias),
           v = v_proj(x) (with bias), softmax(q k^T + mask) v, out_proj.
  GELU is exact (erf); LayerNorm eps is 1e-5.

Writes tests/data/whisper/:
  tiny/config.json, tiny/model.safetensors   the random tiny checkpoint (HF names;
                                             proj_out.weight omitted: tied)
  tiny_mel.npy        f32 [2, 80, 100]      encoder input
  tiny_encoder.npy    f32 [2, 50, 64]       encoder output
  tiny_prefix.npy     i32 [2, 6]            a token prefix
  tiny_logits.npy     f32 [2, 6, 100]       decoder logits for that prefix
  tiny_prompt.npy     i32 [2, 3]            the greedy prompt
  tiny_greedy.npy     i32 [2, 32]           prompt + 29 greedy tokens (no EOS stop)

The real whisper-tiny shapes (d 384, 4+4 layers, vocab 51865: 37.8M parameters,
151 MB in f32) are not written: that checkpoint would exceed the size budget
for committed test data.
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.backends.mkldnn.enabled = False  # oneDNN conv1d is wrong on this CPU (LAVAPIPE.md)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "whisper")

CONFIG = {
    "model_type": "whisper",
    "architectures": ["WhisperForConditionalGeneration"],
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "num_mel_bins": 80,
    "max_source_positions": 50,
    "max_target_positions": 32,
    "vocab_size": 100,
    "activation_function": "gelu",
    "scale_embedding": False,
    "decoder_start_token_id": 97,
    "eos_token_id": 98,
    "pad_token_id": 98,
    "bos_token_id": 98,
    "torch_dtype": "float32",
}


def sinusoids(length, channels, max_timescale=10000):
    """openai-whisper's (and transformers') encoder positions."""
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def make_weights(cfg, gen):
    d, ffn = cfg["d_model"], cfg["encoder_ffn_dim"]
    w = {}

    def rnd(name, *shape, std=0.08):
        w[name] = torch.randn(*shape, generator=gen) * std

    def norm(name):
        w[name + ".weight"] = 1.0 + 0.1 * torch.randn(d, generator=gen)
        w[name + ".bias"] = 0.1 * torch.randn(d, generator=gen)

    def attn(p):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            rnd(p + "." + proj + ".weight", d, d, std=d ** -0.5)
            if proj != "k_proj":
                rnd(p + "." + proj + ".bias", d, std=0.05)

    def ffn_block(p):
        rnd(p + ".fc1.weight", ffn, d, std=d ** -0.5)
        rnd(p + ".fc1.bias", ffn, std=0.05)
        rnd(p + ".fc2.weight", d, ffn, std=ffn ** -0.5)
        rnd(p + ".fc2.bias", d, std=0.05)

    e = "model.encoder."
    rnd(e + "conv1.weight", d, cfg["num_mel_bins"], 3, std=0.1)
    rnd(e + "conv1.bias", d, std=0.05)
    rnd(e + "conv2.weight", d, d, 3, std=0.1)
    rnd(e + "conv2.bias", d, std=0.05)
    w[e + "embed_positions.weight"] = sinusoids(cfg["max_source_positions"], d)
    for i in range(cfg["encoder_layers"]):
        p = e + "layers.%d." % i
        attn(p + "self_attn")
        norm(p + "self_attn_layer_norm")
        ffn_block(p.rstrip("."))
        norm(p + "final_layer_norm")
    norm(e + "layer_norm")

    dd = "model.decoder."
    rnd(dd + "embed_tokens.weight", cfg["vocab_size"], d, std=0.3)
    rnd(dd + "embed_positions.weight", cfg["max_target_positions"], d, std=1.0)
    for i in range(cfg["decoder_layers"]):
        p = dd + "layers.%d." % i
        attn(p + "self_attn")
        norm(p + "self_attn_layer_norm")
        attn(p + "encoder_attn")
        norm(p + "encoder_attn_layer_norm")
        ffn_block(p.rstrip("."))
        norm(p + "final_layer_norm")
    norm(dd + "layer_norm")
    return {k: v.float().contiguous() for k, v in w.items()}


def layer_norm(x, w, p):
    return F.layer_norm(x, (x.shape[-1],), w[p + ".weight"], w[p + ".bias"], eps=1e-5)


def linear(x, w, p, bias=True):
    y = x @ w[p + ".weight"].T
    return y + w[p + ".bias"] if bias else y


def attention(x, kv, w, p, heads, causal):
    b, t, d = x.shape
    s = kv.shape[1]
    hd = d // heads
    q = linear(x, w, p + ".q_proj") * hd ** -0.5
    k = linear(kv, w, p + ".k_proj", bias=False)
    v = linear(kv, w, p + ".v_proj")
    q = q.view(b, t, heads, hd).transpose(1, 2)
    k = k.view(b, s, heads, hd).transpose(1, 2)
    v = v.view(b, s, heads, hd).transpose(1, 2)
    scores = q @ k.transpose(-1, -2)
    if causal:
        mask = torch.triu(torch.full((t, s), float("-inf")), diagonal=1)
        scores = scores + mask
    o = torch.softmax(scores, dim=-1) @ v
    o = o.transpose(1, 2).reshape(b, t, d)
    return linear(o, w, p + ".out_proj")


def encoder(mel, w, cfg):
    e = "model.encoder."
    x = F.gelu(F.conv1d(mel, w[e + "conv1.weight"], w[e + "conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, w[e + "conv2.weight"], w[e + "conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + w[e + "embed_positions.weight"]
    for i in range(cfg["encoder_layers"]):
        p = e + "layers.%d." % i
        h = layer_norm(x, w, p + "self_attn_layer_norm")
        x = x + attention(h, h, w, p + "self_attn", cfg["encoder_attention_heads"],
                          causal=False)
        h = layer_norm(x, w, p + "final_layer_norm")
        x = x + linear(F.gelu(linear(h, w, p + "fc1")), w, p + "fc2")
    return layer_norm(x, w, e + "layer_norm")


def decoder(ids, enc, w, cfg):
    dd = "model.decoder."
    t = ids.shape[1]
    x = w[dd + "embed_tokens.weight"][ids] + w[dd + "embed_positions.weight"][:t]
    for i in range(cfg["decoder_layers"]):
        p = dd + "layers.%d." % i
        h = layer_norm(x, w, p + "self_attn_layer_norm")
        x = x + attention(h, h, w, p + "self_attn", cfg["decoder_attention_heads"], causal=True)
        h = layer_norm(x, w, p + "encoder_attn_layer_norm")
        x = x + attention(h, enc, w, p + "encoder_attn", cfg["decoder_attention_heads"],
                          causal=False)
        h = layer_norm(x, w, p + "final_layer_norm")
        x = x + linear(F.gelu(linear(h, w, p + "fc1")), w, p + "fc2")
    x = layer_norm(x, w, dd + "layer_norm")
    return x @ w[dd + "embed_tokens.weight"].T


def save_safetensors(path, tensors):
    """The safetensors format by hand: u64 LE header size, JSON header, data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    torch.set_num_threads(1)
    cfg = CONFIG
    gen = torch.Generator().manual_seed(20240611)
    w = make_weights(cfg, gen)
    os.makedirs(os.path.join(OUT, "tiny"), exist_ok=True)
    save_safetensors(os.path.join(OUT, "tiny", "model.safetensors"), w)
    with open(os.path.join(OUT, "tiny", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    frames = 2 * cfg["max_source_positions"]
    mel = torch.randn(2, cfg["num_mel_bins"], frames, generator=gen)
    prefix = torch.randint(0, cfg["vocab_size"], (2, 6), generator=gen)
    prompt = torch.tensor([[97, 5, 7], [97, 11, 3]])
    # Compute in float64 from the float32 values: the reference is the exact
    # function of the stored inputs, free of torch's own f32 rounding.
    w64 = {k: v.double() for k, v in w.items()}
    with torch.no_grad():
        enc = encoder(mel.double(), w64, cfg)
        logits = decoder(prefix, enc, w64, cfg)
        tokens = prompt.clone()
        while tokens.shape[1] < cfg["max_target_positions"]:
            step = decoder(tokens, enc, w64, cfg)[:, -1]
            top2 = torch.topk(step, 2, dim=-1).values
            margin = (top2[:, 0] - top2[:, 1]).min().item()
            if margin < 1e-3:
                print("warning: greedy margin %.2e at length %d" % (margin, tokens.shape[1]))
            tokens = torch.cat([tokens, step.argmax(-1, keepdim=True)], dim=1)
        # The same in float32, to show how far torch's own f32 is from f64.
        enc32 = encoder(mel, w, cfg)
        print("f32 vs f64 encoder max rel: %.2e" %
              ((enc32.double() - enc).abs().max() / enc.abs().max()).item())

    def save(name, t, dtype):
        np.save(os.path.join(OUT, name), t.numpy().astype(dtype))

    save("tiny_mel.npy", mel, np.float32)
    save("tiny_encoder.npy", enc, np.float32)
    save("tiny_prefix.npy", prefix, np.int32)
    save("tiny_logits.npy", logits, np.float32)
    save("tiny_prompt.npy", prompt, np.int32)
    save("tiny_greedy.npy", tokens, np.int32)
    print("greedy:", tokens.tolist())


if __name__ == "__main__":
    main()
