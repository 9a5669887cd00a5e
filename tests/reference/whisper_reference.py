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
  tiny/tokenizer.json, tiny/generation_config.json
                      a byte-level BPE tokenizer and generation config for the
                      tiny vocabulary (Whisper's layout scaled to 100 ids)
  tiny_long_mel.npy   f32 [2, 80, 330]      log-Mel "files" of 150 and 230 frames
                                            (+ padding) for long-form decoding
  tiny_decode.json    decoding references: greedy, beam search (3, 5 with
                      translate), timestamps, language detection, and
                      transcribe()'s seeking over the long inputs

The real whisper-tiny shapes (d 384, 4+4 layers, vocab 51865: 37.8M parameters,
151 MB in f32) are not written as a checkpoint: that would exceed the size
budget for committed test data. Instead `--tiny-shapes` defines the weights
by a formula both sides evaluate (see tiny_shapes_main below) and writes
slices of the outputs to tests/data/whisper/tiny_shapes/.
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
    "decoder_start_token_id": 20,
    "eos_token_id": 19,
    "pad_token_id": 19,
    "bos_token_id": 19,
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


# ---------------------------------------------------------------------------
# Decoding: an independent port of openai-whisper's DecodingTask (temperature
# 0: greedy or beam search, MaximumLikelihoodRanker without length penalty),
# its logit filters (SuppressBlank, SuppressTokens, ApplyTimestampRules) and
# transcribe()'s seeking, on the full decoder recomputed every step in f64.
# ---------------------------------------------------------------------------

# The tiny vocabulary (100 ids, the layout of Whisper's, scaled down):
# 19 text tokens, <|endoftext|>, <|startoftranscript|>, three languages, the
# task and other specials, <|notimestamps|>, then 70 timestamps 0.00..1.38.
TEXT_BYTES = b" etaoinshrdlucm.,wy"
EOT = len(TEXT_BYTES)  # 19
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|fr|>",
            "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
            "<|nospeech|>", "<|notimestamps|>"]
SOT, EN, TRANSLATE, TRANSCRIBE = EOT + 1, EOT + 2, EOT + 5, EOT + 6
SOT_LM, SOT_PREV, NO_SPEECH, NO_TIMESTAMPS = EOT + 7, EOT + 8, EOT + 9, EOT + 10
LANGUAGES = [EOT + 2, EOT + 3, EOT + 4]
TIMESTAMP_BEGIN = NO_TIMESTAMPS + 1  # 30
SUPPRESS = [3, 11]  # "a", "l": never sampled when suppress_tokens apply
BEGIN_SUPPRESS = [0, EOT]  # " " and <|endoftext|> at the first sampled token

GENERATION_CONFIG = {
    "decoder_start_token_id": SOT, "eos_token_id": EOT, "pad_token_id": EOT,
    "bos_token_id": EOT, "no_timestamps_token_id": NO_TIMESTAMPS,
    "is_multilingual": True,
    "lang_to_id": {"<|en|>": EN, "<|de|>": EN + 1, "<|fr|>": EN + 2},
    "task_to_id": {"translate": TRANSLATE, "transcribe": TRANSCRIBE},
    "suppress_tokens": SUPPRESS, "begin_suppress_tokens": BEGIN_SUPPRESS,
}


def bytes_to_unicode():
    """GPT-2's byte-level alphabet."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(directory):
    """tokenizer.json: ids 0..18 the text bytes the model can emit, the
    specials and timestamps as added tokens, every other byte (and three
    merges) above the model's vocabulary (encodable, never sampled)."""
    b2u = bytes_to_unicode()
    vocab = {}
    for i, b in enumerate(TEXT_BYTES):
        vocab[b2u[b]] = i
    next_id = 100
    for b in range(256):
        if b2u[b] not in vocab:
            vocab[b2u[b]] = next_id
            next_id += 1
    merges = [(b2u[ord("t")], b2u[ord("h")]), (b2u[ord(" ")], b2u[ord("t")]),
              (b2u[ord("t")] + b2u[ord("h")], b2u[ord("e")])]
    for a, b in merges:
        vocab[a + b] = next_id
        next_id += 1
    added = [{"id": EOT + i, "content": t, "special": True} for i, t in enumerate(SPECIALS)]
    for i in range(100 - TIMESTAMP_BEGIN):
        added.append({"id": TIMESTAMP_BEGIN + i, "content": "<|%.2f|>" % (i * 0.02),
                      "special": False})
    tok = {"version": "1.0", "added_tokens": added,
           "model": {"type": "BPE", "vocab": vocab, "merges": ["%s %s" % m for m in merges]}}
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")


