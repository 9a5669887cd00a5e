#!/usr/bin/env python3
"""Writes the small test vocabulary of tests/test_tokenizer.c in the three
Hugging Face layouts: tokenizer.json (merges as "a b"), tokenizer_pairs.json
(merges as ["a", "b"]), and vocab.json + merges.txt + added_tokens.json.

The 256 byte tokens come first in GPT-2's bytes_to_unicode order, then one
token per merge, then Whisper-style special tokens. Run it from this
directory; the output is committed, so tests never run Python."""
import json


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B = bytes_to_unicode()


def bl(text):
    return "".join(B[b] for b in text.encode("utf-8"))


# Merges in rank order, written as pairs of raw text.
MERGES = [(" ", "t"), ("h", "e"), (" t", "he"), ("i", "n"), (" ", "a"), ("e", "r"),
          ("l", "l"), ("he", "ll"), ("hell", "o"), ("a", "a"), (" ", "w"), ("o", "r"),
          (" w", "or"), ("l", "d"), (" wor", "ld"), ("in", "g"), ("\n", "\n")]
# 世 (e4 b8 96) and 界 (e7 95 8c) as byte merges: multi-byte characters.
for ch in "世界":
    b = ch.encode("utf-8")
    MERGES.append((b[:1], b[1:2]))
    MERGES.append((b[:2], b[2:3]))
MERGES.append(("世".encode(), "界".encode()))


def tok(x):
    return bl(x) if isinstance(x, str) else "".join(B[c] for c in x)


vocab = {}
for b in B:
    vocab[B[b]] = len(vocab)
for a, b in MERGES:
    vocab.setdefault(tok(a) + tok(b), len(vocab))
specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>",
            "<|transcribe|>", "<|notimestamps|>"]
specials += ["<|%.2f|>" % (i * 0.02) for i in range(51)]
added = []
for s in specials:
    added.append({"id": len(vocab) + len(added), "content": s, "single_word": False,
                  "lstrip": False, "rstrip": False, "normalized": False, "special": True})

merges_str = ["%s %s" % (tok(a), tok(b)) for a, b in MERGES]
doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
       "normalizer": None,
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                         "use_regex": True},
       "post_processor": None,
       "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                   "use_regex": True},
       "model": {"type": "BPE", "dropout": None, "unk_token": None,
                 "continuing_subword_prefix": "", "end_of_word_suffix": "",
                 "fuse_unk": False, "vocab": vocab, "merges": merges_str}}
with open("tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)
doc["model"]["merges"] = [[tok(a), tok(b)] for a, b in MERGES]
with open("tokenizer_pairs.json", "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False)
with open("vocab.json", "w", encoding="utf-8") as f:
    json.dump(vocab, f, ensure_ascii=False)
with open("merges.txt", "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "\n".join(merges_str) + "\n")
with open("added_tokens.json", "w", encoding="utf-8") as f:
    json.dump({a["content"]: a["id"] for a in added}, f, ensure_ascii=False)
print(len(vocab), "vocab tokens,", len(added), "added")
