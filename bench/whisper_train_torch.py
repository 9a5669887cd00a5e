#!/usr/bin/python3
"""The PyTorch side of bench/whisper_train: the Whisper training step tg
compiles (encoder, decoder with teacher forcing, cross-entropy mean over the
labels that are not -100, backward, global-norm clipping at 1.0, AdamW with
weight decay 0.01 on matrices), at the given shapes, random initialisation
as transformers' _init_weights (normal(0, 0.02), biases 0, LayerNorm 1,
frozen sinusoidal encoder positions). Run by bench/whisper_train.c with
Debian's /usr/bin/python3 (python3-torch), one process per shape so that
its peak memory is its own; prints one JSON object on stdout.

    whisper_train_torch.py D_MODEL HEADS ENC_LAYERS DEC_LAYERS FFN N_MELS VOCAB
                           MAX_TARGET SOURCE_POSITIONS BATCH TOKENS STEPS

torch.set_num_threads(2) (the machine's two vCPUs); oneDNN is disabled
because its conv1d backward returns wrong float32 gradients on this CPU
(../shared/LAVAPIPE.md), so the convolutions run on PyTorch's native path.
Times: a first step (warm-up), then STEPS steps; the medians of wall time
and of the process's CPU time (all threads) are reported."""
import json
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F

torch.backends.mkldnn.enabled = False


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def sinusoids(length, channels):
    inc = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def init_weights(c, gen):
    d, w = c["d"], {}

    def normal(name, *shape):
        w[name] = torch.randn(*shape, generator=gen) * 0.02

    def norm(p):
        w[p + ".weight"] = torch.ones(d)
        w[p + ".bias"] = torch.zeros(d)

    def attn(p):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            normal(p + "." + proj + ".weight", d, d)
            if proj != "k_proj":
                w[p + "." + proj + ".bias"] = torch.zeros(d)

    def ffn(p):
        normal(p + ".fc1.weight", c["ffn"], d)
        w[p + ".fc1.bias"] = torch.zeros(c["ffn"])
        normal(p + ".fc2.weight", d, c["ffn"])
        w[p + ".fc2.bias"] = torch.zeros(d)

    e = "model.encoder."
    normal(e + "conv1.weight", d, c["mels"], 3)
    w[e + "conv1.bias"] = torch.zeros(d)
    normal(e + "conv2.weight", d, d, 3)
    w[e + "conv2.bias"] = torch.zeros(d)
    w[e + "embed_positions.weight"] = sinusoids(c["source"], d)
    for i in range(c["enc_layers"]):
        p = e + "layers.%d" % i
        attn(p + ".self_attn")
        norm(p + ".self_attn_layer_norm")
        ffn(p)
        norm(p + ".final_layer_norm")
    norm(e + "layer_norm")
    dd = "model.decoder."
    normal(dd + "embed_tokens.weight", c["vocab"], d)
    normal(dd + "embed_positions.weight", c["max_target"], d)
    for i in range(c["dec_layers"]):
        p = dd + "layers.%d" % i
        attn(p + ".self_attn")
        norm(p + ".self_attn_layer_norm")
        attn(p + ".encoder_attn")
        norm(p + ".encoder_attn_layer_norm")
        ffn(p)
        norm(p + ".final_layer_norm")
    norm(dd + "layer_norm")
    return w


def ln(x, w, p):
    return F.layer_norm(x, (x.shape[-1],), w[p + ".weight"], w[p + ".bias"], 1e-5)


def lin(x, w, p, bias=True):
    return F.linear(x, w[p + ".weight"], w[p + ".bias"] if bias else None)


def attention(x, kv, w, p, h, causal):
    b, t, d = x.shape
    s = kv.shape[1]
    q = (lin(x, w, p + ".q_proj") * (d // h) ** -0.5).view(b, t, h, -1).transpose(1, 2)
    k = lin(kv, w, p + ".k_proj", False).view(b, s, h, -1).transpose(1, 2)
    v = lin(kv, w, p + ".v_proj").view(b, s, h, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2)
    if causal:
        scores = scores + torch.triu(torch.full((t, s), float("-inf")), diagonal=1)
    o = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, d)
    return lin(o, w, p + ".out_proj")


def forward_loss(w, c, mel, tokens, labels, pad):
    e = "model.encoder."
    x = F.gelu(F.conv1d(mel, w[e + "conv1.weight"], w[e + "conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, w[e + "conv2.weight"], w[e + "conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + w[e + "embed_positions.weight"]
    for i in range(c["enc_layers"]):
        p = e + "layers.%d" % i
        x = x + attention(ln(x, w, p + ".self_attn_layer_norm"), ln(x, w, p + ".self_attn_layer_norm"),
                          w, p + ".self_attn", c["heads"], False)
        x = x + lin(F.gelu(lin(ln(x, w, p + ".final_layer_norm"), w, p + ".fc1")), w, p + ".fc2")
    enc = ln(x, w, e + "layer_norm")
    dd = "model.decoder."
    t = tokens.shape[1]
    x = F.embedding(tokens, w[dd + "embed_tokens.weight"], padding_idx=pad) + \
        w[dd + "embed_positions.weight"][:t]
    for i in range(c["dec_layers"]):
        p = dd + "layers.%d" % i
        h = ln(x, w, p + ".self_attn_layer_norm")
        x = x + attention(h, h, w, p + ".self_attn", c["heads"], True)
        x = x + attention(ln(x, w, p + ".encoder_attn_layer_norm"), enc, w, p + ".encoder_attn",
                          c["heads"], False)
        x = x + lin(F.gelu(lin(ln(x, w, p + ".final_layer_norm"), w, p + ".fc1")), w, p + ".fc2")
    logits = ln(x, w, dd + "layer_norm") @ w[dd + "embed_tokens.weight"].T
    return F.cross_entropy(logits.reshape(-1, c["vocab"]), labels.reshape(-1), ignore_index=-100)


def main():
    keys = ["d", "heads", "enc_layers", "dec_layers", "ffn", "mels", "vocab", "max_target",
            "source", "batch", "tokens", "steps"]
    c = dict(zip(keys, map(int, sys.argv[1:13])))
    torch.set_num_threads(2)
    rss_start = rss_mb()
    gen = torch.Generator().manual_seed(1)
    w = init_weights(c, gen)
    frozen = "model.encoder.embed_positions.weight"
    names = [k for k in w if k != frozen]
    for k in names:
        w[k].requires_grad_(True)
    decay = [w[k] for k in names if w[k].dim() >= 2]
    no_decay = [w[k] for k in names if w[k].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    params = decay + no_decay
    b, t = c["batch"], c["tokens"]
    mel = torch.rand(b, c["mels"], 2 * c["source"], generator=gen) * 2 - 1
    tokens = torch.randint(0, c["vocab"] - 1, (b, t), generator=gen)
    labels = torch.randint(0, c["vocab"] - 1, (b, t), generator=gen)
    pad = c["vocab"] - 1
    for row in range(b):  # row r: its last 4r positions are padding
        n = max(1, t - 4 * row)
        tokens[row, n:] = pad
        labels[row, n:] = -100
    rss_ready = rss_mb()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(w, c, mel, tokens, labels, pad)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(c["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    times.sort()
    cpu.sort()
    median = times[len(times) // 2]
    res = {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
           "mkldnn": torch.backends.mkldnn.enabled, "first_step_s": first,
           "step_s": median, "step_min_s": times[0], "step_cpu_s": cpu[len(cpu) // 2],
           "steps_timed": len(times),
           "samples_per_s": b / median,
           "rss_start_mb": rss_start, "rss_ready_mb": rss_ready,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
