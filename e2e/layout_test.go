package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// descriptor is the part of an OCI descriptor the layout walk needs.
type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

// manifestDoc covers image manifests and indexes (Docker and OCI).
type manifestDoc struct {
	MediaType string       `json:"mediaType"`
	Manifests []descriptor `json:"manifests"`
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
}

// layoutContents is what verifyLayout found in an OCI image layout.
type layoutContents struct {
	Roots []descriptor     // index.json's manifests
	Blobs map[string]int64 // every blob verified (manifests, configs, layers) -> size
	Bytes int64
}

// verifyLayout walks an OCI image layout from index.json and checks that every referenced blob
// exists, has the descriptor's size, and hashes to its digest.
func verifyLayout(dir string) (*layoutContents, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, err
	}
	var top manifestDoc
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	lc := &layoutContents{Roots: top.Manifests, Blobs: map[string]int64{}}
	var walk func(d descriptor) error
	walk = func(d descriptor) error {
		if _, seen := lc.Blobs[d.Digest]; seen {
			return nil
		}
		body, err := verifyBlob(dir, d)
		if err != nil {
			return err
		}
		lc.Blobs[d.Digest] = d.Size
		lc.Bytes += d.Size
		if !isManifestType(d.MediaType) {
			return nil
		}
		var m manifestDoc
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		for _, c := range m.Manifests {
			if err := walk(c); err != nil {
				return err
			}
		}
		if m.Config != nil {
			if err := walk(*m.Config); err != nil {
				return err
			}
		}
		for _, l := range m.Layers {
			if err := walk(l); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range top.Manifests {
		if err := walk(d); err != nil {
			return nil, err
		}
	}
	return lc, nil
}

func isManifestType(mt string) bool {
	return strings.Contains(mt, "manifest") || strings.HasSuffix(mt, "image.index.v1+json")
}

// verifyBlob hashes one blob of the layout; it returns the content for manifests only.
func verifyBlob(dir string, d descriptor) ([]byte, error) {
	algo, hexd, ok := strings.Cut(d.Digest, ":")
	if !ok || algo != "sha256" {
		return nil, fmt.Errorf("unexpected digest %q", d.Digest)
	}
	f, err := os.Open(filepath.Join(dir, "blobs", algo, hexd))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	var keep strings.Builder
	var w io.Writer = h
	if isManifestType(d.MediaType) {
		w = io.MultiWriter(h, &keep)
	}
	n, err := io.Copy(w, f)
	if err != nil {
		return nil, err
	}
	if n != d.Size {
		return nil, fmt.Errorf("blob %s: size %d; descriptor says %d", d.Digest, n, d.Size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.Digest {
		return nil, fmt.Errorf("blob %s: content hashes to %s", d.Digest, got)
	}
	return []byte(keep.String()), nil
}

// sha256Hex returns "sha256:<hex>" of b.
func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// checkLayout verifies an OCI layout holding all of want (every platform): the root is want's
// digest, and every seeded manifest and blob is present with the right size and hash.
func checkLayout(t *testing.T, dir string, want seededImage) *layoutContents {
	t.Helper()
	lc, err := verifyLayout(dir)
	if err != nil {
		t.Fatalf("layout %s: %v", dir, err)
	}
	var roots []string
	for _, r := range lc.Roots {
		roots = append(roots, r.Digest)
	}
	if len(roots) != 1 || roots[0] != want.Digest {
		t.Errorf("layout roots: got %v; want [%s]", roots, want.Digest)
	}
	for d := range want.Manifests {
		if _, ok := lc.Blobs[d]; !ok {
			t.Errorf("layout lacks manifest %s", d)
		}
	}
	for d, size := range want.Blobs {
		if got, ok := lc.Blobs[d]; !ok || got != size {
			t.Errorf("layout blob %s: got size %d (present %v); want %d", d, got, ok, size)
		}
	}
	t.Logf("%s: verified %d blobs, %d bytes", want.Ref(), len(lc.Blobs), lc.Bytes)
	return lc
}