def step_logits(tokens, enc, w, cfg):
    """Logits of the last position of every row: the full decoder."""
    return decoder(torch.tensor(tokens), enc, w, cfg)[:, -1].double()


def apply_filters(logits, tokens, sample_begin, opts):
    """openai-whisper's logit filters, in its order, row by row."""
    n = logits.shape[0]
    if len(tokens[0]) == sample_begin:  # SuppressBlank
        logits[:, BEGIN_SUPPRESS] = -math.inf
    logits[:, SUPPRESS + [TRANSCRIBE, TRANSLATE, SOT, SOT_PREV, SOT_LM, NO_SPEECH]] = -math.inf
    if not opts["timestamps"]:
        return
    logits[:, NO_TIMESTAMPS] = -math.inf
    for k in range(n):
        seq = tokens[k][sample_begin:]
        last_ts = len(seq) >= 1 and seq[-1] >= TIMESTAMP_BEGIN
        penult_ts = len(seq) < 2 or seq[-2] >= TIMESTAMP_BEGIN
        if last_ts:
            if penult_ts:
                logits[k, TIMESTAMP_BEGIN:] = -math.inf
            else:
                logits[k, :EOT] = -math.inf
        stamps = [t for t in seq if t >= TIMESTAMP_BEGIN]
        if stamps:
            floor = stamps[-1] if last_ts and not penult_ts else stamps[-1] + 1
            logits[k, TIMESTAMP_BEGIN:floor] = -math.inf
    if len(tokens[0]) == sample_begin:
        logits[:, :TIMESTAMP_BEGIN] = -math.inf
        logits[:, TIMESTAMP_BEGIN + opts["max_initial_timestamp_index"] + 1:] = -math.inf
    logprobs = torch.log_softmax(logits, dim=-1)
    for k in range(n):
        ts = torch.logsumexp(logprobs[k, TIMESTAMP_BEGIN:], dim=-1)
        if ts > logprobs[k, :TIMESTAMP_BEGIN].max():
            logits[k, :TIMESTAMP_BEGIN] = -math.inf


def detect_language(enc, w, cfg):
    logits = step_logits([[SOT]] * enc.shape[0], enc, w, cfg)
    mask = torch.full_like(logits, -math.inf)
    mask[:, LANGUAGES] = 0
    logits = logits + mask
    return logits.argmax(-1).tolist(), logits.softmax(-1).max(-1).values.tolist()


