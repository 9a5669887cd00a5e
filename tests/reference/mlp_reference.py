#!/usr/bin/python3
"""Expected output of tests/data/mlp.tgir, computed independently with NumPy.

The graph: probs = softmax(relu(x @ w1 + b1) @ w2 + b2, axis=1), with
x f32[2,4], w1 f32[4,8], b1 f32[8], w2 f32[8,3], b2 f32[3].

Writes the input and weights (seeded, so reruns give the same files) and the
expected probabilities, computed in float64 and stored as float32:
tests/data/mlp_{x,w1,b1,w2,b2,probs}.npy. The files are committed so the CLI
test (tests/cli/run_mlp.sh) needs no NumPy; rerun this with Debian's
/usr/bin/python3 only to change them.
"""
import os

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def main():
    rng = np.random.default_rng(20240601)
    arrays = {
        "x": rng.standard_normal((2, 4)),
        "w1": rng.standard_normal((4, 8)) * 0.5,
        "b1": rng.standard_normal(8) * 0.1,
        "w2": rng.standard_normal((8, 3)) * 0.5,
        "b2": rng.standard_normal(3) * 0.1,
    }
    # The graph computes in f32 from f32 inputs: round the inputs first.
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    f64 = {k: v.astype(np.float64) for k, v in arrays.items()}

    hidden = np.maximum(f64["x"] @ f64["w1"] + f64["b1"], 0.0)
    logits = hidden @ f64["w2"] + f64["b2"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)

    for name, value in arrays.items():
        np.save(os.path.join(DATA, "mlp_%s.npy" % name), value)
    np.save(os.path.join(DATA, "mlp_probs.npy"), probs.astype(np.float32))
    print("hidden units active:", int((hidden > 0).sum()), "of", hidden.size)
    print("probs:\n", probs)


if __name__ == "__main__":
    main()
