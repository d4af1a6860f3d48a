// Package cache is a content-addressed, crash-safe blob store on local disk with LRU eviction and
// single-flight streaming downloads that readers can follow while the bytes arrive.
package cache
