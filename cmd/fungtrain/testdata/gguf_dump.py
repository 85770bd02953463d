"""Lists a GGUF file with llama.cpp's own reader (gguf-py's GGUFReader), for
fungtrain's export tests. Request (JSON on stdin): {"path": PATH}. Answer:
{"fields": {key: {"types": [...], "value": scalar or string, "len": n}},
 "tensors": [{"name", "type", "shape"}]} (shape in gguf-py's order,
innermost dimension first). Arrays give their length, not their values."""
import json
import sys

from gguf import GGUFReader, GGUFValueType


def main():
    req = json.load(sys.stdin)
    r = GGUFReader(req["path"])
    fields = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        types = [t.name for t in f.types]
        entry = {"types": types, "value": None, "len": 0}
        if f.types[0] == GGUFValueType.ARRAY:
            entry["len"] = len(f.data)
        else:
            v = f.contents()
            entry["value"] = str(v) if not isinstance(v, str) else v
        fields[name] = entry
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape]} for t in r.tensors]
    json.dump({"fields": fields, "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    main()
