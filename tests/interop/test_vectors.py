"""Checks jina_wire.py against the test vectors in docs/protocol.md.

    python3 tests/interop/test_vectors.py

For each vector block in docs/protocol.md: decoding the bytes gives the value
the vector describes, and encoding the value gives the bytes. Then malformed
frames, each of which must raise ValueError, and a fuzz loop over random and
mutated frames in which ValueError is the only exception allowed.
"""

from __future__ import annotations

import pathlib
import random
import re
import struct
import sys
import unittest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import jina_wire as jw  # noqa: E402
import make_vectors  # noqa: E402

PROTOCOL_MD = HERE.parents[1] / "docs" / "protocol.md"
BLOCK = re.compile(r"<!-- vector: (\S+) -->\s*```text\n(.*?)```", re.DOTALL)


def read_vectors() -> dict[str, bytes]:
    """Every `<!-- vector: NAME -->` block of docs/protocol.md, decoded the way
    the page says: drop `#` to the end of each line, drop whitespace, unhex."""
    vectors = {}
    for name, block in BLOCK.findall(PROTOCOL_MD.read_text(encoding="utf-8")):
        digits = "".join("".join(line.split("#", 1)[0].split()) for line in block.splitlines())
        vectors[name] = bytes.fromhex(digits)
    return vectors


VECTORS = read_vectors()
VALUES = {name: (kind, value) for name, kind, _, value in make_vectors.VECTORS}

U32_MAX = 0xFFFF_FFFF


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def wire_str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return u32(len(raw)) + raw


def raw_body(
    ids=("a", "b"),
    parents=(U32_MAX, 0),
    relations=(0, 1),
    columns=None,
    dims=(2, 0),
    values=(1.0, 2.0),
    scores=((1, 0.5, "s", None, None),),
    id_ends=None,
    n=None,
    tail=b"",
) -> bytes:
    """A body written field by field, independently of jina_wire's encoder,
    so a test can break exactly one rule. `columns` maps a column index (0
    texts ... 4 tags) to (flags, ends, data); the others are all absent."""
    n = len(ids) if n is None else n
    id_data = "".join(ids).encode()
    if id_ends is None:
        id_ends, total = [], 0
        for i in ids:
            total += len(i.encode())
            id_ends.append(total)
    out = u32(n) + u32(*id_ends) + id_data + u32(*parents) + bytes(relations)
    for c in range(5):
        flags, ends, data = (columns or {}).get(c, (bytes(len(ids)), [0] * len(ids), b""))
        out += bytes(flags) + u32(*ends) + data
    out += u32(*dims) + struct.pack(f"<{len(values)}f", *values)
    out += u32(len(scores))
    for doc, value, name, op, desc in scores:
        out += u32(doc) + struct.pack("<d", value) + wire_str(name)
        for opt in (op, desc):
            out += b"\x00" if opt is None else b"\x01" + wire_str(opt)
    return out + tail


class Vectors(unittest.TestCase):
    def test_every_vector_is_on_the_page(self):
        self.assertEqual(sorted(VECTORS), sorted(VALUES), "vectors in docs/protocol.md vs make_vectors.py")
        self.assertNotIn("\nVECTORS\n", PROTOCOL_MD.read_text(encoding="utf-8"), "placeholder not replaced")

    def test_decode_gives_the_value(self):
        for name, frame in VECTORS.items():
            kind, value = VALUES[name]
            with self.subTest(name):
                decode = jw.decode_envelope if kind == "envelope" else jw.decode_body
                self.assertEqual(decode(frame), value)

    def test_encode_gives_the_bytes(self):
        for name, frame in VECTORS.items():
            kind, value = VALUES[name]
            with self.subTest(name):
                encode = jw.encode_envelope if kind == "envelope" else jw.encode_body
                self.assertEqual(encode(value).hex(" "), frame.hex(" "))

    def test_page_is_up_to_date(self):
        # What make_vectors.py would write now is what the page holds.
        self.assertIn(make_vectors.render(), PROTOCOL_MD.read_text(encoding="utf-8"))

    def test_body_tree_is_in_pre_order(self):
        frame = VECTORS["body-tree"]
        self.assertEqual(frame[:4], u32(4))
        self.assertEqual(frame[4 + 16:4 + 16 + 6], b"aa-0mb")  # a, a-0, m, b

    def test_empty_frame_is_no_documents(self):
        self.assertEqual(jw.decode_body(b""), [])
        self.assertEqual(jw.decode_body(VECTORS["body-empty"]), [])


