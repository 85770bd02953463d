package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// repoCache is one repository's folder in the Hugging Face cache,
// laid out as huggingface_hub lays it out.
type repoCache struct {
	root string // $HF_HUB_CACHE
	repo string // ORG/NAME
	dir  string // root/models--ORG--NAME
}

// folderName is huggingface_hub's repo_folder_name for a model repo.
func folderName(repo string) string {
	return "models--" + strings.ReplaceAll(repo, "/", "--")
}

func newRepoCache(root, repo string) repoCache {
	return repoCache{root: root, repo: repo, dir: filepath.Join(root, folderName(repo))}
}

func (r repoCache) blob(etag string) string { return filepath.Join(r.dir, "blobs", etag) }

func (r repoCache) snapshot(commit string) string { return filepath.Join(r.dir, "snapshots", commit) }

func (r repoCache) pointer(commit, file string) string {
	return filepath.Join(r.snapshot(commit), filepath.FromSlash(file))
}

// lockPath is where huggingface_hub takes its lock for a blob, so the two
// never download the same blob into the cache at once.
func (r repoCache) lockPath(etag string) string {
	return filepath.Join(r.root, ".locks", folderName(r.repo), etag+".lock")
}

// commitFor returns the commit a revision names in the cache: the
// revision itself when it is a commit id, else the content of refs/<rev>.
func (r repoCache) commitFor(rev string) (string, error) {
	if commitHash.MatchString(rev) {
		return rev, nil
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "refs", filepath.FromSlash(rev)))
	if err != nil {
		return "", err
	}
	c := strings.TrimSpace(string(b))
	if !commitHash.MatchString(c) {
		return "", fmt.Errorf("%s: %q is not a commit id", filepath.Join(r.dir, "refs", rev), c)
	}
	return c, nil
}

// writeRef records that rev points at commit. huggingface_hub reads the
// file whole, without a trailing newline. The temporary file lives in the
// repository folder, where a crash leaves nothing that scan_cache_dir reads.
func (r repoCache) writeRef(rev, commit string) error {
	if rev == commit {
		return nil
	}
	if old, err := r.commitFor(rev); err == nil && old == commit {
		return nil
	}
	p := filepath.Join(r.dir, "refs", filepath.FromSlash(rev))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write ref %s: %w", p, err)
	}
	tmp, err := os.CreateTemp(r.dir, ".ref-*.tmp")
	if err != nil {
		return fmt.Errorf("write ref %s: %w", p, err)
	}
	_, err = tmp.WriteString(commit)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write ref %s: %w", p, err)
	}
	return nil
}

// has reports whether the snapshot holds file, as a link that leads to a
// blob (a dangling link does not count).
func (r repoCache) has(commit, file string) bool {
	st, err := os.Stat(r.pointer(commit, file))
	return err == nil && st.Mode().IsRegular()
}

// link points snapshots/<commit>/<file> at blobs/<etag> with a relative
// symlink, replacing whatever was there in one rename.
func (r repoCache) link(commit, file, etag string) error {
	p := r.pointer(commit, file)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	target, err := filepath.Rel(filepath.Dir(p), r.blob(etag))
	if err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	if old, err := os.Readlink(p); err == nil && old == target {
		return nil
	}
	tmp, err := os.CreateTemp(r.dir, ".link-*.tmp")
	if err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	tmp.Close()
	os.Remove(tmp.Name())
	if err := os.Symlink(target, tmp.Name()); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("link %s: %w", p, err)
	}
	return nil
}

// cacheDirTag marks the cache for backup tools, as huggingface_hub does
// (https://bford.info/cachedir/).
func writeCacheDirTag(root string) {
	p := filepath.Join(root, "CACHEDIR.TAG")
	if _, err := os.Stat(p); err == nil {
		return
	}
	_ = os.WriteFile(p, []byte("Signature: 8a477f597d28d172789f06886806bc55\n# This is the Hugging Face model cache, shared by huggingface_hub and fungtrain.\n"), 0o644)
}

// missingModelFiles lists what a snapshot folder lacks to be loaded as a
// model: config.json, the weights (every shard an index names, or at least
// one .safetensors file) and tokenizer.json.
func missingModelFiles(dir string) []string {
	var missing []string
	exists := func(name string) bool {
		st, err := os.Stat(filepath.Join(dir, name))
		return err == nil && st.Mode().IsRegular()
	}
	for _, name := range []string{"config.json", "tokenizer.json"} {
		if !exists(name) {
			missing = append(missing, name)
		}
	}
	shards, err := indexShards(filepath.Join(dir, "model.safetensors.index.json"))
	switch {
	case err == nil:
		for _, s := range shards {
			if !exists(s) {
				missing = append(missing, s)
			}
		}
	case errors.Is(err, os.ErrNotExist):
		if m, _ := filepath.Glob(filepath.Join(dir, "*.safetensors")); !anyRegular(m) {
			missing = append(missing, "*.safetensors")
		}
	default:
		missing = append(missing, "a readable model.safetensors.index.json ("+err.Error()+")")
	}
	return missing
}

func anyRegular(paths []string) bool {
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// indexShards lists the weight files a safetensors index names.
func indexShards(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range idx.WeightMap {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out, nil
}
