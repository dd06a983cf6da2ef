"""An independent reference for examples/executors/minilm-encoder: all-MiniLM-L6-v2
as sentence-transformers runs it, written from the model's description in NumPy.

Nothing is shared with the Rust encoder: the tokenizer is BERT's BasicTokenizer +
WordPiece reimplemented here from tokenizer.json's vocabulary; the forward pass
pads each batch to its longest sequence and masks the padding (the Rust code
packs sequences instead), in float64 for fidelity (float32 for --bench); the
weights are read from model.safetensors with the format's 8-byte header.

  reference.py MODEL_DIR < {"texts": [...], "max_length": 256}   -> {"embeddings": [[...]], "ids": [[...]]}
  reference.py MODEL_DIR --bench N < {"texts": [...]}             -> {"sentences_per_s": ...}
"""

import json
import struct
import sys
import time
import unicodedata

import numpy as np


def load_weights(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out


class WordPiece:
    """BERT's uncased BasicTokenizer + WordPiece (as in Google's tokenization.py)."""

    def __init__(self, tokenizer_json):
        spec = json.load(open(tokenizer_json))
        self.vocab = spec["model"]["vocab"]
        self.unk = self.vocab["[UNK]"]
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.max_chars = spec["model"].get("max_input_chars_per_word", 100)

    @staticmethod
    def _is_control(ch):
        if ch in "\t\n\r":
            return False
        return unicodedata.category(ch).startswith("C")

    @staticmethod
    def _is_whitespace(ch):
        return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"

    @staticmethod
    def _is_punct(ch):
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp):
        return (
            0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
        )

    def words(self, text):
        cleaned = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or self._is_control(ch):
                continue
            if self._is_whitespace(ch):
                cleaned.append(" ")
            elif self._is_cjk(cp):
                cleaned.append(f" {ch} ")
            else:
                cleaned.append(ch)
        out = []
        for token in "".join(cleaned).split():
            token = unicodedata.normalize("NFD", token.lower())
            token = "".join(c for c in token if unicodedata.category(c) != "Mn")
            current = ""
            for ch in token:
                if self._is_punct(ch):
                    if current:
                        out.append(current)
                    out.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                out.append(current)
        return out

    def ids(self, text, max_length):
        pieces = []
        for word in self.words(text):
            if len(word) > self.max_chars:
                pieces.append(self.unk)
                continue
            start, sub = 0, []
            while start < len(word):
                end, found = len(word), None
                while start < end:
                    candidate = word[start:end] if start == 0 else "##" + word[start:end]
                    if candidate in self.vocab:
                        found = self.vocab[candidate]
                        break
                    end -= 1
                if found is None:
                    sub = [self.unk]
                    break
                sub.append(found)
                start = end
            pieces.extend(sub)
        return [self.cls] + pieces[: max_length - 2] + [self.sep]


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def erf(x):
    """erf from Numerical Recipes' erfc (fractional error < 1.2e-7), vectorised."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype)


class MiniLM:
    def __init__(self, model_dir, dtype):
        self.config = json.load(open(f"{model_dir}/config.json"))
        raw = load_weights(f"{model_dir}/model.safetensors")
        self.w = {k.removeprefix("bert."): v.astype(dtype) for k, v in raw.items() if v.dtype == np.float32}
        self.dtype = dtype

    def forward(self, batch):
        """batch: list of id lists -> mean-pooled, L2-normalised embeddings."""
        c, w = self.config, self.w
        heads, eps = c["num_attention_heads"], c["layer_norm_eps"]
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=self.dtype)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        hidden = x.shape[-1]
        dh = hidden // heads
        bias = (1.0 - mask)[:, None, None, :] * np.finfo(self.dtype).min
        for l in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{l}."
            lin = lambda t, name: t @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            split = lambda t: t.reshape(n, length, heads, dh).transpose(0, 2, 1, 3)
            q, k, v = (split(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
            x = layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
            h = lin(x, "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
            x = layer_norm(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def main():
    model_dir = sys.argv[1]
    request = json.load(sys.stdin)
    max_length = request.get("max_length", 256)
    tokenizer = WordPiece(f"{model_dir}/tokenizer.json")
    ids = [tokenizer.ids(t, max_length) for t in request["texts"]]
    if "--bench" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--bench") + 1])
        model = MiniLM(model_dir, np.float32)
        model.forward(ids[:32])
        start = time.perf_counter()
        for _ in range(rounds):
            for i in range(0, len(ids), 32):
                model.forward(ids[i : i + 32])
        elapsed = time.perf_counter() - start
        json.dump({"sentences_per_s": rounds * len(ids) / elapsed}, sys.stdout)
        return
    model = MiniLM(model_dir, np.float64)
    embeddings = []
    for i in range(0, len(ids), 32):
        embeddings.extend(model.forward(ids[i : i + 32]).tolist())
    json.dump({"embeddings": embeddings, "ids": ids}, sys.stdout)


if __name__ == "__main__":
    main()