def decode(enc, w, cfg, opts):
    """One window per row of enc: returns (tokens, sum_logprob) per row."""
    n_audio, beam = enc.shape[0], opts["beam_size"]
    langs = opts.get("languages") or [EN] * n_audio
    prompt = [[SOT, langs[i], TRANSLATE if opts["translate"] else TRANSCRIBE] +
              ([] if opts["timestamps"] else [NO_TIMESTAMPS]) for i in range(n_audio)]
    sample_begin = len(prompt[0])
    sample_len = cfg["max_target_positions"] // 2
    enc = enc.repeat_interleave(beam, dim=0)
    tokens = [list(prompt[i // beam]) for i in range(n_audio * beam)]
    sum_lp = [0.0] * (n_audio * beam)
    finished = [dict() for _ in range(n_audio)]
    margins = []
    for _ in range(sample_len):
        logits = step_logits(tokens, enc, w, cfg)
        apply_filters(logits, tokens, sample_begin, opts)
        logprobs = torch.log_softmax(logits, dim=-1)
        if beam == 1:
            for k in range(n_audio):
                top2 = torch.topk(logits[k], 2).values
                margins.append((top2[0] - top2[1]).item())
                if tokens[k][-1] == EOT:
                    tokens[k].append(EOT)
                    continue
                t = int(logits[k].argmax())
                sum_lp[k] += logprobs[k, t].item()
                tokens[k].append(t)
            if all(t[-1] == EOT for t in tokens):
                break
            continue
        new_tokens, new_lp, sources = [], [], []
        for i in range(n_audio):
            scores, srcs = {}, {}
            for j in range(beam):
                idx = i * beam + j
                lp, ids = logprobs[idx].topk(beam + 1)
                for l, t in zip(lp.tolist(), ids.tolist()):
                    seq = tuple(tokens[idx] + [t])
                    scores[seq] = sum_lp[idx] + l
                    srcs[seq] = idx
            ranked = sorted(scores, key=scores.get, reverse=True)
            margins += [scores[a] - scores[b] for a, b in zip(ranked, ranked[1:])
                        if scores[a] > -math.inf][:beam + 1]
            saved, newly = 0, {}
            for seq in ranked:
                if seq[-1] == EOT:
                    newly[seq] = scores[seq]
                else:
                    new_tokens.append(list(seq))
                    new_lp.append(scores[seq])
                    sources.append(srcs[seq])
                    saved += 1
                    if saved == beam:
                        break
            for seq in sorted(newly, key=newly.get, reverse=True):
                if len(finished[i]) >= beam:
                    break
                finished[i][seq] = newly[seq]
        tokens, sum_lp = new_tokens, new_lp
        if all(len(f) >= beam for f in finished):
            break
    results = []
    for i in range(n_audio):
        if beam == 1:
            cands = {tuple(tokens[i]): sum_lp[i]}
        else:
            cands = finished[i]
            if len(cands) < beam:
                order = sorted(range(beam), key=lambda j: sum_lp[i * beam + j], reverse=True)
                for j in order:
                    cands[tuple(tokens[i * beam + j] + [EOT])] = sum_lp[i * beam + j]
                    if len(cands) >= beam:
                        break
        best, best_score = None, -math.inf
        for seq, lp in cands.items():
            text = list(seq[sample_begin:])
            text = text[:text.index(EOT)] if EOT in text else text
            score = lp / max(len(text), 1)
            if score > best_score:
                best, best_score = (text, lp), score
        results.append(best)
    small = min(margins) if margins else 1.0
    if small < 1e-4:
        print("warning: decoding margin %.2e" % small)
    return results


def transcribe(mel, content, w, cfg, opts):
    """openai-whisper's transcribe() seeking over one file's log-Mel."""
    n_frames = 2 * cfg["max_source_positions"]
    stride = n_frames // cfg["max_source_positions"]
    precision = stride * 160 / 16000
    seek, segments, windows = 0, [], 0
    while seek < content:
        offset = seek * 160 / 16000
        seg_size = min(n_frames, content - seek)
        enc = encoder(mel[None, :, seek:seek + n_frames], w, cfg)
        tokens = decode(enc, w, cfg, opts)[0][0]
        windows += 1
        is_ts = [t >= TIMESTAMP_BEGIN for t in tokens]
        single_end = is_ts[-2:] == [False, True]
        consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_end else [])
            last = 0
            for cur in slices:
                part = tokens[last:cur]
                segments.append({"start": offset + (part[0] - TIMESTAMP_BEGIN) * precision,
                                 "end": offset + (part[-1] - TIMESTAMP_BEGIN) * precision,
                                 "tokens": part})
                last = cur
            if single_end:
                seek += seg_size
            else:
                seek += (tokens[last - 1] - TIMESTAMP_BEGIN) * stride
        else:
            duration = seg_size * 160 / 16000
            stamps = [t for t in tokens if t >= TIMESTAMP_BEGIN]
            if stamps and stamps[-1] != TIMESTAMP_BEGIN:
                duration = (stamps[-1] - TIMESTAMP_BEGIN) * precision
            segments.append({"start": offset, "end": offset + duration, "tokens": tokens})
            seek += seg_size
    return {"windows": windows, "segments": segments}


def decoding_cases(w, cfg, mel, long_mel, contents):
    enc = encoder(mel, w, cfg)
    base = {"beam_size": 1, "translate": False, "timestamps": False,
            "max_initial_timestamp_index": 50}
    cases = {}
    for name, changes in [("greedy", {}), ("beam3", {"beam_size": 3}),
                          ("beam5_translate", {"beam_size": 5, "translate": True}),
                          ("greedy_timestamps", {"timestamps": True}),
                          ("beam3_timestamps", {"beam_size": 3, "timestamps": True})]:
        opts = dict(base, **changes)
        res = decode(enc, w, cfg, opts)
        cases[name] = {"options": opts, "tokens": [r[0] for r in res],
                       "sum_logprob": [r[1] for r in res]}
        print(name, [r[0] for r in res])
    langs, probs = detect_language(enc, w, cfg)
    cases["language"] = {"ids": langs, "probs": probs}
    print("languages", langs, probs)
    long = {}
    for name, changes in [("greedy", {}), ("greedy_timestamps", {"timestamps": True})]:
        opts = dict(base, **changes)
        long[name] = [transcribe(long_mel[i], contents[i], w, cfg, opts) for i in range(2)]
        print("long", name, long[name])
    return {"eot": EOT, "sot": SOT, "timestamp_begin": TIMESTAMP_BEGIN, "cases": cases,
            "long_contents": contents, "long": long}


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

    write_tokenizer(os.path.join(OUT, "tiny"))
    with open(os.path.join(OUT, "tiny", "generation_config.json"), "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
        f.write("\n")
    # Long-form inputs: two log-Mel "files" of 150 and 230 content frames
    # (1.5 and 2.3 windows), each followed by one window of padding frames
    # as openai-whisper's log_mel_spectrogram(padding=N_SAMPLES) leaves.
    long_mel = torch.randn(2, cfg["num_mel_bins"], 230 + frames, generator=gen)
    save("tiny_long_mel.npy", long_mel, np.float32)
    with torch.no_grad():
        expected = decoding_cases(w64, cfg, mel.double(), long_mel.double(), [150, 230])
    with open(os.path.join(OUT, "tiny_decode.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------
# --tiny-shapes: the real whisper-tiny shapes (d 384, 4+4 layers, 6 heads,
# FFN 1536, vocab 51865, 1500 frames, 448 positions) with weights from a
# formula that tests/test_whisper_tiny_shapes.c evaluates too, so no
# checkpoint is committed. Exact integer hashing, then a few float64
# operations rounded once to float32, makes both sides bit-identical:
#
#   seed(name) = FNV-1a 64 of the tensor's Hugging Face name (ASCII bytes)
#   h(name, i) = splitmix64(seed + i) (mod 2^64), i the row-major index
#   u(name, i) = (h >> 40) * 2^-23 - 1        exact, 24 bits, in [-1, 1)
#   value      = float32(offset + amp * u)    amp * u and + offset in float64
#
#   *layer_norm.weight     offset 1, amp 0.1
#   *layer_norm.bias       amp 0.05
#   other *.bias           amp 0.05
#   decoder.embed_tokens   amp 0.2   (logits of order 2..5)
#   decoder.embed_positions amp 1
#   encoder.embed_positions openai's sinusoids, in float64 then float32
#                          (sin/cos/exp of glibc, as tg_whisper_sinusoids)
#   other *.weight         amp sqrt(3 / fan_in), fan_in = prod(shape[1:])
#                          (standard deviation 1/sqrt(fan_in))
#
# The input log-Mel [1, 80, 3000] is u("mel", i) (amp 1); the prefix is
# <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>. The
# reference is computed in float64 from those float32 values. Written to
# tests/data/whisper/tiny_shapes/ (small: the full outputs are 2.3 MB and
# 830 KB):
#   encoder_rows.npy      f32 [8, 384]  encoder output rows 0..3, 1496..1499
#   encoder_row_sums.npy  f32 [1500]    per-row sums of the encoder output
#   prefix.npy            i32 [1, 4]
#   logits_head.npy       f32 [4, 64]   logits of the prefix, vocab 0..63
#   logits_tail.npy       f32 [4, 64]   vocab 51801..51864
#   logits_argmax.npy     i32 [4]       full-row argmax
#   logits_logsumexp.npy  f32 [4]       full-row logsumexp
#   weights_probe.txt     per tensor: name, elements 0, n/2, n-1 (%.9g) and
#                         the float64 sum, to check the C generator
# ---------------------------------------------------------------------------

TINY_SHAPES = dict(CONFIG, d_model=384, encoder_layers=4, decoder_layers=4,
                   encoder_attention_heads=6, decoder_attention_heads=6,
                   encoder_ffn_dim=1536, decoder_ffn_dim=1536, max_source_positions=1500,
                   max_target_positions=448, vocab_size=51865)
TINY_SHAPES_PREFIX = [50258, 50259, 50359, 50363]
M64 = (1 << 64) - 1


def fnv1a64(name):
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def formula_uniform(name, n):
    """u(name, i) for i < n: float64 in [-1, 1), exactly 24-bit values."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(fnv1a64(name))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * 2.0 ** -23 - 1.0


def sinusoids64(length, channels):
    """tg_whisper_sinusoids: float64 with libm, then float32."""
    half = channels // 2
    inc = math.log(10000.0) / (half - 1)
    out = np.empty((length, channels), dtype=np.float32)
    for i in range(half):
        e = math.exp(-inc * i)
        for t in range(length):
            x = float(t) * e
            out[t, i] = math.sin(x)
            out[t, half + i] = math.cos(x)
    return out


def formula_tensor(name, shape):
    n = int(np.prod(shape))
    if name == "model.encoder.embed_positions.weight":
        return sinusoids64(shape[0], shape[1])
    offset, amp = 0.0, None
    if "layer_norm." in name:
        offset, amp = (1.0, 0.1) if name.endswith(".weight") else (0.0, 0.05)
    elif name.endswith(".bias"):
        amp = 0.05
    elif name == "model.decoder.embed_tokens.weight":
        amp = 0.2
    elif name == "model.decoder.embed_positions.weight":
        amp = 1.0
    else:
        amp = math.sqrt(3.0 / int(np.prod(shape[1:])))
    u = formula_uniform(name, n)
    return (offset + amp * u).astype(np.float32).reshape(shape)


def tiny_shapes_names(cfg):
    """Every weight's name and shape (the order does not matter: the seed
    is the name)."""
    d, ffn = cfg["d_model"], cfg["encoder_ffn_dim"]
    out = []

    def attn(p):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out.append((p + "." + proj + ".weight", (d, d)))
            if proj != "k_proj":
                out.append((p + "." + proj + ".bias", (d,)))

    def norm(p):
        out.extend([(p + ".weight", (d,)), (p + ".bias", (d,))])

    def ffn_block(p):
        out.extend([(p + "fc1.weight", (ffn, d)), (p + "fc1.bias", (ffn,)),
                    (p + "fc2.weight", (d, ffn)), (p + "fc2.bias", (d,))])

    e = "model.encoder."
    out.extend([(e + "conv1.weight", (d, cfg["num_mel_bins"], 3)), (e + "conv1.bias", (d,)),
                (e + "conv2.weight", (d, d, 3)), (e + "conv2.bias", (d,)),
                (e + "embed_positions.weight", (cfg["max_source_positions"], d))])
    for i in range(cfg["encoder_layers"]):
        p = e + "layers.%d." % i
        attn(p + "self_attn")
        norm(p + "self_attn_layer_norm")
        ffn_block(p)
        norm(p + "final_layer_norm")
    norm(e + "layer_norm")
    dd = "model.decoder."
    out.extend([(dd + "embed_tokens.weight", (cfg["vocab_size"], d)),
                (dd + "embed_positions.weight", (cfg["max_target_positions"], d))])
    for i in range(cfg["decoder_layers"]):
        p = dd + "layers.%d." % i
        attn(p + "self_attn")
        norm(p + "self_attn_layer_norm")
        attn(p + "encoder_attn")
        norm(p + "encoder_attn_layer_norm")
        ffn_block(p)
        norm(p + "final_layer_norm")
    norm(dd + "layer_norm")
    return out


def tiny_shapes_main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cfg = TINY_SHAPES
    out_dir = os.path.join(OUT, "tiny_shapes")
    os.makedirs(out_dir, exist_ok=True)
    w64, probes = {}, []
    for name, shape in tiny_shapes_names(cfg):
        a = formula_tensor(name, shape)
        flat = a.reshape(-1)
        probes.append("%s %.9g %.9g %.9g %.17g" % (name, flat[0], flat[flat.size // 2],
                                                    flat[-1], flat.astype(np.float64).sum()))
        w64[name] = torch.from_numpy(a).double()
    frames = 2 * cfg["max_source_positions"]
    mel = formula_uniform("mel", cfg["num_mel_bins"] * frames).astype(np.float32)
    mel = torch.from_numpy(mel.reshape(1, cfg["num_mel_bins"], frames)).double()
    prefix = torch.tensor([TINY_SHAPES_PREFIX])
    with torch.no_grad():
        enc = encoder(mel, w64, cfg)[0]
        logits = decoder(prefix, enc[None], w64, cfg)[0]
    top2 = torch.topk(logits, 2, dim=-1).values
    print("encoder max |x| %.3g, logits max |x| %.3g, argmax margins %s" %
          (enc.abs().max().item(), logits.abs().max().item(),
           (top2[:, 0] - top2[:, 1]).tolist()))

    def save(name, t, dtype):
        np.save(os.path.join(out_dir, name), np.ascontiguousarray(t.numpy().astype(dtype)))

    save("encoder_rows.npy", torch.cat([enc[:4], enc[-4:]]), np.float32)
    save("encoder_row_sums.npy", enc.sum(-1), np.float32)
    save("prefix.npy", prefix, np.int32)
    save("logits_head.npy", logits[:, :64], np.float32)
    save("logits_tail.npy", logits[:, -64:], np.float32)
    save("logits_argmax.npy", logits.argmax(-1), np.int32)
    save("logits_logsumexp.npy", torch.logsumexp(logits, -1), np.float32)
    with open(os.path.join(out_dir, "weights_probe.txt"), "w") as f:
        f.write("\n".join(sorted(probes)) + "\n")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--tiny-shapes"]:
        tiny_shapes_main()
    else:
        main()
