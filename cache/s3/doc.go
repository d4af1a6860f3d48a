// Package s3 is a blob cache tier on S3-compatible object storage that several docxy replicas share
// behind their local disk caches.
package s3
