package oci

// Manifest media types docxy asks upstreams for when the client's Accept is missing.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex           = "application/vnd.oci.image.index.v1+json"
)

// DefaultManifestAccept lists every manifest type docxy can relay, so that an upstream never
// falls back to a legacy schema1 manifest or a 404 for a client that sent no Accept.
const DefaultManifestAccept = MediaTypeOCIIndex + ", " + MediaTypeDockerManifestList + ", " +
	MediaTypeOCIManifest + ", " + MediaTypeDockerManifest

// MaxManifestSize is the largest manifest the distribution spec requires registries to accept.
const MaxManifestSize = 4 << 20