class Malformed(unittest.TestCase):
    def assertMalformed(self, decode, frame: bytes, pattern: str = ""):
        with self.assertRaisesRegex(ValueError, pattern):
            decode(frame)

    def test_raw_body_helper_makes_valid_bodies(self):
        self.assertEqual(
            jw.decode_body(raw_body()),
            [{"id": "a", "embedding": [1.0, 2.0], "chunks": [{"id": "b", "scores": {"s": {"value": 0.5}}}]}],
        )

    def test_truncated_envelopes(self):
        for name in ("envelope-data", "envelope-error", "envelope-control"):
            frame = VECTORS[name]
            for size in range(len(frame)):
                with self.subTest(name, size=size):
                    self.assertMalformed(jw.decode_envelope, frame[:size], "truncated")

    def test_truncated_bodies(self):
        for name in ("body-tree", "body-empty"):
            frame = VECTORS[name]
            for size in range(1, len(frame)):  # 0 bytes is a valid empty body
                with self.subTest(name, size=size):
                    self.assertMalformed(jw.decode_body, frame[:size], "truncated")

    def test_bad_magic(self):
        frame = VECTORS["envelope-data"]
        self.assertMalformed(jw.decode_envelope, b"JX" + frame[2:], "magic")
        self.assertMalformed(jw.decode_envelope, b"wj" + frame[2:], "magic")

    def test_version_2(self):
        frame = VECTORS["envelope-data"]
        with self.assertRaises(jw.UnsupportedVersion) as caught:
            jw.decode_envelope(frame[:2] + b"\x02" + frame[3:])
        self.assertEqual(caught.exception.version, 2)
        self.assertIsInstance(caught.exception, ValueError)
        # A receiver stops at the version byte: what follows does not matter.
        self.assertRaises(jw.UnsupportedVersion, jw.decode_envelope, b"JW\x02")
        self.assertRaises(jw.UnsupportedVersion, jw.decode_envelope, b"JW\x00garbage")

    def test_envelope_enums_out_of_range(self):
        frame = VECTORS["envelope-data"]
        self.assertMalformed(jw.decode_envelope, frame[:3] + b"\x03" + frame[4:], "kind")
        self.assertMalformed(jw.decode_envelope, frame[:4] + b"\x04" + frame[5:], "after_error")
        self.assertMalformed(jw.decode_envelope, frame[:-1] + b"\x04", "outcome")
        control = VECTORS["envelope-control"]  # status code is 9 bytes from the end
        self.assertMalformed(jw.decode_envelope, control[:-6] + b"\x02" + control[-5:], "status code")

    def test_envelope_leftover_bytes(self):
        # After the routes, a byte is the optional trace field's tag.
        for name in ("envelope-data", "envelope-error", "envelope-control"):
            self.assertMalformed(jw.decode_envelope, VECTORS[name] + b"\x00", "trace tag is 0")
        traced = VECTORS["envelope-traced"]
        self.assertMalformed(jw.decode_envelope, traced + b"\x00", "left over")
        self.assertMalformed(jw.decode_envelope, traced[:-3], "trace")
        zero_id = traced[:-25] + bytes(16) + traced[-9:]
        self.assertMalformed(jw.decode_envelope, zero_id, "all zeros")

    def test_envelope_over_1_mib(self):
        big = {**VALUES["envelope-control"][1], "parameters": "x" * (1 << 20)}
        self.assertRaises(ValueError, jw.encode_envelope, big)
        frame = jw.encode_envelope({**big, "parameters": ""})
        frame = frame[:13] + wire_str("x" * (1 << 20)) + frame[17:]
        self.assertMalformed(jw.decode_envelope, frame, "1 MiB")

    def test_envelope_bad_utf8(self):
        frame = VECTORS["envelope-data"]  # request_id "r1" is at bytes 9..11
        self.assertMalformed(jw.decode_envelope, frame[:9] + b"\xff\x31" + frame[11:], "UTF-8")

    def test_body_leftover_bytes(self):
        self.assertMalformed(jw.decode_body, VECTORS["body-tree"] + b"\x00", "left over")
        self.assertMalformed(jw.decode_body, VECTORS["body-empty"] + b"\x00", "left over")
        self.assertMalformed(jw.decode_body, raw_body(tail=b"\x00"), "left over")

    def test_presence_flag_2(self):
        for c in range(5):
            with self.subTest(column=c):
                self.assertMalformed(jw.decode_body, raw_body(columns={c: ([2, 0], [0, 0], b"")}), "presence flag")

    def test_parent_after_child(self):
        body = raw_body(ids=("a", "b", "c"), parents=(U32_MAX, 2, 0), relations=(0, 1, 1), dims=(0, 0, 0), values=(), scores=())
        self.assertMalformed(jw.decode_body, body, "does not come before")
        # A document cannot be its own parent either.
        body = raw_body(parents=(U32_MAX, 1))
        self.assertMalformed(jw.decode_body, body, "does not come before")

    def test_relation_disagrees_with_parent(self):
        self.assertMalformed(jw.decode_body, raw_body(relations=(1, 1)), "disagrees")  # chunk without a parent
        self.assertMalformed(jw.decode_body, raw_body(relations=(0, 0)), "disagrees")  # root with a parent
        self.assertMalformed(jw.decode_body, raw_body(relations=(0, 3)), "relations")

    def test_offsets_decrease(self):
        self.assertMalformed(jw.decode_body, raw_body(ids=("ab", ""), id_ends=[2, 1]), "less than")
        texts = ([1, 1], [2, 1], b"hi")
        self.assertMalformed(jw.decode_body, raw_body(columns={0: texts}), "less than")

    def test_absent_entry_with_bytes(self):
        self.assertMalformed(jw.decode_body, raw_body(columns={0: ([0, 1], [1, 2], b"hi")}), "absent")
        self.assertMalformed(jw.decode_body, raw_body(columns={1: ([1, 0], [1, 2], b"\x00\x01")}), "absent")

    def test_span_splits_a_character(self):
        # "é" is c3 a9: an offset between the two bytes is not a character boundary.
        self.assertMalformed(jw.decode_body, raw_body(columns={0: ([1, 1], [1, 2], "é".encode())}), "UTF-8")
        self.assertMalformed(jw.decode_body, raw_body(ids=("é", ""), id_ends=[1, 2]), "UTF-8")
        # Blobs are any bytes.
        self.assertEqual(jw.decode_body(raw_body(columns={1: ([1, 1], [1, 2], "é".encode())}))[0]["blob"], b"\xc3")

    def test_dims_do_not_add_up(self):
        self.assertMalformed(jw.decode_body, raw_body(dims=(3, 0)), "")  # one value short
        self.assertMalformed(jw.decode_body, raw_body(dims=(1, 0)), "")  # one value over
        self.assertMalformed(jw.decode_body, raw_body(dims=(U32_MAX, U32_MAX)), "truncated")

    def test_score_names_a_missing_document(self):
        self.assertMalformed(jw.decode_body, raw_body(scores=((2, 0.5, "s", None, None),)), "names document")
        self.assertMalformed(jw.decode_body, raw_body(scores=((0, 0.5, "s", None, None),), tail=b"")[:-1] + b"\x02", "flag")

    def test_tags_not_a_json_object(self):
        for text in (b"[1]", b"{", b'{"a":NaN}', b"[" * 100_000):
            with self.subTest(text=text[:8]):
                ends = [len(text), len(text)]
                self.assertMalformed(jw.decode_body, raw_body(columns={4: ([1, 0], ends, text)}), "tags")

    def test_huge_counts_are_refused_before_reading(self):
        self.assertMalformed(jw.decode_body, u32(U32_MAX), "truncated")
        self.assertMalformed(jw.decode_body, u32(0, U32_MAX), "truncated")  # score count
        env = VECTORS["envelope-control"]
        self.assertMalformed(jw.decode_envelope, env[:-4] + u32(U32_MAX), "truncated")

    def test_wrong_count(self):
        # n says 3 but the columns hold 2 documents: everything shifts and fails.
        self.assertRaises(ValueError, jw.decode_body, raw_body(n=3))
        self.assertRaises(ValueError, jw.decode_body, raw_body(n=1))


