#!/usr/bin/python3
"""Reference values for tg's Whisper training step, from an independent
PyTorch implementation (tests/test_whisper_train_ref.c compares).

Run with Debian's /usr/bin/python3 (python3-torch); the outputs are
committed, so the test never needs torch. The encoder is
whisper_reference.py's (written from transformers' WhisperModel); the
decoder is its decoder with one change that training needs: the token
lookup is F.embedding with padding_idx = pad_token_id, as transformers'
nn.Embedding(vocab, d, padding_idx), so the padding row gets no gradient
from the lookup (the tied output projection still sends it one).

Training semantics, those of transformers' Seq2SeqTrainer with
WhisperForConditionalGeneration, written here from their definitions:
  - loss: cross-entropy, mean over the labels that are not -100;
  - the encoder's sinusoidal position table is frozen (requires_grad off);
  - torch.nn.utils.clip_grad_norm_ on all trainable weights (global norm);
  - torch.optim.AdamW (betas 0.9/0.999, eps 1e-8), weight decay on every
    weight except biases and LayerNorm parameters (transformers'
    get_decay_parameter_names);
  - the learning rate of tg's schedule (tg_whisper_lr_schedule): linear
    warm-up from 0 over WARMUP steps to PEAK_LR, the 1-based step k getting
    PEAK_LR * k / WARMUP, then linear decay to 0 at STEPS.
Everything is computed in float64; the weights are f16-representable (the
checkpoint is stored as F16 to keep it small), so both sides start from the
same values exactly.

Writes tests/reference/whisper_train_ref/:
  config.json         d_model 32, 2+2 layers, 4 heads, ffn 64, 80 mels,
                      16 encoder positions (32 Mel frames), 16 decoder
                      positions, vocabulary 100
  model.safetensors   the random checkpoint (F16, HF names, proj_out tied)
  batches.safetensors mel F32 [K, B, 80, 32], tokens and labels I32 [K, B, T]
  expected.safetensors
      grad.<name>     F32: d loss / d weight of the first step (batch 0),
                      before clipping, for every trainable weight
      losses          F32 [STEPS]: the loss of step k (batch (k-1) % K,
                      before its update)
      grad_norms      F32 [STEPS]: the global norm before clipping
      final_loss      F32 [1]: the loss of batch 0 after STEPS updates
      metadata: peak_lr, warmup, steps, weight_decay, max_grad_norm
  expected_smoothing.safetensors
      the first step (batch 0) with label smoothing SMOOTHING (torch's
      cross_entropy(label_smoothing=SMOOTHING, ignore_index=-100)):
      loss F32 [1], and grad.<name> F32 for the trainable weights of at
      most 1024 elements (every bias and LayerNorm parameter, the 32 x 32
      attention projections) and the token embedding (the tied output
      projection), to keep the file small
      metadata: label_smoothing
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import whisper_reference as ref  # noqa: E402

torch.backends.mkldnn.enabled = False  # oneDNN conv1d backward is wrong here (LAVAPIPE.md)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "whisper_train_ref")

CONFIG = dict(ref.CONFIG, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
              max_source_positions=16, max_target_positions=16)
PAD = CONFIG["pad_token_id"]  # 19 = <|endoftext|>
K, B, T = 2, 3, 10
STEPS, WARMUP, PEAK_LR = 20, 4, 3e-3
WEIGHT_DECAY, MAX_GRAD_NORM = 0.05, 2.0
FROZEN = "model.encoder.embed_positions.weight"
SMOOTHING = 0.1


def lr_at(step):
    """tg's schedule at the 1-based step (linear warm-up, linear decay)."""
    if step <= WARMUP:
        return PEAK_LR * step / WARMUP
    return PEAK_LR * (1.0 - min(1.0, (step - WARMUP) / (STEPS - WARMUP)))


def decoder(ids, enc, w, cfg):
    """whisper_reference.decoder with transformers' padding_idx lookup."""
    dd = "model.decoder."
    t = ids.shape[1]
    x = F.embedding(ids, w[dd + "embed_tokens.weight"], padding_idx=PAD) + \
        w[dd + "embed_positions.weight"][:t]
    for i in range(cfg["decoder_layers"]):
        p = dd + "layers.%d." % i
        h = ref.layer_norm(x, w, p + "self_attn_layer_norm")
        x = x + ref.attention(h, h, w, p + "self_attn", cfg["decoder_attention_heads"],
                              causal=True)
        h = ref.layer_norm(x, w, p + "encoder_attn_layer_norm")
        x = x + ref.attention(h, enc, w, p + "encoder_attn", cfg["decoder_attention_heads"],
                              causal=False)
        h = ref.layer_norm(x, w, p + "final_layer_norm")
        x = x + ref.linear(F.gelu(ref.linear(h, w, p + "fc1")), w, p + "fc2")
    x = ref.layer_norm(x, w, dd + "layer_norm")
    return x @ w[dd + "embed_tokens.weight"].T


