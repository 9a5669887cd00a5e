#!/usr/bin/python3
"""make_data.py — a small speech data set synthesised with espeak-ng.

Sentences come from a seeded generator over a small vocabulary; each is
spoken by several espeak-ng voices at several speeds and written as 16 kHz
mono WAV. Held-out sentences never occur in training (all of their words
do). Writes OUT/train.jsonl and OUT/eval.jsonl (manifests for `graph
train`: {"audio": "wav/NAME.wav", "text": "..."}, paths relative to OUT).

  make_data.py OUT [--train-sentences N] [--eval-sentences N] [--seed S]
"""
import argparse
import concurrent.futures
import json
import os
import random
import subprocess
import sys

# A small vocabulary: short words, distinct sounds.
WORDS = {
    "det": ["the", "a", "one", "my"],
    "adj": ["red", "big", "old", "green", "small", "blue", "hot", "sad"],
    "noun": ["cat", "dog", "fish", "bird", "man", "box", "car", "tree", "cup", "ship"],
    "verb": ["sees", "has", "likes", "finds", "takes", "wants"],
}

# Voices (espeak-ng voice+variant) and speeds (words per minute).
VOICES = ["en-us", "en-gb", "en-us+f2", "en-gb+m3", "en-us+m5", "en-gb-x-rp+f4"]
SPEEDS = [150, 175, 200]


def sentence(rng):
    """det adj noun verb det noun, with the adjectives sometimes left out."""
    words = [rng.choice(WORDS["det"])]
    if rng.random() < 0.7:
        words.append(rng.choice(WORDS["adj"]))
    words += [rng.choice(WORDS["noun"]), rng.choice(WORDS["verb"]), rng.choice(WORDS["det"])]
    if rng.random() < 0.5:
        words.append(rng.choice(WORDS["adj"]))
    words.append(rng.choice(WORDS["noun"]))
    return " ".join(words)


def synth(job):
    text, voice, speed, path = job
    if os.path.exists(path):
        return path
    tmp = path + ".tmp.wav"
    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    # 16 kHz mono, leading/trailing silence trimmed
    subprocess.run(["sox", "-q", "-v", "0.8", "-t", "wav", "-", "-r", "16000", "-c", "1", "-b", "16", tmp,
                    "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%",
                    "reverse"], input=raw, check=True)
    os.replace(tmp, path)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train-sentences", type=int, default=500)
    ap.add_argument("--eval-sentences", type=int, default=40)
    ap.add_argument("--utterances-per-sentence", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    seen = set()
    train, held = [], []
    while len(train) < a.train_sentences or len(held) < a.eval_sentences:
        s = sentence(rng)
        if s in seen:
            continue
        seen.add(s)
        (train if len(train) < a.train_sentences else held).append(s)
    os.makedirs(os.path.join(a.out, "wav"), exist_ok=True)
    jobs, manifests = [], {"train": [], "eval": []}
    for split, sents, per in (("train", train, a.utterances_per_sentence), ("eval", held, 1)):
        for i, s in enumerate(sents):
            for k in range(per):
                voice = rng.choice(VOICES)
                speed = rng.choice(SPEEDS)
                name = "%s_%04d_%d.wav" % (split, i, k)
                jobs.append((s, voice, speed, os.path.join(a.out, "wav", name)))
                manifests[split].append({"audio": "wav/" + name, "text": s})
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
        for _ in ex.map(synth, jobs):
            pass
    for split, recs in manifests.items():
        with open(os.path.join(a.out, split + ".jsonl"), "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    assert not (set(train) & set(held))
    print("%d training utterances (%d sentences), %d held-out utterances (%d sentences) in %s"
          % (len(manifests["train"]), len(train), len(manifests["eval"]), len(held), a.out),
          file=sys.stderr)


if __name__ == "__main__":
    main()
