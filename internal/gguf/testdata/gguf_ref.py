"""llama.cpp's own Python GGUF package (gguf-py) as the reference for
internal/gguf's tests.

Request (JSON on stdin), one of:
  {"op": "quantize", "type": "Q8_0"|"Q4_0"|"BF16"|"F16", "in": F32_FILE, "cols": C, "out": FILE}
      gguf.quants.quantize of the float32 values as rows of C; the bytes go to out.
  {"op": "dequantize", "type": T, "in": FILE, "cols": C, "out": F32_FILE}
  {"op": "read", "path": GGUF}
      GGUFReader's view: {"fields": {key: {"types": [...], "value": ...}}, "tensors": [{"name", "type", "shape", "hex"}]}
Answer on stdout (JSON).
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf import quants


def plain(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8")
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer, int, bool, np.bool_)):
        return v.item() if hasattr(v, "item") else v
    return v


def main():
    req = json.load(sys.stdin)
    op = req["op"]
    if op in ("quantize", "dequantize"):
        qt = GGMLQuantizationType[req["type"]]
        if op == "quantize":
            x = np.fromfile(req["in"], dtype="<f4").reshape(-1, req["cols"])
            q = quants.quantize(x, qt)
            np.ascontiguousarray(q).tofile(req["out"])
        else:
            raw = np.fromfile(req["in"], dtype=np.uint8)
            block, size = quants.GGML_QUANT_SIZES[qt]
            rows = len(raw) // (req["cols"] // block * size)
            y = quants.dequantize(raw.reshape(rows, -1), qt)
            np.ascontiguousarray(y, dtype="<f4").tofile(req["out"])
        json.dump({"ok": True}, sys.stdout)
        return
    r = GGUFReader(req["path"])
    fields = {}
    for name, f in r.fields.items():
        fields[name] = {"types": [t.name for t in f.types], "value": plain(f.contents())}
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape],
                "hex": np.asarray(t.data).tobytes().hex()} for t in r.tensors]
    json.dump({"fields": fields, "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    main()
