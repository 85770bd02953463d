"""Drive huggingface_hub (the real client) against the Hub at HF_ENDPOINT
and the cache at HF_HUB_CACHE, for fungtrain's hub tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:
  {"op": "snapshot", "repo": R, "revision": V, "allow": [globs]} -> {"path": P}
  {"op": "download", "repo": R, "files": [F], "revision": V, "local_only": B} -> {"paths": {F: P}}
  {"op": "scan"} -> {"repos": [...], "warnings": [...]}
"""
import json
import os
import sys

from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download


def main():
    req = json.load(sys.stdin)
    op = req["op"]
    cache = os.environ["HF_HUB_CACHE"]
    if op == "snapshot":
        path = snapshot_download(req["repo"], revision=req.get("revision"), allow_patterns=req.get("allow"), cache_dir=cache)
        out = {"path": path}
    elif op == "download":
        out = {"paths": {}}
        for f in req["files"]:
            out["paths"][f] = hf_hub_download(req["repo"], f, revision=req.get("revision"),
                                              local_files_only=req.get("local_only", False), cache_dir=cache)
    elif op == "scan":
        info = scan_cache_dir(cache)
        repos = []
        for r in sorted(info.repos, key=lambda r: r.repo_id):
            revs = []
            for v in sorted(r.revisions, key=lambda v: v.commit_hash):
                revs.append({
                    "commit": v.commit_hash,
                    "refs": sorted(v.refs),
                    "size_on_disk": v.size_on_disk,
                    "snapshot_path": str(v.snapshot_path),
                    "files": sorted(
                        [{"name": f.file_name, "path": str(f.file_path), "blob": str(f.blob_path), "size": f.size_on_disk}
                         for f in v.files], key=lambda f: f["path"]),
                })
            repos.append({"repo_id": r.repo_id, "repo_type": r.repo_type, "size_on_disk": r.size_on_disk,
                          "nb_files": r.nb_files, "revisions": revs})
        out = {"repos": repos, "warnings": [str(w) for w in info.warnings]}
    else:
        raise SystemExit(f"unknown op {op}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
