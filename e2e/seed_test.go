package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	bigLayerSize   = 256 << 20 // the one big layer, seeded once for the package
	smallLayerSize = 4 << 10
	seedTimeout    = 3 * time.Minute
)

var (
	linuxAMD64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	linuxARM64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// seededImage is what was pushed under Repo:Tag. Digests are computed from the pushed content,
// never hard-coded.
type seededImage struct {
	Repo      string
	Tag       string
	Digest    string // the tag's manifest (or index) digest
	MediaType types.MediaType
	Manifest  []byte            // the tag's raw manifest or index
	Platforms map[string]string // "linux/amd64" -> child manifest digest (indexes only)
	Manifests map[string][]byte // every manifest digest -> raw bytes (top level and children)
	Blobs     map[string]int64  // every config and layer digest -> size, across platforms
}

// Ref returns repo:tag.
func (s seededImage) Ref() string { return s.Repo + ":" + s.Tag }

// seededContent is everything the package seeds into the upstream registry.
type seededContent struct {
	Hello  seededImage // Docker schema2 manifest list, linux/amd64 + linux/arm64
	Alpine seededImage // OCI index, linux/amd64 + linux/arm64
	Big    seededImage // one OCI image with one bigLayerSize layer
	Secret seededImage // private/secret, pullable by alice and bob only

	BigLayer     string // digest of the big layer
	BigLayerSize int64
}

// seed pushes the test images to the registry at host as alice.
func seed(host string) (*seededContent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), seedTimeout)
	defer cancel()
	opts := []remote.Option{
		remote.WithAuth(&authn.Basic{Username: aliceUser, Password: alicePass}),
		remote.WithContext(ctx),
		remote.WithUserAgent("e2e-seed"),
	}
	s := &seededContent{}
	var err error
	if s.Hello, err = seedIndex(host, "library/hello", "latest", types.DockerManifestList, opts); err != nil {
		return nil, err
	}
	if s.Alpine, err = seedIndex(host, "library/alpine", "latest", types.OCIImageIndex, opts); err != nil {
		return nil, err
	}
	secret, err := platformImage(linuxAMD64, false)
	if err != nil {
		return nil, err
	}
	if s.Secret, err = seedImage(host, "private/secret", "latest", secret, opts); err != nil {
		return nil, err
	}
	big, layer, err := bigImage()
	if err != nil {
		return nil, err
	}
	if s.Big, err = seedImage(host, "big/layer", "latest", big, opts); err != nil {
		return nil, err
	}
	d, err := layer.Digest()
	if err != nil {
		return nil, err
	}
	s.BigLayer, s.BigLayerSize = d.String(), bigLayerSize+3*512 // data plus tar header and end blocks
	if got := s.Big.Blobs[s.BigLayer]; got != s.BigLayerSize {
		return nil, fmt.Errorf("big layer size: got %d; want %d", got, s.BigLayerSize)
	}
	return s, nil
}

// platformImage builds a small random image for p: Docker schema2 media types, or OCI ones.
func platformImage(p v1.Platform, oci bool) (v1.Image, error) {
	var img v1.Image
	if oci {
		base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		var layers []v1.Layer
		for range 2 {
			l, err := random.Layer(smallLayerSize, types.OCILayer)
			if err != nil {
				return nil, err
			}
			layers = append(layers, l)
		}
		var err error
		if img, err = mutate.AppendLayers(base, layers...); err != nil {
			return nil, err
		}
	} else {
		var err error
		if img, err = random.Image(smallLayerSize, 2); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	return mutate.ConfigFile(img, cf)
}

// bigImage is one OCI image whose single layer is an uncompressed tar of bigLayerSize random
// bytes (uncompressed so that seeding spends no time in gzip).
func bigImage() (v1.Image, v1.Layer, error) {
	var seed [32]byte
	crand.Read(seed[:])
	data := make([]byte, bigLayerSize)
	rand.NewChaCha8(seed).Read(data)
	var buf bytes.Buffer
	buf.Grow(bigLayerSize + 4096)
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "big.bin", Size: bigLayerSize, Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
		return nil, nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	layer := static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = linuxAMD64.OS, linuxAMD64.Architecture
	img, err = mutate.ConfigFile(img, cf)
	return img, layer, err
}

func seedImage(host, repo, tag string, img v1.Image, opts []remote.Option) (seededImage, error) {
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return seededImage{}, err
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		return seededImage{}, fmt.Errorf("cannot seed %s: %w", ref, err)
	}
	s := seededImage{Repo: repo, Tag: tag, Manifests: map[string][]byte{}, Blobs: map[string]int64{}}
	if err := describeImage(&s, img); err != nil {
		return s, err
	}
	d, _ := img.Digest()
	s.Digest = d.String()
	s.Manifest = s.Manifests[s.Digest]
	s.MediaType, _ = img.MediaType()
	return s, nil
}

func seedIndex(host, repo, tag string, mt types.MediaType, opts []remote.Option) (seededImage, error) {
	oci := mt == types.OCIImageIndex
	idx := mutate.IndexMediaType(empty.Index, mt)
	s := seededImage{Repo: repo, Tag: tag, MediaType: mt, Platforms: map[string]string{},
		Manifests: map[string][]byte{}, Blobs: map[string]int64{}}
	for _, p := range []v1.Platform{linuxAMD64, linuxARM64} {
		img, err := platformImage(p, oci)
		if err != nil {
			return s, err
		}
		if err := describeImage(&s, img); err != nil {
			return s, err
		}
		d, _ := img.Digest()
		s.Platforms[p.OS+"/"+p.Architecture] = d.String()
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return s, err
	}
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return s, fmt.Errorf("cannot seed %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return s, err
	}
	s.Digest = d.String()
	if s.Manifest, err = idx.RawManifest(); err != nil {
		return s, err
	}
	s.Manifests[s.Digest] = s.Manifest
	return s, nil
}

// describeImage records img's manifest, config and layers in s.
func describeImage(s *seededImage, img v1.Image) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	s.Manifests[d.String()] = raw
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	s.Blobs[m.Config.Digest.String()] = m.Config.Size
	for _, l := range m.Layers {
		s.Blobs[l.Digest.String()] = l.Size
	}
	return nil
}
