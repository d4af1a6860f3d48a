package s3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

const (
	// DefaultRegion is the signing region used when Config.Region is empty.
	DefaultRegion = "us-east-1"
	// DefaultPrefix is the key prefix used when Config.Prefix is empty.
	DefaultPrefix = "docxy/"
)

// maxRetries bounds the attempts per request (minio-go's default is 10 with backoff). Open sits on
// the pull path, where a failing bucket should send the caller upstream quickly, not after seconds.
const maxRetries = 3

// Config configures a Tier. It mirrors the [cache.s3] section of docxy's config.
type Config struct {
	// Endpoint is host[:port] without a scheme, e.g. "s3.amazonaws.com" or "127.0.0.1:9000". Required.
	Endpoint string
	// Bucket holds the blobs. It must exist; Check reports when it does not. Required.
	Bucket string
	// Region is the signing region. Default DefaultRegion ("us-east-1"); R2 wants "auto".
	Region string
	// AccessKey and SecretKey are static credentials. Both empty means the environment, tried in
	// order: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), MINIO_ROOT_USER/
	// MINIO_ROOT_PASSWORD, ~/.aws/credentials, then the EC2/ECS/EKS instance role. Without any,
	// requests go unsigned.
	AccessKey, SecretKey string
	// Prefix is prepended to every object key; a missing trailing "/" is added. Default
	// DefaultPrefix ("docxy/"); "/" puts the blobs at the bucket root.
	Prefix string
	// Insecure talks plain HTTP to the endpoint instead of HTTPS.
	Insecure bool
	// PathStyle addresses the bucket in the URL path (MinIO, versitygw, Ceph). When false, minio-go
	// picks: virtual-hosted style for AWS and other known clouds, path style for anything else.
	PathStyle bool
}

// Tier is a shared blob cache in one bucket. Objects are content-addressed: the key of blob d is
// Prefix + "blobs/<algorithm>/<first two hex>/<hex>", so any number of Tier values, in any number of
// processes, may read and write the same bucket concurrently.
//
// A Tier is safe for concurrent use. Every method does network I/O bounded by its ctx.
type Tier struct {
	client   *minio.Client
	bucket   string
	prefix   string
	endpoint string // scheme://host[:port], for error messages
}

// New validates cfg and returns a Tier. It does not touch the network; call Check for that.
func New(cfg Config) (*Tier, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("s3: cannot use an empty endpoint")
	}
	if i := strings.Index(cfg.Endpoint, "://"); i >= 0 {
		return nil, fmt.Errorf("s3: cannot use endpoint %q: give host[:port] without %q (set insecure for plain http)",
			cfg.Endpoint, cfg.Endpoint[:i+3])
	}
	if strings.ContainsAny(cfg.Endpoint, "/?#") {
		return nil, fmt.Errorf("s3: cannot use endpoint %q: give host[:port] without a path", cfg.Endpoint)
	}
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3: cannot use bucket name %q: %w", cfg.Bucket, err)
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("s3: cannot use half of the static credentials: set both access_key and secret_key, or neither")
	}
	region := cfg.Region
	if region == "" {
		region = DefaultRegion
	}
	prefix := cfg.Prefix
	switch {
	case prefix == "":
		prefix = DefaultPrefix
	case !strings.HasSuffix(prefix, "/"):
		prefix += "/"
	}
	prefix = strings.TrimLeft(prefix, "/")

	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.EnvMinio{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{},
		})
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       !cfg.Insecure,
		Region:       region,
		BucketLookup: lookup,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: cannot create client for %s: %w", cfg.Endpoint, err)
	}
	return &Tier{client: client, bucket: cfg.Bucket, prefix: prefix, endpoint: client.EndpointURL().String()}, nil
}

// Check makes sure the bucket exists and the credentials may use it, with one HEAD request. Its
// error tells the operator which setting to fix. Call it at startup.
func (t *Tier) Check(ctx context.Context) error {
	ok, err := t.client.BucketExists(ctx, t.bucket)
	if err != nil {
		return fmt.Errorf("s3: cannot use bucket %q at %s: %w%s", t.bucket, t.endpoint, err, hint(err))
	}
	if !ok {
		return fmt.Errorf("s3: cannot use bucket %q at %s: it does not exist; create it, or fix cache.s3.bucket", t.bucket, t.endpoint)
	}
	return nil
}

const checkCredentials = "check cache.s3.access_key and secret_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"

// hint returns advice on the setting most likely behind err, starting with "; ", or "".
func hint(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch {
		case er.Code == minio.AuthorizationHeaderMalformed || er.Code == "PermanentRedirect" || er.Code == "IllegalLocationConstraintException":
			if er.Region != "" {
				return fmt.Sprintf("; the bucket is in region %q: set cache.s3.region to it", er.Region)
			}
			return "; check cache.s3.region"
		case er.Code == minio.InvalidAccessKeyID || er.Code == minio.SignatureDoesNotMatch:
			return "; the credentials were refused: " + checkCredentials
		case er.Code == minio.AccessDenied || er.StatusCode == 403:
			// A HEAD answer has no body, so bad keys and a missing permission look the same.
			return "; " + checkCredentials + ", and that their policy allows s3:ListBucket, GetObject, PutObject and DeleteObject on the bucket"
		case er.StatusCode == 301 || er.StatusCode == 307:
			return "; the endpoint redirects: check cache.s3.endpoint and cache.s3.region"
		}
		return ""
	}
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "HTTP response to HTTPS client"):
		return "; the endpoint speaks plain HTTP: set cache.s3.insecure = true"
	case errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "malformed HTTP response"):
		return "; the endpoint may speak HTTPS: set cache.s3.insecure = false"
	case errors.As(err, &ne):
		return "; the endpoint is unreachable: check cache.s3.endpoint, cache.s3.insecure and the network"
	}
	return ""
}