def loss_of(w, mel, tokens, labels, smoothing=0.0):
    logits = decoder(tokens, ref.encoder(mel, w, CONFIG), w, CONFIG)
    return F.cross_entropy(logits.reshape(-1, CONFIG["vocab_size"]), labels.reshape(-1),
                           ignore_index=-100, label_smoothing=smoothing)


def make_batches(gen):
    """Rows: <|startoftranscript|><|en|><|transcribe|><|notimestamps|> text
    <|endoftext|>, decoder inputs shifted right; one row per batch fills T,
    the others are padded (input PAD, label -100)."""
    frames = 2 * CONFIG["max_source_positions"]
    mel = (torch.rand(K, B, CONFIG["num_mel_bins"], frames, generator=gen) * 2 - 1).float()
    prompt = [ref.SOT, ref.EN, ref.TRANSCRIBE, ref.NO_TIMESTAMPS]
    tokens = torch.full((K, B, T), PAD, dtype=torch.int32)
    labels = torch.full((K, B, T), -100, dtype=torch.int32)
    for k in range(K):
        for b in range(B):
            n_text = [T - len(prompt), 3, 1][(b + k) % B]  # T - 4 text tokens: no padding
            text = torch.randint(0, ref.EOT, (n_text,), generator=gen).tolist()
            seq = prompt + text + [ref.EOT]
            tokens[k, b, :len(seq) - 1] = torch.tensor(seq[:-1])
            labels[k, b, :len(seq) - 1] = torch.tensor(seq[1:])
    return mel, tokens, labels


def save_safetensors(path, tensors, metadata=None):
    """(array, dtype) pairs by name; dtype one of F32, F16, I32."""
    np_dtype = {"F32": "<f4", "F16": "<f2", "I32": "<i4"}
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        arr, dt = tensors[name]
        data = np.ascontiguousarray(arr, dtype=np_dtype[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = dict(metadata or {}, format="pt")
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20261124)
    w16 = {k: v.half() for k, v in ref.make_weights(CONFIG, gen).items()}
    mel, tokens, labels = make_batches(gen)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    save_safetensors(os.path.join(OUT, "model.safetensors"),
                     {k: (v.numpy(), "F16") for k, v in w16.items()})
    save_safetensors(os.path.join(OUT, "batches.safetensors"),
                     {"mel": (mel.numpy(), "F32"), "tokens": (tokens.numpy(), "I32"),
                      "labels": (labels.numpy(), "I32")})

    w = {k: v.double().requires_grad_(k != FROZEN) for k, v in w16.items()}
    names = sorted(k for k in w if k != FROZEN)
    params = [w[k] for k in names]
    batch = [(mel[k].double(), tokens[k].long(), labels[k].long()) for k in range(K)]

    loss = loss_of(w, *batch[0])
    first = torch.autograd.grad(loss, params)
    out = {"grad." + k: (g.numpy(), "F32") for k, g in zip(names, first)}

    smooth_loss = loss_of(w, *batch[0], smoothing=SMOOTHING)
    smooth_grads = torch.autograd.grad(smooth_loss, params)
    kept = [(k, g) for k, g in zip(names, smooth_grads)
            if g.numel() <= 1024 or k == "model.decoder.embed_tokens.weight"]
    smooth = {"grad." + k: (g.numpy(), "F32") for k, g in kept}
    smooth["loss"] = (np.array([smooth_loss.item()]), "F32")
    save_safetensors(os.path.join(OUT, "expected_smoothing.safetensors"), smooth,
                     {"label_smoothing": repr(SMOOTHING)})
    print("label smoothing %g: loss %.6f (without: %.6f), %d gradients kept" %
          (SMOOTHING, smooth_loss.item(), loss.item(), len(kept)))

    no_decay = [k for k in names if k.endswith(".bias") or "layer_norm" in k]
    opt = torch.optim.AdamW(
        [{"params": [w[k] for k in names if k not in no_decay], "weight_decay": WEIGHT_DECAY},
         {"params": [w[k] for k in no_decay], "weight_decay": 0.0}],
        lr=PEAK_LR, betas=(0.9, 0.999), eps=1e-8)
    losses, norms = [], []
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        loss = loss_of(w, *batch[(step - 1) % K])
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)))
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = loss_of(w, *batch[0]).item()
    print("losses", ["%.5f" % x for x in losses])
    print("grad norms", ["%.3f" % x for x in norms])
    print("final loss %.6f, %d trainable tensors, %d weights" %
          (final, len(names), sum(p.numel() for p in params)))
    out["losses"] = (np.array(losses), "F32")
    out["grad_norms"] = (np.array(norms), "F32")
    out["final_loss"] = (np.array([final]), "F32")
    meta = {"peak_lr": repr(PEAK_LR), "warmup": str(WARMUP), "steps": str(STEPS),
            "weight_decay": repr(WEIGHT_DECAY), "max_grad_norm": repr(MAX_GRAD_NORM)}
    save_safetensors(os.path.join(OUT, "expected.safetensors"), out, meta)


if __name__ == "__main__":
    main()