class Fuzz(unittest.TestCase):
    ROUNDS = 4000

    def mutate(self, rng: random.Random, frame: bytes) -> bytes:
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(6)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:  # flip a byte
                data[at % len(data)] = rng.randrange(256)
            elif op == 1:  # insert bytes
                data[at:at] = rng.randbytes(rng.randint(1, 8))
            elif op == 2 and data:  # delete bytes
                del data[at:at + rng.randint(1, 8)]
            elif op == 3 and len(data) >= 4:  # overwrite a u32 with an edge value
                at = min(at, len(data) - 4)
                data[at:at + 4] = u32(rng.choice([0, 1, 2, 3, 4, 0x7F, 0xFF, 0x10000, U32_MAX, U32_MAX - 1]))
            elif op == 4:  # truncate
                del data[at:]
            else:  # splice in part of another vector
                other = rng.choice(list(VECTORS.values()))
                start = rng.randrange(len(other) + 1)
                data[at:at] = other[start:start + rng.randint(1, 16)]
        return bytes(data)

    def check(self, decode, frame: bytes):
        try:
            return decode(frame)
        except ValueError:
            return None
        except Exception as e:  # noqa: BLE001 - the point of the test
            self.fail(f"{decode.__name__}({frame.hex()}) raised {type(e).__name__}: {e}")

    def test_only_value_error(self):
        rng = random.Random(20240601)
        seeds = list(VECTORS.values()) + [raw_body(), jw.encode_body(VALUES["body-tree"][1] * 3)]
        decoded = 0
        for round_ in range(self.ROUNDS):
            if round_ % 4 == 0:
                frame = rng.randbytes(rng.randint(0, 64))
                if rng.random() < 0.5:
                    frame = b"JW\x01" + frame
            else:
                frame = self.mutate(rng, rng.choice(seeds))
            envelope = self.check(jw.decode_envelope, frame)
            if envelope is not None:
                decoded += 1
                # The envelope encoding is canonical: what decodes re-encodes to the same bytes.
                self.assertEqual(jw.encode_envelope(envelope), frame)
            if self.check(jw.decode_body, frame) is not None:
                decoded += 1
        self.assertGreater(decoded, 0, "the fuzz loop never produced a frame that decodes")


if __name__ == "__main__":
    unittest.main(verbosity=1)
